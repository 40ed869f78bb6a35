"""Interpreter for NeuralNetwork layer graphs (``neuralNetwork``,
``neuralNetworkClassifier``, ``neuralNetworkRegressor``).

Blobs are numpy arrays held with the rank Core ML gives them:

* legacy networks (``RANK5_ARRAY_MAPPING`` / ``RANK5_IMAGE_MAPPING``) hold
  rank-5 ``[Seq, Batch, C, H, W]`` tensors;
* "exact rank" networks (``EXACT_ARRAY_MAPPING``, which ``ct.convert`` emits)
  hold the declared shape, images as ``[1, C, H, W]``.

The legacy layers (convolution, pooling, batchnorm, concat, softmax, ...)
address their axes from the end (C = -3, H = -2, W = -1) and fold every
leading axis into the batch, which is what the spec states for both
mappings.  Values are float32 throughout, as on Core ML's CPU path.

Every layer kind maps to a function ``f(ctx, layer_params, inputs) ->
output | [outputs]``; an unknown kind raises :class:`UnsupportedError` naming
the layer, never a silently wrong result.  Decoded weights are cached on the
compiled network, so a second ``predict`` does no protobuf work.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .. import weights as _weights
from ..errors import SpecSurgeryError, UnsupportedError
from . import _kernels as K

F32 = np.float32


class LayerError(SpecSurgeryError):
    """A layer failed on its inputs (shape mismatch, bad parameter...)."""


class _LoopBreak(Exception):
    pass


class _LoopContinue(Exception):
    pass


# --------------------------------------------------------------------------- registry

OPS: dict[str, Callable] = {}


def op(*kinds):
    def deco(fn):
        for k in kinds:
            OPS[k] = fn
        return fn
    return deco


def supported_kinds() -> list[str]:
    return sorted(OPS)


# --------------------------------------------------------------------------- context

class Ctx:
    """What a layer function sees: its layer, the weight cache, the mode."""

    __slots__ = ("net", "name", "kind", "shape_only", "rank5", "trace")

    def __init__(self, net: "Net"):
        self.net = net
        self.shape_only = False
        self.rank5 = net.rank5

    def w(self, wp, shape=None, channel_axis=0, field="weights") -> np.ndarray:
        """The decoded float32 weight ``wp``, cached by message identity plus a cheap
        signature (storage size, end values), so in-place edits are noticed."""
        key = (id(wp), shape, channel_axis)
        cache = self.net.root.wcache
        hit = cache.get(key)
        sig = _signature(wp)
        if hit is not None and hit[0] is wp and hit[2] == sig:
            return hit[1]
        if _weights.storage_kind(wp) == "empty":
            raise LayerError(f"layer {self.name!r} ({self.kind}): {field} holds no values")
        try:
            arr = _weights.decode(wp, shape=shape, channel_axis=channel_axis,
                                  where=f"layer {self.name!r} ({self.kind}) {field}")
        except UnsupportedError:
            raise
        except SpecSurgeryError as exc:
            raise LayerError(str(exc)) from None
        arr = np.ascontiguousarray(arr, dtype=F32)
        arr.setflags(write=False)
        cache[key] = (wp, arr, sig)
        return arr

    def derived(self, tag, parts: tuple, make):
        """A value computed from decoded weights ``parts``, cached until one of them
        is decoded anew."""
        key = (tag, self.name, id(self.net))
        cache = self.net.root.wcache
        hit = cache.get(key)
        ids = tuple(id(p) for p in parts)
        if hit is not None and hit[0] == ids:
            return hit[1]
        value = make(*parts)
        cache[key] = (ids, value, parts)
        return value

    def opt_w(self, wp, shape=None, channel_axis=0, field="bias"):
        if _weights.storage_kind(wp) == "empty":
            return None
        return self.w(wp, shape, channel_axis, field)

    def fail(self, msg: str):
        raise LayerError(f"layer {self.name!r} ({self.kind}): {msg}")

    def sub(self, nn_msg) -> "Net":
        """Compiled sub-network of a branch or loop (cached)."""
        key = id(nn_msg)
        subs = self.net.root.subnets
        hit = subs.get(key)
        if hit is None or hit.msg is not nn_msg:
            hit = Net(nn_msg, rank5=self.net.rank5, root=self.net.root, where=f"{self.name}/")
            subs[key] = hit
        if not self.shape_only:
            hit.require_supported()
        return hit


def _signature(wp) -> tuple:
    n = len(wp.floatValue)
    q = wp.quantization
    scale = q.linearQuantization.scale if q.HasField("linearQuantization") else ()
    lut = q.lookupTableQuantization.floatValue if q.HasField("lookupTableQuantization") else ()
    # len() of a repeated float is O(1); bytes fields are copied on access, which costs a
    # memcpy of the (compressed) weight, still far below decoding it
    return (n, wp.floatValue[0] if n else None, wp.floatValue[n - 1] if n else None,
            len(wp.float16Value), len(wp.rawValue), len(wp.int8RawValue),
            scale[0] if len(scale) else None, lut[len(lut) - 1] if len(lut) else None)


class Net:
    """A compiled list of layers; ``run`` updates a blob dictionary in place."""

    def __init__(self, nn_msg, *, rank5: bool, root: Optional["Net"] = None, where: str = ""):
        self.msg = nn_msg
        self.rank5 = rank5
        self.root = root or self
        self.where = where
        if root is None:
            self.wcache: dict = {}
            self.subnets: dict = {}
        self.steps = []
        self.unsupported: list[str] = []     # "'name' (kind)" of layers no function runs
        for layer in nn_msg.layers:
            kind = layer.WhichOneof("layer")
            fn = OPS.get(kind)
            if fn is None:
                extra = f", class {layer.custom.className!r}" if kind == "custom" else ""
                self.unsupported.append(f"{where}{layer.name!r} ({kind}{extra})")
            self.steps.append((layer.name, kind, fn, getattr(layer, kind) if kind else None,
                               tuple(layer.input), tuple(layer.output)))
        # blob liveness (top-level networks without control flow only): after the
        # step that reads a blob last, the blob can be dropped to bound memory
        self.last_use: dict[str, int] = {}
        if root is None and not any(k in _NEEDS_BLOBS for _, k, *_ in self.steps):
            for i, step in enumerate(self.steps):
                for b in step[4]:
                    self.last_use[b] = i

    def require_supported(self) -> None:
        if self.unsupported:
            custom = any("(custom" in u for u in self.unsupported)
            raise UnsupportedError(
                f"the reference runtime does not support layer(s) {', '.join(self.unsupported)}"
                + ("; custom layers are app-provided code that only runs inside that app"
                   if custom else "") + " (docs/runtime.md lists the supported kinds)")

    def run(self, blobs: dict, shape_only: bool = False, trace: Optional[Callable] = None,
            keep: Optional[set] = None, lenient: bool = False) -> dict:
        """Run every layer, updating ``blobs``.  With ``keep`` given, blobs not in
        ``keep`` are dropped after their last reader (saves memory on big inputs).
        ``lenient`` (shape inference) skips unsupported layers and everything that
        depends on them instead of raising."""
        if not lenient:
            self.require_supported()
        ctx = Ctx(self)
        ctx.shape_only = shape_only
        ctx.trace = trace
        free = keep is not None and bool(self.last_use)
        for step_i, (name, kind, fn, params, ins, outs) in enumerate(self.steps):
            ctx.name, ctx.kind = name, kind
            if lenient and (fn is None or any(i not in blobs for i in ins)):
                continue
            try:
                args = [blobs[i] for i in ins]
            except KeyError:
                missing = [i for i in ins if i not in blobs]
                raise LayerError(f"layer {self.where}{name!r} ({kind}) consumes blob(s) "
                                 f"{', '.join(map(repr, missing))} which no earlier layer or input "
                                 "produced") from None
            if shape_only and kind in SHAPE_PRESERVING and args and max(a.size for a in args) > 4096:
                # big elementwise result: only its shape matters (small tensors are
                # computed for real, since loop counters and shape arithmetic need values)
                try:
                    shape = np.broadcast_shapes(*[a.shape for a in args])
                except ValueError:
                    shape = None
                if shape is not None:
                    zero = np.broadcast_to(F32(0), shape)
                    for o in outs:
                        blobs[o] = zero
                        if trace is not None:
                            trace(o, zero)
                    continue
            try:
                res = fn(ctx, params, args) if kind not in _NEEDS_BLOBS else fn(ctx, params, args, blobs, outs)
            except (SpecSurgeryError, _LoopBreak, _LoopContinue):
                raise
            except (ValueError, IndexError, TypeError, np.linalg.LinAlgError) as exc:
                shapes = ", ".join(str(tuple(a.shape)) for a in args)
                raise LayerError(f"layer {self.where}{name!r} ({kind}) failed on inputs of "
                                 f"shape {shapes}: {exc}") from None
            if res is None:
                continue
            if not isinstance(res, (list, tuple)):
                res = (res,)
            if len(res) < len(outs):
                raise LayerError(f"layer {self.where}{name!r} ({kind}) produced {len(res)} outputs, "
                                 f"the layer lists {len(outs)}")
            for o, v in zip(outs, res):
                blobs[o] = v
                if trace is not None:
                    trace(o, v)
            if free:
                for b in ins:
                    if self.last_use.get(b) == step_i and b not in keep:
                        blobs.pop(b, None)
        return blobs


_NEEDS_BLOBS = {"branch", "loop", "copy"}

#: kinds whose outputs have the broadcast shape of their inputs (shape mode shortcut)
SHAPE_PRESERVING = {
    "activation", "add", "multiply", "average", "max", "min", "addBroadcastable",
    "subtractBroadcastable", "multiplyBroadcastable", "divideBroadcastable", "maxBroadcastable",
    "minBroadcastable", "modBroadcastable", "floorDivBroadcastable", "powBroadcastable",
    "equal", "notEqual", "lessThan", "lessEqual", "greaterThan", "greaterEqual", "logicalAnd",
    "logicalOr", "logicalXor", "logicalNot", "ceil", "floor", "sign", "round", "exp2", "sin", "cos",
    "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "unary",
    "clip", "gelu", "clampedReLU", "batchnorm", "softmax", "softmaxND", "l2normalize", "lrn", "mvn",
    "layerNormalization", "whereBroadcastable",
}


# --------------------------------------------------------------------------- helpers

def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def _lead_fold(x: np.ndarray, tail: int):
    """Reshape x to [N, *last tail dims] (rank below tail is left-padded with 1s)."""
    if x.ndim < tail:
        x = x.reshape((1,) * (tail - x.ndim) + x.shape)
    lead = x.shape[:-tail]
    return x.reshape((-1,) + x.shape[-tail:]), lead


def _as4(x: np.ndarray):
    """[..., C, H, W] -> ([N, C, H, W], leading shape)."""
    return _lead_fold(x, 3)


def _axis_c(x) -> int:
    return -3 if x.ndim >= 3 else -1


def _hw(values, default):
    vals = list(values)
    return tuple(int(v) for v in vals) if len(vals) == 2 else default


def _chan_bcast(vec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-channel vector shaped to broadcast on x's channel axis (-3)."""
    if x.ndim >= 3:
        return vec.reshape(-1, 1, 1)
    return vec


