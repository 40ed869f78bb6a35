"""The nonMaximumSuppression model type, MIL non_maximum_suppression and the
MIL random ops in the reference runtime, against an independent reference NMS
written here with plain Python loops on corner boxes."""

from __future__ import annotations

import numpy as np
import pytest

from specsurgery import predict
from specsurgery._proto import FeatureTypes_pb2, Model_pb2
from specsurgery.check import check
from specsurgery.errors import SpecSurgeryError, UnsupportedError
from specsurgery.runtime.nms import iou_cxcywh, pick_top

DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32


# --------------------------------------------------------------------------- an independent reference

def reference_nms(scores, boxes, iou_t, conf_t, per_class=False):
    """Greedy PickTop, written from the proto's description: corners, loops, no numpy tricks."""
    scores = [list(map(float, row)) for row in scores]
    corners = [(b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2) for b in boxes]

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / area if area > 0 else 0.0

    best = [max(row) for row in scores]
    label = [row.index(max(row)) for row in scores]
    todo = sorted((i for i in range(len(scores)) if best[i] >= conf_t), key=lambda i: (-best[i], i))
    keep = []
    while todo:
        top = todo.pop(0)
        keep.append(top)
        todo = [j for j in todo if (per_class and label[j] != label[top]) or iou(corners[top], corners[j]) <= iou_t]
    return keep


def nms_spec(classes=3, labels=None, iou=0.5, conf=0.2, per_class=False, dtype=DOUBLE, inputs=True,
             out_rows=None, version=None):
    m = Model_pb2.Model()
    m.specificationVersion = version or (3 if dtype == DOUBLE else 5)
    n = m.nonMaximumSuppression
    n.pickTop.perClass = per_class
    n.stringClassLabels.vector.extend(labels or [f"c{i}" for i in range(classes)])
    n.iouThreshold, n.confidenceThreshold = iou, conf
    n.confidenceInputFeatureName, n.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    n.confidenceOutputFeatureName, n.coordinatesOutputFeatureName = "confidence", "coordinates"
    d = m.description
    for name, k in (("raw_confidence", classes), ("raw_coordinates", 4)):
        f = d.input.add(name=name)
        f.type.multiArrayType.dataType = dtype
        f.type.multiArrayType.shape.extend([20, k])
    if inputs:
        n.iouThresholdInputFeatureName, n.confidenceThresholdInputFeatureName = "iouThreshold", "confidenceThreshold"
        for name in ("iouThreshold", "confidenceThreshold"):
            d.input.add(name=name).type.doubleType.SetInParent()
    for name, k in (("confidence", classes), ("coordinates", 4)):
        f = d.output.add(name=name)
        f.type.multiArrayType.dataType = dtype
        if out_rows is None:
            f.type.multiArrayType.shapeRange.sizeRanges.add(lowerBound=0, upperBound=-1)
            f.type.multiArrayType.shapeRange.sizeRanges.add(lowerBound=k, upperBound=k)
        else:
            f.type.multiArrayType.shape.extend([out_rows, k])
    return m


def clustered(rng, n=20, classes=3):
    """Boxes in a few clusters (so suppression has work to do) with class scores."""
    centres = rng.random((4, 2)) * 0.6 + 0.2
    pick = rng.integers(0, 4, n)
    xy = centres[pick] + rng.normal(0, 0.03, (n, 2))
    wh = rng.random((n, 2)) * 0.2 + 0.1
    scores = rng.random((n, classes))
    scores /= scores.sum(1, keepdims=True) * rng.uniform(1.0, 1.6, (n, 1))
    return scores, np.concatenate([xy, wh], 1)


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_model_type_matches_reference(seed, per_class):
    rng = np.random.default_rng(seed)
    scores, boxes = clustered(rng)
    iou, conf = [(0.5, 0.2), (0.3, 0.0), (0.7, 0.35)][seed % 3]
    spec = nms_spec(iou=iou, conf=conf, per_class=per_class)
    assert [f for f in check(spec) if f.is_error] == []
    got = predict(spec, {"raw_confidence": scores, "raw_coordinates": boxes})
    keep = reference_nms(scores, boxes, iou, conf, per_class)
    assert len(keep) > 0
    np.testing.assert_array_equal(got["confidence"], scores[keep])
    np.testing.assert_array_equal(got["coordinates"], boxes[keep])
    best = got["confidence"].max(1)
    assert list(best) == sorted(best, reverse=True)          # descending confidence
    assert got["confidence"].dtype == np.float64


