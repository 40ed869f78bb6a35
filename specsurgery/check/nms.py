"""Non-maximum suppression rules, after Core ML's
``NonMaximumSuppressionValidator.cpp`` (apple/coremltools, mlmodel/src/Validation),
plus the detector-pipeline rule: the stage that feeds NMS gives it
``[boxes, classes]`` confidences and ``[boxes, 4]`` coordinates.

Apple's validator reads the *confidence* output's shape where it means the
coordinates' (twice: the "2 dimensions" test and the dim-0 range
comparison), so it never looks at the coordinates output's shape.  Those
checks are made here on the coordinates too, as warnings (``nms.coordinates-shape``):
Core ML accepts such a model, Vision then reads mismatched rows.

The FLOAT32-needs-v5 rule lives with the other version rules (check/versions.py).
"""

from __future__ import annotations

import math

from ..spec import array_dtype_name, describe_type, pipeline_of, stage_names
from .findings import Findings, join

DOUBLE, FLOAT32 = 65600, 65568

NMSV = "mlmodel/src/Validation/NonMaximumSuppressionValidator.cpp"

#: rule id -> (usual severity, what it checks, Apple's file or "ours only: why"), in the form of
#: check/rules.py's table (``Rule(id, *RULES[id])``) and of docs/check.md
RULES = {
    "nms.unused-input": ("error", "an input that no *InputFeatureName names", NMSV),
    "nms.missing-input": ("error", "confidenceInputFeatureName / coordinatesInputFeatureName not among the "
                          "inputs", NMSV),
    "nms.unused-output": ("error", "an output that neither output feature name names", NMSV),
    "nms.missing-output": ("error", "confidenceOutputFeatureName / coordinatesOutputFeatureName not among the "
                           "outputs", NMSV),
    "nms.feature-type": ("error", "confidence/coordinates not MultiArrays, threshold inputs not Double", NMSV),
    "nms.iou-threshold": ("error", "iouThreshold outside 0..1 (or NaN)", NMSV),
    "nms.confidence-threshold": ("error", "confidenceThreshold negative or NaN; above 1 or infinite is a "
                                 "warning (ours: Vision reads confidences as probabilities)", NMSV),
    "nms.dtype": ("error", "the four arrays differ in dataType, or are not DOUBLE/FLOAT32 (FLOAT32 below v5 "
                  "is version.below-minimum)", NMSV),
    "nms.output-shape": ("error", "confidence output shape not 2 dimensions by shape or allowedShapes, shape "
                         "and allowedShapes mixed, flexibility not ranges, rows (dimension 0) differ", NMSV),
    "nms.coordinates-shape": ("warning", "the shape rules on the coordinates output",
                              "ours only: Apple's validator reads the confidence output's shape where it means "
                              "the coordinates' (a bug), so Core ML accepts these; a warning"),
    "nms.label-count": ("error", "class label count vs dimension 1 of the confidence output (and of the "
                        "confidence input, ours)", NMSV),
    "nms.input-rank": ("error", "a declared NMS input shape other than [boxes, classes] / [boxes, 4]",
                       "ours only: NMS reads rows of boxes; Core ML fails at prediction on another rank"),
    "nms.producer-rank": ("error", "in a pipeline, the stage feeding NMS gives confidence/coordinates of another "
                          "rank or width", "ours only: Core ML fails at prediction, as for nms.input-rank"),
}


def _by_name(feats) -> dict:
    return {f.name: f for f in feats}


def _rank_and_rows(arr):
    """(old-style shape rank, flexible rank, flexibility kind) of an ArrayFeatureType."""
    flex = arr.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes":
        new = len(arr.enumeratedShapes.shapes[0].shape) if len(arr.enumeratedShapes.shapes) else 0
    elif flex == "shapeRange":
        new = len(arr.shapeRange.sizeRanges)
    else:
        new = 0
    return len(arr.shape), new, flex


def _shape_kind(arr):
    old, new, _ = _rank_and_rows(arr)
    if old == 0 and new == 0:
        return "unspecified"
    if old == 2 and new == 0:
        return "shape"
    if old == 0 and new == 2:
        return "range"
    return None


