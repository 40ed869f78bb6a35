"""``add_nms``: turn a raw object detector into the pipeline Create ML, Turi
Create and YOLO exporters ship, ``[detector, (decode), nonMaximumSuppression]``.

The first stage (a NeuralNetwork or an ML Program, or a pipeline of them)
produces raw class confidences ``[boxes, classes]`` and box coordinates
``[boxes, 4]``.  ``add_nms`` appends

* when needed, a small NeuralNetwork stage ``decode`` (:mod:`.nn`) that drops
  a leading batch of 1 (``[1, boxes, k]``) and turns ``(x1, y1, x2, y2)``
  corners into the ``(cx, cy, w, h)`` boxes NMS reads (``box_format="xyxy"``);
* a ``nonMaximumSuppression`` stage with the class labels, the IoU and
  confidence thresholds and the optional Double inputs ``iouThreshold`` and
  ``confidenceThreshold`` that override them at prediction time.

The pipeline's outputs are ``confidence`` and ``coordinates`` with a
flexible first dimension (0 or more boxes); its metadata carries the preview
keys Xcode and Vision expect (``com.apple.coreml.model.preview.type`` =
``objectDetector``) and feature descriptions like Create ML's.  The spec
version is the least the pipeline needs (v3 for NMS, v5 when the arrays are
FLOAT32, v6 with an ML Program stage).  docs/detectors.md has the details.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

from ... import spec as S
from ..._proto import FeatureTypes_pb2, Model_pb2
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import MLPackage, copy_spec, load, split_model
from . import mlprogram, nn

__all__ = ["add_nms", "detector_info", "BOX_FORMATS", "PREVIEW_TYPE_KEY"]

BOX_FORMATS = ("cxcywh", "xyxy")
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
PREVIEW_PARAMS_KEY = "com.apple.coreml.model.preview.params"
DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
NMS_VERSION = 3          # iOS 12: the nonMaximumSuppression model type
FLOAT32_NMS_VERSION = 5  # iOS 14: FLOAT32 confidence/coordinates (NonMaximumSuppressionValidator)
PROGRAM_PIPELINE_VERSION = 6

_BACKENDS = {"nn": nn, "mlprogram": mlprogram}


class DetectorError(SpecSurgeryError):
    """A model or option add_nms cannot build a detector from."""


def _producer(spec, name: str):
    """The (innermost) stage whose description outputs ``name``."""
    found = None
    for info in S.iter_models(spec):
        if S.backend_of(info.model) and any(f.name == name for f in info.model.description.output):
            found = info.model
    return found


def _threshold(value, flag: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DetectorError(f"add_nms: {flag} {value!r} is not a number; pass a value between 0 and 1") from None
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise DetectorError(f"add_nms: {flag} {v} is outside 0..1; pass a value between 0 and 1 "
                            f"(e.g. {'0.45' if 'iou' in flag else '0.25'})")
    return v


def _shape_of(spec, feature) -> tuple:
    """The shape of output ``feature``: declared, else inferred by the backend."""
    shape = nn.declared_shape(feature.type)
    if shape is not None:
        return shape
    producer = _producer(spec, feature.name)
    backend = S.backend_of(producer) if producer is not None else None
    if backend is None:
        raise DetectorError(f"output {feature.name!r} declares no shape and no network or program in the "
                            "model computes it; declare its shape (specsurgery set) and retry")
    try:
        shapes = _BACKENDS[backend].output_shapes(producer, [feature.name])
    except SpecSurgeryError as exc:
        raise DetectorError(f"output {feature.name!r} declares no shape and its shape cannot be inferred "
                            f"({exc}); declare it with `specsurgery set` and retry") from None
    if feature.name not in shapes:
        raise DetectorError(f"output {feature.name!r} declares no shape; declare it and retry")
    return shapes[feature.name]


def _declare_shape(spec, name: str, shape: tuple) -> None:
    """Write the (inferred) ``shape`` into every description that outputs ``name`` without one,
    so the NMS stage's input and its producer agree (Core ML compares their ranks)."""
    for info in S.iter_models(spec):
        for f in info.model.description.output:
            if f.name == name and f.type.WhichOneof("Type") == "multiArrayType" \
                    and nn.declared_shape(f.type) is None and all(d > 0 for d in shape):
                f.type.multiArrayType.shape.extend(int(d) for d in shape)


