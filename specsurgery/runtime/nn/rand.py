"""Random kernels: the ``random*`` Like/Static/Dynamic ops and ``categoricalDistribution``."""

from __future__ import annotations

import numpy as np

from ._base import F32, _f, _ints, op


# --------------------------------------------------------------------------- random layers

def _rng(seed):
    return np.random.default_rng(None if seed == -1 else int(seed))


@op("randomNormalLike", "randomNormalStatic", "randomNormalDynamic")
def _random_normal(ctx, p, ins):
    shape = _random_shape(ctx, p, ins)
    return _f(_rng(p.seed).normal(p.mean, p.stdDev, size=shape))


@op("randomUniformLike", "randomUniformStatic", "randomUniformDynamic")
def _random_uniform(ctx, p, ins):
    shape = _random_shape(ctx, p, ins)
    return _f(_rng(p.seed).uniform(p.minVal, p.maxVal, size=shape))


@op("randomBernoulliLike", "randomBernoulliStatic", "randomBernoulliDynamic")
def _random_bernoulli(ctx, p, ins):
    shape = _random_shape(ctx, p, ins)
    return (_rng(p.seed).random(size=shape) < p.prob).astype(F32)


def _random_shape(ctx, p, ins):
    if ctx.kind.endswith("Like"):
        return ins[0].shape
    if ctx.kind.endswith("Dynamic"):
        return ctx.room(_ints(ins[0]).reshape(-1).tolist())
    return ctx.room(p.outputShape)


@op("categoricalDistribution")
def _categorical(ctx, p, ins):
    x = ins[0].astype(np.float64)
    temp = p.temperature or 1.0
    if p.isLogits:
        z = x / temp
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        probs = z / z.sum(axis=-1, keepdims=True)
    else:
        probs = x / np.maximum(x.sum(axis=-1, keepdims=True), p.eps or 1e-10)
    rng = _rng(p.seed)
    flat = probs.reshape(-1, probs.shape[-1])
    k = int(p.numSamples) or 1
    out = np.stack([rng.choice(flat.shape[1], size=k, p=row) for row in flat])
    return out.reshape(probs.shape[:-1] + (k,)).astype(F32)
