"""Matrix kernels: ``innerProduct``, ``batchedMatmul``, ``embedding``, ``embeddingND``."""

from __future__ import annotations

import numpy as np

from ._base import _f, _ints, _zeros, op


@op("innerProduct")
def _inner_product(ctx, p, ins):
    x = _f(ins[0])
    cin, cout = int(p.inputChannels), int(p.outputChannels)
    r = x.ndim
    if r == 1:
        mat, out_shape = x.reshape(1, -1), (cout,)
    elif r == 2:
        mat, out_shape = x, (x.shape[0], cout)
    elif r == 3:
        mat, out_shape = x.reshape(-1, x.shape[2]), (x.shape[0], x.shape[1], cout)
    elif r == 4:
        mat, out_shape = x.reshape(x.shape[0], -1), (x.shape[0], cout, 1, 1)
    elif r == 5:
        mat, out_shape = x.reshape(x.shape[0] * x.shape[1], -1), (x.shape[0], x.shape[1], cout, 1, 1)
    else:
        ctx.fail(f"input rank {r} is outside 1..5")
    if mat.shape[1] != cin:
        ctx.fail(f"input has {mat.shape[1]} features per row, inputChannels is {cin} "
                 f"(input shape {tuple(x.shape)})")
    if ctx.shape_only:
        return _zeros(out_shape)
    ctx.work(float(mat.shape[0]) * cin * cout)
    y = mat @ ctx.weight("weights").T
    if p.hasBias:
        y = y + ctx.weight("bias")
    return y.reshape(out_shape)


@op("batchedMatmul")
def _batched_matmul(ctx, p, ins):
    a = _f(ins[0])
    if len(ins) >= 2:
        b = _f(ins[1])
        if a.ndim == 1:
            a2 = a[None, :]
        else:
            a2 = np.swapaxes(a, -1, -2) if p.transposeA and a.ndim >= 2 else a
        if b.ndim == 1:
            b2 = b[:, None]
        else:
            b2 = np.swapaxes(b, -1, -2) if p.transposeB else b
        if ctx.shape_only:
            shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
            y = _zeros(shape)
        else:
            batch = np.prod(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), dtype=np.float64)
            ctx.work(batch * a2.shape[-2] * a2.shape[-1] * b2.shape[-1])
            y = np.matmul(a2, b2)
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y
    x1, x2 = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    if p.transposeA and a.ndim >= 2:
        a = np.swapaxes(a, -1, -2)
    if a.shape[-1] != x1:
        ctx.fail(f"last input dimension {a.shape[-1]} does not match weightMatrixFirstDimension {x1}")
    if ctx.shape_only:
        return _zeros(a.shape[:-1] + (x2,))
    ctx.work(float(a.size) * x2)
    y = a @ ctx.weight("weights").T
    if p.hasBias:
        y = y + ctx.weight("bias")
    return y


def _lookup(ctx, p, x, vocab, size, out_shape):
    """Rows ``x`` (indices below ``vocab``) of the [size, vocab] table, plus the bias,
    reshaped to ``out_shape``."""
    idx = _ints(x)
    if idx.size and (idx.min() < 0 or idx.max() >= vocab):
        ctx.fail(f"index {int(idx.max()) if idx.max() >= vocab else int(idx.min())} is outside "
                 f"the vocabulary 0..{vocab - 1}")
    if ctx.shape_only:
        return _zeros(out_shape)
    y = ctx.weight("weights").T[idx.reshape(-1)]
    if p.hasBias:
        y = y + ctx.weight("bias")
    return _f(y).reshape(out_shape)


@op("embedding")
def _embedding(ctx, p, ins):
    x = ins[0]
    n_in, n_out = int(p.inputDim), int(p.outputChannels)
    lead = x.shape[:-3] if x.ndim >= 4 else x.shape[:1]
    return _lookup(ctx, p, x, n_in, n_out, lead + (n_out, 1, 1))


@op("embeddingND")
def _embedding_nd(ctx, p, ins):
    x = ins[0]
    vocab, size = int(p.vocabSize), int(p.embeddingSize)
    lead = x.shape[:-1] if x.ndim >= 2 and x.shape[-1] == 1 else x.shape
    return _lookup(ctx, p, x, vocab, size, lead + (size,))
