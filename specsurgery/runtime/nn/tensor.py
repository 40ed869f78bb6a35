"""Tensor-building kernels: shapes, fills, broadcasts, ranges, ``where``, one-hot, band
parts, padding, crop, gather/scatter and constants."""

from __future__ import annotations

import math

import numpy as np

from ._base import F32, _f, _ints, _norm_axis, op


@op("getShape")
def _get_shape(ctx, p, ins):
    return np.asarray(ins[0].shape, dtype=F32)


@op("fillLike")
def _fill_like(ctx, p, ins):
    return np.full(ins[0].shape, p.value, dtype=F32)   # no larger than its input


@op("fillStatic")
def _fill_static(ctx, p, ins):
    return np.full(ctx.room(p.targetShape), p.value, dtype=F32)


@op("fillDynamic")
def _fill_dynamic(ctx, p, ins):
    return np.full(ctx.room(_ints(ins[0]).reshape(-1).tolist()), p.value, dtype=F32)


@op("broadcastToLike")
def _bcast_like(ctx, p, ins):
    shape = ctx.room(np.broadcast_shapes(ins[0].shape, ins[1].shape))
    return np.ascontiguousarray(np.broadcast_to(ins[0], shape))


@op("broadcastToStatic")
def _bcast_static(ctx, p, ins):
    shape = ctx.room(np.broadcast_shapes(ins[0].shape, tuple(int(s) for s in p.targetShape)))
    return np.ascontiguousarray(np.broadcast_to(ins[0], shape))


@op("broadcastToDynamic")
def _bcast_dynamic(ctx, p, ins):
    shape = ctx.room(np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1]).reshape(-1).tolist())))
    return np.ascontiguousarray(np.broadcast_to(ins[0], shape))


def _arange(ctx, start, end, step):
    if not all(math.isfinite(v) for v in (start, end, step)) or step == 0:
        ctx.fail(f"range start {start}, end {end}, step {step}: need finite values and a step other than 0")
    ctx.room((max(0, math.ceil((end - start) / step)),))
    return np.arange(start, end, step, dtype=np.float64).astype(F32)


@op("rangeStatic")
def _range_static(ctx, p, ins):
    step = p.stepSizeValue if p.stepSizeValue != 0 else 1.0
    return _arange(ctx, p.startValue, p.endValue, step)


@op("rangeDynamic")
def _range_dynamic(ctx, p, ins):
    end = float(ins[0].reshape(-1)[0])
    start = float(ins[1].reshape(-1)[0]) if len(ins) > 1 else p.startValue
    step = float(ins[2].reshape(-1)[0]) if len(ins) > 2 else (p.stepSizeValue or 1.0)
    return _arange(ctx, start, end, step)


@op("whereBroadcastable")
def _where(ctx, p, ins):
    return np.where(ins[0] != 0, ins[1], ins[2]).astype(F32)


@op("whereNonZero")
def _where_nonzero(ctx, p, ins):
    return np.argwhere(ins[0] != 0).astype(F32)


@op("oneHot")
def _one_hot(ctx, p, ins):
    idx = _ints(ins[0])
    depth = int(ins[1].reshape(-1)[0]) if len(ins) > 1 else int(p.oneHotVectorSize)
    ax = int(p.axis)
    out_rank = idx.ndim + 1
    ax = ax + out_rank if ax < 0 else ax
    ctx.room(idx.shape + (max(depth, 0),))
    hot = (idx[..., None] == np.arange(depth)).astype(F32)
    y = np.where(hot > 0, F32(p.onValue), F32(p.offValue)).astype(F32)
    return np.moveaxis(y, -1, ax)


@op("matrixBandPart")
def _band(ctx, p, ins):
    x = ins[0]
    m, n = x.shape[-2:]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    lo, up = int(p.numLower), int(p.numUpper)
    keep = ((lo < 0) | (i - j <= lo)) & ((up < 0) | (j - i <= up))
    return np.where(keep, x, F32(0)).astype(F32)


@op("lowerTriangular")
def _lower(ctx, p, ins):
    return np.tril(ins[0], int(p.k)).astype(F32)


@op("upperTriangular")
def _upper(ctx, p, ins):
    return np.triu(ins[0], int(p.k)).astype(F32)


@op("constantPad")
def _constant_pad(ctx, p, ins):
    x = ins[0]
    amounts = _ints(ins[1]).reshape(-1).tolist() if len(ins) > 1 else [int(a) for a in p.padAmounts]
    amounts = [0] * (2 * x.ndim - len(amounts)) + amounts
    pads = []
    for i in range(x.ndim):
        b, a = amounts[2 * i], amounts[2 * i + 1]
        if p.padToGivenOutputSizeMode:
            target = max(b, a)
            extra = max(0, target - x.shape[i])
            pads.append((extra, 0) if b else (0, extra))
        else:
            pads.append((b, a))
    ctx.room([d + b + a for d, (b, a) in zip(x.shape, pads)])
    return np.pad(x, pads, constant_values=p.value).astype(F32)


