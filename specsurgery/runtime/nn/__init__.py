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

This package holds the engine (:class:`Net`, :class:`Ctx`); the kernels live in one
module per family (``conv``, ``pool``, ``linear``, ``norm``, ``activation``,
``elementwise``, ``reduce``, ``shape``, ``tensor``, ``resample``, ``recurrent``,
``control``, ``rand``, ``detection``) and register themselves in ``OPS``
(``_base``) when imported.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ... import budget
from ... import weights as _weights
from ...errors import SpecSurgeryError, UnsupportedError
from ...nn.kinds import weight_fields
# the kernel modules register their layer kinds in OPS when imported
from . import (activation, control, conv, detection, elementwise, linear, norm, pool,  # noqa: F401
               rand, recurrent, reduce, resample, shape, tensor)
from ._base import F32, OPS, LayerError, _LoopBreak, _LoopContinue, op, supported_kinds  # noqa: F401

__all__ = ["Ctx", "LayerError", "Net", "OPS", "SHAPE_PRESERVING", "op", "supported_kinds"]


# --------------------------------------------------------------------------- context

class Ctx:
    """What a layer function sees: its layer, the weight cache, the mode."""

    __slots__ = ("net", "name", "kind", "layer", "fields", "shape_only", "rank5", "trace")

    def __init__(self, net: "Net"):
        self.net = net
        self.shape_only = False
        self.rank5 = net.rank5
        self.layer = self.fields = None

    def weight(self, path: str, optional: bool = False) -> Optional[np.ndarray]:
        """The layer's weight ``path`` (e.g. ``"weights"``, ``"weightParams[1].forgetGateBiasVector"``),
        decoded with the shape and channel axis that the layer-kind table
        (:func:`specsurgery.nn.kinds.weight_fields`) gives it.  ``optional``: None
        when the field holds no values."""
        if self.fields is None:
            self.fields = {f.path: f for f in weight_fields(self.layer)}
        wf = self.fields.get(path)
        if wf is None:
            listed = ", ".join(sorted(self.fields)) or "none"
            raise LayerError(f"layer {self.name!r} ({self.kind}): the layer-kind table "
                             f"(specsurgery/nn/kinds.py) lists no weight {path!r} for this layer "
                             f"(it lists: {listed}); the table and the runtime kernel disagree")
        if optional and _weights.storage_kind(wf.wp) == "empty":
            return None
        if self.net.root.decoded is not None:
            self.net.root.decoded.append((self.name, path))
        if wf.shape is not None:
            budget.check(wf.shape, 4, what=f"layer {self.net.where}{self.name!r} ({self.kind}) weight {path}")
        return self._decode(wf.wp, wf.shape, wf.channel_axis, path)

    def room(self, shape, what: str = "output") -> tuple:
        """Refuse an array of ``shape`` (a size the layer's parameters set) over the
        memory budget, before the kernel allocates it; returns the shape as ints."""
        shape = tuple(int(s) for s in shape)
        budget.check(shape, 4, what=f"layer {self.net.where}{self.name!r} ({self.kind}) {what}")
        return shape

    def work(self, macs) -> None:
        """Count ``macs`` multiply-adds against the prediction's work cap (real runs only)."""
        if self.shape_only:
            return
        root = self.net.root
        root.macs += float(macs)
        budget.check_work(root.macs, what=f"layer {self.net.where}{self.name!r} ({self.kind})")

    def steps(self, n: int, what: str = "sequence") -> int:
        """Refuse a loop or sequence of ``n`` steps over the iteration cap."""
        return budget.check_iterations(n, what=f"layer {self.net.where}{self.name!r} ({self.kind}) {what}")

    def _decode(self, wp, shape, channel_axis, field) -> np.ndarray:
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
        self._root = root      # None for a top-level net (no self-reference: no cycle for the GC)
        self.where = where
        if root is None:
            self.wcache: dict = {}
            self.subnets: dict = {}
            #: a list to record (layer name, weight path) of every weight decoded, or None
            self.decoded: Optional[list] = None
            self.macs = 0.0          # multiply-adds of the current prediction (budget.check_work)
        self.layers = list(nn_msg.layers)
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

    @property
    def root(self) -> "Net":
        return self._root if self._root is not None else self

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
        if self.root is self:
            self.macs = 0.0
        ctx = Ctx(self)
        ctx.shape_only = shape_only
        ctx.trace = trace
        free = keep is not None and bool(self.last_use)
        for step_i, (name, kind, fn, params, ins, outs) in enumerate(self.steps):
            ctx.name, ctx.kind = name, kind
            ctx.layer, ctx.fields = self.layers[step_i], None
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
            except (ValueError, IndexError, KeyError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
                shapes = ", ".join(str(tuple(a.shape)) for a in args)
                raise LayerError(f"layer {self.where}{name!r} ({kind}) failed on inputs of "
                                 f"shape {shapes}: {exc}") from None
            except MemoryError:
                shapes = ", ".join(str(tuple(a.shape)) for a in args)
                raise budget.BudgetError(
                    f"layer {self.where}{name!r} ({kind}) ran out of memory on inputs of shape "
                    f"{shapes}; its parameters ask for more than this machine holds (lower the "
                    f"input size, or check the layer)") from None
            if res is None:
                continue
            if not isinstance(res, (list, tuple)):
                res = (res,)
            if shape_only:   # nothing was allocated; refuse what a real run could not hold
                for o, v in zip(outs, res):
                    if v is not None:
                        budget.check(np.shape(v), 4, what=f"layer {self.where}{name!r} ({kind}) output {o!r}")
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
