"""A numpy interpreter for ML Programs (MIL).

``predict_program(spec, package, inputs, function=None)`` runs one function of
an ML Program op by op.  ``package`` (an :class:`~specsurgery.io.MLPackage`)
supplies the weight file for blob-stored consts.

Precision: every value is computed in float32 (float64 for FLOAT64 values).
A value the program types as FLOAT16 is rounded to float16 after the op that
produces it (and stored weights are float16 already), so an fp16 program sees
fp16 storage everywhere, as on device, while each op's arithmetic is float32.
Outputs come back in the dtype the model description declares.

Image inputs: an ML Program's image input carries no preprocessing message;
ct.convert writes the scale and bias as ``mul``/``add`` ops in the program.
An image is turned into the tensor the function takes ([1, C, H, W] float32,
RGB/BGR per the description, 0..255) and the program does the rest.

An op this interpreter does not know raises :class:`UnsupportedError` naming
every unknown op type with its count, before anything runs.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Optional

import numpy as np

from .._proto import MIL_pb2
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError
from .. import spec as _spec
from ..budget import BudgetError, check_iterations, check_work
from ..budget import check as check_shape
from ..mil import program as P
from . import _kernels as K
from ._inputs import check_array_shape, check_image_size

Array = np.ndarray


#: multiply-adds of the current predict_program (budget.check_work)
_MACS = [0.0]


class _Ctx:
    """What an op implementation may look at: its resolved arguments and outputs."""

    __slots__ = ("args", "op", "env", "package", "outputs")

    def __init__(self, args, op, env, package):
        self.args = args
        self.op = op
        self.env = env
        self.package = package

    def __getitem__(self, key):
        return self.args[key]

    def get(self, key, default=None):
        v = self.args.get(key)
        return default if v is None else v

    def scalar(self, key, default=None):
        v = self.args.get(key)
        if v is None:
            return default
        v = np.asarray(v)
        return v.item() if v.size == 1 else v

    def ints(self, key, default=None):
        v = self.args.get(key)
        if v is None:
            return default
        return [int(x) for x in np.asarray(v).reshape(-1)]

    def room(self, shape, what: str = "output") -> list:
        """Refuse an array of ``shape`` (a size the op's arguments set) over the memory
        budget, before it is allocated; returns the shape as ints."""
        shape = [int(s) for s in shape]
        check_shape(shape, 4, what=f"op {P.op_name(self.op)!r} ({self.op.type}) {what}")
        return shape

    def work(self, macs) -> None:
        """Count ``macs`` multiply-adds against the prediction's work cap."""
        _MACS[0] += float(macs)
        check_work(_MACS[0], what=f"op {P.op_name(self.op)!r} ({self.op.type})")

    def positive(self, key, values) -> list:
        """``values`` of argument ``key`` (strides, dilations, factors), refused when one is <= 0."""
        if values is not None and any(v <= 0 for v in values):
            raise SpecSurgeryError(f"op {P.op_name(self.op)!r} ({self.op.type}): {key} {list(values)} "
                                   "must be positive in every entry")
        return values


OPS: dict[str, Callable]
OPS, op = K.registry()


def _f(x):
    """Float array for arithmetic (float32 unless already float64)."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- elementwise

_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "floor_div": np.floor_divide, "mod": np.mod,
}
_COMPARE = {
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def _binary(fn):
    def run(c):
        x, y = np.asarray(c["x"]), np.asarray(c["y"])
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = _f(x), _f(y)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = fn(x, y)
        if fn is np.floor_divide and out.dtype.kind == "f":
            out = np.floor(out)
        return out
    return run


for _n, _fn in _BINARY.items():
    OPS[_n] = _binary(_fn)
for _n, _fn in _COMPARE.items():
    OPS[_n] = (lambda fn: lambda c: fn(c["x"], c["y"]))(_fn)
OPS["logical_not"] = lambda c: np.logical_not(c["x"])


def _unary(fn):
    def run(c):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(_f(c["x"]))
    return run


def _erf(x):
    # Abramowitz-Stegun 7.1.26 is too coarse for rtol 1e-4; use math.erf vectorised.
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


_UNARY = {
    "abs": np.abs, "acos": np.arccos, "asin": np.arcsin, "atan": np.arctan, "atanh": np.arctanh,
    "ceil": np.ceil, "cos": np.cos, "cosh": np.cosh, "exp": np.exp, "exp2": np.exp2,
    "floor": np.floor, "round": np.round, "sign": np.sign, "sin": np.sin, "sinh": np.sinh,
    "sqrt": np.sqrt, "square": np.square, "tan": np.tan, "tanh": np.tanh, "erf": _erf,
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x).astype(x.dtype),
    "atan2": None,
}
for _n, _fn in _UNARY.items():
    if _fn is not None:
        OPS[_n] = _unary(_fn)


@op("log")
def _log(c):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_f(c["x"]) + c.scalar("epsilon", 0.0))


@op("rsqrt")
def _rsqrt(c):
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(_f(c["x"]) + c.scalar("epsilon", 1e-12))


@op("inverse")
def _inverse(c):
    with np.errstate(divide="ignore"):
        return 1.0 / (_f(c["x"]) + c.scalar("epsilon", 1e-4))


@op("gelu")
def _gelu(c):
    x = _f(c["x"])
    mode = str(c.scalar("mode", "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2).astype(x.dtype)))


@op("leaky_relu")
def _leaky(c):
    x = _f(c["x"])
    return np.where(x >= 0, x, x * c.scalar("alpha", 0.01))


@op("elu")
def _elu(c):
    x = _f(c["x"])
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, c.scalar("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))


@op("prelu")
def _prelu(c):
    x = _f(c["x"])
    alpha = _f(c["alpha"]).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * alpha)


@op("hard_sigmoid", "sigmoid_hard")
def _hsig(c):
    return np.clip(c.scalar("alpha", 0.2) * _f(c["x"]) + c.scalar("beta", 0.5), 0, 1)


@op("clamped_relu")
def _crelu(c):
    x = _f(c["x"])
    return np.minimum(np.where(x >= 0, x, x * c.scalar("alpha")), c.scalar("beta"))


@op("scaled_tanh")
def _stanh(c):
    return c.scalar("alpha", 1.0) * np.tanh(c.scalar("beta", 1.0) * _f(c["x"]))


@op("threshold")
def _threshold(c):
    return np.maximum(_f(c["x"]), c.scalar("alpha"))


@op("thresholded_relu")
def _trelu(c):
    x = _f(c["x"])
    return np.where(x > c.scalar("alpha", 1.0), x, 0).astype(x.dtype)


@op("clip")
def _clip(c):
    return np.clip(_f(c["x"]), c.scalar("alpha"), c.scalar("beta"))


@op("softmax")
def _softmax(c):
    x = _f(c["x"])
    axis = int(c.scalar("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@op("select")
def _select(c):
    return np.where(c["cond"], c["a"], c["b"])


@op("identity")
def _identity(c):
    return c["x"]


# --------------------------------------------------------------------------- linear algebra

@op("linear")
def _linear(c):
    x, w = _f(c["x"]), _f(c["weight"])
    c.work(float(x.size) / max(x.shape[-1], 1) * w.size if x.ndim else w.size)
    out = x @ w.T
    if c.get("bias") is not None:
        out = out + _f(c["bias"])
    return out


@op("matmul")
def _matmul(c):
    x, y = _f(c["x"]), _f(c["y"])
    if c.scalar("transpose_x", False) and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if c.scalar("transpose_y", False) and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    if x.ndim >= 2 and y.ndim >= 2:
        batch = np.prod(np.broadcast_shapes(x.shape[:-2], y.shape[:-2]), dtype=np.float64)
        c.work(batch * x.shape[-2] * x.shape[-1] * y.shape[-1])
    return np.matmul(x, y)


@op("einsum")
def _einsum(c):
    vals = c["values"]
    return np.einsum(str(c.scalar("equation")), *[_f(v) for v in vals])


# --------------------------------------------------------------------------- normalisation

def _bshape(v, x, axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    return _f(v).reshape(shape)


def _channel_affine(c, out, x):
    """The optional per-channel ``gamma`` scale and ``beta`` shift of the norm ops."""
    if c.get("gamma") is not None:
        out = out * _bshape(c["gamma"], x)
    if c.get("beta") is not None:
        out = out + _bshape(c["beta"], x)
    return out


@op("batch_norm")
def _batch_norm(c):
    x = _f(c["x"])
    eps = c.scalar("epsilon", 1e-5)
    out = (x - _bshape(c["mean"], x)) / np.sqrt(_bshape(c["variance"], x) + eps)
    return _channel_affine(c, out, x)


@op("instance_norm")
def _instance_norm(c):
    x = _f(c["x"])
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + c.scalar("epsilon", 1e-5))
    return _channel_affine(c, out, x)


@op("layer_norm")
def _layer_norm(c):
    x = _f(c["x"])
    axes = c.ints("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + c.scalar("epsilon", 1e-5))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if c.get("gamma") is not None:
        out = out * _f(c["gamma"]).reshape(shape)
    if c.get("beta") is not None:
        out = out + _f(c["beta"]).reshape(shape)
    return out


@op("l2_norm")
def _l2_norm(c):
    x = _f(c["x"])
    axes = tuple(range(1, x.ndim)) if x.ndim > 1 else (0,)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    return x / np.maximum(norm, c.scalar("epsilon", 1e-6))


@op("local_response_norm")
def _lrn(c):
    x = _f(c["x"])
    size = int(c.scalar("size"))
    alpha, beta, k = c.scalar("alpha", 1e-4), c.scalar("beta", 0.75), c.scalar("k", 1.0)
    sq = np.pad(x * x, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    acc = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * acc) ** beta


# --------------------------------------------------------------------------- convolution and pooling

def _pads(c, in_sizes, kernel, strides, dilations, ceil_mode=False):
    """[(begin, end)] per spatial axis for an op's pad_type/pad."""
    pad_type = str(c.scalar("pad_type", "valid")).lower()
    n = len(in_sizes)
    if pad_type == "custom":
        pad = c.ints("pad", [0] * 2 * n)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for i in range(n):
            eff = (kernel[i] - 1) * dilations[i] + 1
            total = max((math.ceil(in_sizes[i] / strides[i]) - 1) * strides[i] + eff - in_sizes[i], 0)
            small = total // 2
            out.append((small, total - small) if pad_type == "same" else (total - small, small))
        return out
    return [(0, 0)] * n


def _windows(xp, kernel, strides, dilations):
    """(N, C, *out_spatial, *kernel) view of padded input ``xp``."""
    nsp = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nsp)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, d) for d in dilations)
    return win[sl]