def test_per_class_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[0.5, 0.5, 0.4, 0.4], [0.51, 0.5, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1]])
    scores = np.array([[0.9, 0.05, 0.0], [0.1, 0.8, 0.0], [0.0, 0.0, 0.6]])
    inputs = {"raw_confidence": scores, "raw_coordinates": boxes}
    across = predict(nms_spec(per_class=False), inputs)
    per = predict(nms_spec(per_class=True), inputs)
    np.testing.assert_array_equal(across["coordinates"], boxes[[0, 2]])
    np.testing.assert_array_equal(per["coordinates"], boxes[[0, 1, 2]])


def test_threshold_inputs_override_the_parameters():
    rng = np.random.default_rng(3)
    scores, boxes = clustered(rng)
    spec = nms_spec(iou=0.5, conf=0.2)
    base = {"raw_confidence": scores, "raw_coordinates": boxes}
    for iou, conf in ((1.0, 0.0), (0.2, 0.3), (0.6, 0.9)):
        got = predict(spec, dict(base, iouThreshold=iou, confidenceThreshold=conf))
        keep = reference_nms(scores, boxes, iou, conf)
        np.testing.assert_array_equal(got["coordinates"], boxes[keep])
    everything = predict(spec, dict(base, iouThreshold=1.0, confidenceThreshold=0.0))
    assert everything["coordinates"].shape == (20, 4)            # IoU 1.0 suppresses nothing
    nothing = predict(spec, dict(base, confidenceThreshold=1.0))
    assert nothing["confidence"].shape == (0, 3)                 # no box is that sure
    with pytest.raises(SpecSurgeryError, match="between 0 and 1"):
        predict(spec, dict(base, iouThreshold=1.5))


def test_fixed_output_rows_pad_with_zeros_and_truncate():
    rng = np.random.default_rng(1)
    scores, boxes = clustered(rng)
    keep = reference_nms(scores, boxes, 0.5, 0.2)
    big = predict(nms_spec(out_rows=len(keep) + 3), {"raw_confidence": scores, "raw_coordinates": boxes})
    assert big["confidence"].shape == (len(keep) + 3, 3)
    np.testing.assert_array_equal(big["confidence"][len(keep):], 0)
    small = predict(nms_spec(out_rows=1), {"raw_confidence": scores, "raw_coordinates": boxes})
    np.testing.assert_array_equal(small["coordinates"], boxes[keep[:1]])


def test_float32_arrays_stay_float32_and_bad_shapes_are_named():
    spec = nms_spec(dtype=FLOAT32)
    rng = np.random.default_rng(0)
    scores, boxes = clustered(rng)
    got = predict(spec, {"raw_confidence": scores.astype(np.float32), "raw_coordinates": boxes.astype(np.float32)})
    assert got["coordinates"].dtype == np.float32
    with pytest.raises(SpecSurgeryError, match=r"'raw_coordinates'.*\[boxes, 4\]"):
        predict(spec, {"raw_confidence": scores, "raw_coordinates": boxes[:, :3]})
    with pytest.raises(SpecSurgeryError, match="one row per box"):
        predict(spec, {"raw_confidence": scores[:5], "raw_coordinates": boxes})


def test_iou_helper_agrees_with_hand_values():
    # two unit squares overlapping by half: IoU = 0.5 / 1.5
    assert iou_cxcywh([0.5, 0.5, 1, 1], [[1.0, 0.5, 1, 1]])[0] == pytest.approx(1 / 3)
    assert iou_cxcywh([0, 0, 0, 0], [[0, 0, 0, 0]])[0] == 0.0               # empty boxes: 0, not NaN
    assert pick_top(np.array([[np.nan], [0.5]]), np.zeros((2, 4)), 0.5, 0.0) == [1]


