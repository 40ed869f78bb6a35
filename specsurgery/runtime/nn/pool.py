"""Pooling kernels: ``pooling``, ``pooling3d``, ``globalPooling3d``."""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ._base import F32, _as4, _f, _hw, _lead_fold, _positive, _zeros, op
from .conv import _pads3, _windows3


_POOL_TYPES = {0: "max", 1: "avg", 2: "l2"}


@op("pooling")
def _pooling(ctx, p, ins):
    x = ins[0]
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    kind = _POOL_TYPES.get(p.type)
    if kind is None:
        ctx.fail(f"pooling type {p.type} is not one of 0 (MAX), 1 (AVERAGE), 2 (L2)")
    if p.globalPooling:
        if ctx.shape_only:
            return _zeros(lead + (c, 1, 1))
        if kind == "max":
            y = x4.max(axis=(2, 3), keepdims=True)
        elif kind == "avg":
            y = x4.mean(axis=(2, 3), keepdims=True, dtype=np.float64)
        else:
            y = np.sqrt((x4.astype(np.float64) ** 2).sum(axis=(2, 3), keepdims=True))
        return _f(y).reshape(lead + (c, 1, 1))
    kh, kw = _positive(ctx, "kernelSize", _hw(p.kernelSize, (3, 3)))
    sh, sw = _positive(ctx, "stride", _hw(p.stride, (1, 1)))
    pad = p.WhichOneof("PoolingPaddingType")
    limits = None
    if pad == "same":
        tl = p.same.asymmetryMode == 1
        ho, pt, pb = K.same_pads(h, kh, sh, tl)
        wo, pl, pr = K.same_pads(w, kw, sw, tl)
    elif pad == "includeLastPixel":
        amounts = list(p.includeLastPixel.paddingAmounts) or [0, 0]
        ph, pw = int(amounts[0]), int(amounts[1]) if len(amounts) > 1 else 0
        pt = pb = ph
        pl = pr = pw
        ho = -(-(h + 2 * ph - kh) // sh) + 1
        wo = -(-(w + 2 * pw - kw) // sw) + 1
        if ph > 0 or pw > 0:
            if (ho - 1) * sh >= h + ph:
                ho -= 1
            if (wo - 1) * sw >= w + pw:
                wo -= 1
        limits = (h + 2 * ph, w + 2 * pw)
    else:
        b = p.valid.paddingAmounts.borderAmounts if pad == "valid" else []
        pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
        pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
        ho = (h + pt + pb - kh) // sh + 1
        wo = (w + pl + pr - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        ctx.fail(f"output would be empty ({ho}x{wo}) for input {h}x{w}")
    ctx.room(lead + (c, ho, wo))
    ctx.room((x4.shape[0], c, h + max(pt, 0) + max(pb, 0), w + max(pl, 0) + max(pr, 0)), "padded input")
    if ctx.shape_only:
        return _zeros(lead + (c, ho, wo))
    ctx.work(float(x4.shape[0]) * c * ho * wo * kh * kw)
    y = K.pool2d(_f(x4), kind, (kh, kw), (sh, sw), (pt, pb, pl, pr), bool(p.avgPoolExcludePadding),
                 (ho, wo), limits)
    return y.reshape(lead + (c, ho, wo))


@op("pooling3d")
def _pool3d(ctx, p, ins):
    x = _f(ins[0])
    x5, lead = _lead_fold(x, 4)
    k = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    s = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    pads, outs = _pads3(p, x5.shape[2:], k, s)
    if min(outs) <= 0:
        ctx.fail(f"output would be empty ({outs}) for input {tuple(x5.shape[2:])}")
    out_shape = ctx.room(lead + x5.shape[1:2] + tuple(outs))
    if ctx.shape_only:
        return _zeros(out_shape)
    ctx.work(np.prod(out_shape, dtype=np.float64) * np.prod(k, dtype=np.float64))
    is_max = p.type == 0
    xp = np.pad(x5, [(0, 0), (0, 0)] + pads, constant_values=-np.inf if is_max else 0.0)
    acc = None
    for _, view in _windows3(xp, k, s, (1, 1, 1), outs):
        acc = view.copy() if acc is None else (np.maximum(acc, view) if is_max else acc + view)
    if not is_max:
        if p.countExcludePadding:
            ones = np.pad(np.ones(x5.shape[2:], F32), pads)[None, None]
            cnt = None
            for _, view in _windows3(ones, k, s, (1, 1, 1), outs):
                cnt = view.copy() if cnt is None else cnt + view
            acc = acc / np.maximum(cnt, 1)
        else:
            acc = acc / float(k[0] * k[1] * k[2])
    return acc.astype(F32).reshape(out_shape)


@op("globalPooling3d")
def _global_pool3d(ctx, p, ins):
    x = _f(ins[0])
    axes = (-3, -2, -1)
    return _f(x.max(axis=axes, keepdims=True) if p.type == 0 else x.mean(axis=axes, keepdims=True))
