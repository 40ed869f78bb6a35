"""Reduction kernels: legacy ``reduce``, the ``reduce*`` ND ops, arg-max/min, ``topK``,
``argSort``, ``cumSum``."""

from __future__ import annotations

import numpy as np

from ._base import F32, OPS, _f, _norm_axis, op


# --------------------------------------------------------------------------- reduce

_RED = {0: "sum", 1: "mean", 2: "prod", 3: "logsum", 4: "sumsquare", 5: "l1", 6: "l2",
        7: "max", 8: "min", 9: "argmax"}


def _logsumexp(x64, axes, keep, eps):
    m = x64.max(axis=axes, keepdims=True)
    y = np.log(np.exp(x64 - m).sum(axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


#: mode -> f(float64 x, axes, keepdims, eps)
_REDUCERS = {
    "sum": lambda x, a, k, e: x.sum(axis=a, keepdims=k),
    "mean": lambda x, a, k, e: x.mean(axis=a, keepdims=k),
    "prod": lambda x, a, k, e: x.prod(axis=a, keepdims=k),
    "logsum": lambda x, a, k, e: np.log(x.sum(axis=a, keepdims=k) + e),
    "sumsquare": lambda x, a, k, e: (x ** 2).sum(axis=a, keepdims=k),
    "l1": lambda x, a, k, e: np.abs(x).sum(axis=a, keepdims=k),
    "l2": lambda x, a, k, e: np.sqrt((x ** 2).sum(axis=a, keepdims=k)),
    "max": lambda x, a, k, e: x.max(axis=a, keepdims=k),
    "min": lambda x, a, k, e: x.min(axis=a, keepdims=k),
    "logsumexp": _logsumexp,
}


def _reduce(x, axes, mode, keep, eps=1e-6):
    fn = _REDUCERS.get(mode)
    if fn is None:
        raise ValueError(mode)
    return _f(fn(x.astype(np.float64), axes, keep, eps))


@op("reduce")
def _reduce_legacy(ctx, p, ins):
    x = _f(ins[0])
    axes = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}[p.axis]
    axes = tuple(a + x.ndim for a in axes if a + x.ndim >= 0)
    mode = _RED[p.mode]
    if mode == "argmax":
        if len(axes) != 1:
            ctx.fail("ARGMAX reduces one axis only (C, H or W)")
        return np.expand_dims(np.argmax(x, axis=axes[0]).astype(F32), axes[0])
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    return _reduce(x, axes, mode, True, eps)


def _make_reduce_nd(mode):
    def run(ctx, p, ins):
        x = _f(ins[0])
        if p.reduceAll or not len(p.axes):
            axes = tuple(range(x.ndim))
        else:
            axes = tuple(sorted(_norm_axis(a, x.ndim) for a in p.axes))
        y = _reduce(x, axes, mode, bool(p.keepDims))
        if y.ndim == 0:
            y = y.reshape(1)
        return y
    return run


for _k, _m in {"reduceL1": "l1", "reduceL2": "l2", "reduceMax": "max", "reduceMin": "min",
               "reduceSum": "sum", "reduceProd": "prod", "reduceMean": "mean",
               "reduceLogSum": "logsum", "reduceSumSquare": "sumsquare",
               "reduceLogSumExp": "logsumexp"}.items():
    OPS[_k] = _make_reduce_nd(_m)


def _arg(ctx, p, ins, fn):
    x = ins[0]
    ax = _norm_axis(p.axis, x.ndim)
    y = fn(x, axis=ax).astype(F32)
    if not p.removeDim:
        y = np.expand_dims(y, ax)
    if y.ndim == 0:
        y = y.reshape(1)
    return y


@op("argMax")
def _argmax(ctx, p, ins):
    return _arg(ctx, p, ins, np.argmax)


@op("argMin")
def _argmin(ctx, p, ins):
    return _arg(ctx, p, ins, np.argmin)


@op("topK")
def _topk(ctx, p, ins):
    x = _f(ins[0])
    ax = _norm_axis(p.axis, x.ndim)
    k = int(ins[1].reshape(-1)[0]) if len(ins) > 1 else int(p.K)
    order = np.argsort(x if p.useBottomK else -x, axis=ax, kind="stable")
    idx = np.take(order, np.arange(k), axis=ax)
    return [_f(np.take_along_axis(x, idx, axis=ax)), idx.astype(F32)]


@op("argSort")
def _argsort(ctx, p, ins):
    x = _f(ins[0])
    ax = _norm_axis(p.axis, x.ndim)
    order = np.argsort(-x if p.descending else x, axis=ax, kind="stable")
    return order.astype(F32)


@op("cumSum")
def _cumsum(ctx, p, ins):
    x = _f(ins[0])
    ax = _norm_axis(int(ins[1].reshape(-1)[0]) if len(ins) > 1 else p.axis, x.ndim)
    if p.reverse:
        x = np.flip(x, ax)
    y = np.cumsum(x, axis=ax, dtype=np.float64)
    if p.excludeFinalSum:
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=ax)),
                            np.take(y, np.arange(y.shape[ax] - 1), axis=ax)], axis=ax)
    if p.reverse:
        y = np.flip(y, ax)
    return _f(y)
