"""verify --per-layer: the layer whose weights changed is named, not the ones after it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnbuild as nb
from specsurgery import io
from specsurgery.cli import main
from specsurgery.runtime import verify


def _deep_nn():
    """x[4] -> fc1 -> relu1 -> fc2 -> relu2 -> fc3 -> y[3]."""
    spec = io.Model_pb2.Model()
    spec.specificationVersion = 4
    nb.array_feature(spec.description.input, "x", [4])
    nb.array_feature(spec.description.output, "y", [3])
    nn = spec.neuralNetwork
    nb.add_inner_product(nn, "fc1", "x", "h1", 4, 6, seed=1)
    nb.add_relu(nn, "relu1", "h1", "a1")
    nb.add_inner_product(nn, "fc2", "a1", "h2", 6, 5, seed=2)
    nb.add_relu(nn, "relu2", "h2", "a2")
    nb.add_inner_product(nn, "fc3", "a2", "y", 5, 3, seed=3)
    return spec


def _bump(spec, layer_name, delta=0.5):
    out = io.copy_spec(spec)
    for layer in out.neuralNetwork.layers:
        if layer.name == layer_name:
            layer.innerProduct.weights.floatValue[0] += delta
    return out


def test_the_changed_layer_is_the_only_culprit():
    spec = _deep_nn()
    report = verify(spec, _bump(spec, "fc2"), per_layer=True, samples=2)
    assert not report.ok
    assert [r.layer for r in report.culprits] == ["fc2"]
    mismatched = {r.layer for r in report.layers if not r.ok}
    assert "fc1" not in mismatched and "fc2" in mismatched


def test_identical_models_have_no_culprit():
    spec = _deep_nn()
    report = verify(spec, io.copy_spec(spec), per_layer=True)
    assert report.ok and report.culprits == [] and len(report.layers) == 5


def test_inside_a_pipeline_stage(tmp_path):
    pipe = nb.tiny_pipeline()
    cand = io.copy_spec(pipe)
    cand.pipeline.models[1].neuralNetwork.layers[0].innerProduct.weights.floatValue[0] += 1.0
    report = verify(pipe, cand, per_layer=True)
    assert [(r.stage, r.layer) for r in report.culprits] == [("head", "head_fc")]


def test_cli_json_names_the_layer(tmp_path, capsys):
    spec = _deep_nn()
    a = io.save(spec, tmp_path / "a.mlmodel")
    b = io.save(_bump(spec, "fc3"), tmp_path / "b.mlmodel")
    assert main(["verify", str(a), str(b), "--per-layer", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [c["layer"] for c in report["layers"]["culprits"]] == ["fc3"]
    assert main(["verify", str(a), str(b), "--per-layer"]) == 1
    assert "first to differ: fc3 (innerProduct)" in capsys.readouterr().out


def test_ml_program_op_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5),
                              torch.nn.ReLU(), torch.nn.Linear(5, 2)).eval()
    a = from_torch(net, torch.rand(1, 4), backend="mlprogram")
    with torch.no_grad():
        net[2].weight.mul_(3.0)
    b = from_torch(net, torch.rand(1, 4), backend="mlprogram")
    report = verify(a, b, per_layer=True)
    assert len(report.culprits) == 1 and report.culprits[0].kind == "linear"
    linears = [r.layer for r in report.layers if r.kind == "linear"]
    assert report.culprits[0].layer == linears[1]