def _check_output_shapes(conf, coord, n_labels: int, out: Findings) -> None:
    ca, ka = conf.type.multiArrayType, coord.type.multiArrayType
    ck, kk = _shape_kind(ca), _shape_kind(ka)
    if ck is None:
        out.error(f"output:{conf.name}", "nms.output-shape",
                  f"confidence output '{conf.name}' declares shape {list(ca.shape)} with "
                  f"{ca.WhichOneof('ShapeFlexibility') or 'no flexibility'}; give it 2 dimensions with either "
                  "shape (deprecated) or allowedShapes (a shape range), not both")
        return
    if kk is None:
        out.warning(f"output:{coord.name}", "nms.coordinates-shape",
                    f"coordinates output '{coord.name}' declares shape {list(ka.shape)} with "
                    f"{ka.WhichOneof('ShapeFlexibility') or 'no flexibility'}; give it 2 dimensions [boxes, 4] "
                    "like the confidence output")
        return
    if "unspecified" not in (ck, kk) and ck != kk:
        out.error(f"output:{coord.name}", "nms.output-shape",
                  "confidence and coordinates outputs mix shape (deprecated) and allowedShapes; use the same "
                  "form for both")
        return
    if ck == "shape" and kk == "shape" and ca.shape[0] != ka.shape[0]:
        out.error(f"output:{coord.name}", "nms.output-shape",
                  f"confidence output has {ca.shape[0]} rows but coordinates {ka.shape[0]}; both need the same "
                  "size along dimension 0")
    if ck == "range" and kk == "range":
        if ca.WhichOneof("ShapeFlexibility") != "shapeRange" or ka.WhichOneof("ShapeFlexibility") != "shapeRange":
            out.error(f"output:{conf.name}", "nms.output-shape",
                      "confidence and coordinates output flexibility must both be shape ranges (not enumerated "
                      "shapes)")
            return
        a, b = ca.shapeRange.sizeRanges[0], ka.shapeRange.sizeRanges[0]
        if (a.lowerBound, a.upperBound) != (b.lowerBound, b.upperBound):
            out.warning(f"output:{coord.name}", "nms.coordinates-shape",
                        f"confidence rows range {a.lowerBound}..{a.upperBound} but coordinates "
                        f"{b.lowerBound}..{b.upperBound}; give both the same range along dimension 0")
    if kk in ("shape", "range"):
        width = ka.shape[1] if kk == "shape" else None
        r = ka.shapeRange.sizeRanges[1] if kk == "range" else None
        if (width is not None and width != 4) or (r is not None and not (r.lowerBound <= 4 and
                                                                           (r.upperBound < 0 or r.upperBound >= 4))):
            out.warning(f"output:{coord.name}", "nms.coordinates-shape",
                        f"coordinates output '{coord.name}' does not allow 4 values per box; declare [boxes, 4]")
    if n_labels:
        if ck == "shape" and ca.shape[1] != n_labels:
            out.error(f"output:{conf.name}", "nms.label-count",
                      f"{n_labels} class labels but the confidence output declares {ca.shape[1]} classes "
                      f"(dimension 1 of {list(ca.shape)}); give one label per class")
        elif ck == "range":
            r = ca.shapeRange.sizeRanges[1]
            if n_labels < r.lowerBound or (r.upperBound >= 0 and n_labels > r.upperBound):
                out.error(f"output:{conf.name}", "nms.label-count",
                          f"{n_labels} class labels but dimension 1 of the confidence output ranges "
                          f"{r.lowerBound}..{r.upperBound}; give one label per class")


def _labels(m) -> list:
    which = m.WhichOneof("ClassLabels")
    return list(getattr(m, which).vector) if which else []


