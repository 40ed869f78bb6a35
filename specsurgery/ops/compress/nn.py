"""compress for neuralNetwork models: every layer that holds weights, nested
loop and branch bodies included, in Core ML's own ``WeightParams`` storage.

Which layer kinds may hold which storage follows Core ML's validator
(``NeuralNetworkLayerValidator.cpp``), as the layer-kind table says
(``LayerKind.compress``: ``"any"``, ``"fp16"`` or ``"none"`` with the reason).
A layer must not mix float16 and float32 fields, so ``fp16`` converts every
field of a layer, while the n-bit modes compress the main weight fields and
keep biases float32 (a quantized weight next to a float32 bias is allowed).
Core ML's validator checks each layer of a loop or branch body on its own,
so nested layers are compressed (or skipped) one by one, and the report says
which body holds each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from ... import io as ssio
from ...errors import SpecSurgeryError
from ...spec import iter_models, nn_of
from ...weights import decode, storage_kind, weight_nbytes
from .modes import FLOAT16_MAX, encode, prune_magnitude, set_float32_fast
from .options import Options, Selector
from .report import CompressReport, LayerReport, Skipped, snr_from_sums

#: Spec version each storage needs (float32 pruning: any).
_VERSION_OF = (("float16", 2), ("linear", 3), ("lut", 3))


# --------------------------------------------------------------------------- walking layers

def iter_layers(nn, parent: str = "") -> Iterator[tuple[object, str]]:
    """``(layer, parent)`` for every layer of a network, those inside branch and
    loop bodies included; ``parent`` names the body holding a nested layer
    (``"loop 'l' body"``, ``"branch 'b' else"``; ``""`` at the top level)."""
    for layer in nn.layers:
        yield layer, parent
        for label, sub in _bodies(layer):
            where = f"{label} of {parent}" if parent else label
            yield from iter_layers(sub, where)


def _bodies(layer):
    """The networks nested in a loop or branch layer, each with a label."""
    kind = layer.WhichOneof("layer")
    if kind == "branch":
        return [(f"branch {layer.name!r} if", layer.branch.ifBranch),
                (f"branch {layer.name!r} else", layer.branch.elseBranch)]
    if kind == "loop":
        return [(f"loop {layer.name!r} condition", layer.loop.conditionNetwork),
                (f"loop {layer.name!r} body", layer.loop.bodyNetwork)]
    return []


def has_weights(layer) -> bool:
    """Whether the layer itself holds weight data (a loop or branch holds
    none: its nested layers hold theirs)."""
    from ...weights import layer_weights
    if layer.WhichOneof("layer") in ("loop", "branch"):
        return False
    return any(storage_kind(wp) != "empty" for _, wp in layer_weights(layer))


def count_weighted_layers(model) -> int:
    """How many neuralNetwork layers hold weights, nested ones included (a
    progress total)."""
    total = 0
    for info in iter_models(ssio.load_spec(model)):
        nn = nn_of(info.model)
        if nn is not None:
            total += sum(1 for layer, _ in iter_layers(nn) if has_weights(layer))
    return total


# --------------------------------------------------------------------------- compress

def compress_network(nn, stage: str, opts: Options, selector: Selector, report: CompressReport,
                     known: list, progress: Optional[Callable]) -> int:
    """Compress the layers of one network; returns the spec version it needs (0: none)."""
    need = 0
    bodies: dict[str, list] = {}      # body label -> [compressed, skipped] names
    for layer, parent in iter_layers(nn):
        name, kind = layer.name, layer.WhichOneof("layer")
        known.append(f"{stage}/{name}" if stage else name)
        if not has_weights(layer):
            # Weight-free layers (loops and branches too) are not worth a line,
            # unless asked for by name.
            selector.wants(stage, name)
            continue
        counts = bodies.setdefault(parent, [[], []]) if parent else None
        row = _compress_one(layer, stage, parent, opts, selector, report)
        if row is None:
            if counts is not None:
                counts[1].append(name)
            continue
        report.layers.append(row)
        if counts is not None:
            counts[0].append(name)
        need = max([need] + [v for prefix, v in _VERSION_OF if row.storage_after.startswith(prefix)])
        need = max(need, 1)
        if progress is not None:
            progress(row.name)
    for parent, (done, skipped) in bodies.items():
        where = f"{stage}: " if stage else ""
        report.note(f"{where}{parent}: each nested layer compressed on its own (as Core ML checks them): "
                    f"{len(done)} compressed, {len(skipped)} skipped"
                    + (f" ({', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''})" if skipped else ""))
    return need


def _compress_one(layer, stage, parent, opts, selector, report) -> Optional[LayerReport]:
    """The report row of one compressed layer, or None when it is skipped (the
    reason goes into ``report.skipped``)."""
    name, kind = layer.name, layer.WhichOneof("layer")
    where = f"layer {name!r}" + (f" in stage {stage!r}" if stage else "") + (f" ({parent})" if parent else "")

    def skip(reason):
        report.skipped.append(Skipped(stage, name, kind, reason, parent))

    why = selector.wants(stage, name)
    if why is not None:
        if not why.startswith("not selected"):
            skip(why)
        return None
    fields = layer_fields(layer)
    reason = fields if isinstance(fields, str) else kind_refusal(layer, opts.mode)
    if reason is None and layer.isUpdatable:
        reason = "updatable layer: Core ML trains float32 weights, they must stay unquantized"
    if reason is not None:
        skip(reason)
        return None
    # An optional field left empty stays so; a required one that is empty
    # makes the layer unreadable (reported below, layer untouched).
    targets = [f for f in fields if f.required or storage_kind(f.wp) != "empty"]
    if opts.mode != "fp16":
        targets = [f for f in targets if f.main]
    stored = sorted({storage_kind(f.wp) for f in targets} - {"empty"})
    if not stored:
        skip("its weight fields are empty")
        return None
    if any(s != "float32" for s in stored):
        stored = [s for s in stored if s != "float32"]
        if selector.layers and selector.explicit(stage, name):
            raise SpecSurgeryError(
                f"compress: {where} is already {'/'.join(stored)}; quantizing it again would stack "
                "errors. Compress the float model, or leave the layer out of --layers")
        skip(f"already {'/'.join(stored)}: never quantized twice; compress the float model instead")
        return None
    count = sum(math.prod(f.shape) for f in targets)
    if count == 0:
        skip("its weight fields are empty")
        return None
    if count < opts.min_weights:
        skip(f"{count} weights < min_weights {opts.min_weights}")
        return None
    # Decode every field first: a size mismatch skips the whole layer untouched.
    originals = []
    for f in targets:
        expected = math.prod(f.shape)
        try:
            values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{name}.{f.path}")
        except SpecSurgeryError as exc:
            skip(f"cannot read {f.path}: {exc}")
            return None
        if values.size != expected:
            skip(f"{f.path} holds {values.size} values, the layer needs {expected}")
            return None
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            raise SpecSurgeryError(
                f"compress: {where} ({kind}): {f.path} holds {bad} NaN or infinite value(s), which no "
                f"mode can store faithfully; fix the weights, or leave the layer out with --exclude {name!r}")
        if opts.mode == "fp16" and values.size:
            peak = float(np.max(np.abs(values)))
            if peak > FLOAT16_MAX:
                skip(f"{f.path} reaches {peak:.4g}, beyond float16's +-{FLOAT16_MAX:.0f}: left float32")
                return None
        originals.append(values)
    return _compress_fields(stage, name, kind, parent, targets, originals, opts, report)


def _compress_fields(stage, name, kind, parent, targets, originals, opts, report) -> LayerReport:
    sparsity = opts.sparsity
    # The SNR costs a pass or two over the weights: only when a report is asked for.
    measure = opts.measure
    keep = measure or bool(sparsity)
    bytes_before = sum(weight_nbytes(f.wp) for f in targets)
    storages, zeros = [], 0
    signal = noise = 0.0
    count = 0
    for f, values in zip(targets, originals):
        pruned = bool(sparsity) and (f.main or opts.mode == "prune")
        work = prune_magnitude(values, sparsity) if pruned else values
        axis = None
        if opts.mode == "linear" and opts.per_channel:
            if f.channels > 1 and f.shape[f.axis] == f.channels:
                axis = f.axis
            elif f.main and len(f.shape) > 1 and f.shape[f.axis] > 1:
                report.note(f"{stage + '/' if stage else ''}{name}: {f.path} gets one scale per tensor "
                            "(Core ML takes per-channel scales for it only when it counts one per "
                            "output channel)")
        # ``written`` is the array whose bytes go into the spec (what Core ML
        # decodes); the tests check the bytes decode to it independently.
        written, err = encode(f.wp, work, opts, axis=axis, pruned=pruned, keep=keep)
        storages.append(storage_kind(f.wp))
        if sparsity:
            zeros += int(np.count_nonzero(written == 0)) if written is not None else 0
        count += values.size
        if not measure:
            continue
        a = values.reshape(-1)
        signal += float(np.dot(a, a))
        if written is None:         # linear: the rounding error, already measured
            noise += err
        else:
            d = written.reshape(-1)
            if d.dtype == np.float32 and not np.may_share_memory(d, a):
                np.subtract(a, d, out=d)
            else:
                d = a - d
            noise += float(np.dot(d, d))
    bytes_after = sum(weight_nbytes(f.wp) for f in targets)
    snr = snr_from_sums(signal, noise) if measure else None
    return LayerReport(stage, name, kind, [f.path for f in targets], count, "float32",
                       ",".join(sorted(set(storages))), 8.0 * bytes_before / count,
                       8.0 * bytes_after / count, bytes_before, bytes_after, snr,
                       round(zeros / count, 4) if sparsity else None, parent)


# --------------------------------------------------------------------------- dequantize

def dequantize(model, *, inplace: bool = False):
    """A copy of ``model`` whose neuralNetwork weights are all float32 again
    (the values the compressed storage decodes to).  Useful as a reference:
    running it equals running the compressed model."""
    spec = ssio.load_spec(model)
    out = spec if inplace else ssio.copy_spec(spec)
    for info in iter_models(out):
        nn = nn_of(info.model)
        if nn is None:
            continue
        for layer, _ in iter_layers(nn):
            fields = layer_fields(layer)
            if isinstance(fields, str):
                continue
            for f in fields:
                if storage_kind(f.wp) in ("float32", "empty"):
                    continue
                values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{layer.name}.{f.path}")
                set_float32_fast(f.wp, values)
    return out


# --------------------------------------------------------------------------- weight fields

#: Kinds whose weights may hold n-bit storage (Core ML's validator accepts QUINT).
NBIT_KINDS = frozenset(
    "convolution innerProduct batchedMatmul embedding embeddingND simpleRecurrent gru "
    "uniDirectionalLSTM biDirectionalLSTM loadConstant loadConstantND batchnorm scale bias".split())
#: Kinds that accept float16 but not quantized storage, with the reason.
FP16_ONLY = {
    "convolution3d": "Core ML's validator rejects quantized convolution3d weights (float16 is allowed)",
    "activation": "PReLU/ParametricSoftplus parameters: float16 only",
}
#: Kinds whose weights must stay as they are, with the reason.
NO_STORAGE = {
    "layerNormalization": "Core ML requires float32 gamma and beta in layerNormalization",
    "custom": "custom-layer weights are read by the app's own layer code",
}


def kind_refusal(layer, mode):
    kind = layer.WhichOneof("layer")
    if kind in NO_STORAGE:
        return NO_STORAGE[kind]
    if kind in FP16_ONLY and mode in ("linear", "palettize"):
        return FP16_ONLY[kind]
    return None


def layer_fields(layer):
    kind = layer.WhichOneof("layer")
    if kind in ("loop", "branch"):
        return []
    fields = _layout(layer)
    if fields == [] and kind not in NO_STORAGE:
        from ...weights import layer_weights
        if any(storage_kind(wp) != "empty" for _, wp in layer_weights(layer)):
            return f"compress does not know where {kind} keeps its weights; left as is"
    return fields


@dataclass
class _Field:
    path: str
    wp: object
    shape: tuple
    axis: int               # output-channel axis of ``shape``
    channels: int           # scales Core ML accepts per channel (1: per tensor only)
    main: bool              # a weight matrix (n-bit modes compress these)
    required: bool = True


def _kernel(p):
    ks = list(p.kernelSize)
    return (int(ks[0]), int(ks[1])) if len(ks) == 2 else (3, 3)


def _layout(layer):
    """The weight fields of a layer with their shapes, or why it has none."""
    kind = layer.WhichOneof("layer")
    F = _Field
    if kind == "convolution":
        p = layer.convolution
        if len(layer.input) > 1:
            return "its weights come from the second input"
        kh, kw = _kernel(p)
        groups = p.nGroups or 1
        if p.isDeconvolution:
            shape = (p.kernelChannels, p.outputChannels // groups, kh, kw)
            fields = [F("weights", p.weights, shape, 1, p.outputChannels if groups == 1 else 1, True)]
        else:
            shape = (p.outputChannels, p.kernelChannels, kh, kw)
            fields = [F("weights", p.weights, shape, 0, p.outputChannels, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "innerProduct":
        p = layer.innerProduct
        fields = [F("weights", p.weights, (p.outputChannels, p.inputChannels), 0, p.outputChannels, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "batchedMatmul":
        p = layer.batchedMatmul
        if len(layer.input) > 1:
            return "its weight matrix comes from the second input"
        x1, x2 = p.weightMatrixFirstDimension, p.weightMatrixSecondDimension
        fields = [F("weights", p.weights, (x2, x1), 0, x2, True)]   # column-major [X1, X2]
        if p.hasBias:
            fields.append(F("bias", p.bias, (x2,), 0, 1, False))
        return fields
    if kind in ("embedding", "embeddingND"):
        p = getattr(layer, kind)
        out, vocab = ((p.outputChannels, p.inputDim) if kind == "embedding"
                      else (p.embeddingSize, p.vocabSize))
        fields = [F("weights", p.weights, (out, vocab), 0, out, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (out,), 0, 1, False))
        return fields
    if kind == "simpleRecurrent":
        p = layer.simpleRecurrent
        i, o = p.inputVectorSize, p.outputVectorSize
        fields = [F("weightMatrix", p.weightMatrix, (o, i), 0, o, True),
                  F("recursionMatrix", p.recursionMatrix, (o, o), 0, o, True)]
        if p.hasBiasVector:
            fields.append(F("biasVector", p.biasVector, (o,), 0, 1, False))
        return fields
    if kind == "gru":
        p = layer.gru
        i, o = p.inputVectorSize, p.outputVectorSize
        fields = []
        for gate in ("update", "reset", "output"):
            fields.append(F(f"{gate}GateWeightMatrix", getattr(p, f"{gate}GateWeightMatrix"), (o, i), 0, o, True))
            fields.append(F(f"{gate}GateRecursionMatrix", getattr(p, f"{gate}GateRecursionMatrix"), (o, o), 0, o, True))
            if p.hasBiasVectors:
                fields.append(F(f"{gate}GateBiasVector", getattr(p, f"{gate}GateBiasVector"), (o,), 0, 1, False))
        return fields
    if kind in ("uniDirectionalLSTM", "biDirectionalLSTM"):
        p = getattr(layer, kind)
        x, h = p.inputVectorSize, p.outputVectorSize
        groups = [("weightParams", p.weightParams)] if kind == "uniDirectionalLSTM" else [
            (f"weightParams[{d}]", wp) for d, wp in enumerate(p.weightParams)]
        fields = []
        for prefix, w in groups:
            for gate in ("inputGate", "forgetGate", "blockInput", "outputGate"):
                fields.append(F(f"{prefix}.{gate}WeightMatrix", getattr(w, f"{gate}WeightMatrix"), (h, x), 0, h, True))
                fields.append(F(f"{prefix}.{gate}RecursionMatrix", getattr(w, f"{gate}RecursionMatrix"), (h, h), 0, h, True))
            for name, wp in ((f, getattr(w, f)) for f in (
                    "inputGateBiasVector", "forgetGateBiasVector", "blockInputBiasVector",
                    "outputGateBiasVector", "inputGatePeepholeVector", "forgetGatePeepholeVector",
                    "outputGatePeepholeVector")):
                if storage_kind(wp) != "empty":
                    fields.append(F(f"{prefix}.{name}", wp, (h,), 0, 1, False))
        return fields
    if kind in ("loadConstant", "loadConstantND"):
        p = getattr(layer, kind)
        shape = tuple(int(d) for d in p.shape) or (0,)
        channels = shape[0] if kind == "loadConstant" and len(shape) == 3 and shape[0] > 1 else 1
        return [F("data", p.data, shape, 0, channels, True)]
    if kind == "batchnorm":
        p = layer.batchnorm
        fields = [F(n, getattr(p, n), (p.channels,), 0, 1, True) for n in ("gamma", "beta")]
        for n in ("mean", "variance"):
            if storage_kind(getattr(p, n)) != "empty":
                fields.append(F(n, getattr(p, n), (p.channels,), 0, 1, True))
        return fields
    if kind == "scale":
        p = layer.scale
        shape = tuple(int(d) for d in p.shapeScale)
        ch = shape[0] if len(shape) == 3 and shape[0] > 1 else 1
        fields = [F("scale", p.scale, shape, 0, ch, True)]
        if p.hasBias:
            bshape = tuple(int(d) for d in p.shapeBias)
            bch = bshape[0] if len(bshape) == 3 and bshape[0] > 1 else 1
            fields.append(F("bias", p.bias, bshape, 0, bch, True))
        return fields
    if kind == "bias":
        p = layer.bias
        shape = tuple(int(d) for d in p.shape)
        ch = shape[0] if len(shape) == 3 and shape[0] > 1 else 1
        return [F("bias", p.bias, shape, 0, ch, True)]
    if kind == "convolution3d":
        p = layer.convolution3d
        groups = p.nGroups or 1
        k = (p.kernelDepth, p.kernelHeight, p.kernelWidth)
        if p.isDeconvolution:
            shape = (p.outputChannels // groups, p.inputChannels) + k
        else:
            shape = (p.outputChannels, p.inputChannels // groups) + k
        fields = [F("weights", p.weights, shape, 0, 1, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "activation":
        act = layer.activation
        which = act.WhichOneof("NonlinearityType")
        if which == "PReLU":
            return [F("PReLU.alpha", act.PReLU.alpha, (len_of(act.PReLU.alpha),), 0, 1, True)]
        if which == "parametricSoftplus":
            a, b = act.parametricSoftplus.alpha, act.parametricSoftplus.beta
            return [F("parametricSoftplus.alpha", a, (len_of(a),), 0, 1, True),
                    F("parametricSoftplus.beta", b, (len_of(b),), 0, 1, True)]
        return []
    return []


def len_of(wp) -> int:
    kind = storage_kind(wp)
    if kind == "float32":
        return len(wp.floatValue)
    if kind == "float16":
        return len(wp.float16Value) // 2
    return 0