@op("conv")
def _conv(c):
    x, w = _f(c["x"]), _f(c["weight"])
    nsp = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = c.positive("strides", c.ints("strides", [1] * nsp))
    dilations = c.positive("dilations", c.ints("dilations", [1] * nsp))
    groups = int(c.scalar("groups", 1))
    pads = _pads(c, x.shape[2:], kernel, strides, dilations)
    c.room(list(x.shape[:2]) + [s + a + b for s, (a, b) in zip(x.shape[2:], pads)], "padded input")
    out_sp = [max(0, (s + a + b - (k - 1) * d - 1) // st + 1)
              for s, (a, b), k, d, st in zip(x.shape[2:], pads, kernel, dilations, strides)]
    c.work(float(x.shape[0]) * w.shape[0] * np.prod(out_sp, dtype=np.float64) * np.prod(w.shape[1:], dtype=np.float64))
    if nsp == 2 and x.dtype == np.float32:
        # the 2-D case goes through the neuralNetwork runtime's banded im2col kernel
        try:
            from ._kernels import conv2d
        except ImportError:  # pragma: no cover - kernels not in this build
            conv2d = None
        if conv2d is not None:
            bias = c.get("bias")
            return conv2d(x, w, None if bias is None else _f(bias), strides, dilations,
                          (pads[0][0], pads[0][1], pads[1][0], pads[1][1]), groups)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    win = _windows(xp, kernel, strides, dilations)  # N, C, *out, *k
    n, cin = x.shape[:2]
    cout = w.shape[0]
    out_sp = win.shape[2:2 + nsp]
    cg, og = cin // groups, cout // groups
    if groups == 1:
        cols = np.moveaxis(win, 1, 1 + nsp)  # N, *out, C, *k
        out = np.tensordot(cols, w, axes=(list(range(1 + nsp, 2 + 2 * nsp)), list(range(1, 2 + nsp))))
        out = np.moveaxis(out, -1, 1)
    elif cg == 1 and og == 1:  # depthwise
        flat = win.reshape(n, cin, int(np.prod(out_sp)), int(np.prod(kernel)))
        out = np.einsum("ncpk,ck->ncp", flat, w.reshape(cin, -1), optimize=True).reshape((n, cin) + tuple(out_sp))
    else:
        parts = []
        for g in range(groups):
            wg = w[g * og:(g + 1) * og]
            cols = np.moveaxis(win[:, g * cg:(g + 1) * cg], 1, 1 + nsp)
            o = np.tensordot(cols, wg, axes=(list(range(1 + nsp, 2 + 2 * nsp)), list(range(1, 2 + nsp))))
            parts.append(np.moveaxis(o, -1, 1))
        out = np.concatenate(parts, axis=1)
    if c.get("bias") is not None:
        out = out + _bshape(c["bias"], out)
    return np.ascontiguousarray(out)


@op("conv_transpose")
def _conv_transpose(c):
    x, w = _f(c["x"]), _f(c["weight"])  # w: [Cin, Cout/groups, *k]
    nsp = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = c.positive("strides", c.ints("strides", [1] * nsp))
    dilations = c.positive("dilations", c.ints("dilations", [1] * nsp))
    groups = int(c.scalar("groups", 1))
    n, cin = x.shape[:2]
    cg = cin // groups
    og = w.shape[1]
    in_sp = x.shape[2:]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sp, strides, kernel, dilations)]
    c.room([n, og * groups] + full)
    out = np.zeros((n, og * groups) + tuple(full), dtype=x.dtype)
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        wg = w[g * cg:(g + 1) * cg]  # cg, og, *k
        for kidx in np.ndindex(*kernel):
            contrib = np.tensordot(xg, wg[(slice(None), slice(None)) + kidx], axes=([1], [0]))  # n, *in, og
            contrib = np.moveaxis(contrib, -1, 1)
            sl = (slice(None), slice(g * og, (g + 1) * og)) + tuple(
                slice(k * d, k * d + (i - 1) * s + 1, s) for k, d, i, s in zip(kidx, dilations, in_sp, strides))
            out[sl] += contrib
    pad_type = str(c.scalar("pad_type", "valid")).lower()
    output_shape = c.ints("output_shape")
    if pad_type == "custom":
        pad = c.ints("pad", [0] * 2 * nsp)
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(nsp)]
    elif pad_type in ("same", "same_lower"):
        pads = []
        for i in range(nsp):
            total = max(full[i] - in_sp[i] * strides[i], 0)
            small = total // 2
            pads.append((small, total - small) if pad_type == "same" else (total - small, small))
    else:
        pads = [(0, 0)] * nsp
    sl = (slice(None), slice(None)) + tuple(slice(b, f - e) for (b, e), f in zip(pads, full))
    out = out[sl]
    if output_shape is not None and len(output_shape) == x.ndim:
        target = output_shape[2:]
        padw = [(0, 0), (0, 0)] + [(0, max(t - s, 0)) for t, s in zip(target, out.shape[2:])]
        out = np.pad(out, padw)[(slice(None), slice(None)) + tuple(slice(0, t) for t in target)]
    if c.get("bias") is not None:
        out = out + _bshape(c["bias"], out)
    return out


