"""expose: intermediate blobs and program values as extra outputs."""

from __future__ import annotations

import numpy as np
import pytest

from nnbuild import tiny_classifier, tiny_head, tiny_linked, tiny_nn, tiny_pipeline
from specsurgery import io
from specsurgery.check import assert_valid
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.ops.expose import expose
from specsurgery.runtime import predict
from specsurgery.weights import decode


def _hidden(spec, x):
    fc = spec.neuralNetwork.layers[0].innerProduct
    w = decode(fc.weights).reshape(fc.outputChannels, fc.inputChannels)
    return w @ x + decode(fc.bias)


def test_expose_a_hidden_blob_and_keep_the_outputs():
    spec = tiny_nn(n_in=4, n_hidden=3)
    out = expose(spec, ["h"])
    assert [f.name for f in out.description.output] == ["y", "h"]
    # a legacy (rank-5) network holds an innerProduct output as C x 1 x 1
    assert list(out.description.output[1].type.multiArrayType.shape) == [3, 1, 1]
    assert [f.name for f in spec.description.output] == ["y"]          # input untouched
    assert_valid(out)
    x = np.arange(4, dtype=np.float32) - 1.5
    got = predict(out, {"x": x})
    np.testing.assert_allclose(got["h"].reshape(-1), _hidden(spec, x), rtol=1e-6)
    np.testing.assert_allclose(got["y"], predict(spec, {"x": x})["y"])


def test_expose_inside_a_pipeline_stage_reaches_the_pipeline():
    pipe = tiny_pipeline()
    out = expose(pipe, ["head_h"] if any(l.output[0] == "head_h" for l in
                                         pipe.pipeline.models[1].neuralNetwork.layers) else ["h"])
    names = [f.name for f in out.description.output]
    assert names[0] == "z" and len(names) == 2
    assert names[1] in [f.name for f in out.pipeline.models[0].description.output] + \
        [f.name for f in out.pipeline.models[1].description.output]
    assert_valid(out)
    got = predict(out, {"x": np.ones(4, np.float32)})
    assert set(got) == set(names)


def test_errors_name_every_culprit():
    with pytest.raises(NotFoundError, match="'nope'.*'hh'|'hh'.*'nope'"):
        expose(tiny_nn(), ["nope", "hh"])
    with pytest.raises(SpecSurgeryError, match="already model output"):
        expose(tiny_nn(), ["y"])
    with pytest.raises(SpecSurgeryError, match="cannot also be outputs"):
        expose(tiny_nn(), ["x"])
    with pytest.raises(SpecSurgeryError, match="at least one"):
        expose(tiny_nn(), [])
    linked = tiny_pipeline(stages=[tiny_linked(), tiny_head()])
    with pytest.raises(NotFoundError):
        expose(linked, ["h"])


def test_classifier_keeps_its_labels():
    spec = tiny_classifier()
    out = expose(spec, ["logits"])
    assert list(out.neuralNetworkClassifier.stringClassLabels.vector) == ["cat", "dog", "bird"]
    got = predict(out, {"x": np.ones(4, np.float32)})
    assert got["logits"].shape == (3, 1, 1) and got["classLabel"] in {"cat", "dog", "bird"}


def test_cli(tmp_path, capsys):
    src = io.save(tiny_nn(), tmp_path / "m.mlmodel")
    out = tmp_path / "e.mlmodel"
    assert main(["expose", str(src), "h", "-o", str(out)]) == 0
    assert "output h: MultiArray" in capsys.readouterr().out
    assert [f.name for f in io.load(out).description.output] == ["y", "h"]
    assert main(["expose", str(src), "zz", "-o", str(out)]) == 1
    assert "unknown blob" in capsys.readouterr().err


def test_ml_program_value_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch
    from specsurgery.mil.program import get_function, main_block

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()
    pkg = from_torch(net, torch.rand(1, 4), backend="mlprogram")   # fp16 compute, spec < 7
    _, fn = get_function(pkg.spec)
    relu = next(op for op in main_block(fn).operations if op.type == "relu").outputs[0].name
    out = expose(pkg, [relu])
    path = io.save(out, tmp_path / "e.mlpackage")
    again = io.load(path)
    outputs = [f.name for f in again.spec.description.output]
    assert outputs[-1] == relu and len(outputs) == 2
    assert again.spec.description.output[-1].type.multiArrayType.dataType == 65568   # fp32 via cast
    x = torch.rand(1, 4)
    got = predict(again, {again.spec.description.input[0].name: x.numpy()})
    np.testing.assert_allclose(got[relu], net[1](net[0](x)).detach().numpy(), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(got[outputs[0]], net(x).detach().numpy(), rtol=2e-2, atol=2e-2)
