"""Non-maximum suppression and the random ops for the reference runtime.

* :func:`run_nms` runs the ``nonMaximumSuppression`` model type (the last
  stage of Create ML / Turi Create / YOLO detector pipelines);
  ``classic.RUNNERS`` files it under that model type.
* :data:`MIL_OPS` holds the ML Program kernels ``non_maximum_suppression``
  (the iOS 15 form and the iOS 17 form) and ``random_normal``,
  ``random_uniform``, ``random_bernoulli``, ``random_categorical``;
  ``mil.OPS`` is updated with it.

The semantics chosen where Apple's documentation is silent (or contradicts
itself) are listed in docs/runtime.md ("Detectors") and in :func:`pick_top`.
This module imports neither ``classic`` nor ``mil``: they import it.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .. import spec as _spec
from .._proto import FeatureTypes_pb2
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message

_ARRAY = FeatureTypes_pb2.ArrayFeatureType
_DTYPES = {_ARRAY.DOUBLE: np.float64, _ARRAY.FLOAT32: np.float32,
           getattr(_ARRAY, "FLOAT16", 65552): np.float16}


class NMSError(SpecSurgeryError):
    """Inputs a non-maximum suppression cannot work on (wrong shapes, bad thresholds)."""


# --------------------------------------------------------------------------- the algorithm

def iou_cxcywh(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(cx, cy, w, h)`` box with each row of ``others`` (float64).

    Negative widths or heights count as 0 (an empty box overlaps nothing);
    two empty boxes have IoU 0, not NaN."""
    box = np.asarray(box, np.float64)
    others = np.asarray(others, np.float64).reshape(-1, 4)
    w1, h1 = max(box[2], 0.0), max(box[3], 0.0)
    w2, h2 = np.maximum(others[:, 2], 0.0), np.maximum(others[:, 3], 0.0)
    left = np.maximum(box[0] - w1 / 2, others[:, 0] - w2 / 2)
    right = np.minimum(box[0] + w1 / 2, others[:, 0] + w2 / 2)
    top = np.maximum(box[1] - h1 / 2, others[:, 1] - h2 / 2)
    bottom = np.minimum(box[1] + h1 / 2, others[:, 1] + h2 / 2)
    inter = np.clip(right - left, 0.0, None) * np.clip(bottom - top, 0.0, None)
    union = w1 * h1 + w2 * h2 - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def pick_top(scores: np.ndarray, boxes: np.ndarray, iou_threshold: float, score_threshold: float,
             per_class: bool = False, max_boxes: Optional[int] = None) -> list[int]:
    """Indices of the boxes PickTop keeps, in descending confidence.

    ``scores`` is ``[N, C]`` (class confidences), ``boxes`` ``[N, 4]``
    centre/size.  A box's confidence is its best class score; boxes below
    ``score_threshold`` (strictly) are dropped first.  Greedy in descending
    confidence (ties: the lower index first); a box is suppressed when its
    IoU with a kept box is strictly greater than ``iou_threshold`` (so 1.0
    suppresses nothing), with ``per_class`` only by kept boxes of the same
    best class.  NaN scores never survive.
    """
    scores = np.asarray(scores, np.float64)
    boxes = np.asarray(boxes, np.float64)
    n = scores.shape[0]
    if n == 0:
        return []
    best = scores.max(axis=1) if scores.shape[1] else np.full(n, -np.inf)
    cls = scores.argmax(axis=1) if scores.shape[1] else np.zeros(n, np.int64)
    order = np.argsort(-best, kind="stable")
    order = [int(i) for i in order if best[i] >= score_threshold]     # NaN >= t is False
    kept: list[int] = []
    alive = np.ones(n, bool)
    for i in order:
        if not alive[i]:
            continue
        kept.append(i)
        if max_boxes is not None and len(kept) >= max_boxes:
            break
        rest = [j for j in order if alive[j] and j != i and (not per_class or cls[j] == cls[i])]
        if rest:
            over = iou_cxcywh(boxes[i], boxes[rest]) > iou_threshold
            alive[np.asarray(rest)[over]] = False
        alive[i] = False
    return kept


