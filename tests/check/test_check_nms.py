"""check: the rules of Core ML's NonMaximumSuppressionValidator and the
detector-pipeline rank rule (check/nms.py), one broken spec per rule."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from specsurgery._proto import FeatureTypes_pb2, Model_pb2
from specsurgery.check import check
from specsurgery.check.nms import RULES
from specsurgery.ops.nms import add_nms

DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
INT32 = FeatureTypes_pb2.ArrayFeatureType.INT32
REPO = Path(__file__).resolve().parents[2]


def nms_model(classes=3):
    m = Model_pb2.Model()
    m.specificationVersion = 3
    n = m.nonMaximumSuppression
    n.pickTop.perClass = False
    n.stringClassLabels.vector.extend(["a", "b", "c"][:classes])
    n.iouThreshold, n.confidenceThreshold = 0.45, 0.25
    n.confidenceInputFeatureName, n.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    n.iouThresholdInputFeatureName, n.confidenceThresholdInputFeatureName = "iouThreshold", "confidenceThreshold"
    n.confidenceOutputFeatureName, n.coordinatesOutputFeatureName = "confidence", "coordinates"
    d = m.description
    for name, k in (("raw_confidence", classes), ("raw_coordinates", 4)):
        f = d.input.add(name=name)
        f.type.multiArrayType.dataType = DOUBLE
        f.type.multiArrayType.shape.extend([10, k])
    for name in ("iouThreshold", "confidenceThreshold"):
        d.input.add(name=name).type.doubleType.SetInParent()
    for name, k in (("confidence", classes), ("coordinates", 4)):
        f = d.output.add(name=name)
        f.type.multiArrayType.dataType = DOUBLE
        f.type.multiArrayType.shapeRange.sizeRanges.add(lowerBound=0, upperBound=-1)
        f.type.multiArrayType.shapeRange.sizeRanges.add(lowerBound=k, upperBound=k)
    return m


def raw_detector(n=10, classes=3):
    m = Model_pb2.Model()
    m.specificationVersion = 4
    nn = m.neuralNetwork
    nn.arrayInputShapeMapping = 1
    f = m.description.input.add(name="x")
    f.type.multiArrayType.dataType = FLOAT32
    f.type.multiArrayType.shape.extend([n, 5])
    rng = np.random.default_rng(0)
    for name, k in (("scores", classes), ("boxes", 4)):
        bm = nn.layers.add(name=name, input=["x"], output=[name]).batchedMatmul
        bm.weightMatrixFirstDimension, bm.weightMatrixSecondDimension = 5, k
        bm.weights.floatValue.extend(rng.standard_normal(5 * k).tolist())
        o = m.description.output.add(name=name)
        o.type.multiArrayType.dataType = DOUBLE
        o.type.multiArrayType.shape.extend([n, k])
    return m


def rules(spec) -> set:
    return {f.rule for f in check(spec) if f.is_error}


def warns(spec) -> set:
    return {f.rule for f in check(spec) if f.severity == "warning"}


def _retype(role, i, kind):
    def go(s):
        f = getattr(s.description, role)[i]
        f.type.Clear()
        getattr(f.type, kind).SetInParent()
    return go


def _set(field, value):
    def go(s):
        setattr(s.nonMaximumSuppression, field, value)
    return go


def _dtype(i, dtype, role="input"):
    def go(s):
        getattr(s.description, role)[i].type.multiArrayType.dataType = dtype
    return go


def _extra_input(s):
    s.description.input.add(name="extra").type.doubleType.SetInParent()


def _extra_output(s):
    f = s.description.output.add(name="extra")
    f.type.multiArrayType.dataType = DOUBLE


def _fixed_outputs(rows_conf, rows_coord, classes=3):
    def go(s):
        for f, rows, k in ((s.description.output[0], rows_conf, classes), (s.description.output[1], rows_coord, 4)):
            f.type.multiArrayType.ClearField("shapeRange")
            f.type.multiArrayType.shape.extend([rows, k])
    return go


def _three_dims(s):
    s.description.output[0].type.multiArrayType.shapeRange.sizeRanges.add(lowerBound=1, upperBound=1)


def _mixed(s):
    f = s.description.output[1].type.multiArrayType
    f.ClearField("shapeRange")
    f.shape.extend([5, 4])


def _enumerated(s):
    f = s.description.output[1].type.multiArrayType
    f.ClearField("shapeRange")
    f.enumeratedShapes.shapes.add().shape.extend([5, 4])


def _labels(n):
    def go(s):
        s.nonMaximumSuppression.stringClassLabels.vector[:] = ["l%d" % i for i in range(n)]
    return go


def _input_rank(s):
    del s.description.input[0].type.multiArrayType.shape[:]
    s.description.input[0].type.multiArrayType.shape.extend([1, 10, 3])


CASES = [
    ("unused-input", _extra_input, "nms.unused-input"),
    ("missing-confidence-input", _set("confidenceInputFeatureName", "nope"), "nms.missing-input"),
    ("missing-coordinates-input", _set("coordinatesInputFeatureName", "nope"), "nms.missing-input"),
    ("unused-output", _extra_output, "nms.unused-output"),
    ("missing-output", _set("coordinatesOutputFeatureName", "nope"), "nms.missing-output"),
    ("confidence-not-array", _retype("input", 0, "doubleType"), "nms.feature-type"),
    ("threshold-not-double", _retype("input", 2, "int64Type"), "nms.feature-type"),
    ("iou-above-1", _set("iouThreshold", 1.5), "nms.iou-threshold"),
    ("iou-negative", _set("iouThreshold", -0.1), "nms.iou-threshold"),
    ("iou-nan", _set("iouThreshold", float("nan")), "nms.iou-threshold"),
    ("confidence-negative", _set("confidenceThreshold", -0.5), "nms.confidence-threshold"),
    ("dtype-mismatch", _dtype(1, FLOAT32), "nms.dtype"),
    ("dtype-int32", lambda s: [_dtype(i, INT32, r)(s) for i, r in ((0, "input"), (1, "input"),
                                                                   (0, "output"), (1, "output"))],
     "nms.dtype"),
    ("output-rank-3", _three_dims, "nms.output-shape"),
    ("output-mixed", _mixed, "nms.output-shape"),
    ("output-enumerated", _enumerated, "nms.output-shape"),
    ("output-rows-differ", _fixed_outputs(5, 6), "nms.output-shape"),
    ("labels-vs-range", _labels(4), "nms.label-count"),
    ("labels-vs-fixed", lambda s: (_fixed_outputs(5, 5)(s), _labels(2)(s)), "nms.label-count"),
    ("input-rank", _input_rank, "nms.input-rank"),
]


def test_builder_is_valid():
    assert rules(nms_model()) == set()
    assert warns(nms_model()) == set()


@pytest.mark.parametrize("case_id,mutate,rule", CASES, ids=[c[0] for c in CASES])
def test_rule_catches_broken_nms(case_id, mutate, rule):
    spec = nms_model()
    mutate(spec)
    found = [f for f in check(spec) if f.rule == rule and f.is_error]
    assert found, f"{case_id}: expected {rule}, got {sorted(rules(spec))}"
    assert found[0].message and rule in RULES


def test_confidence_above_one_warns_and_coordinates_shape_warns():
    spec = nms_model()
    spec.nonMaximumSuppression.confidenceThreshold = 2.0
    assert "nms.confidence-threshold" in warns(spec) and "nms.confidence-threshold" not in rules(spec)
    spec = nms_model()
    spec.description.output[1].type.multiArrayType.shapeRange.sizeRanges[0].upperBound = 7
    assert "nms.coordinates-shape" in warns(spec) and rules(spec) == set()


def test_float32_below_v5_is_a_version_error():
    spec = nms_model()
    for role in ("input", "output"):
        for f in getattr(spec.description, role)[:2]:
            f.type.multiArrayType.dataType = FLOAT32
    assert "version.below-minimum" in rules(spec)
    spec.specificationVersion = 5
    assert rules(spec) == set()


def test_pipeline_stage_feeding_nms_with_the_wrong_rank():
    good = add_nms(raw_detector(), confidence="scores", coordinates="boxes", labels="a,b,c")
    assert rules(good) == set()
    bad = Model_pb2.Model.FromString(good.SerializeToString())
    for f in list(bad.pipeline.models[0].description.output) + [bad.pipeline.models[1].description.input[0]]:
        if f.name == "scores":
            del f.type.multiArrayType.shape[:]
            f.type.multiArrayType.shape.extend([10, 3, 1])
    found = {f.rule: f for f in check(bad) if f.is_error}
    assert "nms.producer-rank" in found and "reshape" in found["nms.producer-rank"].message
    assert found["nms.producer-rank"].path.startswith("detector/")


def test_every_nms_rule_is_documented():
    code = set(re.findall(r'"(nms\.[a-z0-9-]+)"', (REPO / "specsurgery" / "check" / "nms.py").read_text()))
    docs = set(re.findall(r"`(nms\.[a-z0-9-]+)`", (REPO / "docs" / "check.md").read_text()))
    assert code == set(RULES)
    assert code - docs == set() and docs - code == set()