@op("padding")
def _padding(ctx, p, ins):
    x = _f(ins[0])
    b = p.paddingAmounts.borderAmounts
    pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
    pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
    pads = [(0, 0)] * (x.ndim - 2) + [(pt, pb), (pl, pr)]
    ctx.room([d + b + a for d, (b, a) in zip(x.shape, pads)])
    kind = p.WhichOneof("PaddingType")
    if kind == "reflection":
        return np.pad(x, pads, mode="reflect")
    if kind == "replication":
        return np.pad(x, pads, mode="edge")
    return np.pad(x, pads, constant_values=p.constant.value).astype(F32)


@op("crop")
def _crop(ctx, p, ins):
    x = ins[0]
    h, w = x.shape[-2:]
    if len(ins) > 1:
        ref = ins[1]
        oy, ox = (int(p.offset[0]), int(p.offset[1])) if len(p.offset) == 2 else (0, 0)
        return np.ascontiguousarray(x[..., oy: oy + ref.shape[-2], ox: ox + ref.shape[-1]])
    b = p.cropAmounts.borderAmounts
    pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
    pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
    return np.ascontiguousarray(x[..., pt: h - pb, pl: w - pr])


# --------------------------------------------------------------------------- gather / scatter

@op("gather")
def _gather(ctx, p, ins):
    x, idx = ins[0], _ints(ins[1])
    ax = _norm_axis(p.axis, x.ndim)
    idx = np.where(idx < 0, idx + x.shape[ax], idx)
    y = np.take(x, idx, axis=ax)
    return y.reshape(1) if y.ndim == 0 else y


@op("gatherAlongAxis")
def _gather_axis(ctx, p, ins):
    x, idx = ins[0], _ints(ins[1])
    ax = _norm_axis(p.axis, x.ndim)
    idx = np.where(idx < 0, idx + x.shape[ax], idx)
    return np.take_along_axis(x, idx, axis=ax)


@op("gatherND")
def _gather_nd(ctx, p, ins):
    x, idx = ins[0], _ints(ins[1])
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    out = x[tuple(flat[:, i] for i in range(k))]
    return out.reshape(idx.shape[:-1] + x.shape[k:])


def _scatter_apply(mode, dst, vals):
    if mode == 0:
        return vals
    if mode == 1:
        return dst + vals
    if mode == 2:
        return dst - vals
    if mode == 3:
        return dst * vals
    if mode == 4:
        return dst / vals
    if mode == 5:
        return np.maximum(dst, vals)
    return np.minimum(dst, vals)


def _scatter_ins(ins):
    """(a writable copy of the container, the integer indices, the updates)."""
    return _f(ins[0]).copy(), _ints(ins[1]), _f(ins[2])


@op("scatter")
def _scatter(ctx, p, ins):
    x, idx, upd = _scatter_ins(ins)
    ax = _norm_axis(p.axis, x.ndim)
    xm = np.moveaxis(x, ax, 0)
    # updates = container shape with axis ``ax`` replaced by the indices' shape
    k = max(idx.ndim, 1)
    um = np.moveaxis(upd, list(range(ax, ax + k)), list(range(k)))
    flat_idx = np.where(idx < 0, idx + x.shape[ax], idx).reshape(-1)
    um = um.reshape((flat_idx.size,) + xm.shape[1:])
    for i, j in enumerate(flat_idx):
        xm[j] = _scatter_apply(p.mode, xm[j], um[i])
    return np.ascontiguousarray(np.moveaxis(xm, 0, ax))


@op("scatterAlongAxis")
def _scatter_axis(ctx, p, ins):
    x, idx, upd = _scatter_ins(ins)
    ax = _norm_axis(p.axis, x.ndim)
    idx = np.where(idx < 0, idx + x.shape[ax], idx)
    for pos in np.ndindex(idx.shape):
        tgt = list(pos)
        tgt[ax] = idx[pos]
        tgt = tuple(tgt)
        x[tgt] = _scatter_apply(p.mode, x[tgt], upd[pos])
    return x


@op("scatterND")
def _scatter_nd(ctx, p, ins):
    x, idx, upd = _scatter_ins(ins)
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    uf = upd.reshape((flat.shape[0],) + x.shape[k:])
    for i in range(flat.shape[0]):
        t = tuple(flat[i])
        x[t] = _scatter_apply(p.mode, x[t], uf[i])
    return x


# --------------------------------------------------------------------------- constants, embeddings

@op("loadConstant")
def _load_constant(ctx, p, ins):
    v = ctx.weight("data")
    return v.reshape((1, 1) + v.shape) if ctx.rank5 else v.copy()


@op("loadConstantND")
def _load_constant_nd(ctx, p, ins):
    return ctx.weight("data").copy()