def _pool(c, kind):
    x = _f(c["x"])
    nsp = x.ndim - 2
    kernel = c.positive("kernel_sizes", c.ints("kernel_sizes"))
    strides = c.positive("strides", c.ints("strides", [1] * nsp))
    dil = [1] * nsp
    in_sp = x.shape[2:]
    pads = _pads(c, in_sp, kernel, strides, dil)
    c.room(list(x.shape[:2]) + [s + a + b for s, (a, b) in zip(in_sp, pads)], "padded input")
    if c.scalar("ceil_mode", False):
        pads = list(pads)
        for i in range(nsp):
            size = in_sp[i] + pads[i][0] + pads[i][1]
            out_len = math.ceil((size - kernel[i]) / strides[i]) + 1
            # the last window must start inside the input or the begin padding
            if (out_len - 1) * strides[i] >= in_sp[i] + pads[i][0]:
                out_len -= 1
            extra = (out_len - 1) * strides[i] + kernel[i] - size
            pads[i] = (pads[i][0], pads[i][1] + max(extra, 0))
    padw = [(0, 0), (0, 0)] + list(pads)
    if kind == "max":
        xp = np.pad(x, padw, constant_values=-np.inf)
        return _windows(xp, kernel, strides, dil).max(axis=tuple(range(-nsp, 0)))
    if kind == "l2":
        xp = np.pad(x * x, padw)
        return np.sqrt(_windows(xp, kernel, strides, dil).sum(axis=tuple(range(-nsp, 0))))
    xp = np.pad(x, padw)
    sums = _windows(xp, kernel, strides, dil).sum(axis=tuple(range(-nsp, 0)))
    if c.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1) + tuple(in_sp), dtype=x.dtype), padw)
        counts = _windows(ones, kernel, strides, dil).sum(axis=tuple(range(-nsp, 0)))
        return sums / counts
    return sums / float(np.prod(kernel))


OPS["avg_pool"] = lambda c: _pool(c, "avg")
OPS["max_pool"] = lambda c: _pool(c, "max")
OPS["l2_pool"] = lambda c: _pool(c, "l2")


# --------------------------------------------------------------------------- resampling

def _linear_coords(out_len, in_len, scale, align_corners, half_pixel):
    d = np.arange(out_len, dtype=np.float64)
    if align_corners:
        src = d * ((in_len - 1) / (out_len - 1)) if out_len > 1 else np.zeros_like(d)
    elif half_pixel:
        src = np.maximum((d + 0.5) / scale - 0.5, 0)
    else:
        src = d / scale
    src = np.clip(src, 0, in_len - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_len - 1)
    frac = (src - lo).astype(np.float32)
    return lo, hi, frac


def _bilinear(x, out_h, out_w, sh, sw, align_corners, half_pixel):
    h, w = x.shape[-2:]
    lo, hi, fr = _linear_coords(out_h, h, sh, align_corners, half_pixel)
    x = x[..., lo, :] * (1 - fr)[:, None] + x[..., hi, :] * fr[:, None]
    lo, hi, fr = _linear_coords(out_w, w, sw, align_corners, half_pixel)
    return x[..., lo] * (1 - fr) + x[..., hi] * fr


@op("upsample_bilinear")
def _upsample_bilinear(c):
    x = _f(c["x"])
    sh, sw = float(c.scalar("scale_factor_height", 1)), float(c.scalar("scale_factor_width", 1))
    out_h, out_w = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    c.room(list(x.shape[:-2]) + [out_h, out_w])
    return _bilinear(x, out_h, out_w, sh, sw, bool(c.scalar("align_corners", True)),
                     bool(c.scalar("half_pixel_centers", not c.scalar("align_corners", True))))


@op("resize_bilinear")
def _resize_bilinear(c):
    x = _f(c["x"])
    oh, ow = int(c.scalar("target_size_height", 1)), int(c.scalar("target_size_width", 1))
    c.room(list(x.shape[:-2]) + [oh, ow])
    mode = str(c.scalar("sampling_mode", "DEFAULT")).upper()
    h, w = x.shape[-2:]
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        return _bilinear(x, oh, ow, oh / h, ow / w, True, False)
    if mode == "UNALIGN_CORNERS":
        return _bilinear(x, oh, ow, oh / h, ow / w, False, True)
    return _bilinear(x, oh, ow, oh / h, ow / w, False, False)


def _nearest(x, out_h, out_w, sh, sw):
    h, w = x.shape[-2:]
    ih = np.minimum(np.floor(np.arange(out_h) / sh).astype(np.int64), h - 1)
    iw = np.minimum(np.floor(np.arange(out_w) / sw).astype(np.int64), w - 1)
    return x[..., ih, :][..., iw]


@op("upsample_nearest_neighbor")
def _upsample_nn(c):
    x = np.asarray(c["x"])
    sh, sw = float(c.scalar("scale_factor_height", 1)), float(c.scalar("scale_factor_width", 1))
    c.room(list(x.shape[:-2]) + [int(x.shape[-2] * sh), int(x.shape[-1] * sw)])
    return _nearest(x, int(x.shape[-2] * sh), int(x.shape[-1] * sw), sh, sw)


@op("resize_nearest_neighbor")
def _resize_nn(c):
    x = np.asarray(c["x"])
    oh, ow = int(c.scalar("target_size_height")), int(c.scalar("target_size_width"))
    c.room(list(x.shape[:-2]) + [oh, ow])
    return _nearest(x, oh, ow, oh / x.shape[-2], ow / x.shape[-1])


