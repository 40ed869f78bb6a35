"""The four compression modes on arrays, and how each is written into a
neuralNetwork ``WeightParams``:

* ``fp16``: ``float16Value`` (IEEE half, little-endian);
* ``linear``: n-bit codes with a scale and bias per tensor or per channel,
  value = code * scale + bias;
* ``palettize``: n-bit codes into a look-up table of 2**nbits entries found by
  the 1-D k-means of :mod:`.kmeans`;
* ``prune``: the smallest magnitudes set to zero (float32), alone or before
  any of the above (zeros stay exact).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ...weights import set_linear, set_lut
from .kmeans import kmeans1d, lut_quantize

#: Largest finite float16 value.
FLOAT16_MAX = 65504.0


def prune_magnitude(values: np.ndarray, sparsity: float) -> np.ndarray:
    """``values`` with the ``sparsity`` fraction of smallest magnitudes set to 0."""
    flat = np.array(values, dtype=np.float32).reshape(-1)
    n_zero = int(round(sparsity * flat.size))
    if n_zero <= 0:
        return flat.reshape(np.shape(values))
    if n_zero >= flat.size:
        return np.zeros_like(flat).reshape(np.shape(values))
    idx = np.argpartition(np.abs(flat), n_zero - 1)[:n_zero]
    flat[idx] = 0.0
    return flat.reshape(np.shape(values))


def linear_quantize(values: np.ndarray, nbits: int, axis: Optional[int] = None,
                    keep_zero: bool = False):
    """(codes uint8 in ``values``' layout, scale, bias) with value ~ code*scale + bias.

    ``axis`` None gives one scale and bias for the tensor; otherwise one per
    index along ``axis``.  ``keep_zero`` puts 0.0 exactly on the grid (for
    pruned tensors).
    """
    return linear_quantize_with_error(values, nbits, axis, keep_zero)[:3]


def linear_quantize_with_error(values, nbits, axis=None, keep_zero=False):
    """:func:`linear_quantize` plus the squared error of the decoded values,
    measured on the way (one pass fewer than decoding again)."""
    arr = np.asarray(values, dtype=np.float32)
    levels = (1 << nbits) - 1
    if axis is None:
        moved = arr.reshape(1, -1)
    else:
        moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    lo = moved.min(axis=1).astype(np.float64)
    hi = moved.max(axis=1).astype(np.float64)
    if keep_zero:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = ((hi - lo) / levels).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    if keep_zero:
        zero_code = np.clip(np.round(-lo / safe), 0, levels).astype(np.float32)
        bias = (-(zero_code * scale)).astype(np.float32)
    else:
        bias = lo.astype(np.float32)
    q = moved - bias[:, None]
    if np.all(safe >= np.finfo(np.float32).tiny):
        q *= (np.float32(1.0) / safe)[:, None]      # one division per row, not per value
    else:
        q /= safe[:, None]                          # subnormal steps: 1/step would overflow
    r = np.rint(q)
    if keep_zero:
        np.clip(r, 0, levels, out=r)   # else q lies in [0, levels] by construction
    codes = r.astype(np.uint8)
    # decoded - original = (code - q) * scale, row by row
    r -= q
    if r.shape[0] == 1:
        flat = r.reshape(-1)
        err = float(np.dot(flat, flat)) * float(scale[0]) ** 2
    else:
        err = float(np.einsum("ij,ij->i", r, r) @ (scale.astype(np.float64) ** 2))
    if axis is None:
        codes = codes.reshape(arr.shape)
    else:
        shape = (arr.shape[axis],) + tuple(d for i, d in enumerate(arr.shape) if i != axis)
        codes = np.moveaxis(codes.reshape(shape), 0, axis)
    return codes, scale, bias, err


def linear_values(codes, scale, bias, axis):
    """code * scale + bias in float32, per tensor or along ``axis``."""
    c = codes.astype(np.float32)
    if axis is None:
        return c * scale[0] + bias[0]
    shape = [1] * c.ndim
    shape[axis] = -1
    return c * scale.reshape(shape) + bias.reshape(shape)


def palettize(values: np.ndarray, nbits: int, *, seed: int = 0, keep_zero: bool = False):
    """(table float32 [2**nbits], codes uint8) by 1-D k-means; ``keep_zero``
    reserves entry 0 for an exact 0.0 (pruned weights stay zero)."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    size = 1 << nbits
    if keep_zero:
        nonzero = flat != 0
        if not nonzero.all():
            table = np.zeros(size, dtype=np.float32)
            codes = np.zeros(flat.size, dtype=np.uint8)
            if nonzero.any() and size > 1:
                res = kmeans1d(flat[nonzero], size - 1, seed=seed)
                table[1:1 + res.k] = res.centroids.astype(np.float32)
                table[1 + res.k:] = table[res.k]
                codes[nonzero] = res.labels.astype(np.uint8) + 1
            return table, codes.reshape(np.shape(values))
    table, codes = lut_quantize(flat, nbits, seed=seed)
    return table, codes.reshape(np.shape(values))


def set_float32_fast(wp, values) -> None:
    """``floatValue`` from a numpy array through its packed wire form (field 1),
    many times faster than ``extend`` with a list of Python floats."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    n, head = len(data), bytearray(b"\x0a")
    while True:
        byte, n = n & 0x7F, n >> 7
        head.append(byte | (0x80 if n else 0))
        if not n:
            break
    wp.Clear()
    if data:
        wp.MergeFromString(bytes(head) + data)


def encode(wp, values, opts, *, axis: Optional[int], pruned: bool, keep: bool):
    """Write ``values`` into ``wp`` in ``opts.mode``'s storage.

    Returns ``(written, err)``: ``written`` is the float32 array Core ML will
    decode (None when not needed: ``keep`` False, or linear without pruning,
    whose rounding error ``err`` is measured on the way)."""
    mode, nbits = opts.mode, opts.nbits
    if mode == "fp16":
        half = np.asarray(values, dtype="<f2")
        wp.Clear()
        wp.float16Value = half.tobytes()
        return (half.astype(np.float32) if keep else None), 0.0
    if mode == "prune":
        set_float32_fast(wp, values)
        return values, 0.0
    if mode == "linear":
        codes, scale, bias, err = linear_quantize_with_error(values, nbits, axis, keep_zero=pruned)
        set_linear(wp, codes.reshape(-1), scale, bias, nbits)
        # Without pruning the rounding error is the whole error; with it, the
        # caller compares the decoded values with the unpruned originals.
        return (linear_values(codes, scale, bias, axis) if pruned else None), err
    table, codes = palettize(values, nbits, seed=opts.seed, keep_zero=pruned)
    set_lut(wp, codes.reshape(-1), table, nbits)
    return (table[codes] if keep else None), 0.0


__all__ = ["FLOAT16_MAX", "prune_magnitude", "linear_quantize", "linear_quantize_with_error",
           "linear_values", "palettize", "encode", "set_float32_fast"]
