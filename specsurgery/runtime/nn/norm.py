"""Normalisation kernels: ``batchnorm``, softmax, ``l2normalize``, ``lrn``, ``mvn``,
``layerNormalization``."""

from __future__ import annotations

import numpy as np

from ._base import F32, _axis_c, _chan_bcast, _f, op


@op("batchnorm")
def _batchnorm(ctx, p, ins):
    x = _f(ins[0])
    c = int(p.channels)
    ax = _axis_c(x)
    if x.shape[ax] != c:
        ctx.fail(f"input has {x.shape[ax]} channels on axis {ax}, the layer expects {c}")
    gamma = ctx.weight("gamma")
    beta = ctx.weight("beta")
    if not p.computeMeanVar:
        mean = ctx.weight("mean")
        var = ctx.weight("variance")

        def fold(gamma, beta, mean, var):
            scale = (gamma / np.sqrt(var.astype(np.float64) + p.epsilon)).astype(F32)
            return scale, (beta - mean * scale).astype(F32)
        scale, shift = ctx.derived("bn", (gamma, beta, mean, var), fold)
    if ctx.shape_only:
        return x
    if p.computeMeanVar:
        # statistics per channel: over batch and space, or (instance norm) space only
        if p.instanceNormalization:
            axes = tuple(range(x.ndim + ax + 1, x.ndim))
        else:
            axes = tuple(i for i in range(x.ndim) if i != x.ndim + ax)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + p.epsilon)
        return _f(y * _chan_bcast(gamma, x) + _chan_bcast(beta, x))
    return x * _chan_bcast(scale, x) + _chan_bcast(shift, x)


# --------------------------------------------------------------------------- softmax, norms

def _softmax(x, axis):
    x = x.astype(np.float32)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return _f(e / e.sum(axis=axis, keepdims=True))


@op("softmax")
def _softmax_legacy(ctx, p, ins):
    return _softmax(ins[0], _axis_c(ins[0]))


@op("softmaxND")
def _softmax_nd(ctx, p, ins):
    return _softmax(ins[0], int(p.axis))


@op("l2normalize")
def _l2norm(ctx, p, ins):
    x = _f(ins[0])
    axes = tuple(range(max(0, x.ndim - 3), x.ndim))
    s = np.sqrt(np.maximum((x.astype(np.float64) ** 2).sum(axis=axes, keepdims=True), p.epsilon))
    return _f(x / s)


@op("lrn")
def _lrn(ctx, p, ins):
    x = _f(ins[0])
    ax = _axis_c(x)
    c = x.shape[ax]
    n = int(p.localSize)
    sq = np.moveaxis(x, ax, 0) ** 2
    pad_lo = (n - 1) // 2
    padded = np.concatenate([np.zeros((pad_lo,) + sq.shape[1:], F32), sq,
                             np.zeros((n - 1 - pad_lo,) + sq.shape[1:], F32)])
    cs = np.concatenate([np.zeros((1,) + sq.shape[1:]), np.cumsum(padded, axis=0, dtype=np.float64)])
    win = cs[n:n + c] - cs[:c]
    k = p.k if p.k != 0 else 1.0
    den = (k + p.alpha / n * win) ** p.beta
    return _f(x / np.moveaxis(den, 0, ax))


@op("mvn")
def _mvn(ctx, p, ins):
    x = ins[0].astype(np.float64)
    axes = tuple(range(x.ndim - 3, x.ndim)) if p.acrossChannels else tuple(range(x.ndim - 2, x.ndim))
    axes = tuple(a for a in axes if a >= 0)
    y = x - x.mean(axis=axes, keepdims=True)
    if p.normalizeVariance:
        y = y / np.sqrt((y ** 2).mean(axis=axes, keepdims=True) + p.epsilon)
    return _f(y)


@op("layerNormalization")
def _layer_norm(ctx, p, ins):
    x = ins[0].astype(np.float64)
    shape = tuple(int(s) for s in p.normalizedShape)
    k = len(shape)
    if tuple(x.shape[-k:]) != shape:
        ctx.fail(f"normalizedShape {list(shape)} does not match the input's trailing dimensions "
                 f"{list(x.shape[-k:])}")
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + p.eps)
    gamma = ctx.weight("gamma", optional=True)
    beta = ctx.weight("beta", optional=True)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return _f(y)