def _rank_fix(name: str, role: str, shape: tuple, width: Optional[str]) -> str:
    want = f"[boxes, {width}]" if width else "[boxes, classes]"
    return (f"--{role} {name!r} has shape {list(shape)} (rank {len(shape)}); NMS reads {want} "
            f"(or [1, boxes, {width or 'classes'}]): reshape the detector's output to {want}, or name "
            "the right output")


def _fresh(name: str, taken: set) -> str:
    if name not in taken:
        return name
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


def _nms_array(desc_list, name: str, dtype: int, width: int, description: str):
    f = desc_list.add()
    f.name = name
    f.shortDescription = description
    arr = f.type.multiArrayType
    arr.dataType = dtype
    arr.shapeRange.sizeRanges.add(lowerBound=0, upperBound=-1)       # 0 or more boxes
    arr.shapeRange.sizeRanges.add(lowerBound=width, upperBound=width)
    return f


def _nms_input(desc_list, name: str, template, rows: Optional[int]):
    f = desc_list.add()
    f.name = name
    f.type.CopyFrom(template)
    f.type.isOptional = False
    return f


def add_nms(model, *, confidence: str, coordinates: str, labels: Union[Sequence, str],
            iou_threshold: float = 0.45, confidence_threshold: float = 0.25, per_class: bool = False,
            box_format: str = "cxcywh", threshold_inputs: bool = True,
            output_names: Sequence[str] = ("confidence", "coordinates"),
            names: Sequence[str] = ("detector", "decode", "nms"), inplace: bool = False):
    """A detector pipeline: ``model`` followed by non-maximum suppression.

    ``confidence`` / ``coordinates``: the names of ``model``'s raw outputs,
    ``[boxes, classes]`` and ``[boxes, 4]`` (a leading batch of 1 is
    dropped).  ``labels``: the class labels (a list of str or int, or
    ``"a,b,c"``), one per column of the confidence.  ``iou_threshold`` and
    ``confidence_threshold`` (0..1) are the NMS parameters; with
    ``threshold_inputs`` the pipeline also takes optional Double inputs
    ``iouThreshold`` and ``confidenceThreshold`` overriding them.
    ``per_class``: suppress only among boxes of the same best class.
    ``box_format``: ``cxcywh`` (centre x, centre y, width, height, as NMS
    reads them) or ``xyxy`` (corners; converted by a ``decode`` stage).
    ``output_names``: the pipeline's two outputs (``confidence``,
    ``coordinates`` as Vision expects).  ``names``: the stage names.

    Returns the pipeline spec, or an :class:`MLPackage` when ``model`` holds
    an ML Program.  ``inplace`` is refused: the result is a new model.
    """
    if inplace:
        raise UnsupportedError("add_nms: option 'inplace' is not supported: the detector pipeline is a new "
                               "model around the given one; use the returned model")
    if box_format not in BOX_FORMATS:
        raise DetectorError(f"add_nms: box_format {box_format!r} is not one of {', '.join(BOX_FORMATS)}; "
                            "cxcywh = centre x, centre y, width, height; xyxy = corners x1, y1, x2, y2")
    iou = _threshold(iou_threshold, "iou_threshold (--iou)")
    thr = _threshold(confidence_threshold, "confidence_threshold (--threshold)")
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split(",")]
    labels = list(labels or [])
    if not labels or any(isinstance(x, str) and not x for x in labels):
        raise DetectorError("add_nms: give the class labels (--labels FILE or a,b,c), one per confidence column")
    int_labels = all(isinstance(x, int) and not isinstance(x, bool) for x in labels)
    if not int_labels:
        labels = [str(x) for x in labels]
    dup = sorted({str(x) for x in labels if labels.count(x) > 1})
    if dup:
        raise DetectorError(f"add_nms: labels repeat {', '.join(map(repr, dup))}; give each class once")
    out_conf, out_coord = list(output_names) if len(output_names) == 2 else (None, None)
    if not out_conf or not out_coord or out_conf == out_coord:
        raise DetectorError("add_nms: output_names must be two different names (confidence, coordinates)")
    if len(names) != 3 or len(set(names)) != 3 or not all(names):
        raise DetectorError("add_nms: names must be three different stage names (detector, decode, nms)")

    loaded = load(model)
    spec, package = split_model(loaded)
    kind = S.model_type(spec)
    if S.backend_of(spec) is None and kind != "pipeline":
        raise UnsupportedError(f"add_nms: the model is a {kind or 'model without a type'}; add_nms takes a "
                               "neural network, an ML Program or a plain pipeline of them that outputs raw "
                               "confidences and boxes")
    if any(S.model_type(i.model) == "nonMaximumSuppression" for i in S.iter_models(spec)):
        raise DetectorError("add_nms: the model already has a nonMaximumSuppression stage; give the raw "
                            "detector (e.g. `specsurgery split` it off, or take stage 0)")
    outputs = {f.name: f for f in spec.description.output}
    missing = [n for n in (confidence, coordinates) if n not in outputs]
    if missing:
        raise NotFoundError(missing_message("output", missing, list(outputs), "the model")
                            + "; pass --confidence and --coordinates the names of the model's raw outputs "
                            "(`specsurgery inspect` lists them)")
    if confidence == coordinates:
        raise DetectorError(f"add_nms: --confidence and --coordinates both name {confidence!r}; name the "
                            "class-score output and the box output")
    for name in (confidence, coordinates):
        if outputs[name].type.WhichOneof("Type") != "multiArrayType":
            raise DetectorError(f"add_nms: output {name!r} is {S.describe_type(outputs[name].type)}; NMS "
                                "reads multiarrays, name the raw array output")
        if nn.is_float16(outputs[name].type):
            raise DetectorError(f"add_nms: output {name!r} is a FLOAT16 array; NMS reads DOUBLE or FLOAT32: "
                                "convert the detector with float32 outputs")
    c_shape = _shape_of(spec, outputs[confidence])
    b_shape = _shape_of(spec, outputs[coordinates])
    if len(c_shape) not in (2, 3) or (len(c_shape) == 3 and c_shape[0] != 1):
        raise DetectorError("add_nms: " + _rank_fix(confidence, "confidence", c_shape, None))
    if len(b_shape) not in (2, 3) or (len(b_shape) == 3 and b_shape[0] != 1) or b_shape[-1] != 4:
        raise DetectorError("add_nms: " + _rank_fix(coordinates, "coordinates", b_shape, "4"))
    if len(c_shape) != len(b_shape):
        raise DetectorError(f"add_nms: confidence {confidence!r} {list(c_shape)} and coordinates "
                            f"{coordinates!r} {list(b_shape)} differ in rank; give both a leading batch "
                            "of 1 or neither")
    if c_shape[-2] > 0 and b_shape[-2] > 0 and c_shape[-2] != b_shape[-2]:
        raise DetectorError(f"add_nms: {c_shape[-2]} boxes in confidence {confidence!r} but {b_shape[-2]} in "
                            f"coordinates {coordinates!r}; both need one row per box")
    classes = c_shape[-1]
    if classes <= 0:
        raise DetectorError(f"add_nms: the number of classes of {confidence!r} (its last dimension) is not "
                            "known; declare the output's shape and retry")
    if classes != len(labels):
        raise DetectorError(f"add_nms: {len(labels)} labels for {classes} classes (the last dimension of "
                            f"{confidence!r}, shape {list(c_shape)}); give exactly {classes} labels")
    a_conf = outputs[confidence].type.multiArrayType.dataType
    a_coord = outputs[coordinates].type.multiArrayType.dataType
    if a_conf != a_coord or a_conf not in (DOUBLE, FLOAT32):
        raise DetectorError(f"add_nms: confidence is {S.array_dtype_name(a_conf)} and coordinates "
                            f"{S.array_dtype_name(a_coord)}; NMS needs both DOUBLE (or both FLOAT32)")

    taken = {f.name for f in spec.description.input} | set(outputs)
    for i in S.iter_models(spec):
        taken |= {f.name for f in i.model.description.output}
    threshold_names = ("iouThreshold", "confidenceThreshold")
    if threshold_inputs:
        clash = [n for n in threshold_names if n in taken]
        if clash:
            raise DetectorError(f"add_nms: the model already has {', '.join(map(repr, clash))}; rename it "
                                "(specsurgery rename) or pass threshold_inputs=False")

    # 1. the first stage, its raw outputs renamed away from the pipeline's output names
    first = loaded.copy() if isinstance(loaded, MLPackage) else copy_spec(spec)
    for name, shape in ((confidence, c_shape), (coordinates, b_shape)):
        _declare_shape(split_model(first)[0], name, shape)
    renames = {}
    for name in (confidence, coordinates):
        if name in (out_conf, out_coord) or name in threshold_names:
            renames[name] = _fresh("raw_" + name, taken | set(renames.values()))
    if renames:
        from ..rename import rename_feature

        for old, new in renames.items():
            first = rename_feature(first, old, new)
    raw_conf, raw_coord = renames.get(confidence, confidence), renames.get(coordinates, coordinates)
    first_spec, _ = split_model(first)
    fouts = {f.name: f for f in first_spec.description.output}
    inner = S.pipeline_of(first_spec)
    if inner is not None and not mlprogram_stage(first_spec):
        # a plain pipeline (e.g. dedupe's [linked backbone, head]) is flattened: its stages come first
        stages, stage_names = [copy_spec(m) for m in inner.models], list(S.stage_names(inner))
        names = (names[0], _fresh(names[1], set(stage_names)), _fresh(names[2], set(stage_names) | {names[1]}))
    else:
        stages, stage_names = [first], [names[0]]
    squeeze = len(c_shape) == 3
    xyxy = box_format == "xyxy"
    nms_conf_in, nms_coord_in = raw_conf, raw_coord
    conf_type, coord_type = fouts[raw_conf].type, fouts[raw_coord].type
    if squeeze or xyxy:
        used = taken | set(renames.values())
        nms_conf_in = _fresh(raw_conf + "_boxes", used) if squeeze else raw_conf
        nms_coord_in = _fresh(raw_coord + "_cxcywh", used | {nms_conf_in})
        adapter = nn.adapter_stage((raw_conf, conf_type, c_shape) if squeeze else None,
                                   (raw_coord, coord_type, b_shape), nms_conf_in if squeeze else None,
                                   nms_coord_in, squeeze=squeeze, xyxy=xyxy)
        stages.append(adapter)
        stage_names.append(names[1])
        made = {f.name: f.type for f in adapter.description.output}
        conf_type = made.get(nms_conf_in, conf_type)
        coord_type = made[nms_coord_in]

    # 2. the nonMaximumSuppression stage
    dtype = conf_type.multiArrayType.dataType
    nms_spec = Model_pb2.Model()
    nms_spec.specificationVersion = NMS_VERSION if dtype == DOUBLE else FLOAT32_NMS_VERSION
    m = nms_spec.nonMaximumSuppression
    m.pickTop.perClass = bool(per_class)
    if int_labels:
        m.int64ClassLabels.vector.extend(int(x) for x in labels)
    else:
        m.stringClassLabels.vector.extend(labels)
    m.iouThreshold = iou
    m.confidenceThreshold = thr
    m.confidenceInputFeatureName = nms_conf_in
    m.coordinatesInputFeatureName = nms_coord_in
    m.confidenceOutputFeatureName = out_conf
    m.coordinatesOutputFeatureName = out_coord
    d = nms_spec.description
    _nms_input(d.input, nms_conf_in, conf_type, None)
    _nms_input(d.input, nms_coord_in, coord_type, None)
    descriptions = {
        "iouThreshold": f"(optional) IoU threshold override (default: {iou:g})",
        "confidenceThreshold": f"(optional) Confidence threshold override (default: {thr:g})",
    }
    if threshold_inputs:
        m.iouThresholdInputFeatureName = "iouThreshold"
        m.confidenceThresholdInputFeatureName = "confidenceThreshold"
        for n in threshold_names:
            f = d.input.add(name=n, shortDescription=descriptions[n])
            f.type.doubleType.SetInParent()   # required here (Core ML refuses optional NMS inputs);
    _nms_array(d.output, out_conf, dtype, len(labels),
               "Boxes × Class confidence (see user-defined metadata \"classes\")")
    _nms_array(d.output, out_coord, dtype, 4, "Boxes × [x, y, width, height] (relative to image size)")
    stages.append(nms_spec)
    stage_names.append(names[2])

    # 3. the pipeline, with the interface Vision and Xcode expect
    iface = Model_pb2.ModelDescription()
    for f in first_spec.description.input:
        iface.input.add().CopyFrom(f)
    if threshold_inputs:
        for n in threshold_names:
            f = iface.input.add(name=n, shortDescription=descriptions[n])
            f.type.doubleType.SetInParent()
            f.type.isOptional = True
    for f in d.output:
        iface.output.add().CopyFrom(f)
    iface.metadata.CopyFrom(first_spec.description.metadata)
    ud = iface.metadata.userDefined
    ud[PREVIEW_TYPE_KEY] = "objectDetector"
    ud.pop(PREVIEW_PARAMS_KEY, None)
    ud["classes"] = ",".join(str(x) for x in labels)
    ud["iouThreshold"] = f"{iou:g}"
    ud["confidenceThreshold"] = f"{thr:g}"
    if not iface.metadata.shortDescription:
        iface.metadata.shortDescription = f"Object detector ({len(labels)} classes) with non-maximum suppression"

    from ..pipeline import make_pipeline

    result = make_pipeline(stages, names=stage_names, kind="pipeline", interface=iface)
    out_spec, _ = split_model(result)
    needed = max([NMS_VERSION, out_spec.specificationVersion]
                 + [s.specificationVersion for s in S.pipeline_of(out_spec).models]
                 + ([FLOAT32_NMS_VERSION] if dtype == FLOAT32 else [])
                 + ([PROGRAM_PIPELINE_VERSION] if mlprogram_stage(out_spec) else []))
    out_spec.specificationVersion = needed
    return result


def mlprogram_stage(spec) -> bool:
    return any(S.model_type(i.model) == "mlProgram" for i in S.iter_models(spec))


def detector_info(spec) -> Optional[dict]:
    """The NMS stage of a detector pipeline as facts, or None: stage path,
    thresholds, threshold input names, per-class, labels, feature names."""
    for info in S.iter_models(spec):
        if S.model_type(info.model) != "nonMaximumSuppression":
            continue
        m = info.model.nonMaximumSuppression
        which = m.WhichOneof("ClassLabels")
        labels = list(getattr(m, which).vector) if which else []
        return {
            "stage": info.path, "iou_threshold": m.iouThreshold, "confidence_threshold": m.confidenceThreshold,
            "per_class": m.WhichOneof("SuppressionMethod") == "pickTop" and m.pickTop.perClass,
            "iou_input": m.iouThresholdInputFeatureName, "confidence_input": m.confidenceThresholdInputFeatureName,
            "labels": labels, "inputs": (m.confidenceInputFeatureName, m.coordinatesInputFeatureName),
            "outputs": (m.confidenceOutputFeatureName, m.coordinatesOutputFeatureName),
        }
    return None