def _zeros(shape) -> np.ndarray:
    """Shape-mode placeholder: a read-only zero view that allocates nothing."""
    return np.broadcast_to(F32(0), tuple(int(s) for s in shape))


def _ints(x) -> np.ndarray:
    return np.asarray(np.rint(np.asarray(x, dtype=np.float64)), dtype=np.int64)


def _norm_axis(axis: int, rank: int, ctx=None) -> int:
    a = int(axis)
    if a < 0:
        a += rank
    if not 0 <= a < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return a


# --------------------------------------------------------------------------- convolution

def _conv_geometry(p, x_hw, kh, kw, sh, sw, dh, dw):
    h, w = x_hw
    pad = p.WhichOneof("ConvolutionPaddingType")
    if pad == "same":
        tl = p.same.asymmetryMode == 1
        ho, pt, pb = K.same_pads(h, dh * (kh - 1) + 1, sh, tl)
        wo, pl, pr = K.same_pads(w, dw * (kw - 1) + 1, sw, tl)
        return (pt, pb, pl, pr), (ho, wo)
    b = p.valid.paddingAmounts.borderAmounts if pad == "valid" else []
    pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
    pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
    ho = K.valid_out(h, dh * (kh - 1) + 1, sh, pt, pb)
    wo = K.valid_out(w, dw * (kw - 1) + 1, sw, pl, pr)
    return (pt, pb, pl, pr), (ho, wo)