def check_nms(spec, out: Findings) -> None:
    """The rules of one ``nonMaximumSuppression`` model."""
    m = spec.nonMaximumSuppression
    desc = spec.description
    inputs, outputs = _by_name(desc.input), _by_name(desc.output)
    requested_in = {m.confidenceInputFeatureName: "confidenceInputFeatureName",
                    m.coordinatesInputFeatureName: "coordinatesInputFeatureName",
                    m.iouThresholdInputFeatureName: "iouThresholdInputFeatureName",
                    m.confidenceThresholdInputFeatureName: "confidenceThresholdInputFeatureName"}
    requested_in.pop("", None)
    for f in desc.input:
        if f.name not in requested_in:
            out.error(f"input:{f.name}", "nms.unused-input",
                      f"input '{f.name}' is not named by any of confidenceInputFeatureName, "
                      "coordinatesInputFeatureName, iouThresholdInputFeatureName, "
                      "confidenceThresholdInputFeatureName; remove it or name it there")
    for name, field in ((m.confidenceInputFeatureName, "confidenceInputFeatureName"),
                        (m.coordinatesInputFeatureName, "coordinatesInputFeatureName")):
        if name not in inputs:
            out.error("nonMaximumSuppression", "nms.missing-input",
                      f"{field} is {name!r}, which is not an input of the model; inputs: "
                      f"{', '.join(inputs) or 'none'}; set {field} to the input's name")
    requested_out = {m.confidenceOutputFeatureName, m.coordinatesOutputFeatureName} - {""}
    for f in desc.output:
        if f.name not in requested_out:
            out.error(f"output:{f.name}", "nms.unused-output",
                      f"output '{f.name}' is neither confidenceOutputFeatureName nor "
                      "coordinatesOutputFeatureName; remove it or name it there")
    for name, field in ((m.confidenceOutputFeatureName, "confidenceOutputFeatureName"),
                        (m.coordinatesOutputFeatureName, "coordinatesOutputFeatureName")):
        if name not in outputs:
            out.error("nonMaximumSuppression", "nms.missing-output",
                      f"{field} is {name!r}, which is not an output of the model; outputs: "
                      f"{', '.join(outputs) or 'none'}; set {field} to the output's name")
    arrays = []
    for role, table, name in (("input", inputs, m.confidenceInputFeatureName),
                              ("input", inputs, m.coordinatesInputFeatureName),
                              ("output", outputs, m.confidenceOutputFeatureName),
                              ("output", outputs, m.coordinatesOutputFeatureName)):
        f = table.get(name)
        if f is None:
            continue
        if f.type.WhichOneof("Type") != "multiArrayType":
            out.error(f"{role}:{name}", "nms.feature-type",
                      f"{role} '{name}' is {describe_type(f.type)}; NMS confidences and coordinates are "
                      "MultiArrays (DOUBLE, or FLOAT32 from v5)")
        else:
            arrays.append(f)
    for name in (m.iouThresholdInputFeatureName, m.confidenceThresholdInputFeatureName):
        f = inputs.get(name) if name else None
        if f is not None and f.type.WhichOneof("Type") != "doubleType":
            out.error(f"input:{name}", "nms.feature-type",
                      f"threshold input '{name}' is {describe_type(f.type)}; make it a Double")
    if not (0.0 <= m.iouThreshold <= 1.0):
        out.error("iouThreshold", "nms.iou-threshold",
                  f"iouThreshold is {m.iouThreshold}; it must be between 0.0 and 1.0 (1.0 suppresses nothing)")
    if not (m.confidenceThreshold >= 0.0):
        out.error("confidenceThreshold", "nms.confidence-threshold",
                  f"confidenceThreshold is {m.confidenceThreshold}; it must be 0 or more (0 keeps every box)")
    elif m.confidenceThreshold > 1.0 and not math.isinf(m.confidenceThreshold):
        out.warning("confidenceThreshold", "nms.confidence-threshold",
                    f"confidenceThreshold is {m.confidenceThreshold}, above 1: Core ML accepts non-probabilistic "
                    "confidences, but Vision reads them as probabilities; use 0..1")
    elif math.isinf(m.confidenceThreshold):
        out.warning("confidenceThreshold", "nms.confidence-threshold",
                    "confidenceThreshold is infinite: every box is dropped; use 0..1")
    if len(arrays) == 4:
        dtypes = [f.type.multiArrayType.dataType for f in arrays]
        if len(set(dtypes)) > 1:
            out.error("description", "nms.dtype",
                      "confidence and coordinates must use one element type, but "
                      + ", ".join(f"'{f.name}' is {array_dtype_name(d)}" for f, d in zip(arrays, dtypes))
                      + "; make all four DOUBLE (or FLOAT32 from v5)")
        elif dtypes[0] not in (DOUBLE, FLOAT32):
            out.error("description", "nms.dtype",
                      f"confidence and coordinates are {array_dtype_name(dtypes[0])}; NMS takes DOUBLE "
                      "(or FLOAT32 from v5)")
    labels = _labels(m)
    conf_out, coord_out = outputs.get(m.confidenceOutputFeatureName), outputs.get(m.coordinatesOutputFeatureName)
    if conf_out in arrays and coord_out in arrays:
        _check_output_shapes(conf_out, coord_out, len(labels), out)
    for name, width in ((m.confidenceInputFeatureName, len(labels) or None), (m.coordinatesInputFeatureName, 4)):
        f = inputs.get(name)
        if f is None or f not in arrays:
            continue
        shape = list(f.type.multiArrayType.shape)
        if f.type.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange":
            shape = [r.lowerBound for r in f.type.multiArrayType.shapeRange.sizeRanges]
        if not shape:
            continue
        what = "[boxes, 4]" if width == 4 else "[boxes, classes]"
        if len(shape) != 2:
            out.error(f"input:{name}", "nms.input-rank",
                      f"input '{name}' declares shape {shape}; NMS reads {what}: reshape it in the stage before")
        elif width is not None and shape[1] != width:
            rule = "nms.label-count" if width != 4 else "nms.input-rank"
            out.error(f"input:{name}", rule,
                      f"input '{name}' declares {shape[1]} values per box but NMS needs {width} "
                      + ("(one per class label); give one label per class" if width != 4 else
                         "(x, y, width, height)"))