# --------------------------------------------------------------------------- the model type

def _feature(desc_list, name):
    for f in desc_list:
        if f.name == name:
            return f
    return None


def _threshold(inputs, name: str, default: float, what: str, who: str, upper: Optional[float]) -> float:
    if not name or inputs.get(name) is None:
        return float(default)
    arr = np.asarray(inputs[name])
    if arr.dtype == object or arr.dtype.kind in "USb" or arr.size != 1:
        raise NMSError(f"{who}: input {name!r} ({what}) must be one number, got {inputs[name]!r:.60}")
    value = float(arr.reshape(-1)[0])
    if not (value >= 0.0 and (upper is None or value <= upper)):
        allowed = "between 0 and 1" if upper is not None else "0 or more"
        raise NMSError(f"{who}: input {name!r} ({what}) is {value}; pass a value {allowed}")
    return value


def _matrix(value, name: str, width: Optional[int], what: str, who: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "USb":
        raise NMSError(f"{who}: input {name!r} ({what}) must be a numeric array")
    arr = arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:      # a leading batch of 1 is accepted
        arr = arr[0]
    if arr.ndim != 2 or (width is not None and arr.shape[1] != width):
        want = f"[boxes, {width}]" if width is not None else "[boxes, classes]"
        raise NMSError(f"{who}: input {name!r} ({what}) has shape {list(arr.shape)}; it must be {want}")
    return arr


def _row_bounds(ft) -> tuple[int, Optional[int]]:
    """(minimum rows, maximum rows or None) an NMS output declares."""
    arr = ft.multiArrayType
    flex = arr.WhichOneof("ShapeFlexibility")
    if flex == "shapeRange" and len(arr.shapeRange.sizeRanges):
        r = arr.shapeRange.sizeRanges[0]
        return int(r.lowerBound), (None if r.upperBound < 0 else int(r.upperBound))
    if flex is None and len(arr.shape) == 2:
        return int(arr.shape[0]), int(arr.shape[0])
    return 0, None


def run_nms(spec, inputs: Mapping, where: str = "") -> dict:
    """Run a ``nonMaximumSuppression`` model: ``{confidence out, coordinates out}``."""
    m = spec.nonMaximumSuppression
    who = f"nonMaximumSuppression {where.rstrip('/') or '(top)'}"
    if m.WhichOneof("SuppressionMethod") not in (None, "pickTop"):
        raise UnsupportedError(f"{who}: suppression method {m.WhichOneof('SuppressionMethod')!r} is not "
                               "supported; the reference runtime runs pickTop")
    need = [n for n in (m.confidenceInputFeatureName, m.coordinatesInputFeatureName) if n not in inputs]
    if need:
        raise NotFoundError(missing_message("input", need, list(inputs), who))
    conf = _matrix(inputs[m.confidenceInputFeatureName], m.confidenceInputFeatureName, None,
                   "confidence", who)
    coords = _matrix(inputs[m.coordinatesInputFeatureName], m.coordinatesInputFeatureName, 4,
                     "coordinates", who)
    if conf.shape[0] != coords.shape[0]:
        raise NMSError(f"{who}: {conf.shape[0]} confidence rows but {coords.shape[0]} coordinate rows; "
                       "both inputs need one row per box")
    iou = _threshold(inputs, m.iouThresholdInputFeatureName, m.iouThreshold, "IoU threshold", who, 1.0)
    thr = _threshold(inputs, m.confidenceThresholdInputFeatureName, m.confidenceThreshold,
                     "confidence threshold", who, None)
    per_class = m.WhichOneof("SuppressionMethod") == "pickTop" and m.pickTop.perClass
    desc = spec.description
    conf_ft = _feature(desc.output, m.confidenceOutputFeatureName)
    coord_ft = _feature(desc.output, m.coordinatesOutputFeatureName)
    lo, hi = 0, None
    for ft in (conf_ft, coord_ft):
        if ft is not None and ft.type.WhichOneof("Type") == "multiArrayType":
            a, b = _row_bounds(ft.type)
            lo, hi = max(lo, a), (b if hi is None else (hi if b is None else min(hi, b)))
    kept = pick_top(conf, coords, iou, thr, per_class, max_boxes=hi)
    rows = max(len(kept), lo)
    out_conf = np.zeros((rows, conf.shape[1]), np.float64)
    out_coords = np.zeros((rows, 4), np.float64)
    if kept:
        out_conf[:len(kept)] = conf[kept]
        out_coords[:len(kept)] = coords[kept]
    result = {}
    for name, ft, value in ((m.confidenceOutputFeatureName, conf_ft, out_conf),
                            (m.coordinatesOutputFeatureName, coord_ft, out_coords)):
        dtype = np.float64
        if ft is not None and ft.type.WhichOneof("Type") == "multiArrayType":
            dtype = _DTYPES.get(ft.type.multiArrayType.dataType, np.float64)
        result[name] = value.astype(dtype)
    return result


# --------------------------------------------------------------------------- ML Program kernels

def _op_label(c) -> str:
    from ..mil import program as P

    return f"op {P.op_name(c.op)!r} ({c.op.type})"


def _mil_nms(c):
    """``non_maximum_suppression``: the iOS 15 form (boxes [n, B, 4], scores
    [n, B, K], ``score_threshold``, 4 outputs) or the iOS 17 form (boxes
    [n, 4, B], scores [n, K, B], no score threshold, 3 outputs)."""
    boxes = np.asarray(c["boxes"], np.float64)
    scores = np.asarray(c["scores"], np.float64)
    ios15 = c.args.get("score_threshold") is not None
    if not ios15:                                    # iOS 17: boxes last
        boxes, scores = np.swapaxes(boxes, 1, 2), np.swapaxes(scores, 1, 2)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise NMSError(f"{_op_label(c)}: boxes {list(np.shape(c['boxes']))} and scores "
                       f"{list(np.shape(c['scores']))} do not fit; iOS 15 takes [n, B, 4] and [n, B, K], "
                       "iOS 17 [n, 4, B] and [n, K, B]")
    iou = float(c.scalar("iou_threshold"))
    thr = float(c.scalar("score_threshold")) if ios15 else -np.inf
    max_boxes = int(c.scalar("max_boxes"))
    per_class = bool(c.scalar("per_class_suppression", False))
    n, _, k = scores.shape
    dtype = np.asarray(c["boxes"]).dtype if np.asarray(c["boxes"]).dtype.kind == "f" else np.float32
    out_boxes = np.zeros((n, max_boxes, 4), dtype)
    out_scores = np.zeros((n, max_boxes, k), dtype)
    out_idx = np.full((n, max_boxes), -1, np.int32)
    out_n = np.zeros(n, np.int32)
    for b in range(n):
        kept = pick_top(scores[b], boxes[b], iou, thr, per_class, max_boxes=max_boxes)
        out_boxes[b, :len(kept)] = boxes[b][kept]
        out_scores[b, :len(kept)] = scores[b][kept]
        out_idx[b, :len(kept)] = kept
        out_n[b] = len(kept)
    if ios15:
        return out_boxes, out_scores, out_idx, out_n
    return np.swapaxes(out_boxes, 1, 2), np.swapaxes(out_scores, 1, 2), out_idx


def _rng(c):
    """A generator from the op's ``seed``; an unseeded draw (seed absent or -1) is refused."""
    seed = c.scalar("seed", -1)
    seed = -1 if seed is None else int(seed)
    if seed < 0:
        raise UnsupportedError(
            f"{_op_label(c)} has no seed (seed {seed}): Core ML draws new values on every prediction, "
            "which no reference can reproduce; give the op a seed >= 0 to run it here")
    return np.random.default_rng(seed)


def _shape(c) -> tuple:
    shape = [int(v) for v in np.asarray(c["shape"]).reshape(-1)]
    if any(d <= 0 for d in shape):
        raise NMSError(f"{_op_label(c)}: shape {shape} has a dimension that is not positive")
    from ..budget import check

    check(shape, 4, what=f"{_op_label(c)} output")
    return tuple(shape)


def _float_type(c, *keys):
    for k in keys:
        v = c.args.get(k)
        if v is not None and np.asarray(v).dtype == np.float16:
            return np.float16
    return np.float32


def _random_normal(c):
    shape = _shape(c)
    return _rng(c).normal(float(c.scalar("mean", 0.0)), float(c.scalar("stddev", 1.0)),
                          size=shape).astype(_float_type(c, "mean", "stddev"))


def _random_uniform(c):
    shape = _shape(c)
    low, high = float(c.scalar("low", 0.0)), float(c.scalar("high", 1.0))
    return _rng(c).uniform(low, high, size=shape).astype(_float_type(c, "low", "high"))


def _random_bernoulli(c):
    shape = _shape(c)
    prob = float(c.scalar("prob", 0.5))
    return (_rng(c).random(size=shape) < prob).astype(_float_type(c, "prob"))


def _random_categorical(c):
    x = np.asarray(c["x"], np.float64)
    mode = str(c.scalar("mode", "logits"))
    if mode not in ("logits", "probs"):
        raise NMSError(f"{_op_label(c)}: mode {mode!r} is not 'logits' or 'probs'")
    size = int(c.scalar("size", 1))
    if size <= 0:
        raise NMSError(f"{_op_label(c)}: size {size} must be 1 or more")
    rng = _rng(c)
    if mode == "logits":
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        probs = z / z.sum(axis=-1, keepdims=True)
    else:
        total = x.sum(axis=-1, keepdims=True)
        probs = x / np.where(total > 0, total, 1.0)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = np.stack([rng.choice(flat.shape[1], size=size, p=row) for row in flat]) if len(flat) \
        else np.zeros((0, size))
    return draws.reshape(probs.shape[:-1] + (size,)).astype(_float_type(c, "x"))


#: ML Program kernels of this module, by op type (``mil.OPS`` is updated with it)
MIL_OPS = {
    "non_maximum_suppression": _mil_nms,
    "random_normal": _random_normal,
    "random_uniform": _random_uniform,
    "random_bernoulli": _random_bernoulli,
    "random_categorical": _random_categorical,
}

__all__ = ["run_nms", "pick_top", "iou_cxcywh", "MIL_OPS", "NMSError", "threshold_inputs",
           "undeclared_threshold_inputs"]


def threshold_inputs(spec) -> set:
    """Names of the Double inputs that override an NMS stage's thresholds
    (``verify`` draws them from 0..1, the range they are meaningful in)."""
    names = set()
    for info in _spec.iter_models(spec):
        if _spec.model_type(info.model) == "nonMaximumSuppression":
            m = info.model.nonMaximumSuppression
            names |= {n for n in (m.iouThresholdInputFeatureName, m.confidenceThresholdInputFeatureName) if n}
    return names


def undeclared_threshold_inputs(stage, table: Mapping) -> dict:
    """The threshold overrides an NMS ``stage`` names but does not declare (YOLO exports declare
    them on the pipeline only), taken from the pipeline's features: Core ML's NMS looks
    them up by name.  {} for other stages."""
    if _spec.model_type(stage) != "nonMaximumSuppression":
        return {}
    m = stage.nonMaximumSuppression
    declared = {f.name for f in stage.description.input}
    return {n: table[n] for n in (m.iouThresholdInputFeatureName, m.confidenceThresholdInputFeatureName)
            if n and n not in declared and table.get(n) is not None}
