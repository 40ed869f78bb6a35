"""add_nms: detectors built as exporters build them (a hand-built NeuralNetwork
like Turi Create's, torch detectors converted to NeuralNetwork and to ML
Program) become detector pipelines that pass check and whose `run` gives the
boxes and class confidences of an independent reference NMS over the raw
outputs.  Also: box formats, bad input, the CLI, and the other verbs on
detectors (inspect, tree, render, suggest-cuts, compress, dedupe)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import specsurgery as ss
from specsurgery._proto import FeatureTypes_pb2, Model_pb2
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError
from specsurgery.ops.nms import PREVIEW_TYPE_KEY, add_nms, detector_info

DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
LABELS = ["cat", "dog", "bird"]


# --------------------------------------------------------------------------- an independent reference NMS

def reference_nms(scores, boxes, iou_t, conf_t, per_class=False):
    """Greedy PickTop over (cx, cy, w, h) boxes, written with corners and loops."""
    def corners(b):
        return b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2

    def iou(a, b):
        a, b = corners(a), corners(b)
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    scores = np.asarray(scores, np.float64)
    boxes = np.asarray(boxes, np.float64)
    best = scores.max(1)
    cls = scores.argmax(1)
    order = sorted((i for i in range(len(best)) if best[i] >= conf_t), key=lambda i: (-best[i], i))
    keep = []
    for i in order:
        if all((per_class and cls[i] != cls[k]) or iou(boxes[i], boxes[k]) <= iou_t for k in keep):
            keep.append(i)
    return keep


# --------------------------------------------------------------------------- detectors as exporters build them

def turi_style(n=12, classes=3, dtype=DOUBLE):
    """A NeuralNetwork like Turi Create's exporter writes: EXACT array mapping,
    raw DOUBLE outputs declared [boxes, classes] and [boxes, 4]."""
    m = Model_pb2.Model()
    m.specificationVersion = 4
    nn = m.neuralNetwork
    nn.arrayInputShapeMapping = 1
    f = m.description.input.add(name="features")
    f.type.multiArrayType.dataType = FLOAT32
    f.type.multiArrayType.shape.extend([n, 6])
    rng = np.random.default_rng(0)
    for name, k in (("logits", classes), ("box_raw", 4)):
        bm = nn.layers.add(name=name, input=["features"], output=[name]).batchedMatmul
        bm.weightMatrixFirstDimension, bm.weightMatrixSecondDimension = 6, k
        bm.weights.floatValue.extend((rng.standard_normal(6 * k) * 2).tolist())
    nn.layers.add(name="softmax", input=["logits"], output=["raw_confidence"]).softmaxND.axis = -1
    nn.layers.add(name="sigmoid", input=["box_raw"], output=["raw_coordinates"]).activation.sigmoid.SetInParent()
    for name, k in (("raw_confidence", classes), ("raw_coordinates", 4)):
        o = m.description.output.add(name=name)
        o.type.multiArrayType.dataType = dtype
        o.type.multiArrayType.shape.extend([n, k])
    return m


def _torch_detector(shared=None, classes=3, xyxy=False):
    import torch
    import torch.nn as tnn

    class TinyDetector(tnn.Module):
        def __init__(self):
            super().__init__()
            self.body = shared if shared is not None else tnn.Sequential(
                tnn.Conv2d(3, 8, 3, 2, 1), tnn.ReLU(), tnn.Conv2d(8, 16, 3, 2, 1), tnn.ReLU())
            self.head = tnn.Conv2d(16, classes + 4, 1)

        def forward(self, image):
            y = self.head(self.body(image)).flatten(2).transpose(1, 2)[0]     # [cells, classes + 4]
            box = torch.sigmoid(y[:, classes:])
            if xyxy:
                box = torch.cat([box[:, :2] * 0.5, box[:, :2] * 0.5 + box[:, 2:] * 0.5], 1)
            return torch.softmax(y[:, :classes] * 3, -1), box

    torch.manual_seed(1)
    return TinyDetector().eval()


@pytest.fixture(scope="module")
def torch_detectors():
    """{backend: raw detector} converted from one plain-torch tiny detector."""
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    model = _torch_detector()
    ex = torch.rand(1, 3, 16, 16)
    return {b: from_torch(model, ex, image_input="image", output_names=["scores", "boxes"], backend=b)
            for b in ("neuralnetwork", "mlprogram")}


def _raw(model, inputs):
    out = ss.predict(model, inputs)
    return out


def _compare(detector, raw_model, raw_names, inputs, iou, conf, per_class=False, extra=None):
    raw = _raw(raw_model, inputs)
    scores = np.asarray(raw[raw_names[0]], np.float64).reshape(-1, len(LABELS))
    boxes = np.asarray(raw[raw_names[1]], np.float64).reshape(-1, 4)
    got = ss.predict(detector, dict(inputs, **(extra or {})))
    keep = reference_nms(scores, boxes, iou, conf, per_class)
    assert got["confidence"].shape == (len(keep), len(LABELS))
    np.testing.assert_allclose(got["confidence"], scores[keep], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["coordinates"], boxes[keep], rtol=0, atol=1e-6)
    return keep


def _no_errors(model, **kw):
    bad = [str(f) for f in check(model, **kw) if f.is_error]
    assert bad == []


# --------------------------------------------------------------------------- must show

@pytest.mark.parametrize("per_class", [False, True])
def test_turi_style_detector(tmp_path, per_class):
    raw = turi_style()
    det = add_nms(raw, confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS,
                  iou_threshold=0.3, confidence_threshold=0.2, per_class=per_class)
    _no_errors(det)
    path = ss.save(det, tmp_path / "Detector.mlmodel")
    rng = np.random.default_rng(0)
    kept = 0
    for seed in range(3):
        x = {"features": rng.standard_normal((12, 6)).astype(np.float32)}
        kept += len(_compare(path, raw, ("raw_confidence", "raw_coordinates"), x, 0.3, 0.2, per_class))
        # the threshold inputs override the parameters
        _compare(path, raw, ("raw_confidence", "raw_coordinates"), x, 0.7, 0.05, per_class,
                 extra={"iouThreshold": 0.7, "confidenceThreshold": 0.05})
    assert kept > 3
    loaded = ss.load(path)
    assert loaded.specificationVersion == 4              # DOUBLE arrays: v3 NMS, v4 network
    assert [m.WhichOneof("Type") for m in loaded.pipeline.models] == ["neuralNetwork", "nonMaximumSuppression"]
    # raw names that are the pipeline's output names are renamed away
    assert "confidence" in {f.name for f in loaded.description.output}


@pytest.mark.parametrize("backend", ["neuralnetwork", "mlprogram"])
def test_converted_torch_detector(torch_detectors, tmp_path, backend):
    raw = torch_detectors[backend]
    det = add_nms(raw, confidence="scores", coordinates="boxes", labels=",".join(LABELS), iou_threshold=0.4,
                  confidence_threshold=0.3)
    _no_errors(det)
    suffix = ".mlpackage" if backend == "mlprogram" else ".mlmodel"
    path = ss.save(det, tmp_path / f"Detector{suffix}")
    _no_errors(path)
    spec = ss.load_spec(path)
    assert spec.specificationVersion == (6 if backend == "mlprogram" else 5)   # FLOAT32 NMS: v5
    rng = np.random.default_rng(1)
    total = 0
    for _ in range(3):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        total += len(_compare(path, raw, ("scores", "boxes"), {"image": image}, 0.4, 0.3))
        _compare(path, raw, ("scores", "boxes"), {"image": image}, 0.9, 0.0,
                 extra={"iouThreshold": 0.9, "confidenceThreshold": 0.0})
    assert total >= 3


def test_interface_labels_and_preview_metadata():
    det = add_nms(turi_style(), confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS)
    d = det.description
    assert [f.name for f in d.input] == ["features", "iouThreshold", "confidenceThreshold"]
    assert [f.type.isOptional for f in d.input] == [False, True, True]
    assert all(f.type.WhichOneof("Type") == "doubleType" for f in d.input[1:])
    for f, width in zip(d.output, (3, 4)):
        ranges = f.type.multiArrayType.shapeRange.sizeRanges
        assert [(r.lowerBound, r.upperBound) for r in ranges] == [(0, -1), (width, width)]
        assert not len(f.type.multiArrayType.shape) and f.shortDescription
    ud = d.metadata.userDefined
    assert ud[PREVIEW_TYPE_KEY] == "objectDetector"
    assert ud["classes"] == "cat,dog,bird" and ud["iouThreshold"] == "0.45" and ud["confidenceThreshold"] == "0.25"
    info = detector_info(det)
    assert info["labels"] == LABELS and info["iou_threshold"] == 0.45 and info["stage"] == "nms"
    assert ss.spec.class_labels(det) in (None, LABELS)
    no_inputs = add_nms(turi_style(), confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS,
                        threshold_inputs=False)
    assert [f.name for f in no_inputs.description.input] == ["features"]
    _no_errors(no_inputs)
    ints = add_nms(turi_style(), confidence="raw_confidence", coordinates="raw_coordinates", labels=[3, 7, 9])
    assert list(ints.pipeline.models[-1].nonMaximumSuppression.int64ClassLabels.vector) == [3, 7, 9]
    _no_errors(ints)


def test_float32_network_outputs_need_v5():
    det = add_nms(turi_style(dtype=FLOAT32), confidence="raw_confidence", coordinates="raw_coordinates",
                  labels=LABELS)
    assert det.specificationVersion == 5
    _no_errors(det)


def test_xyxy_boxes_and_a_leading_batch_are_converted_in_front_of_nms(tmp_path):
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    class Batched(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            scores, boxes = self.inner(image)
            return scores[None], boxes[None]                       # [1, boxes, k]

    inner = _torch_detector(xyxy=True)
    for module, names in ((inner, ("scores", "corners")), (Batched(inner), ("scores", "corners"))):
        raw = from_torch(module, torch.rand(1, 3, 16, 16), image_input="image", output_names=list(names))
        det = add_nms(raw, confidence="scores", coordinates="corners", labels=LABELS, box_format="xyxy",
                      iou_threshold=0.5, confidence_threshold=0.2)
        _no_errors(det)
        kinds = [m.WhichOneof("Type") for m in det.pipeline.models]
        assert kinds == ["neuralNetwork", "neuralNetwork", "nonMaximumSuppression"]
        assert list(det.pipeline.names)[1] == "decode"
        rng = np.random.default_rng(2)
        for _ in range(2):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            rawout = ss.predict(raw, {"image": image})
            s = np.asarray(rawout["scores"], np.float64).reshape(-1, 3)
            c = np.asarray(rawout["corners"], np.float64).reshape(-1, 4)
            centres = np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2, c[:, 2] - c[:, 0],
                                c[:, 3] - c[:, 1]], 1)
            keep = reference_nms(s, centres, 0.5, 0.2)
            got = ss.predict(det, {"image": image})
            np.testing.assert_allclose(got["coordinates"], centres[keep], atol=1e-6)
            np.testing.assert_allclose(got["confidence"], s[keep], atol=1e-6)


# --------------------------------------------------------------------------- bad input: one line naming the fix

@pytest.mark.parametrize("kwargs,match", [
    (dict(confidence="nope"), r"unknown output.*'nope'.*known: 'raw_confidence', 'raw_coordinates'"),
    (dict(labels=["a", "b"]), r"2 labels for 3 classes.*give exactly 3 labels"),
    (dict(iou_threshold=1.2), r"iou_threshold \(--iou\) 1.2 is outside 0..1"),
    (dict(confidence_threshold=-0.1), r"confidence_threshold \(--threshold\) -0.1 is outside 0..1"),
    (dict(confidence_threshold=float("nan")), r"outside 0..1"),
    (dict(box_format="xywh"), r"box_format 'xywh' is not one of cxcywh, xyxy"),
    (dict(coordinates="raw_confidence"), r"both name 'raw_confidence'"),
    (dict(labels=["a", "a", "b"]), r"labels repeat 'a'"),
    (dict(inplace=True), r"option 'inplace' is not supported"),
])
def test_bad_input_names_the_fix(kwargs, match):
    args = dict(confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS)
    args.update(kwargs)
    with pytest.raises(SpecSurgeryError, match=match) as err:
        add_nms(turi_style(), **args)
    assert "\n" not in str(err.value)


def test_wrong_ranks_and_box_widths_are_named():
    raw = turi_style()
    raw.description.output[0].type.multiArrayType.shape[:] = [12, 3, 1]
    with pytest.raises(SpecSurgeryError, match=r"'raw_confidence' has shape \[12, 3, 1\].*reshape"):
        add_nms(raw, confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS)
    raw = turi_style()
    raw.description.output[1].type.multiArrayType.shape[:] = [12, 5]
    with pytest.raises(SpecSurgeryError, match=r"\[boxes, 4\]"):
        add_nms(raw, confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS)
    det = add_nms(turi_style(), confidence="raw_confidence", coordinates="raw_coordinates", labels=LABELS)
    with pytest.raises(SpecSurgeryError, match="already has a nonMaximumSuppression stage"):
        add_nms(det, confidence="confidence", coordinates="coordinates", labels=LABELS)
    with pytest.raises(NotFoundError):
        add_nms(turi_style(), confidence="raw_conf", coordinates="raw_coordinates", labels=LABELS)


# --------------------------------------------------------------------------- CLI and the other verbs

def test_cli_add_nms_and_the_other_verbs(tmp_path, capsys):
    src = ss.save(turi_style(), tmp_path / "raw.mlmodel")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    out = tmp_path / "Detector.mlmodel"
    assert main(["add-nms", str(src), "--confidence", "raw_confidence", "--coordinates", "raw_coordinates",
                 "--labels", str(tmp_path / "labels.txt"), "--iou", "0.5", "--threshold", "0.3", "--per-class",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nms (nonMaximumSuppression)" in text and "per class" in text
    info = detector_info(ss.load(out))
    assert info["labels"] == LABELS and info["per_class"] and info["iou_threshold"] == 0.5
    assert main(["check", str(out)]) == 0
    capsys.readouterr()
    # one line naming the fix, exit 1
    for extra, needle in ((["--labels", "a,b"], "give exactly 3 labels"), (["--iou", "2"], "outside 0..1"),
                          (["--confidence", "nope", "--labels", "a,b,c"], "'nope'")):
        argv = ["add-nms", str(src), "--confidence", "raw_confidence", "--coordinates", "raw_coordinates",
                "--labels", "cat,dog,bird", "-o", str(tmp_path / "bad.mlmodel")] + extra
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    # inspect, tree and render show the NMS stage and its thresholds
    assert main(["inspect", str(out)]) == 0
    assert "nms: nonMaximumSuppression v3 (3 classes, IoU 0.5, confidence 0.3, per class" in capsys.readouterr().out
    assert main(["inspect", "--json", str(out)]) == 0
    tree = json.loads(capsys.readouterr().out)["tree"]
    assert tree["stages"][1]["nms"]["confidence_threshold"] == 0.3
    assert main(["tree", str(out)]) == 0
    assert "[3 classes, IoU 0.5, confidence 0.3, per class" in capsys.readouterr().out
    assert main(["render", str(out), "-o", str(tmp_path / "d.dot")]) == 0
    assert "IoU 0.5, confidence 0.3" in (tmp_path / "d.dot").read_text()


@pytest.mark.parametrize("backend", ["neuralnetwork", "mlprogram"])
def test_suggest_cuts_on_the_detector_stage(torch_detectors, tmp_path, capsys, backend):
    det = add_nms(torch_detectors[backend], confidence="scores", coordinates="boxes", labels=LABELS)
    out = ss.save(det, tmp_path / ("D.mlpackage" if backend == "mlprogram" else "D.mlmodel"))
    capsys.readouterr()
    assert main(["suggest-cuts", str(out), "--stage", "detector"]) == 0
    cuts = capsys.readouterr().out
    assert "1x16x4x4" in cuts                      # the backbone's last feature map is a cut


def test_compress_reaches_into_the_first_stage(torch_detectors, tmp_path):
    for backend, mode in (("neuralnetwork", "fp16"), ("mlprogram", "linear")):
        det = add_nms(torch_detectors[backend], confidence="scores", coordinates="boxes", labels=LABELS)
        small, report = ss.compress(det, mode=mode, min_weights=1, return_report=True)
        assert len(report.layers) >= 3
        _no_errors(small)
        spec = getattr(small, "spec", small)
        assert spec.pipeline.models[-1].WhichOneof("Type") == "nonMaximumSuppression"
        r = ss.verify(det, small, rtol=0.05, atol=0.05)
        assert all(o.ok for o in r.outputs), r


def test_dedupe_classifier_and_detector_sharing_a_backbone(tmp_path):
    """Dedupe the raw detector with the classifier, then add_nms onto the deduped
    [linked backbone, head] gives
    [linked backbone, head, nms]; both verify against the originals."""
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                               torch.nn.ReLU())

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = body, torch.nn.Linear(16, 3)

        def forward(self, image):
            return torch.softmax(self.fc(self.body(image).mean((2, 3))), -1)

    ex = torch.rand(1, 3, 16, 16)
    raw = from_torch(_torch_detector(shared=body), ex, image_input="image", output_names=["scores", "boxes"])
    clf = from_torch(Classifier().eval(), ex, image_input="image", class_labels=LABELS)
    detector = add_nms(raw, confidence="scores", coordinates="boxes", labels=LABELS)
    src = tmp_path / "in"
    src.mkdir()
    paths = [ss.save(clf, src / "Classifier.mlmodel"), ss.save(raw, src / "Detector.mlmodel")]
    # the detector pipeline itself dedupes too (its first stage is the network; see tests/ops/test_dedupe.py)
    direct = ss.dedupe({"clf": clf, "det": detector}, build=False)
    assert [m.backbone for m in direct.plan.models] == ["Backbone", "Backbone"]
    report = ss.dedupe_files(paths, tmp_path / "out")
    assert report["written"]
    deduped_raw = ss.load(tmp_path / "out" / "Detector.mlmodel")
    det2 = add_nms(deduped_raw, confidence="scores", coordinates="boxes", labels=LABELS)
    assert [m.WhichOneof("Type") for m in det2.pipeline.models] == ["linkedModel", "neuralNetwork",
                                                                    "nonMaximumSuppression"]
    out = ss.save(det2, tmp_path / "out" / "DetectorNMS.mlmodel")
    _no_errors(out, search_path=".")
    before = sum(f.stat().st_size for f in src.iterdir())
    after = sum((tmp_path / "out" / n).stat().st_size for n in ("Backbone.mlmodel", "Classifier.mlmodel",
                                                                 "Detector.mlmodel"))
    assert after < before
    for original, new in ((detector, out), (clf, tmp_path / "out" / "Classifier.mlmodel")):
        r = ss.verify(original, new)
        assert all(o.ok for o in r.outputs), r


def test_yolo_style_export_inspects_checks_renders_and_runs(torch_detectors, tmp_path, capsys):
    """The pipeline Ultralytics' exporter writes: [mlProgram, NMS] whose NMS stage names the
    threshold inputs but declares only the raw arrays (the pipeline declares the thresholds,
    required), pickTop.perClass, version 7."""
    pkg = add_nms(torch_detectors["mlprogram"], confidence="scores", coordinates="boxes", labels=LABELS,
                  per_class=True)
    spec = pkg.spec
    del spec.pipeline.models[1].description.input[2:]
    for f in spec.description.input[1:]:
        f.type.isOptional = False
    spec.description.metadata.userDefined["IoU threshold"] = "0.45"
    for m in [spec, *spec.pipeline.models]:
        m.specificationVersion = 7
    path = ss.save(pkg, tmp_path / "yolo.mlpackage")
    for argv in (["check", str(path)], ["inspect", str(path)], ["tree", str(path)],
                 ["render", str(path), "-o", str(tmp_path / "y.dot")]):
        assert main(argv) == 0, argv
    assert "per class" in capsys.readouterr().out
    image = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    raw = torch_detectors["mlprogram"]
    # the undeclared threshold inputs still reach the NMS stage by name
    _compare(path, raw, ("scores", "boxes"), {"image": image}, 1.0, 0.0, per_class=True,
             extra={"iouThreshold": 1.0, "confidenceThreshold": 0.0})
    _compare(path, raw, ("scores", "boxes"), {"image": image}, 0.2, 0.3, per_class=True,
             extra={"iouThreshold": 0.2, "confidenceThreshold": 0.3})
