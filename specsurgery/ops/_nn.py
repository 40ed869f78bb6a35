"""Neural-network helpers shared by the surgery operations.

Everything here reads the spec each time it is called: producer maps and
closures are views computed from ``nn.layers``, never an index kept beside
the spec.  The cut/extract core (:func:`sub_network`) builds a new
neuralNetwork model from a subset of layers with a new interface; ``split``
and ``extract`` are thin layers over it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from .._proto import FeatureTypes_pb2, Model_pb2
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from .. import spec as S
from ..graph import _layer_blobs   # one reading of what a (control-flow) layer reads and writes

FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE


class SurgeryNote(UserWarning):
    """Something an operation changed on purpose and wants the user to know
    (a spec version raised, a type coerced)."""


def note(message: str) -> None:
    warnings.warn(message, SurgeryNote, stacklevel=3)


# --------------------------------------------------------------------------- blob reads/writes

def layer_reads(layer) -> list[str]:
    """Blobs a layer reads: its inputs plus outer blobs its nested networks
    (branch / loop condition and body, taken in order) consume."""
    return _layer_blobs(layer)[0]


def layer_writes(layer) -> list[str]:
    """Blobs a layer writes: its outputs plus, for branch and loop layers,
    every blob their nested networks write (loop bodies update outer blobs
    through ``copy`` layers and list no outputs of their own)."""
    return _layer_blobs(layer)[1]


def outer_reads(nn) -> list[str]:
    """Blobs a nested network reads that it does not produce itself."""
    produced, out = set(), []
    for layer in nn.layers:
        for b in layer_reads(layer):
            if b not in produced and b not in out:
                out.append(b)
        produced.update(layer_writes(layer))
    return out


def producers(nn) -> dict[str, list[int]]:
    """blob -> indexes of the layers that write it (several only for ``copy``
    re-writes inside control flow)."""
    out: dict[str, list[int]] = {}
    for i, layer in enumerate(nn.layers):
        for b in layer_writes(layer):
            out.setdefault(b, []).append(i)
    return out


def consumers(nn) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, layer in enumerate(nn.layers):
        for b in layer_reads(layer):
            out.setdefault(b, []).append(i)
    return out


def blob_names(spec, nn=None) -> list[str]:
    """Every blob of an NN model: its inputs, then every layer output, in order."""
    nn = nn if nn is not None else S.nn_of(spec)
    seen, out = set(), []
    for name in [f.name for f in spec.description.input] + [b for l in nn.layers for b in l.output]:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _producer_before(prods: dict, blob: str, before: Optional[int]) -> Optional[int]:
    idxs = prods.get(blob)
    if not idxs:
        return None
    if before is None:
        return idxs[-1]
    earlier = [i for i in idxs if i < before]
    return earlier[-1] if earlier else None


@dataclass
class Closure:
    """The layers needed to compute some blobs, walking back to stop blobs."""

    layers: set = field(default_factory=set)         # layer indexes
    stops: set = field(default_factory=set)          # stop blobs actually reached
    inputs: set = field(default_factory=set)         # model inputs reached (not stops)
    parent: dict = field(default_factory=dict)       # blob -> consumer layer index (for paths)
    unknown: list = field(default_factory=list)      # blobs nobody produces


def closure(nn, targets: Iterable[str], stops: Iterable[str] = (), model_inputs: Iterable[str] = (),
            prods: Optional[dict] = None) -> Closure:
    """Walk backwards from ``targets``: every layer they need, stopping at
    ``stops`` (cut blobs) and at model inputs.  ``prods`` is a
    :func:`producers` map the caller already built (for repeated walks)."""
    stops, model_inputs = set(stops), set(model_inputs)
    prods = producers(nn) if prods is None else prods
    out = Closure()
    todo = [(b, None, None) for b in targets]   # (blob, consumer index, consumer position)
    seen = set()
    while todo:
        blob, consumer, before = todo.pop()
        key = (blob, before)
        if key in seen:
            continue
        seen.add(key)
        if blob in stops:
            out.stops.add(blob)
            continue
        idx = _producer_before(prods, blob, before)
        if idx is None:
            if blob in model_inputs:
                out.inputs.add(blob)
            elif blob not in out.unknown:
                out.unknown.append(blob)
            out.parent.setdefault(blob, consumer)
            continue
        out.parent.setdefault(blob, consumer)
        if idx in out.layers:
            continue
        out.layers.add(idx)
        for b in layer_reads(nn.layers[idx]):
            todo.append((b, idx, idx))
    return out


def path_to_input(nn, blob: str, model_inputs: Sequence[str], avoid: Iterable[str] = ()) -> list[str]:
    """A chain ``input -> layer -> blob -> ... -> blob`` from a model input to
    ``blob`` that does not pass through ``avoid`` blobs (empty if none)."""
    avoid = set(avoid)
    prods = producers(nn)
    inputs = set(model_inputs)
    memo: dict = {}

    def walk(b, depth=0):
        if b in memo:
            return memo[b]
        memo[b] = None
        if b in avoid:
            return None
        if b in inputs and b not in prods:
            memo[b] = [b]
            return memo[b]
        idx = _producer_before(prods, b, None)
        if idx is None or depth > 5000:
            return None
        layer = nn.layers[idx]
        for src in layer_reads(layer):
            chain = walk(src, depth + 1)
            if chain:
                memo[b] = chain + [f"[{layer.name}]", b]
                return memo[b]
        return None

    return walk(blob) or []


def path_to_target(nn, cl: Closure, blob: str) -> list[str]:
    """``blob -> [layer] -> blob ...`` forward from ``blob`` to a target of
    the closure walk that reached it."""
    chain, seen = [blob], set()
    idx = cl.parent.get(blob)
    while idx is not None and idx not in seen:
        seen.add(idx)
        layer = nn.layers[idx]
        out = layer.output[0] if len(layer.output) else "?"
        chain += [f"[{layer.name}]", out]
        idx = cl.parent.get(out)
    return chain


def format_path(chain: Sequence[str]) -> str:
    return " -> ".join(chain)


# --------------------------------------------------------------------------- shapes and types

def is_legacy(nn) -> bool:
    """True for the rank-5 [S,B,C,H,W] world (both shape mappings at their legacy 0)."""
    return nn.arrayInputShapeMapping == 0 and nn.imageInputShapeMapping == 0


def declared_shape(runtime_shape: Sequence[int], rank5_arrays: bool, blob: str = "") -> list[int]:
    """The MultiArray shape to declare for a blob the runtime holds as ``runtime_shape``.

    With the legacy rank-5 array mapping a declared [C,H,W] (or [C]) array
    becomes [1,1,C,H,W] inside the network, so a rank-5 blob is declared by
    its last three axes (its sequence and batch axes must be 1).  Every other
    blob (exact-rank networks) is declared with its shape as is; a network
    that must read it switches to the exact-rank array mapping
    (:func:`fit_shape_mapping`).
    """
    shape = [int(d) for d in runtime_shape]
    if rank5_arrays and len(shape) == 5:
        if shape[0] != 1 or shape[1] != 1:
            raise UnsupportedError(
                f"blob {blob!r} has rank-5 shape {shape} with sequence/batch axes {shape[:2]}; a legacy "
                "(rank-5 mapping) network can only take [C,H,W] or [C] arrays, so it cannot cross a "
                "cut; cut at a blob whose sequence and batch axes are 1")
        return shape[2:]
    return shape


def array_type(shape: Sequence[int], dtype: int = FLOAT32, flexible=None) -> "FeatureTypes_pb2.FeatureType":
    """A MultiArray FeatureType; ``flexible`` is ``("enum", [shapes])`` or
    ``("range", [(lo, hi)])`` with hi = -1 for unbounded."""
    ft = FeatureTypes_pb2.FeatureType()
    arr = ft.multiArrayType
    arr.dataType = dtype
    arr.shape.extend(int(d) for d in shape)
    if flexible:
        kind, values = flexible
        if kind == "enum":
            for s in values:
                arr.enumeratedShapes.shapes.add().shape.extend(int(d) for d in s)
        else:
            for lo, hi in values:
                r = arr.shapeRange.sizeRanges.add()
                r.lowerBound, r.upperBound = int(lo), int(hi)
    return ft


def input_variants(spec) -> list[dict]:
    """Alternative input shapes of the flexible inputs, for mapping
    flexibility through shape inference: ``[{"name": shape}, ...]`` with the
    default shapes first.  Each variant is a dict input name -> declared
    shape ([C,H,W] for images).  A range contributes its lower bound and its
    upper bound when bounded (else lower bound + 1 step, marked unbounded)."""
    flex = [f for f in spec.description.input if S.is_flexible(f.type)]
    if not flex:
        return []
    variants: list[dict] = []
    # enumerated: one variant per entry of the longest list (others default)
    for f in flex:
        ft = f.type
        kind = ft.WhichOneof("Type")
        if kind == "multiArrayType" and ft.multiArrayType.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
            for s in ft.multiArrayType.enumeratedShapes.shapes:
                variants.append({f.name: list(s.shape)})
        elif kind == "multiArrayType":
            rngs = ft.multiArrayType.shapeRange.sizeRanges
            lo = [int(r.lowerBound) for r in rngs]
            hi = [int(r.upperBound) if r.upperBound >= 0 else int(max(r.lowerBound, 1)) * 2 + 3 for r in rngs]
            variants += [{f.name: lo}, {f.name: hi}]
        elif ft.imageType.WhichOneof("SizeFlexibility") == "enumeratedSizes":
            for s in ft.imageType.enumeratedSizes.sizes:
                variants.append({f.name: [int(s.height), int(s.width)]})
        else:
            w, h = ft.imageType.imageSizeRange.widthRange, ft.imageType.imageSizeRange.heightRange
            lo = [max(int(h.lowerBound), 1), max(int(w.lowerBound), 1)]
            hi = [int(h.upperBound) if h.upperBound > 0 else lo[0] * 2 + 3,
                  int(w.upperBound) if w.upperBound > 0 else lo[1] * 2 + 3]
            variants += [{f.name: lo}, {f.name: hi}]
    return variants


def _unbounded_dims(spec) -> bool:
    for f in spec.description.input:
        ft = f.type
        if ft.WhichOneof("Type") == "multiArrayType" and ft.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange":
            if any(r.upperBound < 0 for r in ft.multiArrayType.shapeRange.sizeRanges):
                return True
        if ft.WhichOneof("Type") == "imageType" and ft.imageType.WhichOneof("SizeFlexibility") == "imageSizeRange":
            rr = ft.imageType.imageSizeRange
            if rr.widthRange.upperBound <= 0 or rr.heightRange.upperBound <= 0:
                return True
    return False


def shape_probe(spec, blobs: Sequence[str]) -> "Model_pb2.Model":
    """``spec`` reduced to the layers needed to compute ``blobs``: shape
    inference on it never touches layers after the cut (a custom layer, or a
    huge tail, further down does not matter)."""
    nn = S.nn_of(spec)
    cl = closure(nn, blobs, model_inputs=[f.name for f in spec.description.input])
    probe = Model_pb2.Model()
    probe.specificationVersion = spec.specificationVersion
    probe.description.input.extend(spec.description.input)
    pnn = probe.neuralNetwork
    pnn.arrayInputShapeMapping = nn.arrayInputShapeMapping
    pnn.imageInputShapeMapping = nn.imageInputShapeMapping
    pnn.preprocessing.extend(nn.preprocessing)
    for i in sorted(cl.layers):
        pnn.layers.add().CopyFrom(nn.layers[i])
    return probe


#: shape inference holds every blob; refuse probes whose rough size passes this
INFERENCE_BUDGET_BYTES = 8 << 30


def inference_cost(probe) -> int:
    """A rough upper guess of the bytes shape inference holds for ``probe``:
    input elements x 4 bytes x layers x 8 (channel growth)."""
    elements = 0
    for f in probe.description.input:
        shape = S.feature_shape(f.type) or [1]
        n = 1
        for d in shape:
            n *= max(int(d), 1)
        elements += n
    return elements * 4 * max(len(S.nn_of(probe).layers), 1) * 8


def _infer(probe, blobs, variant=None) -> dict:
    from ..runtime import infer_shapes

    cost = inference_cost(probe)
    if cost > INFERENCE_BUDGET_BYTES:
        raise SpecSurgeryError(
            f"cannot type the cut blob(s) {', '.join(map(repr, blobs))}: shape inference over "
            f"{len(S.nn_of(probe).layers)} layers at this input size would hold about {cost >> 30} GiB; "
            "pass their shapes explicitly (shapes={blob: [dims]})")
    try:
        got = infer_shapes(probe, variant) if variant else infer_shapes(probe)
    except SpecSurgeryError as exc:
        where = f" for flexible input shape {variant}" if variant else ""
        raise SpecSurgeryError(
            f"cannot type the cut blob(s) {', '.join(map(repr, blobs))}: shape inference failed{where} "
            f"({exc}); pass their shapes explicitly (shapes={{blob: [dims]}})") from None
    missing = [b for b in blobs if b not in got]
    if missing:
        raise SpecSurgeryError(
            "shape inference gave no shape for blob(s) " + ", ".join(repr(b) for b in missing)
            + "; pass their shapes explicitly (shapes={blob: [dims]})")
    return got


def blob_shapes(spec, blobs: Sequence[str], given: Optional[dict] = None) -> tuple[dict, dict]:
    """(default shapes, flexibility) of ``blobs`` as declared MultiArray
    shapes.  Shapes come from the runtime's shape inference (on the layers
    that compute the blobs only), unless ``given`` names them; flexibility is
    mapped by running inference on the alternative input shapes: a blob whose
    shape changes gets enumerated shapes (enumerated inputs) or a range
    (ranged inputs; unbounded where an input is) over the dims that change."""
    given = dict(given or {})
    nn = S.nn_of(spec)
    legacy = nn.arrayInputShapeMapping == 0
    shapes, flex = {}, {}
    for b in blobs:
        if b in given:
            shapes[b] = [int(d) for d in given[b]]
    todo = [b for b in blobs if b not in shapes]
    if not todo:
        return shapes, flex
    probe = shape_probe(spec, todo)
    base = _infer(probe, todo)
    for b in todo:
        shapes[b] = declared_shape(base[b], legacy, b)
    variants = input_variants(spec)
    if not variants:
        return shapes, flex
    results = [{b: declared_shape(got[b], legacy, b) for b in todo}
               for got in (_infer(probe, todo, v) for v in variants)]
    enumerated = not any(
        f.type.WhichOneof("Type") == "multiArrayType" and f.type.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange"
        or f.type.WhichOneof("Type") == "imageType" and f.type.imageType.WhichOneof("SizeFlexibility") == "imageSizeRange"
        for f in spec.description.input if S.is_flexible(f.type))
    unbounded = _unbounded_dims(spec)
    for b in todo:
        seen = [shapes[b]] + [r[b] for r in results]
        if all(s == shapes[b] for s in seen):
            continue
        if enumerated:
            uniq = []
            for s in seen:
                if s not in uniq:
                    uniq.append(s)
            flex[b] = ("enum", uniq)
        else:
            ranges = []
            for axis in range(len(shapes[b])):
                vals = [s[axis] for s in seen]
                lo, hi = min(vals), max(vals)
                ranges.append((lo, lo) if lo == hi else (lo, -1 if unbounded else hi))
            flex[b] = ("range", ranges)
    return shapes, flex


# --------------------------------------------------------------------------- building sub-networks

def copy_model_shell(spec, kind: str = "neuralNetwork") -> "Model_pb2.Model":
    """A new model with ``spec``'s version, metadata and NN settings (mapping
    modes), but no layers, features or preprocessing yet."""
    out = Model_pb2.Model()
    out.specificationVersion = spec.specificationVersion
    out.description.metadata.CopyFrom(spec.description.metadata)
    src = S.nn_of(spec)
    dst = getattr(out, kind)
    dst.arrayInputShapeMapping = src.arrayInputShapeMapping
    dst.imageInputShapeMapping = src.imageInputShapeMapping
    return out


def sub_network(spec, layer_idxs: Iterable[int], inputs: Sequence, outputs: Sequence,
                *, kind: str = "neuralNetwork", classifier_from=None, updatable: bool = False) -> "Model_pb2.Model":
    """A model of the given ``layer_idxs`` (kept in their original order).

    ``inputs``/``outputs`` are FeatureDescription messages (copied).  Image
    inputs keep their preprocessing entries.  ``kind`` names the NN message;
    for classifiers ``classifier_from`` is the original classifier message
    (labels and labelProbabilityLayerName are copied).  ``updatable`` keeps
    the update parameters of the original.
    """
    src_nn = S.nn_of(spec)
    out = copy_model_shell(spec, kind)
    nn = getattr(out, kind)
    for f in inputs:
        out.description.input.add().CopyFrom(f)
    for f in outputs:
        out.description.output.add().CopyFrom(f)
    names = {f.name for f in inputs}
    for pre in src_nn.preprocessing:
        if pre.featureName in names or (not pre.featureName and len(names) == 1
                                         and any(f.type.WhichOneof("Type") == "imageType" for f in inputs)):
            nn.preprocessing.add().CopyFrom(pre)
    for i in sorted(layer_idxs):
        nn.layers.add().CopyFrom(src_nn.layers[i])
    if classifier_from is not None:
        which = classifier_from.WhichOneof("ClassLabels")
        if which:
            getattr(nn, which).CopyFrom(getattr(classifier_from, which))
        nn.labelProbabilityLayerName = classifier_from.labelProbabilityLayerName
    if updatable and spec.isUpdatable:
        out.isUpdatable = True
        nn.updateParams.CopyFrom(src_nn.updateParams)
        for f in spec.description.trainingInput:
            out.description.trainingInput.add().CopyFrom(f)
    return out


def uses_only_ios12_layers(nn) -> bool:
    from ..nn.kinds import IOS12_KINDS as IOS12_LAYERS

    return all(S.layer_kind(l) in IOS12_LAYERS for l in nn.layers)


def fit_shape_mapping(model) -> None:
    """Make the mapping modes valid for a network that now has MultiArray
    inputs where the original may have had only images: Core ML rejects RANK4
    images with RANK5 arrays, and non-iOS 12 layers with RANK5 arrays.  In
    both cases the network already runs in exact-rank mode, so declaring
    arrays exact-rank (with their exact-rank shapes) keeps the computation."""
    nn = S.nn_of(model)
    has_array = any(f.type.WhichOneof("Type") == "multiArrayType" for f in model.description.input)
    if not has_array or nn.arrayInputShapeMapping != 0:
        return
    if nn.imageInputShapeMapping == 1:
        nn.arrayInputShapeMapping = 1
        return
    if not uses_only_ios12_layers(nn):
        raise UnsupportedError(
            "the part after the cut has layers newer than iOS 12 and a MultiArray input, which Core ML "
            "only allows with the exact-rank array mapping, but this network uses the legacy rank-5 "
            "mapping (blob shapes differ between the two); cut elsewhere or convert the model "
            "with minimum_deployment_target iOS 13 or later")


def spec_version_floor(model, floor: int = 1) -> int:
    """max(floor, the minimum version ``check`` computes for ``model``)."""
    need = floor
    try:
        from ..check import min_spec_version
    except ImportError:
        min_spec_version = None
    if min_spec_version is not None:
        need = max(need, int(min_spec_version(model)[0]))
    return need


def set_min_version(model, floor: int) -> int:
    model.specificationVersion = max(model.specificationVersion, spec_version_floor(model, floor))
    return model.specificationVersion


def set_needed_version(model, fallback: int) -> int:
    """Give a newly cut model the spec version its features need (the
    validator's minimum), so a backbone that only needs Core ML 3 is not
    pinned to its original's newer version; ``fallback`` when the minimum
    cannot be computed."""
    try:
        from ..check import min_spec_version
    except ImportError:
        model.specificationVersion = fallback
        return fallback
    model.specificationVersion = max(1, int(min_spec_version(model)[0]))
    return model.specificationVersion


def require_wired(spec, nn, op: str) -> None:
    """Refuse a network a cut cannot reason about: a layer reading a blob no
    input or layer produces, or reading one only a later layer writes (a
    cycle, or layers out of order).  Otherwise closures report misleading
    culprits ("never produced", "no single blob separates")."""
    defined = {f.name for f in spec.description.input}
    prods = producers(nn)
    undefined, early = [], []
    for layer in nn.layers:
        for b in layer_reads(layer):
            if b not in defined:
                (early if b in prods else undefined).append(f"layer {layer.name!r} reads {b!r}")
        defined.update(layer_writes(layer))
    if undefined:
        raise SpecSurgeryError(f"{op}: {'; '.join(undefined)}, which no model input or layer produces; "
                               "rewire the layer or add the missing input (see `specsurgery check`)")
    if early:
        from ..graph import build_graph

        build_graph(spec).topological_layers()   # raises with the cycle when there is one
        raise SpecSurgeryError(f"{op}: {'; '.join(early)} before the layer that writes it; Core ML runs "
                               "layers in the listed order: list them topologically (see `specsurgery check`)")


def unknown_blobs_error(spec, missing: Sequence[str], what: str = "blob") -> NotFoundError:
    nn = S.nn_of(spec)
    return NotFoundError(missing_message(what, list(missing), blob_names(spec, nn)))


def layer_weight_bytes(nn) -> list[int]:
    """Weight bytes of each layer, by index."""
    from ..weights import layer_weights, weight_nbytes

    return [sum(weight_nbytes(wp) for _, wp in layer_weights(layer)) for layer in nn.layers]


def total_weight_bytes(nn, layer_idxs=None) -> int:
    per_layer = layer_weight_bytes(nn)
    idxs = range(len(nn.layers)) if layer_idxs is None else layer_idxs
    return sum(per_layer[i] for i in idxs)


class capture_notes:
    """Context manager collecting :class:`SurgeryNote` messages (the CLI
    prints them as ``note: ...`` lines)."""

    def __enter__(self) -> list:
        self._cm = warnings.catch_warnings(record=True)
        self._records = self._cm.__enter__()
        warnings.simplefilter("always", SurgeryNote)
        self.notes: list[str] = []
        return self.notes

    def __exit__(self, *exc) -> None:
        records = list(self._records)
        self._cm.__exit__(*exc)
        for r in records:
            if issubclass(r.category, SurgeryNote):
                self.notes.append(str(r.message))
            else:
                warnings.showwarning(r.message, r.category, r.filename, r.lineno)


# --------------------------------------------------------------------------- naming values (both backends)

def name_list(value) -> list[str]:
    """Names given as a list or as "a,b": stripped, empty ones and repeats dropped."""
    if isinstance(value, str):
        value = value.split(",")
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))


def refuse_passthrough(op: str, inputs: Sequence[str], outputs: Sequence[str], why: str) -> None:
    """An output that is also an input would not be computed: name every one
    (``why`` ends the message: what must produce an output)."""
    both = [o for o in outputs if o in set(inputs)]
    if both:
        raise SpecSurgeryError(f"{op}: {', '.join(map(repr, both))} is both an input and an output; {why}")