@op("resize")
def _resize(c):
    x = np.asarray(c["x"])
    shape = c.ints("shape")
    oh, ow = shape[-2], shape[-1]
    c.room(list(x.shape[:-2]) + [oh, ow])
    return _nearest(x, oh, ow, oh / x.shape[-2], ow / x.shape[-1])


def _blocks(c, key):
    """(x as [N, C, H, W], the block size ``key``, N, C, H, W) for the block rearrangements."""
    x = np.asarray(c["x"])
    return (x, int(c.scalar(key))) + tuple(x.shape)


@op("pixel_shuffle")
def _pixel_shuffle(c):
    x, r, n, ch, h, w = _blocks(c, "upscale_factor")
    return x.reshape(n, ch // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, ch // (r * r), h * r, w * r)


@op("pixel_unshuffle")
def _pixel_unshuffle(c):
    x, r, n, ch, h, w = _blocks(c, "downscale_factor")
    return x.reshape(n, ch, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, ch * r * r, h // r, w // r)


# --------------------------------------------------------------------------- reductions

def _axes(c, x):
    axes = c.ints("axes")
    return None if axes is None else tuple(a % max(x.ndim, 1) for a in axes)


def _reduce(fn):
    def run(c):
        x = np.asarray(c["x"])
        if x.dtype.kind == "f":
            x = _f(x)
        return fn(x, axis=_axes(c, x), keepdims=bool(c.scalar("keep_dims", False)))
    return run


OPS.update({
    "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min), "reduce_prod": _reduce(np.prod),
    "reduce_l1_norm": _reduce(lambda x, axis, keepdims: np.abs(x).sum(axis=axis, keepdims=keepdims)),
    "reduce_l2_norm": _reduce(lambda x, axis, keepdims: np.sqrt((x * x).sum(axis=axis, keepdims=keepdims))),
    "reduce_sum_square": _reduce(lambda x, axis, keepdims: (x * x).sum(axis=axis, keepdims=keepdims)),
    "reduce_log_sum": _reduce(lambda x, axis, keepdims: np.log(x.sum(axis=axis, keepdims=keepdims))),
    "reduce_log_sum_exp": _reduce(lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims))),
})


def _arg(fn):
    def run(c):
        x = np.asarray(c["x"])
        axis = int(c.scalar("axis", -1))
        out = fn(x, axis=axis)
        if c.scalar("keep_dims", False):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)
    return run


OPS["reduce_argmax"] = _arg(np.argmax)
OPS["reduce_argmin"] = _arg(np.argmin)


@op("cumsum")
def _cumsum(c):
    x = np.asarray(c["x"])
    axis = int(c.scalar("axis", 0))
    if c.scalar("reverse", False):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if c.scalar("exclusive", False):
        out = out - x
    if c.scalar("reverse", False):
        out = np.flip(out, axis)
    return out


