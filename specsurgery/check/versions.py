"""Minimum specification version of a model, from the features it uses.

A Python re-implementation of the validator's ``downgradeSpecificationVersion``
(format notes §2): each feature that needs a newer Core ML is listed with the
version it needs and where it sits; the minimum of a model is the largest
need of the model *and every nested stage* (the validator's predicates walk
nested models), while each stage on its own gets the minimum of its own
subtree.  Two quirks of the C++ code are fixed on purpose and documented in
docs/check.md: INT8 multiarray I/O and the ``CoreML9`` opset count as v10
(the C++ has no 10->9 step, so it never lowers a v10 model anyway), and the
multifunction walk looks at every function's features, not only the
top-level lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..nn.kinds import iter_layers as _iter_layers
from ..nn.kinds import own_weights, version_needs as kind_version_needs
from ..spec import NN_TYPES, iter_models
from ..weights import storage_kind

NEWEST = 10

FLOAT16 = 65552
INT8 = 131080
GRAYSCALE_FLOAT16 = 40

OPSET_VERSIONS = {"CoreML3": 4, "CoreML4": 5, "CoreML5": 6, "CoreML6": 7, "CoreML7": 8,
                  "CoreML8": 9, "CoreML9": 10}

#: model type -> (version, what) for types that need more than v1 by themselves.
TYPE_VERSIONS = {
    "customModel": (3, "customModel"),
    "nonMaximumSuppression": (3, "nonMaximumSuppression model"),
    "bayesianProbitRegressor": (3, "bayesianProbitRegressor"),
    "kNearestNeighborsClassifier": (4, "kNearestNeighborsClassifier"),
    "linkedModel": (4, "linkedModel"),
    "itemSimilarityRecommender": (4, "itemSimilarityRecommender"),
    "soundAnalysisPreprocessing": (4, "soundAnalysisPreprocessing"),
    "serializedModel": (5, "serializedModel"),
    "mlProgram": (6, "mlProgram"),
    "classConfidenceThresholding": (8, "classConfidenceThresholding"),
}


@dataclass(frozen=True)
class Need:
    """One feature that needs at least ``version``."""

    version: int
    what: str
    path: str  # stage path ("" for the top model)
    strict: bool = False  # the validator rejects it below ``version`` (not just ignores it)

    def reason(self) -> str:
        where = f" at stage '{self.path}'" if self.path else ""
        return f"requires v{self.version} because {self.what}{where}"


# --------------------------------------------------------------------------- per model

def iter_layers(nn):
    """(name, layer) of every layer, branch and loop networks included (nested
    names read ``<container>.<if|else|cond|body>/<name>``)."""
    return _iter_layers(nn)


def _layer_needs(name: str, layer) -> Iterator[tuple[int, str]]:
    kind = layer.WhichOneof("layer")
    q = f"layer '{name}'"
    # the kind's own minimum and its parameter-dependent needs: nn/kinds.py
    for version, qualifier in kind_version_needs(layer):
        yield version, f"{kind} {q}" + (f" {qualifier}" if qualifier else "")
    if layer.isUpdatable:
        yield 4, f"updatable {q}"
    for field, wp in own_weights(layer):
        storage = storage_kind(wp)
        if storage == "float16":
            yield 2, f"float16 weights in {q}.{field}"
        elif storage.startswith(("linear", "lut")):
            yield 3, f"{storage} quantized weights in {q}.{field}"


def _feature_needs(features, where: str) -> Iterator[tuple[int, str]]:
    for f in features:
        ft = f.type
        kind = ft.WhichOneof("Type")
        label = f"{where} '{f.name}'"
        if kind == "multiArrayType":
            arr = ft.multiArrayType
            if arr.WhichOneof("ShapeFlexibility"):
                yield 3, f"flexible shape on {label}"
            if arr.dataType == FLOAT16:
                yield 7, f"FLOAT16 multiarray {label}"
            elif arr.dataType == INT8:
                yield 10, f"INT8 multiarray {label}"
            default = arr.WhichOneof("defaultOptionalValue")
            if default and ft.isOptional:
                yield 5, f"default value on optional {label}"
        elif kind == "imageType":
            img = ft.imageType
            if img.WhichOneof("SizeFlexibility"):
                yield 3, f"flexible image size on {label}"
            if img.colorSpace == GRAYSCALE_FLOAT16:
                yield 7, f"GRAYSCALE_FLOAT16 image {label}"
        elif kind == "sequenceType":
            yield 3, f"sequence {label}"
        elif kind == "stateType":
            yield 9, f"state {label}"


def _description_needs(spec) -> Iterator[tuple[int, str]]:
    desc = spec.description
    multifunction = len(desc.functions) > 0 or bool(desc.defaultFunctionName)
    if multifunction:
        yield 9, "multifunction description"
        for fn in desc.functions:
            yield from _feature_needs(fn.input, f"function '{fn.name}' input")
            yield from _feature_needs(fn.output, f"function '{fn.name}' output")
            yield from _feature_needs(fn.state, f"function '{fn.name}' state")
    yield from _feature_needs(desc.input, "input")
    yield from _feature_needs(desc.output, "output")
    yield from _feature_needs(desc.state, "state")
    if multifunction:
        if any(len(fn.input) == 0 for fn in desc.functions):
            yield 9, "empty input list of a function"
    elif len(desc.input) == 0:
        yield 9, "empty input list"


def _type_needs(spec) -> Iterator[tuple[int, str]]:
    kind = spec.WhichOneof("Type")
    if kind in TYPE_VERSIONS:
        yield TYPE_VERSIONS[kind]
    if spec.isUpdatable:
        yield 4, "isUpdatable"
    if kind in NN_TYPES:
        nn = getattr(spec, kind)
        if nn.arrayInputShapeMapping != 0:
            yield 4, "arrayInputShapeMapping EXACT_ARRAY_MAPPING"
        if nn.imageInputShapeMapping != 0:
            yield 4, "imageInputShapeMapping RANK4_IMAGE_MAPPING"
        for name, layer in iter_layers(nn):
            yield from _layer_needs(name, layer)
    elif kind == "mlProgram":
        main = spec.mlProgram.functions.get("main") if "main" in spec.mlProgram.functions else None
        if main is not None:
            version = OPSET_VERSIONS.get(main.opset)
            if version and version > 6:
                yield version, f"mlProgram opset {main.opset}"
    elif kind == "textClassifier":
        rev = spec.textClassifier.revision
        yield _revision_need("textClassifier", rev, {2: 4, 3: 4, 4: 8, 5: 9}, 3)
    elif kind == "wordTagger":
        rev = spec.wordTagger.revision
        yield _revision_need("wordTagger", rev, {2: 4, 3: 5, 4: 8, 5: 9}, 3)
    elif kind in ("gazetteer", "wordEmbedding"):
        rev = getattr(spec, kind).revision
        yield _revision_need(kind, rev, {2: 4}, 4)
    elif kind == "visionFeaturePrint":
        vfp = spec.visionFeaturePrint
        which = vfp.WhichOneof("VisionFeaturePrintType")
        if which == "scene":
            yield (8, "visionFeaturePrint.scene version 2") if vfp.scene.version >= 2 else (3, "visionFeaturePrint.scene")
        elif which == "objects":
            yield 5, "visionFeaturePrint.objects"
    elif kind == "audioFeaturePrint":
        yield 6, "audioFeaturePrint.sound"
    elif kind == "nonMaximumSuppression":
        for f in list(spec.description.input) + list(spec.description.output):
            if f.type.WhichOneof("Type") == "multiArrayType" and f.type.multiArrayType.dataType == 65568:
                yield 5, f"nonMaximumSuppression with FLOAT32 feature '{f.name}'"
                break


def _revision_need(kind: str, rev: int, table: dict, base: int) -> tuple[int, str]:
    best = base
    for r, v in table.items():
        if rev >= r:
            best = max(best, v)
    return best, f"{kind} revision {rev}" if best != base else kind


#: Features the validator rejects outright when the declared version is too low
#: (format notes §2 "Version checks the validator makes directly": Model.cpp for
#: isUpdatable, InterfaceValidators for I/O types and default values, the NMS
#: validator for FLOAT32 I/O), plus linkedModel and mlProgram, which older
#: runtimes cannot load at all.
#: Everything else is only *interpreted* from that version on: a lower
#: declaration is tolerated by Core ML (real models do it), so it is a warning.
_STRICT_WORDS = ("FLOAT16 multiarray", "INT8 multiarray", "GRAYSCALE_FLOAT16", "sequence ",
                 "state ", "empty input list", "multifunction", "default value on optional",
                 "isUpdatable", "nonMaximumSuppression with FLOAT32", "linkedModel", "mlProgram")


def own_needs(spec, path: str = "") -> list[Need]:
    """The needs of ``spec`` itself (not its stages)."""
    out = []
    for version, what in list(_type_needs(spec)) + list(_description_needs(spec)):
        if version > 1:
            strict = any(what.startswith(w) for w in _STRICT_WORDS)
            out.append(Need(version, what, path, strict))
    return out


def version_needs(spec) -> list[Need]:
    """Every need of ``spec`` and its nested stages, paths relative to ``spec``."""
    out = []
    for info in iter_models(spec):
        out.extend(own_needs(info.model, info.path))
    return out


def min_spec_version(spec) -> tuple[int, list[str]]:
    """(minimum specificationVersion, reasons) for ``spec``, nested stages included.

    The reasons name the features that set the minimum, e.g.
    ``"requires v4 because linkedModel at stage 'backbone'"``; a model that
    needs nothing beyond Core ML 1 gets ``(1, [])``.
    """
    from ..io import load_spec

    spec = load_spec(spec)
    needs = version_needs(spec)
    if not needs:
        return 1, []
    top = max(n.version for n in needs)
    reasons = []
    for n in needs:
        if n.version == top and n.reason() not in reasons:
            reasons.append(n.reason())
    return top, reasons