# --------------------------------------------------------------------------- ML Program ops

@pytest.fixture(scope="module")
def ct():
    from specsurgery._proto import coremltools

    return coremltools()


def _program(ct, build, inputs, target):
    from coremltools.converters.mil import Builder as mb

    prog = mb.program(input_specs=[mb.TensorSpec(shape=s) for s in inputs], opset_version=target)(build)
    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT32)


@pytest.mark.parametrize("per_class", [False, True])
def test_mil_nms_ios15_matches_reference(ct, per_class):
    from coremltools.converters.mil import Builder as mb

    def build(boxes, scores):
        return mb.non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.4, score_threshold=0.2,
                                          max_boxes=8, per_class_suppression=per_class)

    model = _program(ct, build, [(2, 20, 4), (2, 20, 3)], ct.target.iOS15)
    rng = np.random.default_rng(5)
    batches = [clustered(rng) for _ in range(2)]
    scores = np.stack([b[0] for b in batches]).astype(np.float32)
    boxes = np.stack([b[1] for b in batches]).astype(np.float32)
    out = list(predict(model, {"boxes": boxes, "scores": scores}).values())
    for b in range(2):
        keep = reference_nms(scores[b], boxes[b], 0.4, 0.2, per_class)[:8]
        k = len(keep)
        np.testing.assert_array_equal(out[0][b, :k], boxes[b][keep])
        np.testing.assert_array_equal(out[1][b, :k], scores[b][keep])
        assert list(out[2][b, :k]) == keep and (out[2][b, k:] == -1).all()
        assert out[3][b] == k and (out[0][b, k:] == 0).all()


def test_mil_nms_ios17_layout(ct):
    from coremltools.converters.mil import Builder as mb

    def build(boxes, scores):
        return mb.non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.4, max_boxes=6)

    model = _program(ct, build, [(1, 4, 20), (1, 3, 20)], ct.target.iOS17)
    scores, boxes = clustered(np.random.default_rng(2))
    out = list(predict(model, {"boxes": boxes.T[None].astype(np.float32),
                               "scores": scores.T[None].astype(np.float32)}).values())
    assert len(out) == 3 and out[0].shape == (1, 4, 6)
    keep = reference_nms(scores.astype(np.float32), boxes.astype(np.float32), 0.4, -1.0)[:6]
    np.testing.assert_array_equal(out[0][0][:, :len(keep)], boxes.T.astype(np.float32)[:, keep])


def test_mil_random_ops_are_seeded_or_refused(ct):
    from coremltools.converters.mil import Builder as mb

    def build(x):
        shape = np.array([3, 4], np.int32)
        return (mb.random_normal(shape=shape, mean=1.0, stddev=2.0, seed=1),
                mb.random_uniform(shape=shape, low=-1.0, high=1.0, seed=2),
                mb.random_bernoulli(shape=shape, prob=0.3, seed=3),
                mb.random_categorical(x=x, size=5, seed=4), mb.add(x=x, y=1.0))

    model = _program(ct, build, [(2, 6)], ct.target.iOS15)
    x = np.log(np.array([[0.0001] * 5 + [1.0], [1.0] + [0.0001] * 5], np.float32))
    a = list(predict(model, {"x": x}).values())
    b = list(predict(model, {"x": x}).values())
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)                      # same seed, same values
    normal, uniform, bern, cat = a[:4]
    assert normal.shape == (3, 4) and uniform.min() >= -1 and uniform.max() < 1
    assert set(np.unique(bern)) <= {0.0, 1.0}
    assert cat.shape == (2, 5) and (cat[0] == 5).all() and (cat[1] == 0).all()

    def unseeded(x):
        return mb.random_uniform(shape=np.array([2], np.int32)), mb.add(x=x, y=1.0)

    model = _program(ct, unseeded, [(2, 6)], ct.target.iOS15)
    with pytest.raises(UnsupportedError, match=r"random_uniform.*seed"):
        predict(model, {"x": x})
