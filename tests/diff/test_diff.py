"""specsurgery.diff and ``specsurgery diff``: what changed between two models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnbuild import tiny_classifier, tiny_linked, tiny_nn, tiny_pipeline
from specsurgery import io
from specsurgery.cli import main
from specsurgery.diff import diff
from specsurgery.weights import decode


def _copy(spec):
    return io.copy_spec(spec)


def test_a_model_diffed_with_itself_is_the_same(tmp_path, capsys):
    path = io.save(tiny_pipeline(), tmp_path / "p.mlmodel")
    assert diff(path, path).same
    assert main(["diff", str(path), str(path)]) == 0
    assert "are the same model" in capsys.readouterr().out
    assert main(["diff", str(path), str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["same"] is True and report["layers"] == {"added": [], "removed": [], "changed": []}


def test_exactly_the_layer_whose_weights_changed(tmp_path, capsys):
    a = tiny_nn(n_in=4, n_hidden=3)
    b = _copy(a)
    fc = next(l for l in b.neuralNetwork.layers if l.name == "fc")
    values = np.asarray(fc.innerProduct.weights.floatValue, dtype=np.float32)
    values[5] += 0.25
    fc.innerProduct.weights.ClearField("floatValue")
    fc.innerProduct.weights.floatValue.extend(values)
    pa, pb = io.save(a, tmp_path / "a.mlmodel"), io.save(b, tmp_path / "b.mlmodel")
    assert main(["diff", str(pa), str(pb), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["same"] is False
    changed = report["layers"]["changed"]
    assert [c["name"] for c in changed] == ["fc"]
    assert changed[0]["what"] == ["weights"]
    assert changed[0]["max_abs"] == pytest.approx(0.25, abs=1e-6)
    assert report["interface"] == {} and report["metadata"] == {} and report["spec_version"] == [4, 4]


def test_storage_change_is_reported_with_its_error():
    a = tiny_nn()
    b = _copy(a)
    fc = b.neuralNetwork.layers[0]
    values = decode(fc.innerProduct.weights)
    fc.innerProduct.weights.ClearField("floatValue")
    fc.innerProduct.weights.float16Value = values.astype("<f2").tobytes()
    change = diff(a, b).changed
    assert [c.name for c in change] == ["fc"]
    assert "storage" in change[0].what
    assert change[0].max_abs == pytest.approx(float(np.max(np.abs(values - values.astype(np.float16)))))


def test_params_inputs_added_and_removed_layers():
    a = tiny_nn()
    b = _copy(a)
    b.neuralNetwork.layers[1].activation.ClearField("ReLU")
    b.neuralNetwork.layers[1].activation.sigmoid.SetInParent()
    extra = b.neuralNetwork.layers.add()
    extra.CopyFrom(b.neuralNetwork.layers[1])
    extra.name = "extra"
    d = diff(a, b)
    assert [(c.name, c.what) for c in d.changed] == [("relu", ["params"])]
    assert [r["name"] for r in d.added] == ["extra"] and d.removed == []
    d2 = diff(b, a)
    assert [r["name"] for r in d2.removed] == ["extra"]


def test_interface_metadata_and_version():
    a = tiny_classifier()
    b = _copy(a)
    b.specificationVersion = 5
    b.description.metadata.author = "me"
    b.description.metadata.userDefined["k"] = "v"
    b.description.input[0].shortDescription = "pixels"
    b.neuralNetworkClassifier.stringClassLabels.vector[1] = "wolf"
    b.description.input[0].type.multiArrayType.shape[0] = 5
    d = diff(a, b).to_json()
    assert d["spec_version"] == [4, 5]
    assert d["metadata"]["author"] == ["", "me"]
    assert d["metadata"]["userDefined"] == {"k": [None, "v"]}
    assert d["metadata"]["feature_descriptions"] == {"x": ["", "pixels"]}
    assert d["interface"]["class_labels"]["first_difference"] == {"index": 1, "a": "dog", "b": "wolf"}
    assert "x" in d["interface"]["inputs"]["changed"]


def test_stages_linked_and_layers_inside_pipelines(tmp_path):
    a = tiny_pipeline()
    b = tiny_pipeline(stages=[tiny_linked(), a.pipeline.models[1]])
    d = diff(a, b).to_json()
    assert d["stages"]["changed"] == [{"stage": "backbone",
                                      "what": ["type neuralNetwork -> linkedModel(Backbone.mlmodelc)"]}]
    c = _copy(a)
    c.pipeline.models[1].neuralNetwork.layers[0].innerProduct.weights.floatValue[0] += 1
    d = diff(a, c).to_json()
    assert [(r["stage"], r["name"]) for r in d["layers"]["changed"]] == [("head", "head_fc")]


def test_readable_table(tmp_path, capsys):
    a = tiny_nn()
    b = _copy(a)
    b.neuralNetwork.layers[0].innerProduct.weights.floatValue[0] += 1
    pa, pb = io.save(a, tmp_path / "a.mlmodel"), io.save(b, tmp_path / "b.mlmodel")
    assert main(["diff", str(pa), str(pb)]) == 1
    out = capsys.readouterr().out
    assert "fc" in out and "weights" in out and "max |a-b|" in out


def test_missing_file_is_one_line(tmp_path, capsys):
    path = io.save(tiny_nn(), tmp_path / "a.mlmodel")
    assert main(["diff", str(path), str(tmp_path / "nope.mlmodel")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("specsurgery diff: error:") and "\n" not in err


def test_ml_program_diff_names_the_changed_constant(tmp_path):
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    a = from_torch(net, torch.rand(1, 4), backend="mlprogram")
    with torch.no_grad():
        net[2].weight[0, 0] += 0.5
    b = from_torch(net, torch.rand(1, 4), backend="mlprogram")
    pa, pb = io.save(a, tmp_path / "a.mlpackage"), io.save(b, tmp_path / "b.mlpackage")
    assert diff(pa, pa).same
    d = diff(pa, pb)
    assert len(d.changed) == 1 and d.changed[0].what == ["weights"]
    assert d.changed[0].kind.startswith("const")
    assert d.changed[0].max_abs == pytest.approx(0.5, abs=1e-3)


def test_a_layer_inside_a_loop_body_is_diffed_on_its_own():
    from nnbuild import add_inner_product

    a = tiny_nn()
    loop = a.neuralNetwork.layers.add()
    loop.name = "loop"
    loop.loop.maxLoopIterations = 1
    add_inner_product(loop.loop.bodyNetwork, "inner", "y", "y2", 3, 3)
    b = _copy(a)
    b.neuralNetwork.layers[2].loop.bodyNetwork.layers[0].innerProduct.weights.floatValue[0] += 1
    d = diff(a, b)
    assert [(c.name, c.what) for c in d.changed] == [("loop.body/inner", ["weights"])]


def test_models_without_a_type_or_with_undecodable_weights_diff_with_themselves():
    from specsurgery._proto import Model_pb2

    empty = Model_pb2.Model()
    empty.specificationVersion = 4
    assert diff(empty, _copy(empty)).same
    a = tiny_nn()
    q = a.neuralNetwork.layers[0].innerProduct.weights
    values = decode(q)
    q.ClearField("floatValue")
    q.rawValue = bytes(len(values))
    q.quantization.numberOfBits = 8
    q.quantization.linearQuantization.SetInParent()     # no scale: cannot be decoded
    assert diff(a, _copy(a)).same
    b = _copy(a)
    b.neuralNetwork.layers[0].innerProduct.weights.rawValue = bytes([1]) * len(values)
    assert [c.name for c in diff(a, b).changed] == ["fc"]