@op("convolution")
def _convolution(ctx, p, ins):
    x = ins[0]
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    kh, kw = _hw(p.kernelSize, (3, 3))
    sh, sw = _hw(p.stride, (1, 1))
    groups = int(p.nGroups) or 1
    o = int(p.outputChannels)
    kc = int(p.kernelChannels)
    if p.isDeconvolution:
        dh = dw = 1
        if kc != c:
            ctx.fail(f"deconvolution kernelChannels {kc} does not match the input's {c} channels")
        pad = p.WhichOneof("ConvolutionPaddingType")
        hf, wf = (h - 1) * sh + kh, (w - 1) * sw + kw
        if pad == "same":
            ho, wo = h * sh, w * sw
            th, tw = max(0, hf - ho), max(0, wf - wo)
            tl = p.same.asymmetryMode == 1
            top = th - th // 2 if tl else th // 2
            left = tw - tw // 2 if tl else tw // 2
        else:
            b = p.valid.paddingAmounts.borderAmounts if pad == "valid" else []
            pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
            pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
            top, left = pt, pl
            ho, wo = hf - pt - pb, wf - pl - pr
        if len(p.outputShape) == 2:
            ho, wo = int(p.outputShape[0]), int(p.outputShape[1])
        out_shape = lead + (o, ho, wo)
        if ctx.shape_only:
            return _zeros(out_shape)
        if len(ins) > 1:
            wt = _f(ins[1]).reshape(kc, o // groups, kh, kw)
            bias = None
        else:
            wt = ctx.w(p.weights, (kc, o // groups, kh, kw), channel_axis=1)
            bias = ctx.opt_w(p.bias, (o,)) if p.hasBias else None
        y = K.deconv2d(_f(x4), wt, bias, (sh, sw), groups, (top, left), (ho, wo))
        return y.reshape(out_shape)
    dh, dw = _hw(p.dilationFactor, (1, 1))
    if kc * groups != c:
        ctx.fail(f"kernelChannels {kc} x nGroups {groups} does not match the input's {c} channels "
                 f"(input shape {tuple(x.shape)})")
    pads, (ho, wo) = _conv_geometry(p, (h, w), kh, kw, sh, sw, dh, dw)
    out_shape = lead + (o, ho, wo)
    if ho <= 0 or wo <= 0:
        ctx.fail(f"output would be empty ({ho}x{wo}) for input {h}x{w}")
    if ctx.shape_only:
        return _zeros(out_shape)
    if len(ins) > 1:
        wt = _f(ins[1]).reshape(o, kc, kh, kw)
        bias = None
    else:
        wt = ctx.w(p.weights, (o, kc, kh, kw))
        bias = ctx.opt_w(p.bias, (o,)) if p.hasBias else None
    y = K.conv2d(_f(x4), wt, bias, (sh, sw), (dh, dw), pads, groups)
    return y.reshape(out_shape)


@op("pooling")
def _pooling(ctx, p, ins):
    x = ins[0]
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    kind = {0: "max", 1: "avg", 2: "l2"}[p.type]
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
    kh, kw = _hw(p.kernelSize, (3, 3))
    sh, sw = _hw(p.stride, (1, 1))
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
    if ctx.shape_only:
        return _zeros(lead + (c, ho, wo))
    y = K.pool2d(_f(x4), kind, (kh, kw), (sh, sw), (pt, pb, pl, pr), bool(p.avgPoolExcludePadding),
                 (ho, wo), limits)
    return y.reshape(lead + (c, ho, wo))


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
    wt = ctx.w(p.weights, (cout, cin))
    y = mat @ wt.T
    if p.hasBias:
        y = y + ctx.w(p.bias, (cout,), field="bias")
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
    wt = ctx.w(p.weights, (x2, x1))
    y = a @ wt.T
    if p.hasBias:
        y = y + ctx.w(p.bias, (x2,), field="bias")
    return y


@op("batchnorm")
def _batchnorm(ctx, p, ins):
    x = _f(ins[0])
    c = int(p.channels)
    ax = _axis_c(x)
    if x.shape[ax] != c:
        ctx.fail(f"input has {x.shape[ax]} channels on axis {ax}, the layer expects {c}")
    gamma = ctx.w(p.gamma, (c,), field="gamma")
    beta = ctx.w(p.beta, (c,), field="beta")
    if not p.computeMeanVar:
        mean = ctx.w(p.mean, (c,), field="mean")
        var = ctx.w(p.variance, (c,), field="variance")

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


# --------------------------------------------------------------------------- activations

def _sigmoid(x):
    return _f(0.5 * (np.tanh(0.5 * x) + 1.0))


def _softplus(x):
    return _f(np.logaddexp(0, x))


@op("activation")
def _activation(ctx, p, ins):
    x = _f(ins[0])
    kind = p.WhichOneof("NonlinearityType")
    a = getattr(p, kind) if kind else None
    if kind == "ReLU":
        return np.maximum(x, 0)
    if kind == "linear":
        return _f(a.alpha * x + a.beta)
    if kind == "leakyReLU":
        return np.where(x >= 0, x, _f(a.alpha * x))
    if kind == "thresholdedReLU":
        return np.where(x > a.alpha, x, F32(0))
    if kind == "tanh":
        return np.tanh(x)
    if kind == "scaledTanh":
        return _f(a.alpha * np.tanh(a.beta * x))
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "sigmoidHard":
        return _f(np.clip(a.alpha * x + a.beta, 0, 1))
    if kind == "ELU":
        return np.where(x >= 0, x, _f(a.alpha * (np.exp(np.minimum(x, 0)) - 1)))
    if kind == "softsign":
        return _f(x / (1 + np.abs(x)))
    if kind == "softplus":
        return _softplus(x)
    if kind == "PReLU":
        alpha = ctx.w(a.alpha, field="alpha")
        al = alpha if alpha.size == 1 else _chan_bcast(alpha, x)
        return np.where(x >= 0, x, x * al)
    if kind == "parametricSoftplus":
        alpha = ctx.w(a.alpha, field="alpha")
        beta = ctx.w(a.beta, field="beta")
        al = alpha if alpha.size == 1 else _chan_bcast(alpha, x)
        be = beta if beta.size == 1 else _chan_bcast(beta, x)
        return _f(al * _softplus(be * x))
    raise UnsupportedError(f"layer {ctx.name!r} (activation): activation type {kind!r} is not supported")


@op("gelu")
def _gelu(ctx, p, ins):
    x = ins[0].astype(np.float64)
    if p.mode == 1:
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    elif p.mode == 2:
        y = x / (1 + np.exp(-1.702 * x))
    else:
        y = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    return _f(y)


def _erf(x):
    """Vectorised erf (math.erf per element is too slow for big tensors)."""
    x = np.asarray(x, dtype=np.float64)
    # Abramowitz-Stegun 7.1.26 is only 1e-7 accurate; use the complementary
    # error function series via math.erf on unique values when small, else a
    # high-accuracy rational approximation (W. J. Cody) through np.vectorize.
    if x.size <= 4096:
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return _erf_cody(x)


def _erf_cody(x):
    # Numerical Recipes erfc with Chebyshev coefficients, relative error < 1.2e-7
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (
        0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (
            1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1 - r, r - 1)


@op("clampedReLU")
def _clamped_relu(ctx, p, ins):
    x = _f(ins[0])
    return _f(np.minimum(np.where(x >= 0, x, p.alpha * x), p.beta))


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
    gamma = ctx.opt_w(p.gamma, shape, field="gamma")
    beta = ctx.opt_w(p.beta, shape, field="beta")
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return _f(y)


# --------------------------------------------------------------------------- elementwise

def _legacy_bcast(ctx, ins):
    try:
        np.broadcast_shapes(*[a.shape for a in ins])
    except ValueError:
        ctx.fail("inputs of shapes " + ", ".join(str(tuple(a.shape)) for a in ins)
                 + " do not broadcast")


@op("add")
def _add(ctx, p, ins):
    if len(ins) == 1:
        return _f(ins[0] + p.alpha)
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y + a
    return _f(y)


@op("multiply")
def _multiply(ctx, p, ins):
    if len(ins) == 1:
        return _f(ins[0] * p.alpha)
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y * a
    return _f(y)


@op("average")
def _average(ctx, p, ins):
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y + a
    return _f(y / len(ins))


@op("max")
def _max(ctx, p, ins):
    y = _f(ins[0])
    for a in ins[1:]:
        y = np.maximum(y, a)
    return _f(y)


@op("min")
def _min(ctx, p, ins):
    y = _f(ins[0])
    for a in ins[1:]:
        y = np.minimum(y, a)
    return _f(y)


_BINARY = {
    "addBroadcastable": np.add,
    "subtractBroadcastable": np.subtract,
    "multiplyBroadcastable": np.multiply,
    "divideBroadcastable": np.divide,
    "maxBroadcastable": np.maximum,
    "minBroadcastable": np.minimum,
    "modBroadcastable": np.mod,
    "floorDivBroadcastable": lambda a, b: np.floor(a / b),
    "powBroadcastable": np.power,
}


def _make_binary(fn):
    def run(ctx, p, ins):
        if len(ins) == 1:
            return _f(ins[0])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = fn(_f(ins[0]), _f(ins[1]))
            for a in ins[2:]:
                y = fn(y, _f(a))
        return _f(y)
    return run


for _k, _fn in _BINARY.items():
    OPS[_k] = _make_binary(_fn)

_COMPARE = {
    "equal": np.equal, "notEqual": np.not_equal, "lessThan": np.less, "lessEqual": np.less_equal,
    "greaterThan": np.greater, "greaterEqual": np.greater_equal,
}


def _make_compare(fn):
    def run(ctx, p, ins):
        b = ins[1] if len(ins) > 1 else F32(p.alpha)
        return fn(ins[0], b).astype(F32)
    return run


for _k, _fn in _COMPARE.items():
    OPS[_k] = _make_compare(_fn)


@op("logicalAnd")
def _land(ctx, p, ins):
    return np.logical_and(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalOr")
def _lor(ctx, p, ins):
    return np.logical_or(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalXor")
def _lxor(ctx, p, ins):
    return np.logical_xor(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalNot")
def _lnot(ctx, p, ins):
    return (ins[0] == 0).astype(F32)


_UNARY_ND = {
    "ceil": np.ceil, "floor": np.floor, "sign": np.sign, "round": np.round, "exp2": np.exp2,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "erf": lambda x: _erf(x),
}


def _make_unary(fn):
    def run(ctx, p, ins):
        with np.errstate(all="ignore"):
            return _f(fn(_f(ins[0])))
    return run


for _k, _fn in _UNARY_ND.items():
    OPS[_k] = _make_unary(_fn)


@op("unary")
def _unary(ctx, p, ins):
    scale = p.scale if p.scale != 0 else 1.0
    x = ins[0].astype(np.float64) * scale + p.shift
    t = p.type
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    with np.errstate(all="ignore"):
        if t == 0:
            y = np.sqrt(x)
        elif t == 1:
            y = 1 / np.sqrt(x + eps)
        elif t == 2:
            y = 1 / (x + eps)
        elif t == 3:
            y = np.power(x, p.alpha)
        elif t == 4:
            y = np.exp(x)
        elif t == 5:
            y = np.log(x + eps)
        elif t == 6:
            y = np.abs(x)
        elif t == 7:
            y = np.maximum(x, p.alpha)
        else:
            raise UnsupportedError(f"layer {ctx.name!r} (unary): operation {t} is not supported")
    return _f(y)


@op("clip")
def _clip(ctx, p, ins):
    return _f(np.clip(ins[0], p.minVal, p.maxVal))


@op("scale")
def _scale(ctx, p, ins):
    x = _f(ins[0])
    ss = tuple(int(s) for s in p.shapeScale) or (1,)
    s = ctx.w(p.scale, ss, field="scale")
    y = x * _shape_param(s, x)
    if p.hasBias:
        sb = tuple(int(v) for v in p.shapeBias) or (1,)
        y = y + _shape_param(ctx.w(p.bias, sb, field="bias"), x)
    return _f(y)


def _shape_param(v, x):
    """A [1], [C] or [C,H,W] parameter aligned on x's trailing C, H, W axes."""
    if v.ndim == 1 and v.size > 1:
        return _chan_bcast(v, x)
    if v.ndim == 1:
        return v.reshape(())
    return v


@op("bias")
def _bias(ctx, p, ins):
    x = _f(ins[0])
    shape = tuple(int(s) for s in p.shape) or (1,)
    return _f(x + _shape_param(ctx.w(p.bias, shape, field="bias"), x))


@op("dot")
def _dot(ctx, p, ins):
    a, b = _f(ins[0]), _f(ins[1])
    a4, lead = _as4(a)
    b4, _ = _as4(b)
    a2 = a4.reshape(a4.shape[0], -1)
    b2 = b4.reshape(b4.shape[0], -1)
    y = (a2 * b2).sum(axis=1)
    if p.cosineSimilarity:
        y = y / np.maximum(np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1), 1e-12)
    return _f(y).reshape(lead + (1, 1, 1))


# --------------------------------------------------------------------------- reduce

_RED = {0: "sum", 1: "mean", 2: "prod", 3: "logsum", 4: "sumsquare", 5: "l1", 6: "l2",
        7: "max", 8: "min", 9: "argmax"}


def _reduce(x, axes, mode, keep, eps=1e-6):
    x64 = x.astype(np.float64)
    if mode == "sum":
        y = x64.sum(axis=axes, keepdims=keep)
    elif mode == "mean":
        y = x64.mean(axis=axes, keepdims=keep)
    elif mode == "prod":
        y = x64.prod(axis=axes, keepdims=keep)
    elif mode == "logsum":
        y = np.log(x64.sum(axis=axes, keepdims=keep) + eps)
    elif mode == "sumsquare":
        y = (x64 ** 2).sum(axis=axes, keepdims=keep)
    elif mode == "l1":
        y = np.abs(x64).sum(axis=axes, keepdims=keep)
    elif mode == "l2":
        y = np.sqrt((x64 ** 2).sum(axis=axes, keepdims=keep))
    elif mode == "max":
        y = x64.max(axis=axes, keepdims=keep)
    elif mode == "min":
        y = x64.min(axis=axes, keepdims=keep)
    elif mode == "logsumexp":
        m = x64.max(axis=axes, keepdims=True)
        y = np.log(np.exp(x64 - m).sum(axis=axes, keepdims=True)) + m
        if not keep:
            y = np.squeeze(y, axis=axes)
    else:
        raise ValueError(mode)
    return _f(y)


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
    return np.concatenate([x] * (int(p.nRepetitions) or 1), axis=-5 if x.ndim >= 5 else 0)


@op("reorganizeData")
def _reorganize(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    bs = int(p.blockSize)
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
    win = np.lib.stride_tricks.sliding_window_view(x, int(p.windowSize), axis=ax)
    win = np.take(win, np.arange(0, win.shape[ax], int(p.step) or 1), axis=ax)
    return np.ascontiguousarray(np.moveaxis(win, -1, ax + 1))


@op("getShape")
def _get_shape(ctx, p, ins):
    return np.asarray(ins[0].shape, dtype=F32)


@op("fillLike")
def _fill_like(ctx, p, ins):
    return np.full(ins[0].shape, p.value, dtype=F32)


@op("fillStatic")
def _fill_static(ctx, p, ins):
    return np.full([int(s) for s in p.targetShape], p.value, dtype=F32)


@op("fillDynamic")
def _fill_dynamic(ctx, p, ins):
    return np.full(_ints(ins[0]).reshape(-1).tolist(), p.value, dtype=F32)


@op("broadcastToLike")
def _bcast_like(ctx, p, ins):
    return np.ascontiguousarray(np.broadcast_to(ins[0], np.broadcast_shapes(ins[0].shape, ins[1].shape)))


@op("broadcastToStatic")
def _bcast_static(ctx, p, ins):
    shape = np.broadcast_shapes(ins[0].shape, tuple(int(s) for s in p.targetShape))
    return np.ascontiguousarray(np.broadcast_to(ins[0], shape))


@op("broadcastToDynamic")
def _bcast_dynamic(ctx, p, ins):
    shape = np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1]).reshape(-1).tolist()))
    return np.ascontiguousarray(np.broadcast_to(ins[0], shape))


@op("rangeStatic")
def _range_static(ctx, p, ins):
    step = p.stepSizeValue if p.stepSizeValue != 0 else 1.0
    return np.arange(p.startValue, p.endValue, step, dtype=np.float64).astype(F32)


@op("rangeDynamic")
def _range_dynamic(ctx, p, ins):
    end = float(ins[0].reshape(-1)[0])
    start = float(ins[1].reshape(-1)[0]) if len(ins) > 1 else p.startValue
    step = float(ins[2].reshape(-1)[0]) if len(ins) > 2 else (p.stepSizeValue or 1.0)
    return np.arange(start, end, step, dtype=np.float64).astype(F32)


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
    return np.pad(x, pads, constant_values=p.value).astype(F32)


@op("padding")
def _padding(ctx, p, ins):
    x = _f(ins[0])
    b = p.paddingAmounts.borderAmounts
    pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
    pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
    pads = [(0, 0)] * (x.ndim - 2) + [(pt, pb), (pl, pr)]
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


@op("scatter")
def _scatter(ctx, p, ins):
    x = _f(ins[0]).copy()
    idx = _ints(ins[1])
    upd = _f(ins[2])
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
    x = _f(ins[0]).copy()
    idx = _ints(ins[1])
    upd = _f(ins[2])
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
    x = _f(ins[0]).copy()
    idx = _ints(ins[1])
    upd = _f(ins[2])
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
    shape = tuple(int(s) for s in p.shape)
    v = ctx.w(p.data, shape, field="data")
    return v.reshape((1, 1) + shape) if ctx.rank5 else v.copy()


@op("loadConstantND")
def _load_constant_nd(ctx, p, ins):
    shape = tuple(int(s) for s in p.shape)
    return ctx.w(p.data, shape, field="data").copy()


@op("embedding")
def _embedding(ctx, p, ins):
    x = ins[0]
    n_in, n_out = int(p.inputDim), int(p.outputChannels)
    idx = _ints(x)
    if idx.size and (idx.min() < 0 or idx.max() >= n_in):
        ctx.fail(f"index {int(idx.max()) if idx.max() >= n_in else int(idx.min())} is outside "
                 f"the vocabulary 0..{n_in - 1}")
    lead = x.shape[:-3] if x.ndim >= 4 else x.shape[:1]
    if ctx.shape_only:
        return _zeros(lead + (n_out, 1, 1))
    wt = ctx.w(p.weights, (n_out, n_in))
    y = wt.T[idx.reshape(-1)]
    if p.hasBias:
        y = y + ctx.w(p.bias, (n_out,), field="bias")
    return _f(y).reshape(lead + (n_out, 1, 1))


@op("embeddingND")
def _embedding_nd(ctx, p, ins):
    x = ins[0]
    vocab, size = int(p.vocabSize), int(p.embeddingSize)
    idx = _ints(x)
    if idx.size and (idx.min() < 0 or idx.max() >= vocab):
        ctx.fail(f"index {int(idx.max()) if idx.max() >= vocab else int(idx.min())} is outside "
                 f"the vocabulary 0..{vocab - 1}")
    if x.ndim >= 2 and x.shape[-1] == 1:
        lead = x.shape[:-1]
    else:
        lead = x.shape
    if ctx.shape_only:
        return _zeros(lead + (size,))
    wt = ctx.w(p.weights, (size, vocab))
    y = wt.T[idx.reshape(-1)]
    if p.hasBias:
        y = y + ctx.w(p.bias, (size,), field="bias")
    return _f(y).reshape(lead + (size,))


# --------------------------------------------------------------------------- resampling

@op("upsample")
def _upsample(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    h, w = x4.shape[-2:]
    if len(p.fractionalScalingFactor):
        fh, fw = float(p.fractionalScalingFactor[0]), float(p.fractionalScalingFactor[1])
    else:
        fh, fw = _hw(p.scalingFactor, (1, 1))
    ho, wo = int(math.floor(h * fh)), int(math.floor(w * fw))
    if ctx.shape_only:
        return _zeros(lead + (x4.shape[1], ho, wo))
    if p.mode == 0:
        y = K.upsample_nearest(x4, fh, fw)
    else:
        method = {0: "default", 1: "corners_true", 2: "corners_false"}[p.linearUpsampleMode]
        y = K.bilinear(x4, K.grid_points(h, ho, method), K.grid_points(w, wo, method))
    return y.reshape(lead + y.shape[1:])


@op("resizeBilinear")
def _resize_bilinear(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    h, w = x4.shape[-2:]
    ho, wo = _hw(p.targetSize, (1, 1))
    if ctx.shape_only:
        return _zeros(lead + (x4.shape[1], ho, wo))
    method = {0: "strict_align", 1: "align", 2: "upsample", 3: "roi_align"}[p.mode.samplingMethod]
    y = K.bilinear(x4, K.grid_points(h, ho, method), K.grid_points(w, wo, method))
    return y.reshape(lead + y.shape[1:])


# --------------------------------------------------------------------------- recurrent

_ACT = {
    "linear": lambda a: (lambda x: a.alpha * x + a.beta),
    "sigmoid": lambda a: _sigmoid,
    "tanh": lambda a: np.tanh,
    "ReLU": lambda a: (lambda x: np.maximum(x, 0)),
    "sigmoidHard": lambda a: (lambda x: np.clip(a.alpha * x + a.beta, 0, 1)),
    "scaledTanh": lambda a: (lambda x: a.alpha * np.tanh(a.beta * x)),
    "leakyReLU": lambda a: (lambda x: np.where(x >= 0, x, a.alpha * x)),
    "softsign": lambda a: (lambda x: x / (1 + np.abs(x))),
    "softplus": lambda a: _softplus,
    "ELU": lambda a: (lambda x: np.where(x >= 0, x, a.alpha * (np.exp(np.minimum(x, 0)) - 1))),
}


def _act_fn(ctx, a):
    kind = a.WhichOneof("NonlinearityType")
    if kind not in _ACT:
        raise UnsupportedError(f"layer {ctx.name!r} ({ctx.kind}): recurrent activation {kind!r} "
                               "is not supported")
    return _ACT[kind](getattr(a, kind))


def _seq_input(ctx, x, size):
    """[Seq, Batch, size, 1, 1] (or any shape ending in size) -> [Seq, Batch, size]."""
    if x.ndim == 5:
        s, b = x.shape[:2]
    elif x.ndim >= 2:
        s, b = x.shape[0], int(np.prod(x.shape[1:])) // size
    else:
        s, b = 1, 1
    if s * b * size != x.size:
        ctx.fail(f"input shape {tuple(x.shape)} does not hold sequences of {size} features")
    return _f(x).reshape(s, b, size)


def _state(ins, i, b, h):
    if len(ins) > i and ins[i] is not None:
        return _f(ins[i]).reshape(b, h)
    return np.zeros((b, h), F32)


def _out5(y):
    return y.reshape(y.shape + (1, 1))


def _lstm_weights(ctx, wp, p, hidden, insize):
    parts = [ctx.w(m, (hidden, insize), field=f) for f, m in (
        ("W_i", wp.inputGateWeightMatrix), ("W_f", wp.forgetGateWeightMatrix),
        ("W_z", wp.blockInputWeightMatrix), ("W_o", wp.outputGateWeightMatrix))]
    parts += [ctx.w(m, (hidden, hidden), field=f) for f, m in (
        ("R_i", wp.inputGateRecursionMatrix), ("R_f", wp.forgetGateRecursionMatrix),
        ("R_z", wp.blockInputRecursionMatrix), ("R_o", wp.outputGateRecursionMatrix))]
    if p.hasBiasVectors:
        parts += [ctx.w(m, (hidden,), field=f) for f, m in (
            ("b_i", wp.inputGateBiasVector), ("b_f", wp.forgetGateBiasVector),
            ("b_z", wp.blockInputBiasVector), ("b_o", wp.outputGateBiasVector))]
    n_bias = 4 if p.hasBiasVectors else 0
    if p.hasPeepholeVectors:
        parts += [ctx.w(m, (hidden,), field=f) for f, m in (
            ("p_i", wp.inputGatePeepholeVector), ("p_f", wp.forgetGatePeepholeVector),
            ("p_o", wp.outputGatePeepholeVector))]

    def stack(*arrs):
        W = np.concatenate(arrs[0:4])
        R = np.concatenate(arrs[4:8])
        b = np.concatenate(arrs[8:12]) if n_bias else np.zeros(4 * hidden, F32)
        if p.forgetBias:
            b = b.copy()
            b[hidden: 2 * hidden] += 1.0
        peep = list(arrs[8 + n_bias:]) if p.hasPeepholeVectors else None
        return W, R, b, peep
    return ctx.derived(("lstm", id(wp)), tuple(parts), stack)


def _lstm_run(ctx, x, h, c, weights, p, acts, reverse):
    W, R, b, peep = weights
    hidden = h.shape[1]
    f_gate, f_cell, f_out = acts
    xw = x @ W.T + b                       # [S, B, 4H]
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    ys = np.zeros((x.shape[0], x.shape[1], hidden), F32)
    clip = p.cellClipThreshold
    for t in steps:
        g = xw[t] + h @ R.T
        gi, gf, gz, go = g[:, :hidden], g[:, hidden:2 * hidden], g[:, 2 * hidden:3 * hidden], g[:, 3 * hidden:]
        if peep is not None:
            gi = gi + peep[0] * c
            gf = gf + peep[1] * c
        i = f_gate(gi)
        f = 1 - i if p.coupledInputAndForgetGate else f_gate(gf)
        z = f_cell(gz)
        c = f * c + i * z
        if clip:
            c = np.clip(c, -clip, clip)
        if peep is not None:
            go = go + peep[2] * c
        o = f_gate(go)
        h = _f(o * f_out(c))
        c = _f(c)
        ys[t] = h
    return ys, h, c


@op("uniDirectionalLSTM")
def _uni_lstm(ctx, p, ins):
    insize, hidden = int(p.inputVectorSize), int(p.outputVectorSize)
    x = _seq_input(ctx, ins[0], insize)
    s, b = x.shape[:2]
    lp = p.params
    if ctx.shape_only:
        y = _zeros(((s if lp.sequenceOutput else 1), b, hidden))
        return [_out5(y), _out5(_zeros((1, b, hidden))), _out5(_zeros((1, b, hidden)))]
    acts = [_act_fn(ctx, a) for a in p.activations] or [_sigmoid, np.tanh, np.tanh]
    w = _lstm_weights(ctx, p.weightParams, lp, hidden, insize)
    h0, c0 = _state(ins, 1, b, hidden), _state(ins, 2, b, hidden)
    ys, h, c = _lstm_run(ctx, x, h0, c0, w, lp, acts, p.reverseInput)
    y = ys if lp.sequenceOutput else (ys[:1] if p.reverseInput else ys[-1:])
    return [_out5(y), _out5(h[None]), _out5(c[None])]


@op("biDirectionalLSTM")
def _bi_lstm(ctx, p, ins):
    insize, hidden = int(p.inputVectorSize), int(p.outputVectorSize)
    x = _seq_input(ctx, ins[0], insize)
    s, b = x.shape[:2]
    lp = p.params
    if ctx.shape_only:
        y = _zeros(((s if lp.sequenceOutput else 1), b, 2 * hidden))
        st = _out5(_zeros((1, b, hidden)))
        return [_out5(y), st, st, st, st]
    if len(p.weightParams) != 2:
        ctx.fail(f"needs 2 weightParams (forward, backward), has {len(p.weightParams)}")
    acts_f = [_act_fn(ctx, a) for a in p.activationsForwardLSTM] or [_sigmoid, np.tanh, np.tanh]
    acts_b = [_act_fn(ctx, a) for a in p.activationsBackwardLSTM] or [_sigmoid, np.tanh, np.tanh]
    wf = _lstm_weights(ctx, p.weightParams[0], lp, hidden, insize)
    wb = _lstm_weights(ctx, p.weightParams[1], lp, hidden, insize)
    yf, hf, cf = _lstm_run(ctx, x, _state(ins, 1, b, hidden), _state(ins, 2, b, hidden), wf, lp, acts_f, False)
    yb, hb, cb = _lstm_run(ctx, x, _state(ins, 3, b, hidden), _state(ins, 4, b, hidden), wb, lp, acts_b, True)
    if lp.sequenceOutput:
        y = np.concatenate([yf, yb], axis=2)
    else:
        y = np.concatenate([yf[-1:], yb[:1]], axis=2)
    return [_out5(y), _out5(hf[None]), _out5(cf[None]), _out5(hb[None]), _out5(cb[None])]


@op("gru")
def _gru(ctx, p, ins):
    insize, hidden = int(p.inputVectorSize), int(p.outputVectorSize)
    x = _seq_input(ctx, ins[0], insize)
    s, b = x.shape[:2]
    if ctx.shape_only:
        return [_out5(_zeros(((s if p.sequenceOutput else 1), b, hidden))), _out5(_zeros((1, b, hidden)))]
    acts = [_act_fn(ctx, a) for a in p.activations] or [_sigmoid, np.tanh]
    f_gate, f_out = acts[0], acts[1]
    Wz = ctx.w(p.updateGateWeightMatrix, (hidden, insize), field="W_z")
    Wr = ctx.w(p.resetGateWeightMatrix, (hidden, insize), field="W_r")
    Wo = ctx.w(p.outputGateWeightMatrix, (hidden, insize), field="W_o")
    Rz = ctx.w(p.updateGateRecursionMatrix, (hidden, hidden), field="R_z")
    Rr = ctx.w(p.resetGateRecursionMatrix, (hidden, hidden), field="R_r")
    Ro = ctx.w(p.outputGateRecursionMatrix, (hidden, hidden), field="R_o")
    if p.hasBiasVectors:
        bz = ctx.w(p.updateGateBiasVector, (hidden,), field="b_z")
        br = ctx.w(p.resetGateBiasVector, (hidden,), field="b_r")
        bo = ctx.w(p.outputGateBiasVector, (hidden,), field="b_o")
    else:
        bz = br = bo = np.zeros(hidden, F32)
    h = _state(ins, 1, b, hidden)
    order = range(s - 1, -1, -1) if p.reverseInput else range(s)
    ys = np.zeros((s, b, hidden), F32)
    for t in order:
        xt = x[t]
        z = f_gate(xt @ Wz.T + h @ Rz.T + bz)
        r = f_gate(xt @ Wr.T + h @ Rr.T + br)
        o = f_out(xt @ Wo.T + (r * h) @ Ro.T + bo)
        h = _f((1 - z) * o + z * h)
        ys[t] = h
    y = ys if p.sequenceOutput else (ys[:1] if p.reverseInput else ys[-1:])
    return [_out5(y), _out5(h[None])]


@op("simpleRecurrent")
def _simple_rnn(ctx, p, ins):
    insize, hidden = int(p.inputVectorSize), int(p.outputVectorSize)
    x = _seq_input(ctx, ins[0], insize)
    s, b = x.shape[:2]
    if ctx.shape_only:
        return [_out5(_zeros(((s if p.sequenceOutput else 1), b, hidden))), _out5(_zeros((1, b, hidden)))]
    f = _act_fn(ctx, p.activation) if p.HasField("activation") else np.tanh
    W = ctx.w(p.weightMatrix, (hidden, insize), field="weightMatrix")
    R = ctx.w(p.recursionMatrix, (hidden, hidden), field="recursionMatrix")
    bias = ctx.w(p.biasVector, (hidden,), field="biasVector") if p.hasBiasVector else np.zeros(hidden, F32)
    h = _state(ins, 1, b, hidden)
    order = range(s - 1, -1, -1) if p.reverseInput else range(s)
    ys = np.zeros((s, b, hidden), F32)
    for t in order:
        h = _f(f(x[t] @ W.T + h @ R.T + bias))
        ys[t] = h
    y = ys if p.sequenceOutput else (ys[:1] if p.reverseInput else ys[-1:])
    return [_out5(y), _out5(h[None])]


# --------------------------------------------------------------------------- control flow

@op("copy")
def _copy(ctx, p, ins, blobs, outs):
    return [np.array(ins[0], copy=True)]


@op("branch")
def _branch(ctx, p, ins, blobs, outs):
    cond = bool(np.asarray(ins[0]).reshape(-1)[0] != 0) if ins[0].size else False
    if cond:
        ctx.sub(p.ifBranch).run(blobs, ctx.shape_only, ctx.trace)
    elif p.HasField("elseBranch"):
        ctx.sub(p.elseBranch).run(blobs, ctx.shape_only, ctx.trace)
    return None


@op("loop")
def _loop(ctx, p, ins, blobs, outs):
    limit = int(np.asarray(ins[0]).reshape(-1)[0]) if ins else int(p.maxLoopIterations)
    if not ins and not p.maxLoopIterations and not p.HasField("conditionNetwork"):
        ctx.fail("loop has neither an iteration count nor a condition")
    if p.HasField("conditionNetwork") and not ins and not p.maxLoopIterations:
        limit = 1 << 31
    cond_net = ctx.sub(p.conditionNetwork) if p.HasField("conditionNetwork") else None
    body = ctx.sub(p.bodyNetwork)
    it = 0
    while it < limit:
        if cond_net is not None:
            cond_net.run(blobs, ctx.shape_only, ctx.trace)
            v = blobs.get(p.conditionVar)
            if v is None:
                ctx.fail(f"condition network did not produce conditionVar {p.conditionVar!r}")
            if not bool(np.asarray(v).reshape(-1)[0] != 0):
                break
        elif p.conditionVar:
            v = blobs.get(p.conditionVar)
            if v is not None and not bool(np.asarray(v).reshape(-1)[0] != 0):
                break
        try:
            body.run(blobs, ctx.shape_only, ctx.trace)
        except _LoopBreak:
            break
        except _LoopContinue:
            pass
        it += 1
        if it > 10_000_000:
            ctx.fail("loop ran more than 10,000,000 iterations")
    return None


@op("loopBreak")
def _loop_break(ctx, p, ins):
    raise _LoopBreak()


@op("loopContinue")
def _loop_continue(ctx, p, ins):
    raise _LoopContinue()


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
        return tuple(_ints(ins[0]).reshape(-1).tolist())
    return tuple(int(s) for s in p.outputShape)


# --------------------------------------------------------------------------- 3-d layers

def _pads3(p, in_dhw, k, s, d=(1, 1, 1)):
    """[(before, after)] * 3 and output sizes for CUSTOM / VALID / SAME padding."""
    pads, outs = [], []
    custom = ((p.customPaddingFront, p.customPaddingBack), (p.customPaddingTop, p.customPaddingBottom),
              (p.customPaddingLeft, p.customPaddingRight))
    for i in range(3):
        keff = d[i] * (k[i] - 1) + 1
        if p.paddingType == 2:       # SAME: extra padding at the back/bottom/right
            o, b, a = K.same_pads(in_dhw[i], keff, s[i])
        elif p.paddingType == 1:     # VALID
            b = a = 0
            o = (in_dhw[i] - keff) // s[i] + 1
        else:
            b, a = int(custom[i][0]), int(custom[i][1])
            o = (in_dhw[i] + b + a - keff) // s[i] + 1
        pads.append((b, a))
        outs.append(o)
    return pads, outs


def _windows3(xp, k, s, d, outs):
    """Yield (kernel index, strided view [N, C, Do, Ho, Wo]) for every kernel tap."""
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                yield (a, b, c), xp[:, :, a * d[0]: a * d[0] + s[0] * (outs[0] - 1) + 1: s[0],
                                    b * d[1]: b * d[1] + s[1] * (outs[1] - 1) + 1: s[1],
                                    c * d[2]: c * d[2] + s[2] * (outs[2] - 1) + 1: s[2]]


@op("convolution3d")
def _conv3d(ctx, p, ins):
    if p.isDeconvolution:
        raise UnsupportedError(f"layer {ctx.name!r} (convolution3d): 3-d deconvolution is not "
                               "supported by the reference runtime")
    x = _f(ins[0])
    x5, lead = _lead_fold(x, 4)
    n, c = x5.shape[:2]
    o, cin, g = int(p.outputChannels), int(p.inputChannels), int(p.nGroups) or 1
    k = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    s = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    d = (int(p.dilationDepth) or 1, int(p.dilationHeight) or 1, int(p.dilationWidth) or 1)
    if c != cin:
        ctx.fail(f"input has {c} channels, inputChannels is {cin}")
    pads, outs = _pads3(p, x5.shape[2:], k, s, d)
    if min(outs) <= 0:
        ctx.fail(f"output would be empty ({outs}) for input {tuple(x5.shape[2:])}")
    out_shape = lead + (o, *outs)
    if ctx.shape_only:
        return _zeros(out_shape)
    w = ctx.w(p.weights, (o, cin // g) + k)
    xp = np.pad(x5, [(0, 0), (0, 0)] + pads)
    cg, og = cin // g, o // g
    y = np.empty((n, o) + tuple(outs), F32)
    for gi in range(g):
        cols = np.empty((n, cg) + k + tuple(outs), F32)
        for (a, b, cc), view in _windows3(xp[:, gi * cg:(gi + 1) * cg], k, s, d, outs):
            cols[:, :, a, b, cc] = view
        cols = cols.reshape(n, cg * k[0] * k[1] * k[2], -1)
        wm = w[gi * og:(gi + 1) * og].reshape(og, -1)
        y[:, gi * og:(gi + 1) * og] = np.matmul(wm, cols).reshape((n, og) + tuple(outs))
    if p.hasBias:
        y += ctx.w(p.bias, (o,), field="bias").reshape(1, -1, 1, 1, 1)
    return y.reshape(out_shape)


@op("pooling3d")
def _pool3d(ctx, p, ins):
    x = _f(ins[0])
    x5, lead = _lead_fold(x, 4)
    k = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    s = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    pads, outs = _pads3(p, x5.shape[2:], k, s)
    if min(outs) <= 0:
        ctx.fail(f"output would be empty ({outs}) for input {tuple(x5.shape[2:])}")
    out_shape = lead + x5.shape[1:2] + tuple(outs)
    if ctx.shape_only:
        return _zeros(out_shape)
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


# --------------------------------------------------------------------------- detection, sampling

def _iou_center(a, b):
    """IoU of boxes given as (x_center, y_center, width, height)."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@op("NonMaximumSuppression")
def _nms(ctx, p, ins):
    boxes, scores = _f(ins[0]), _f(ins[1])
    iou_t = float(ins[2].reshape(-1)[0]) if len(ins) > 2 else p.iouThreshold
    score_t = float(ins[3].reshape(-1)[0]) if len(ins) > 3 else p.scoreThreshold
    max_boxes = int(ins[4].reshape(-1)[0]) if len(ins) > 4 else int(p.maxBoxes)
    b, n, c = scores.shape
    out_boxes = np.zeros((b, max_boxes, 4), F32)
    out_scores = np.zeros((b, max_boxes, c), F32)
    out_idx = np.full((b, max_boxes), -1, F32)
    out_n = np.zeros(b, F32)
    for bi in range(b):
        best = scores[bi].max(axis=1)
        cls = scores[bi].argmax(axis=1)
        order = np.argsort(-best, kind="stable")
        kept: list[int] = []
        for i in order:
            if len(kept) >= max_boxes:
                break
            if best[i] < score_t:
                break
            if all(_iou_center(boxes[bi, i], boxes[bi, j]) <= iou_t
                   for j in kept if not p.perClassSuppression or cls[j] == cls[i]):
                kept.append(int(i))
        if not kept and n:
            kept = [int(order[0])]      # never an empty result (NeuralNetwork.proto)
        for k, i in enumerate(kept):
            out_boxes[bi, k] = boxes[bi, i]
            out_scores[bi, k] = scores[bi, i]
            out_idx[bi, k] = i
        out_n[bi] = len(kept)
    return [out_boxes, out_scores, out_idx, out_n]


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


@op("cropResize")
def _crop_resize(ctx, p, ins):
    """Crop boxes and resize them bilinearly.  Only the endpoint-aligned sampling
    modes run (their semantics are pinned down by coremltools' reference tests);
    UPSAMPLE_MODE and ROI_ALIGN_MODE raise rather than guess."""
    x, roi = _f(ins[0]), _f(ins[1])
    method = p.mode.samplingMethod
    if method not in (0, 1):
        raise UnsupportedError(f"layer {ctx.name!r} (cropResize): sampling mode "
                               f"{['STRICT_ALIGN_ENDPOINTS', 'ALIGN_ENDPOINTS', 'UPSAMPLE', 'ROI_ALIGN'][method]}"
                               " is not supported by the reference runtime")
    x5 = x.reshape((1,) * (5 - x.ndim) + x.shape) if x.ndim < 5 else x
    _, b, c, h, w = x5.shape
    th, tw = _hw(p.targetSize, (1, 1))
    boxes = roi.reshape(roi.shape[0], -1)
    with_index = boxes.shape[1] == 5
    if boxes.shape[1] not in (4, 5):
        ctx.fail(f"RoI input must be [N,1,4,1,1] or [N,1,5,1,1], got {tuple(roi.shape)}")
    n = boxes.shape[0]
    out_b = 1 if with_index else b
    if ctx.shape_only:
        return _zeros((n, out_b, c, th, tw))
    scale = p.spatialScale or 1.0
    out = np.zeros((n, out_b, c, th, tw), F32)
    for i in range(n):
        v = boxes[i, 1:] if with_index else boxes[i]
        mode = p.boxIndicesMode.boxMode
        if mode == 0:
            hs, ws, he, we = v
        elif mode == 1:
            ws, hs, we, he = v
        else:
            if mode == 2:
                hc, wc, bh, bw = v
            else:
                wc, hc, bw, bh = v
            hs, he, ws, we = hc - bh / 2, hc + bh / 2, wc - bw / 2, wc + bw / 2
        if p.normalizedCoordinates:
            hs, he, ws, we = hs * (h - 1), he * (h - 1), ws * (w - 1), we * (w - 1)
        hs, he, ws, we = hs * scale, he * scale, ws * scale, we * scale

        def grid(s, e, k):
            if k == 1:
                return np.array([s if method == 0 else (s + e) / 2.0])
            return np.linspace(s, e, k)
        src = x5[0, int(boxes[i, 0])][None] if with_index else x5[0]
        out[i] = K.bilinear(src, grid(hs, he, th), grid(ws, we, tw))
    return out
