"""Shape kernels: reshape, flatten, permute/transpose, concat/split, slices, tile, stack,
reverse, sliding windows."""

from __future__ import annotations

import numpy as np

from ._base import _as4, _axis_c, _f, _ints, _norm_axis, _positive, _zeros, op


# --------------------------------------------------------------------------- shape layers

def _contig(ctx, y):
    """Contiguous copy, except in shape mode (zero views need no data)."""
    return y if ctx.shape_only else np.ascontiguousarray(y)


@op("flatten")
def _flatten(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    if p.mode == 1:   # CHANNEL_LAST
        x4 = x4.transpose(0, 2, 3, 1)
    return _contig(ctx, x4).reshape(lead + (-1, 1, 1))


@op("reshape")
def _reshape_legacy(ctx, p, ins):
    x = _f(ins[0])
    x5 = x.reshape((1,) * (5 - x.ndim) + x.shape) if x.ndim < 5 else x
    s, b = x5.shape[0], x5.shape[1]
    t = [int(v) for v in p.targetShape]
    if len(t) == 3:
        target = (s, b) + tuple(t)
    elif len(t) == 4:
        target = (t[0], b) + tuple(t[1:])
    else:
        ctx.fail(f"targetShape must have 3 or 4 values, it has {len(t)}")
    if p.mode == 1:   # CHANNEL_LAST: flatten H,W,C order, reshape as [S,B,H,W,C], permute back
        src = x5.transpose(0, 1, 3, 4, 2).reshape(target[0], target[1], -1)
        y = src.reshape(target[0], target[1], target[3], target[4], target[2]).transpose(0, 1, 4, 2, 3)
    else:
        y = x5.reshape(target)
    if x.ndim < 5 and not ctx.rank5:
        y = y.reshape(y.shape[5 - x.ndim:]) if all(d == 1 for d in y.shape[:5 - x.ndim]) else y
    return _contig(ctx, y)


@op("permute")
def _permute(ctx, p, ins):
    x = _f(ins[0])
    axes = [int(a) for a in p.axis] or [0, 1, 2, 3]
    pad = 5 - x.ndim
    x5 = x.reshape((1,) * pad + x.shape) if pad > 0 else x
    # axis indexes [S, C, H, W]; batch (axis 1) stays in place
    src = [0, 2, 3, 4]
    perm5 = [src[axes[0]], 1, src[axes[1]], src[axes[2]], src[axes[3]]]
    y = _contig(ctx, x5.transpose(perm5))
    if pad > 0 and all(d == 1 for d in y.shape[:pad]):
        y = y.reshape(y.shape[pad:])
    return y


def _concat_any(ctx, ins, axis):
    if ctx.shape_only:
        shape = list(ins[0].shape)
        a = _norm_axis(axis, len(shape))
        for other in ins[1:]:
            if other.ndim != len(shape) or any(d != e for i, (d, e) in enumerate(zip(shape, other.shape))
                                               if i != a):
                raise ValueError("concatenated inputs differ outside the concatenation axis: "
                                 + ", ".join(str(tuple(i.shape)) for i in ins))
            shape[a] += other.shape[a]
        return _zeros(shape)
    return np.concatenate([_f(a) for a in ins], axis=axis)


@op("concat")
def _concat(ctx, p, ins):
    axis = -5 if p.sequenceConcat else _axis_c(ins[0])
    return _concat_any(ctx, ins, axis)


@op("split")
def _split(ctx, p, ins):
    x = ins[0]
    ax = _axis_c(x)
    n = int(p.nOutputs)
    if x.shape[ax] % n:
        ctx.fail(f"{x.shape[ax]} channels do not split into {n} equal parts")
    return list(np.split(x, n, axis=ax))


@op("slice")
def _slice_legacy(ctx, p, ins):
    x = ins[0]
    ax = {0: -3, 1: -2, 2: -1}[p.axis]
    # python slicing semantics, as the proto and coremltools' numpy reference state
    # ([startIndex, endIndex), negative indexes count from the end)
    stride = int(p.stride) or 1
    sl = [slice(None)] * x.ndim
    sl[ax] = slice(int(p.startIndex), int(p.endIndex), stride)
    return np.ascontiguousarray(x[tuple(sl)])


@op("sequenceRepeat")
def _sequence_repeat(ctx, p, ins):
    x = ins[0]
    n = int(p.nRepetitions) or 1
    ctx.room((n,) + x.shape)
    return np.concatenate([x] * n, axis=-5 if x.ndim >= 5 else 0)


@op("reorganizeData")
def _reorganize(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    (bs,) = _positive(ctx, "blockSize", [p.blockSize])
    if p.mode == 0:   # SPACE_TO_DEPTH
        y = x4.reshape(n, c, h // bs, bs, w // bs, bs).transpose(0, 3, 5, 1, 2, 4)
        y = y.reshape(n, c * bs * bs, h // bs, w // bs)
    elif p.mode == 1:   # DEPTH_TO_SPACE
        y = x4.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
        y = y.reshape(n, c // (bs * bs), h * bs, w * bs)
    else:               # PIXEL_SHUFFLE
        y = x4.reshape(n, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
        y = y.reshape(n, c // (bs * bs), h * bs, w * bs)
    return _contig(ctx, y).reshape(lead + y.shape[1:])


def _resolve_shape(target, total, src_shape=None, zero_copies=False):
    t = [int(v) for v in target]
    if zero_copies and src_shape is not None:
        t = [src_shape[i] if v == 0 else v for i, v in enumerate(t)]
    if t.count(-1) > 1:
        raise ValueError(f"target shape {t} has more than one -1")
    if -1 in t:
        known = int(np.prod([v for v in t if v != -1]))
        t[t.index(-1)] = total // known if known else 0
    if int(np.prod(t)) != total:
        raise ValueError(f"cannot reshape {total} elements to {t}")
    return tuple(t)


@op("reshapeStatic")
def _reshape_static(ctx, p, ins):
    x = ins[0]
    return x.reshape(_resolve_shape(p.targetShape, x.size))


@op("reshapeDynamic")
def _reshape_dynamic(ctx, p, ins):
    x = ins[0]
    return x.reshape(_resolve_shape(_ints(ins[1]).reshape(-1), x.size))


@op("reshapeLike")
def _reshape_like(ctx, p, ins):
    return ins[0].reshape(ins[1].shape)


@op("rankPreservingReshape")
def _rank_preserving_reshape(ctx, p, ins):
    x = ins[0]
    return x.reshape(_resolve_shape(p.targetShape, x.size, x.shape, zero_copies=True))


@op("flattenTo2D")
def _flatten2d(ctx, p, ins):
    x = ins[0]
    ax = int(p.axis)
    if ax < 0:
        ax += x.ndim
    a = int(np.prod(x.shape[:ax]))
    return x.reshape(a, -1 if a else 0)


@op("expandDims")
def _expand_dims(ctx, p, ins):
    x = ins[0]
    out_rank = x.ndim + len(p.axes)
    axes = sorted(a + out_rank if a < 0 else a for a in p.axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return x.reshape(shape)


@op("squeeze")
def _squeeze(ctx, p, ins):
    x = ins[0]
    if p.squeezeAll or not len(p.axes):
        y = np.squeeze(x)
    else:
        axes = tuple(_norm_axis(a, x.ndim) for a in p.axes)
        wide = [a for a in axes if x.shape[a] != 1]
        if wide:
            ctx.fail(f"cannot squeeze axes {wide} of shape {tuple(x.shape)} (their size is not 1)")
        y = np.squeeze(x, axis=axes)
    return y.reshape(1) if y.ndim == 0 else y


@op("transpose")
def _transpose(ctx, p, ins):
    x = ins[0]
    axes = [int(a) for a in p.axes] or list(reversed(range(x.ndim)))
    return _contig(ctx, np.transpose(x, axes))


@op("concatND")
def _concat_nd(ctx, p, ins):
    ax = int(p.axis)
    if p.interleave:
        stacked = np.stack([_f(a) for a in ins], axis=_norm_axis(ax, ins[0].ndim) + 1)
        shape = list(ins[0].shape)
        a = _norm_axis(ax, ins[0].ndim)
        shape[a] *= len(ins)
        return stacked.reshape(shape)
    return _concat_any(ctx, ins, ax)


@op("splitND")
def _split_nd(ctx, p, ins):
    x = ins[0]
    ax = _norm_axis(p.axis, x.ndim)
    if len(p.splitSizes):
        cuts = np.cumsum([int(s) for s in p.splitSizes])[:-1]
        return list(np.split(x, cuts, axis=ax))
    n = int(p.numSplits)
    return list(np.split(x, n, axis=ax))


def _strided_slice(x, begin, end, strides, bmask, emask, smask):
    sl = []
    for i in range(x.ndim):
        st = int(strides[i]) if i < len(strides) and strides[i] else 1
        b = None if (i < len(bmask) and bmask[i]) else int(begin[i]) if i < len(begin) else None
        e = None if (i < len(emask) and emask[i]) else int(end[i]) if i < len(end) else None
        if i < len(smask) and smask[i]:
            bb = b if b is not None else 0
            sl.append(bb)
            continue
        sl.append(slice(b, e, st))
    y = x[tuple(sl)]
    return np.ascontiguousarray(y) if isinstance(y, np.ndarray) else np.asarray([y], dtype=x.dtype)


@op("sliceStatic")
def _slice_static(ctx, p, ins):
    x = ins[0]
    y = _strided_slice(x, list(p.beginIds), list(p.endIds), list(p.strides), list(p.beginMasks),
                       list(p.endMasks), list(p.squeezeMasks))
    return y.reshape(1) if y.ndim == 0 else y


@op("sliceDynamic")
def _slice_dynamic(ctx, p, ins):
    x = ins[0]
    begin = _ints(ins[1]).reshape(-1).tolist()
    end = _ints(ins[2]).reshape(-1).tolist() if len(ins) > 2 else list(p.endIds)
    strides = _ints(ins[3]).reshape(-1).tolist() if len(ins) > 3 else list(p.strides)
    bmask = (ins[4].reshape(-1) != 0).tolist() if len(ins) > 4 else list(p.beginMasks)
    emask = (ins[5].reshape(-1) != 0).tolist() if len(ins) > 5 else list(p.endMasks)
    smask = (ins[6].reshape(-1) != 0).tolist() if len(ins) > 6 else list(p.squeezeMasks)
    y = _strided_slice(x, begin, end, strides, bmask, emask, smask)
    return y.reshape(1) if y.ndim == 0 else y


@op("sliceBySize")
def _slice_by_size(ctx, p, ins):
    x = ins[0]
    begin = int(ins[1].reshape(-1)[0])
    ax = _norm_axis(p.axis, x.ndim)
    size = int(p.size)
    if size < 0:
        size = x.shape[ax] - begin
    return np.take(x, np.arange(begin, begin + size), axis=ax)


@op("tile")
def _tile(ctx, p, ins):
    x = ins[0]
    reps = _ints(ins[1]).reshape(-1).tolist() if len(ins) > 1 else [int(r) for r in p.reps]
    reps = [1] * (x.ndim - len(reps)) + reps
    ctx.room([d * r for d, r in zip((1,) * (len(reps) - x.ndim) + x.shape, reps)])
    return np.tile(x, reps)


@op("stack")
def _stack(ctx, p, ins):
    return np.stack([_f(a) for a in ins], axis=int(p.axis))


@op("reverse")
def _reverse(ctx, p, ins):
    x = ins[0]
    axes = tuple(i for i, r in enumerate(p.reverseDim) if r)
    return np.ascontiguousarray(np.flip(x, axes)) if axes else x


@op("reverseSeq")
def _reverse_seq(ctx, p, ins):
    x = ins[0].copy()
    lengths = _ints(ins[1]).reshape(-1)
    ba = _norm_axis(p.batchAxis, x.ndim)
    sa = _norm_axis(p.sequenceAxis, x.ndim)
    for b in range(x.shape[ba]):
        n = int(lengths[b])
        idx = [slice(None)] * x.ndim
        idx[ba] = b
        idx[sa] = slice(0, n)
        src = list(idx)
        x[tuple(idx)] = np.flip(ins[0][tuple(src)], axis=sa - (1 if ba < sa else 0))
    return x


@op("slidingWindows")
def _sliding(ctx, p, ins):
    x = ins[0]
    ax = _norm_axis(p.axis, x.ndim)
    (size,) = _positive(ctx, "windowSize", [p.windowSize])
    step = int(p.step) or 1
    if step < 0:
        ctx.fail(f"step {step} must be positive")
    n = max(0, (x.shape[ax] - size) // step + 1)
    ctx.room(x.shape[:ax] + (n, size) + x.shape[ax + 1:])
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=ax)
    win = np.take(win, np.arange(0, win.shape[ax], step), axis=ax)
    return np.ascontiguousarray(np.moveaxis(win, -1, ax + 1))