def check_detector_pipeline(spec, out: Findings) -> None:
    """In a pipeline, each NMS stage's confidence/coordinates come from an
    earlier stage as ``[boxes, classes]`` and ``[boxes, 4]`` arrays."""
    pipe = pipeline_of(spec)
    if pipe is None:
        return
    names = stage_names(pipe)
    produced = {}
    for i, (stage_name, stage) in enumerate(zip(names, pipe.models)):
        if stage.WhichOneof("Type") == "nonMaximumSuppression":
            m = stage.nonMaximumSuppression
            n_labels = len(_labels(m))
            for name, width in ((m.confidenceInputFeatureName, n_labels or None),
                                (m.coordinatesInputFeatureName, 4)):
                if name not in produced:
                    continue
                who, f = produced[name]
                if f.type.WhichOneof("Type") != "multiArrayType":
                    continue
                shape = list(f.type.multiArrayType.shape)
                if f.type.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange":
                    shape = [r.lowerBound for r in f.type.multiArrayType.shapeRange.sizeRanges]
                if not shape:
                    continue
                what = "[boxes, 4]" if width == 4 else "[boxes, classes]"
                if len(shape) != 2 or (width is not None and shape[1] != width):
                    out.error(join(who, f"output:{name}"), "nms.producer-rank",
                              f"stage {who!r} gives '{name}' as {shape} but NMS stage {stage_name!r} reads "
                              f"{what}" + (f" with {width} values per box" if width else "")
                              + ": reshape it in that stage (or run add_nms on the raw detector, which "
                              "drops a leading batch of 1)")
        for f in stage.description.output:
            produced[f.name] = (stage_name, f)


__all__ = ["check_nms", "check_detector_pipeline", "check_detector", "RULES"]


def check_detector(spec, kind: str, out: Findings) -> None:
    """The one entry point check/__init__.py calls: NMS models and pipelines that hold one."""
    if kind == "nonMaximumSuppression":
        check_nms(spec, out)
    elif any(s.WhichOneof("Type") == "nonMaximumSuppression" for s in pipeline_of(spec).models):
        check_detector_pipeline(spec, out)