@op("topk")
def _topk(c):
    x = np.asarray(c["x"])
    k, axis = int(c.scalar("k", 1)), int(c.scalar("axis", -1))
    asc = bool(c.scalar("ascending", False))
    order = np.argsort(x if asc else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


# --------------------------------------------------------------------------- shapes and data movement

@op("reshape")
def _reshape(c):
    x = np.asarray(c["x"])
    shape = c.ints("shape")
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("transpose")
def _transpose(c):
    return np.transpose(c["x"], c.ints("perm"))


@op("concat")
def _concat(c):
    vals = [np.asarray(v) for v in c["values"]]
    if any(v.ndim == 0 for v in vals):  # ct.convert concatenates scalars into a shape vector
        vals = [np.atleast_1d(v) for v in vals]
    axis = int(c.scalar("axis"))
    if c.scalar("interleave", False):
        stacked = np.stack(vals, axis=axis + 1 if axis >= 0 else axis)
        shape = list(vals[0].shape)
        shape[axis] = -1
        return stacked.reshape(shape)
    if any(v.dtype.kind == "f" for v in vals):
        vals = [_f(v) for v in vals]
    return np.concatenate(vals, axis=axis)


@op("stack")
def _stack(c):
    return np.stack([np.asarray(v) for v in c["values"]], axis=int(c.scalar("axis", 0)))


@op("split")
def _split(c):
    x = np.asarray(c["x"])
    axis = int(c.scalar("axis"))
    sizes = c.ints("split_sizes")
    if sizes is None:
        n = int(c.scalar("num_splits"))
        return tuple(np.split(x, n, axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@op("slice_by_index")
def _slice_by_index(c):
    x = np.asarray(c["x"])
    r = x.ndim
    begin = c.ints("begin")
    end = c.ints("end")
    stride = c.ints("stride", [1] * r)
    bmask = [bool(v) for v in np.asarray(c.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(v) for v in np.asarray(c.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(v) for v in np.asarray(c.get("squeeze_mask", [False] * r)).reshape(-1)]
    sl = []
    for i in range(r):
        s = stride[i]
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        if smask[i]:
            sl.append(begin[i])
            continue
        sl.append(slice(b, e, s))
    return x[tuple(sl)]


@op("slice_by_size")
def _slice_by_size(c):
    x = np.asarray(c["x"])
    begin, size = c.ints("begin"), c.ints("size")
    sl = tuple(slice(b % x.shape[i] if b < 0 else b, None if s == -1 else (b % x.shape[i] if b < 0 else b) + s)
               for i, (b, s) in enumerate(zip(begin, size)))
    return x[sl]


@op("squeeze")
def _squeeze(c):
    x = np.asarray(c["x"])
    axes = c.ints("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


@op("expand_dims")
def _expand_dims(c):
    x = np.asarray(c["x"])
    axes = c.ints("axes")
    out_rank = x.ndim + len(axes)
    for a in sorted(a % out_rank for a in axes):
        x = np.expand_dims(x, a)
    return x


@op("flatten2d")
def _flatten2d(c):
    x = np.asarray(c["x"])
    axis = int(c.scalar("axis", 1)) % max(x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("tile")
def _tile(c):
    x, reps = np.asarray(c["x"]), c.ints("reps")
    c.room([d * r for d, r in zip([1] * (len(reps) - x.ndim) + list(x.shape), [1] * (x.ndim - len(reps)) + reps)])
    return np.tile(x, reps)


@op("shape")
def _shape(c):
    return np.array(np.asarray(c["x"]).shape, dtype=np.int32)


@op("fill")
def _fill(c):
    return np.full(c.room(c.ints("shape")), c.scalar("value", 0.0), dtype=np.float32)


@op("fill_like")
def _fill_like(c):
    return np.full(np.asarray(c["ref_tensor"]).shape, c.scalar("value", 0.0), dtype=np.float32)


@op("range_1d")
def _range(c):
    s, e, st = c.scalar("start"), c.scalar("end"), c.scalar("step")
    if not all(math.isfinite(float(v)) for v in (s, e, st)) or st == 0:
        raise SpecSurgeryError(f"op {P.op_name(c.op)!r} (range_1d): start {s}, end {e}, step {st}: "
                               "need finite values and a step other than 0")
    c.room([max(0, math.ceil((float(e) - float(s)) / float(st)))])
    return np.arange(s, e, st)


@op("reverse")
def _reverse(c):
    x = np.asarray(c["x"])
    axes = c.ints("axes")
    return np.flip(x, axis=tuple(axes) if axes is not None else None)


@op("gather")
def _gather(c):
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    axis = int(c.scalar("axis", 0)) % x.ndim
    batch_dims = int(c.scalar("batch_dims", 0))
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    out = [np.take(x[b], idx[b], axis=axis - 1) for b in range(x.shape[0])]
    return np.stack(out)


@op("gather_along_axis")
def _gather_along_axis(c):
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    axis = int(c.scalar("axis", 0))
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


@op("gather_nd")
def _gather_nd(c):
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    return x[tuple(np.moveaxis(idx, -1, 0))]


@op("pad")
def _pad(c):
    x = np.asarray(c["x"])
    pad = c.ints("pad")
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    c.room([d + a + b for d, (a, b) in zip(x.shape, widths)])
    mode = str(c.scalar("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=c.scalar("constant_val", 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}.get(mode, mode))


@op("band_part")
def _band_part(c):
    x = np.asarray(c["x"])
    lo, hi = int(c.scalar("lower", -1)), int(c.scalar("upper", -1))
    m, n = x.shape[-2:]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    keep = ((lo < 0) | (i - j <= lo)) & ((hi < 0) | (j - i <= hi))
    return np.where(keep, x, 0).astype(x.dtype)


@op("one_hot")
def _one_hot(c):
    idx = np.asarray(c["indices"]).astype(np.int64)
    depth = int(c.scalar("one_hot_vector_size"))
    c.room(list(idx.shape) + [max(depth, 0)])
    axis = int(c.scalar("axis", -1))
    on, off = c.scalar("on_value", 1.0), c.scalar("off_value", 0.0)
    out = np.where(np.arange(depth) == idx[..., None], on, off).astype(np.float32)
    return np.moveaxis(out, -1, axis)


@op("non_zero")
def _non_zero(c):
    return np.argwhere(np.asarray(c["x"])).astype(np.int32)


@op("space_to_depth")
def _s2d(c):
    x, b, n, ch, h, w = _blocks(c, "block_size")
    return x.reshape(n, ch, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(n, ch * b * b, h // b, w // b)


@op("depth_to_space")
def _d2s(c):
    x, b, n, ch, h, w = _blocks(c, "block_size")
    return x.reshape(n, b, b, ch // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, ch // (b * b), h * b, w * b)


_CAST = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int32": np.int32,
         "int64": np.int64, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
         "uint16": np.uint16, "bool": np.bool_}


@op("cast")
def _cast(c):
    dtype = str(c.scalar("dtype"))
    if dtype not in _CAST:
        raise UnsupportedError(f"cast to {dtype!r} is not supported (known: {', '.join(_CAST)})")
    x = np.asarray(c["x"])
    target = _CAST[dtype]
    if np.dtype(target).kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)
    if target is np.float16 and x.dtype.kind == "f":
        return _to_fp16(x, c.op)
    return x.astype(target)


# --------------------------------------------------------------------------- constants and compressed weights

@op("const")
def _const(c):
    return P.const_value(c.op, c.package)


def _shape_attr(c, key="shape"):
    return [int(v) for v in np.asarray(c[key]).reshape(-1)]


@op("constexpr_affine_dequantize")
def _affine_dequantize(c):
    q = np.asarray(c["quantized_data"])
    axis = int(c.scalar("axis", 0)) % q.ndim
    scale, zp = _f(c["scale"]), np.asarray(c["zero_point"]).astype(np.float32)
    shape = [1] * q.ndim
    shape[axis] = -1
    if scale.size > 1:
        scale = scale.reshape(shape)
    if zp.size > 1:
        zp = zp.reshape(shape)
    return (q.astype(np.float32) - zp) * scale


@op("dequantize")
def _dequantize(c):
    x = np.asarray(c["input"]).astype(np.float32)
    scale = _f(c["scale"])
    zp = np.asarray(c.get("zero_point", 0)).astype(np.float32)
    axis = c.scalar("axis")
    if axis is not None and scale.size > 1:
        shape = [1] * x.ndim
        shape[int(axis) % x.ndim] = -1
        scale = scale.reshape(shape)
        if zp.size > 1:
            zp = zp.reshape(shape)
    return (x - zp) * scale


@op("constexpr_cast")
def _constexpr_cast(c):
    return np.asarray(c["source_val"]).astype(_CAST[str(c.scalar("output_dtype"))])


def _lut_to_dense(c):
    lut = np.asarray(c["lut"])
    indices = np.asarray(c["indices"])
    if "shape" in c.args and c.args["shape"] is not None:
        # iOS16: per-tensor LUT of 2**nbits entries, indices packed LSB first in uint8 bytes
        shape = _shape_attr(c)
        count = int(np.prod(shape))
        nbits = int(round(math.log2(lut.shape[-1])))
        from ..mil.blobs import unpack_subbyte

        idx = unpack_subbyte(indices.reshape(-1).view(np.uint8), nbits, count) if nbits < 8 \
            else indices.reshape(-1)[:count]
        return lut.reshape(-1)[idx.astype(np.int64)].reshape(shape)
    # iOS18: lut [*blocks, palettes, vector_size], indices has the output shape
    # (divided by vector_size along vector_axis)
    rank = indices.ndim
    vsize = lut.shape[-1]
    grid = np.ix_(*[np.arange(d) // (d // lut.shape[i]) for i, d in enumerate(indices.shape)])
    out = lut[tuple(grid) + (indices.astype(np.int64),)]  # *indices.shape, vsize
    if vsize == 1:
        return out[..., 0]
    axis = int(c.scalar("vector_axis", 0)) % rank
    out = np.moveaxis(out, -1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= vsize
    return out.reshape(shape)


OPS["constexpr_lut_to_dense"] = _lut_to_dense


@op("constexpr_sparse_to_dense")
def _sparse_to_dense(c):
    nz = np.asarray(c["nonzero_data"])
    mask = np.asarray(c["mask"])
    if c.args.get("shape") is not None:  # iOS16: mask is packed bits in uint8
        shape = _shape_attr(c)
        count = int(np.prod(shape))
        bits = np.unpackbits(mask.reshape(-1).view(np.uint8), bitorder="little")[:count]
        out = np.zeros(count, dtype=nz.dtype)
        out[bits != 0] = nz
        return out.reshape(shape)
    out = np.zeros(mask.shape, dtype=nz.dtype)
    out[mask != 0] = nz
    return out


def _blockwise(v, shape):
    v = np.asarray(v)
    for axis, (d, s) in enumerate(zip(shape, v.shape)):
        if s != d and s > 0:
            v = np.repeat(v, d // s, axis=axis)
    return v


@op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(c):
    data = np.asarray(c["data"])
    scale = np.asarray(c["scale"])
    out = data.astype(np.float32)
    if c.get("offset") is not None:
        out = out - _blockwise(c["offset"], data.shape).astype(np.float32)
    return (out * _blockwise(scale, data.shape).astype(np.float32)).astype(scale.dtype)


@op("constexpr_lut_to_sparse")
def _lut_to_sparse(c):
    mask = np.asarray(c["indices_mask"])
    dense_idx = np.zeros(mask.shape, dtype=np.int64)
    dense_idx[mask != 0] = np.asarray(c["indices_nonzero_data"])
    sub = _Ctx({"lut": c["lut"], "indices": dense_idx, "vector_axis": c.get("vector_axis")}, c.op, c.env, c.package)
    dense = _lut_to_dense(sub)
    vsize = np.asarray(c["lut"]).shape[-1]
    out_mask = mask
    if vsize > 1:
        out_mask = np.repeat(mask, vsize, axis=int(c.scalar("vector_axis", 0)))
    return out_mask, dense[out_mask != 0].reshape(-1)


@op("constexpr_sparse_blockwise_shift_scale")
def _sparse_shift_scale(c):
    mask = np.asarray(c["data_mask"])
    nz = np.asarray(c["nonzero_data"])
    dense = np.zeros(mask.shape, dtype=np.float32)
    dense[mask != 0] = nz
    scale = np.asarray(c["scale"])
    if c.get("offset") is not None:
        off = np.zeros(mask.shape, dtype=np.float32) + _blockwise(c["offset"], mask.shape)
        dense = dense - off
    dense = dense * _blockwise(scale, mask.shape)
    return mask, dense[mask != 0].astype(scale.dtype).reshape(-1)


# --------------------------------------------------------------------------- recurrent

_ACT = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x, "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "scaled_tanh": np.tanh,
}


def _act(c, key, default):
    name = str(c.scalar(key, default)).lower()
    if name not in _ACT:
        raise UnsupportedError(f"recurrent activation {name!r} is not supported (known: {', '.join(_ACT)})")
    return _ACT[name]


def _lstm_dir(x, h, cst, wih, whh, b, peep, ract, cact, act, clip, reverse):
    hs = h.shape[-1]
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    out = [None] * x.shape[0]
    xw = np.einsum("tbi,gi->tbg", x, wih)
    for t in steps:
        g = xw[t] + h @ whh.T
        if b is not None:
            g = g + b
        i, f, o, z = (g[:, k * hs:(k + 1) * hs] for k in range(4))
        if peep is not None:
            i = i + peep[:hs] * cst
            f = f + peep[hs:2 * hs] * cst
        i, f, z = ract(i), ract(f), cact(z)
        if clip is not None:
            z = np.clip(z, -clip, clip)
        cst = f * cst + i * z
        if peep is not None:
            o = o + peep[2 * hs:] * cst
        h = ract(o) * act(cst)
        out[t] = h
    return np.stack(out), h, cst


def _seq_steps(c, x):
    """x's sequence length, refused over the iteration cap (each step is a Python loop)."""
    return check_iterations(x.shape[0] if np.ndim(x) else 1,
                            what=f"op {P.op_name(c.op)!r} ({c.op.type}) sequence length")


@op("lstm")
def _lstm(c):
    x = _f(c["x"])
    _seq_steps(c, x)
    direction = str(c.scalar("direction", "forward"))
    h0, c0 = _f(c["initial_h"]), _f(c["initial_c"])
    ract, cact, act = _act(c, "recurrent_activation", "sigmoid"), _act(c, "cell_activation", "tanh"), \
        _act(c, "activation", "tanh")
    clip = c.scalar("clip")
    opt = lambda k: None if c.get(k) is None else _f(c[k])  # noqa: E731
    if direction == "bidirectional":
        hs = h0.shape[-1] // 2
        yf, hf, cf = _lstm_dir(x, h0[:, :hs], c0[:, :hs], _f(c["weight_ih"]), _f(c["weight_hh"]),
                               opt("bias"), opt("peephole"), ract, cact, act, clip, False)
        yb, hb, cb = _lstm_dir(x, h0[:, hs:], c0[:, hs:], _f(c["weight_ih_back"]), _f(c["weight_hh_back"]),
                               opt("bias_back"), opt("peephole_back"), ract, cact, act, clip, True)
        y = np.concatenate([yf, yb], axis=-1)
        h, cell = np.concatenate([hf, hb], -1), np.concatenate([cf, cb], -1)
        last = np.concatenate([yf[-1], yb[0]], axis=-1)[None]
    else:
        y, h, cell = _lstm_dir(x, h0, c0, _f(c["weight_ih"]), _f(c["weight_hh"]), opt("bias"),
                               opt("peephole"), ract, cact, act, clip, direction == "reverse")
        last = h[None]
    if not c.scalar("output_sequence", False):
        y = last
    return y, h, cell


@op("gru")
def _gru(c):
    x = _f(c["x"])
    _seq_steps(c, x)
    h = _f(c["initial_h"])
    wih, whh = _f(c["input_hidden_weights"] if c.get("input_hidden_weights") is not None else c["weight_ih"]), \
        _f(c["hidden_hidden_weights"] if c.get("hidden_hidden_weights") is not None else c["weight_hh"])
    b = c.get("bias")
    b = None if b is None else _f(b)
    hs = h.shape[-1]
    ract, act = _act(c, "recurrent_activation", "sigmoid"), _act(c, "activation", "tanh")
    reverse = str(c.scalar("direction", "forward")) == "reverse"
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    out = [None] * x.shape[0]
    # gate order [r, z, o] (reset, update, output) for input and hidden weights
    for t in steps:
        gx = x[t] @ wih.T
        gh = h @ whh.T
        if b is not None:
            gx = gx + b.reshape(-1)[:3 * hs]
        r = ract(gx[:, :hs] + gh[:, :hs])
        z = ract(gx[:, hs:2 * hs] + gh[:, hs:2 * hs])
        n = act(gx[:, 2 * hs:] + r * gh[:, 2 * hs:])
        h = (1 - z) * n + z * h
        out[t] = h
    y = np.stack(out) if c.scalar("output_sequence", False) else h[None]
    return y, h


# --------------------------------------------------------------------------- control flow, scatter, crop

def _bind_block(block, env, values):
    sub = dict(env)
    for inp, v in zip(block.inputs, values):
        sub[inp.name] = v
    return sub


@op("while_loop")
def _while_loop(c):
    vals = list(c["loop_vars"])
    cond_block, body_block = c.op.blocks[0], c.op.blocks[1]
    it = 0
    while True:
        (go,) = run_block(cond_block, _bind_block(cond_block, c.env, vals), c.package)
        if not bool(np.asarray(go).reshape(-1)[0]):
            break
        it += 1
        check_iterations(it, what=f"op {P.op_name(c.op)!r} (while_loop)")
        vals = run_block(body_block, _bind_block(body_block, c.env, vals), c.package)
    return tuple(vals) if len(vals) > 1 else vals[0]


@op("cond")
def _cond(c):
    pred = bool(np.asarray(c["pred"]).reshape(-1)[0])
    block = c.op.blocks[0] if pred else c.op.blocks[1]
    vals = run_block(block, dict(c.env), c.package)
    return tuple(vals) if len(vals) > 1 else vals[0]


_SCATTER = {"update": lambda a, b: b, "add": np.add, "sub": np.subtract, "mul": np.multiply,
            "div": np.divide, "max": np.maximum, "min": np.minimum}


@op("scatter")
def _scatter(c):
    data = np.array(c["data"], copy=True)
    axis = int(c.scalar("axis", 0)) % data.ndim
    idx = np.asarray(c["indices"]).astype(np.int64).reshape(-1)
    upd = np.asarray(c["updates"])
    mode = str(c.scalar("mode", "update"))
    d = np.moveaxis(data, axis, 0)
    u = np.moveaxis(upd, axis, 0).reshape((idx.size,) + d.shape[1:])
    fn = _SCATTER[mode]
    for k, i in enumerate(idx):
        d[i] = fn(d[i], u[k])
    return np.moveaxis(d, 0, axis)


@op("scatter_along_axis")
def _scatter_along_axis(c):
    data = np.array(c["data"], copy=True)
    axis = int(c.scalar("axis", 0))
    idx = np.asarray(c["indices"]).astype(np.int64)
    upd = np.asarray(c["updates"])
    mode = str(c.scalar("mode", "update"))
    if mode == "update":
        np.put_along_axis(data, idx, upd, axis=axis)
        return data
    cur = np.take_along_axis(data, idx, axis=axis)
    np.put_along_axis(data, idx, _SCATTER[mode](cur, upd), axis=axis)
    return data


@op("crop")
def _crop(c):
    x = np.asarray(c["x"])
    ch, cw = c.ints("crop_height", [0, 0]), c.ints("crop_width", [0, 0])
    h, w = x.shape[-2:]
    return x[..., ch[0]:h - ch[1], cw[0]:w - cw[1]]


# --------------------------------------------------------------------------- attention and friends

@op("scaled_dot_product_attention")
def _sdpa(c):
    q, k, v = _f(c["query"]), _f(c["key"]), _f(c["value"])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(np.float32(q.shape[-1]))
    mask = c.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + _f(mask)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v)


@op("argsort")
def _argsort(c):
    x = np.asarray(c["x"])
    axis = int(c.scalar("axis", -1))
    order = np.argsort(x if c.scalar("ascending", False) else -x, axis=axis, kind="stable")
    return order.astype(np.int32)


@op("slice_update")
def _slice_update(c):
    x = np.array(c["x"], copy=True)
    r = x.ndim
    begin, end = c.ints("begin"), c.ints("end")
    stride = c.ints("stride", [1] * r)
    bmask = [bool(v) for v in np.asarray(c.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(v) for v in np.asarray(c.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(v) for v in np.asarray(c.get("squeeze_mask", [False] * r)).reshape(-1)]
    sl = tuple(begin[i] if smask[i] else slice(None if bmask[i] else begin[i], None if emask[i] else end[i],
                                               stride[i]) for i in range(r))
    x[sl] = np.asarray(c["update"]).reshape(x[sl].shape)
    return x


@op("sliding_windows")
def _sliding_windows(c):
    x = np.asarray(c["x"])
    axis, size, stride = int(c.scalar("axis")), int(c.scalar("size")), int(c.scalar("stride", 1))
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)
    win = np.take(win, np.arange(0, win.shape[axis], stride), axis=axis)
    return np.moveaxis(win, -1, axis + 1)


# --------------------------------------------------------------------------- states (iOS 18)

@op("read_state")
def _read_state(c):
    return np.array(c["input"], copy=True)


@op("coreml_update_state", "write_state")
def _update_state(c):
    """Write ``value`` into the state (kept in the run's environment under the
    state's name, so later ``read_state`` ops see it) and return it."""
    key = "input" if "input" in c.op.inputs else "state"
    binding = c.op.inputs[key].arguments[0]
    value = np.asarray(c["data"] if c.get("data") is not None else c["value"])
    c.env[binding.name] = value
    return value


# --------------------------------------------------------------------------- classify

@op("classify")
def _classify(c):
    probs = np.asarray(c["probabilities"]).reshape(-1)
    classes = np.asarray(c["classes"]).reshape(-1)
    labels = [str(x) if classes.dtype == object or classes.dtype.kind in "US" else int(x) for x in classes]
    best = int(np.argmax(probs))
    return labels[best], {lab: float(p) for lab, p in zip(labels, probs)}


# --------------------------------------------------------------------------- interpreter

def _resolve_argument(argument, env, package):
    vals = []
    for b in argument.arguments:
        if b.WhichOneof("binding") == "name":
            if b.name not in env:
                raise NotFoundError(f"value {b.name!r} is used before it is defined")
            vals.append(env[b.name])
        else:
            vals.append(P.value_to_numpy(b.value, package))
    return vals


def unsupported_ops(block) -> Counter:
    return Counter(o.type for o in P.iter_ops(block) if o.type not in OPS)


class Float16Overflow(UserWarning):
    """Values of an fp16 ML Program went beyond float16's range (|x| > 65504) and
    became inf, as they would on a device running the program."""


#: ops whose float16 result overflowed during the current predict_program
_OVERFLOWED: list = []


def _to_fp16(x: np.ndarray, op) -> np.ndarray:
    """x as float16; an overflow is noted against ``op`` instead of numpy's raw warning."""
    hit = []
    with np.errstate(over="call", call=lambda *_: hit.append(True)):
        y = x.astype(np.float16)
    if hit and op is not None:
        _OVERFLOWED.append(op)
    return y


def _round_fp16(value, vt, op=None):
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and P.tensor_dtype(vt) == MIL_pb2.FLOAT16:
        return _to_fp16(value, op).astype(np.float32)
    return value


def _warn_overflows() -> None:
    """One warning, in specsurgery's words, for the fp16 overflows of a prediction."""
    if not _OVERFLOWED:
        return
    seen = list(dict.fromkeys((P.op_name(o), o.type) for o in _OVERFLOWED))
    _OVERFLOWED.clear()
    first = f"op {seen[0][0]!r} ({seen[0][1]})"
    more = f" (and {len(seen) - 1} later op(s): " + ", ".join(repr(n) for n, _ in seen[1:6]) \
        + (" ..." if len(seen) > 6 else "") + ")" if len(seen) > 1 else ""
    import warnings

    warnings.warn(f"float16 overflow: {first}{more} produced values beyond +-65504, which float16 "
                  "stores as inf, as a device running this fp16 program would; the outputs that "
                  "depend on them are inf or NaN", Float16Overflow, stacklevel=3)


# ops whose variadic input is a list (values=(a, b, c))
_LIST_ARGS = {"values", "loop_vars"}


def run_block(block, env: dict, package) -> list:
    for o in block.operations:
        args = {}
        for key, argument in o.inputs.items():
            vals = _resolve_argument(argument, env, package)
            args[key] = vals if (key in _LIST_ARGS or len(vals) > 1) else (vals[0] if vals else None)
        for key, value in o.attributes.items():
            if key == "name" or o.type == "const":
                continue
            args[key] = P.value_to_numpy(value, package)
        fn = OPS.get(o.type)
        if fn is None:
            raise UnsupportedError(f"ML Program op {o.type!r} is not supported by the numpy runtime")
        try:
            result = fn(_Ctx(args, o, env, package))
        except SpecSurgeryError:
            raise
        except MemoryError:
            raise BudgetError(
                f"op {P.op_name(o)!r} ({o.type}) ran out of memory; inputs: "
                + ", ".join(f"{k}={np.shape(v) if not isinstance(v, list) else [np.shape(i) for i in v]}"
                            for k, v in args.items())
                + "; its parameters ask for more than this machine holds") from None
        except Exception as exc:
            raise SpecSurgeryError(
                f"op {P.op_name(o)!r} ({o.type}) failed: {type(exc).__name__}: {exc}; inputs: "
                + ", ".join(f"{k}={np.shape(v) if not isinstance(v, list) else [np.shape(i) for i in v]}"
                            for k, v in args.items())) from exc
        if not o.outputs:
            continue
        results = result if (isinstance(result, tuple) and len(o.outputs) > 1) else (result,)
        if len(results) != len(o.outputs):
            raise SpecSurgeryError(f"op {P.op_name(o)!r} ({o.type}) gave {len(results)} results for "
                                   f"{len(o.outputs)} outputs")
        for out, val in zip(o.outputs, results):
            if isinstance(val, np.ndarray) and val.dtype == np.float64 and \
                    P.tensor_dtype(out.type) in (MIL_pb2.FLOAT32, MIL_pb2.FLOAT16):
                val = val.astype(np.float32)
            env[out.name] = _round_fp16(val, out.type, o)
    return [env[n] for n in block.outputs]


def _image_to_tensor(value, feature, want_shape):
    """PIL image / HxWxC uint8 array -> [1, C, H, W] float32 as Core ML hands it to the program."""
    img = feature.type.imageType
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if isinstance(value, (str, bytes)) or (hasattr(value, "__fspath__")):
        if Image is None:
            raise UnsupportedError("reading an image file needs Pillow")
        value = Image.open(value)
    gray = img.colorSpace in (10, 40)  # GRAYSCALE, GRAYSCALE_FLOAT16 (RGB 20, BGR 30)
    if Image is not None and isinstance(value, Image.Image):
        value = value.convert("L" if gray else "RGB")
        # a flexible image input takes the picture at its own size (the range is checked
        # before the program runs); a fixed one gets it resized, as Vision would
        if img.width and img.height and value.size != (img.width, img.height) \
                and not _spec.is_flexible(feature.type):
            value = value.resize((img.width, img.height), Image.BILINEAR)
        value = np.asarray(value)
    arr = np.asarray(value)
    if want_shape is not None and arr.shape == tuple(want_shape):
        return arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3):
        arr = arr[..., :3 if not gray else 1].transpose(2, 0, 1)
    if img.colorSpace == 30:  # BGR
        arr = arr[::-1]
    if arr.ndim == 3:
        arr = arr[None]
    return arr.astype(np.float32)


def _prepare_inputs(spec, fn, inputs, function_name):
    feats = {f.name: f for f in _description(spec, function_name).input}
    env = {}
    states = {i.name for i in fn.inputs if i.type.WhichOneof("type") == "stateType"}
    for name in states - set(inputs):   # a state starts at zeros unless the caller gives it
        wrapped = next(i for i in fn.inputs if i.name == name).type.stateType.wrappedType
        shape = [d or 1 for d in (P.tensor_shape(wrapped) or ())]
        env[name] = np.zeros(shape, dtype=np.float32)
    missing = [i.name for i in fn.inputs if i.name not in inputs and i.name not in states
               and not (i.name in feats and feats[i.name].type.isOptional)]
    if missing:
        raise NotFoundError(f"missing input{'s' if len(missing) > 1 else ''} "
                            + ", ".join(repr(m) for m in missing)
                            + f"; the function takes {', '.join(i.name for i in fn.inputs)}")
    for i in fn.inputs:
        if i.name not in inputs:
            continue
        value = inputs[i.name]
        feat = feats.get(i.name)
        shape = P.tensor_shape(i.type)
        if feat is not None and feat.type.WhichOneof("Type") == "imageType":
            value = _image_to_tensor(value, feat, shape)
            if _spec.is_flexible(feat.type) and value.ndim >= 2:
                check_image_size(feat.type, i.name, value.shape[-1], value.shape[-2])
        else:
            value = np.asarray(value)
            if feat is not None and feat.type.WhichOneof("Type") == "multiArrayType" \
                    and _spec.is_flexible(feat.type):
                check_array_shape(feat.type, i.name, value.shape)   # before any op runs
            dt = P.tensor_dtype(i.type)
            if dt in P.NP_DTYPES and P.NP_DTYPES[dt] is not object:
                value = value.astype(P.NP_DTYPES[dt])
        if isinstance(value, np.ndarray) and value.dtype == np.float16:
            value = value.astype(np.float32)
        env[i.name] = value
    return env


def _description(spec, function_name):
    desc = spec.description
    for f in desc.functions:
        if f.name == function_name:
            return f
    return desc


_ARRAY_OUT = {65552: np.float16, 65568: np.float32, 65600: np.float64, 131104: np.int32, 131080: np.int8}


def predict_program(spec, package, inputs: dict, function: Optional[str] = None, *,
                    trace: Optional[dict] = None, where: str = "") -> dict:
    """Run an ML Program function on ``inputs``; returns {output name: value}.
    ``trace``, when given, receives every value of the main block as
    ``{where + name: value}``."""
    name, fn = P.get_function(spec, function)
    block = P.main_block(fn)
    missing = unsupported_ops(block)
    if missing:
        raise UnsupportedError(
            "the numpy runtime does not support ML Program op"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(f"{t!r} (x{n})" for t, n in sorted(missing.items()))
            + f" in function {name!r}")
    env = _prepare_inputs(spec, fn, inputs, name)
    _OVERFLOWED.clear()
    _MACS[0] = 0.0
    try:
        values = run_block(block, env, package)
    finally:
        _warn_overflows()
    if trace is not None:
        produced = {o.name for op in block.operations if not op.type.startswith("const") for o in op.outputs}
        for key, value in env.items():
            if key in produced and isinstance(value, np.ndarray):
                trace[where + key] = value
    desc = _description(spec, name)
    out_types = {f.name: f.type for f in desc.output}
    result = {}
    for out_name, value in zip(block.outputs, values):
        ft = out_types.get(out_name)
        if isinstance(value, np.ndarray) and ft is not None and ft.WhichOneof("Type") == "multiArrayType":
            dt = _ARRAY_OUT.get(ft.multiArrayType.dataType)
            if dt is not None:
                with np.errstate(over="ignore"):   # fp16 values were rounded (and noted) already
                    value = value.astype(dt)
        result[out_name] = value
    return result


from .nms import MIL_OPS as _NMS_RANDOM_OPS  # noqa: E402  (non_maximum_suppression, random_*)

OPS.update(_NMS_RANDOM_OPS)


def supported_ops() -> list[str]:
    return sorted(OPS)


__all__ = ["predict_program", "run_block", "unsupported_ops", "supported_ops", "OPS", "Float16Overflow"]
