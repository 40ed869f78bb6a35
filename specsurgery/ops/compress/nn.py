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

from ... import budget
from ... import io as ssio
from ...errors import SpecSurgeryError
from ...nn.kinds import dynamic_weights, kind_of, own_weights, weight_fields
from ...spec import iter_models, nn_of
from ...weights import decode, storage_kind, weight_count, weight_nbytes
from .modes import FLOAT16_MAX, encode, prune_magnitude, set_float32_fast
from .options import Options, Selector
from .report import CompressReport, LayerReport, Skipped, snr_from_sums

_FLOAT32_MAX = float(np.finfo(np.float32).max)
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
    return any(storage_kind(wp) != "empty" for _, wp in own_weights(layer))


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
        reported = len(report.skipped)
        row = _compress_one(layer, stage, parent, opts, selector, report)
        if row is None:
            if counts is not None and len(report.skipped) > reported:   # not "not selected"
                counts[1].append(name)
            continue
        report.layers.append(row)
        if counts is not None:
            counts[0].append(name)
        need = max([need, 1] + [v for prefix, v in _VERSION_OF if row.storage_after.startswith(prefix)])
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
    reason = kind_refusal(layer, opts.mode)
    fields = layer_fields(layer) if reason is None else []
    if reason is None and layer.isUpdatable:
        reason = "updatable layer: Core ML trains float32 weights, they must stay unquantized"
    if reason is not None:
        skip(reason)
        return None
    if opts.mode == "fp16":
        fields = fields + _stray_fields(layer, fields)
    # An optional field left empty stays so; a required one that is empty
    # makes the layer unreadable (reported below, layer untouched).
    targets = [f for f in fields if f.required or storage_kind(f.wp) != "empty"]
    if opts.mode != "fp16":
        targets = [f for f in targets if f.main]
    stored = sorted({storage_kind(f.wp) for f in targets} - {"empty"})
    if not stored:
        skip("its weight fields are empty")
        return None
    if "invalid" in stored:
        skip("its weight storage is invalid (more than one of floatValue, float16Value, rawValue and "
             "int8RawValue is set); left as is")
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
    # Read every field first: a size mismatch or unfit values skip the whole
    # layer untouched.  The counts are compared before decoding, so a declared
    # shape far larger than the stored data allocates nothing.
    originals = []
    for f in targets:
        expected = math.prod(f.shape)
        held = weight_count(f.wp)
        if held != expected:
            skip(f"{f.path} holds {held} values, the layer's parameters call for {expected} "
                 f"(shape {'x'.join(map(str, f.shape))})")
            return None
        # The float32 copy decoding makes (the stored data may be float16).
        budget.check(f.shape, 4, what=f"compress: {where} ({kind}) field {f.path!r}")
        try:
            values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{name}.{f.path}")
        except SpecSurgeryError as exc:
            skip(f"cannot read {f.path}: {exc}")
            return None
        why = _unfit(values, f.path, opts.mode)
        if why is not None:
            if why.startswith("!"):
                raise SpecSurgeryError(
                    f"compress: {where} ({kind}): {why[1:]}; no mode stores such values faithfully: "
                    f"fix the weights, or leave the layer out with --exclude {name!r}")
            skip(why)
            return None
        originals.append(values)
    return _compress_fields(stage, name, kind, parent, targets, originals, opts, report)


def _unfit(values, path: str, mode: str) -> Optional[str]:
    """Why ``values`` cannot take ``mode``'s storage: a reason to skip the layer,
    or, starting with "!", one that makes compress fail (NaN or infinity)."""
    if not values.size:
        return None
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        return f"!field {path!r} holds {bad} NaN or infinite value(s)"
    if mode == "fp16" and max(-lo, hi) > FLOAT16_MAX:
        return (f"{path}: values reach {max(-lo, hi):.4g}, beyond float16's range (+-{FLOAT16_MAX:.0f}); "
                "left float32")
    if mode == "linear" and max(hi, 0.0) - min(lo, 0.0) > _FLOAT32_MAX:
        return (f"{path}: values span {lo:.4g} .. {hi:.4g}, wider than float32 holds; a linear scale "
                "would overflow: left float32")
    return None


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
        with np.errstate(over="ignore", invalid="ignore"):    # huge weights: an inf SNR sum, no warning
            signal += float(np.dot(a, a))
        if written is None:         # linear: the rounding error, already measured
            noise += err
        else:
            d = written.reshape(-1)
            with np.errstate(over="ignore", invalid="ignore"):
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
            for f in layer_fields(layer):
                if storage_kind(f.wp) in ("float32", "empty"):
                    continue
                values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{layer.name}.{f.path}")
                set_float32_fast(f.wp, values)
    return out


# --------------------------------------------------------------------------- weight fields

@dataclass
class _Field:
    """A weight field of the layer-kind table with its shape resolved: a
    field whose shape the parameters leave open (PReLU alphas) takes the
    number of values it holds."""

    path: str
    wp: object
    shape: tuple
    axis: int               # the axis per-channel scales run along
    channels: int           # scales Core ML accepts per channel (1: per tensor only)
    main: bool              # the layer's big matrix/tensor (n-bit modes compress these)
    required: bool


def layer_fields(layer) -> list:
    """The layer's weight fields (:func:`specsurgery.nn.kinds.weight_fields`),
    each with a definite shape."""
    out = []
    for f in weight_fields(layer):
        shape = f.shape if f.shape is not None else (weight_count(f.wp),)
        out.append(_Field(f.path, f.wp, tuple(shape), f.channel_axis, f.channels, f.main, f.required))
    return out


def _stray_fields(layer, fields) -> list:
    """Weights the layer holds although its parameters do not call for them
    (a bias with hasBias false): float16 must cover them too, or the layer
    would mix float16 and float32 (Core ML's validator refuses that)."""
    known = {f.path for f in fields}
    return [_Field(path, wp, (weight_count(wp),), 0, 1, False, False) for path, wp in own_weights(layer)
            if path not in known and storage_kind(wp) != "empty"]


def kind_refusal(layer, mode: str) -> Optional[str]:
    """Why this layer's weights cannot take ``mode``'s storage, or None."""
    entry = kind_of(layer)
    if entry.compress == "none":
        return entry.compress_reason
    if entry.compress == "fp16" and mode in ("linear", "palettize"):
        return entry.compress_reason
    dynamic = dynamic_weights(layer)
    if dynamic:
        return dynamic
    return None
