"""verify, random_inputs and the run/verify CLI verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnbuild
from specsurgery import io
from specsurgery.cli import main
from specsurgery.errors import VerifyError
from specsurgery.runtime import predict, random_inputs, verify


def _perturbed(spec, delta):
    out = io.copy_spec(spec)
    ip = out.neuralNetwork.layers[0].innerProduct
    vals = list(ip.bias.floatValue)
    vals[0] += delta
    del ip.bias.floatValue[:]
    ip.bias.floatValue.extend(vals)
    return out


def test_identical_models_verify_ok():
    rep = verify(nnbuild.tiny_nn(), nnbuild.tiny_nn(), samples=4)
    assert rep.ok
    assert rep.outputs[0].max_abs == 0 and rep.outputs[0].total == 12
    assert "OK" in rep.summary()
    assert rep.to_json()["ok"] is True


def test_tolerance_rule_is_atol_plus_rtol_times_reference():
    ref = nnbuild.tiny_nn()
    cand = _perturbed(ref, 1e-3)
    assert not verify(ref, cand, rtol=0, atol=1e-4).ok
    assert verify(ref, cand, rtol=0, atol=2e-3).ok
    rep = verify(ref, cand, rtol=1e-4, atol=1e-5)
    assert rep.outputs[0].max_abs == pytest.approx(1e-3, rel=1e-2) or rep.outputs[0].max_abs == 0


def test_interface_differences_fail_the_report():
    ref = nnbuild.tiny_nn()
    cand = io.copy_spec(ref)
    extra = cand.description.output.add()
    extra.CopyFrom(cand.description.output[0])
    extra.name = "h"
    rep = verify(ref, cand)
    assert not rep.ok
    assert any("only in the candidate" in d for d in rep.interface)
    assert all(o.ok for o in rep.outputs)


def test_unusable_interfaces_raise():
    with pytest.raises(VerifyError, match="share no output"):
        verify(nnbuild.tiny_nn(), nnbuild.tiny_nn(output_name="other"))
    with pytest.raises(VerifyError, match="needs input"):
        verify(nnbuild.tiny_nn(), nnbuild.tiny_nn(input_name="other"))


def test_labels_and_dictionaries_compare_exactly():
    ref = nnbuild.tiny_classifier()
    cand = io.copy_spec(ref)
    del cand.neuralNetworkClassifier.stringClassLabels.vector[:]
    cand.neuralNetworkClassifier.stringClassLabels.vector.extend(["cat", "dog", "cow"])
    rep = verify(ref, cand, samples=5)
    assert not rep.ok
    probs = rep.output("classLabelProbs")
    assert probs.kind == "dict" and "keys differ" in probs.note


def test_random_inputs_respect_vocabulary_and_int_range():
    import zoo

    path = zoo.converted("lstm_text")
    inp = random_inputs(path, seed=1)
    assert inp["tokens"].shape == (1, 12)
    assert inp["tokens"].min() >= 0 and inp["tokens"].max() < zoo.LSTMText.VOCAB
    inp = random_inputs(path, seed=1, int_range=(3, 5))
    assert set(np.unique(inp["tokens"])) <= {3, 4}
    a, b = random_inputs(path, seed=7), random_inputs(path, seed=7)
    assert (a["tokens"] == b["tokens"]).all()


def test_random_image_inputs():
    import zoo

    inp = random_inputs(zoo.converted("image_classifier"))
    assert inp["image"].dtype == np.uint8 and inp["image"].shape == (32, 32, 3)


def test_cli_run_writes_npz(tmp_path, capsys):
    model = tmp_path / "clf.mlmodel"
    io.save(nnbuild.tiny_classifier(), model, check=False)
    np.save(tmp_path / "x.npy", np.arange(4, dtype=np.float32))
    out = tmp_path / "out.npz"
    assert main(["run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(out)]) == 0
    data = np.load(out)
    assert data["classLabel"].tolist() == [predict(model, {"x": np.arange(4.0)})["classLabel"]]
    assert data["classLabelProbs.keys"].tolist() == ["cat", "dog", "bird"]
    assert data["classLabelProbs.values"].sum() == pytest.approx(1.0)
    assert main(["run", str(model), "--input", "x=missing.npy"]) == 1
    assert main(["run", str(model)]) == 1
    assert "x" in capsys.readouterr().err


def test_cli_run_image(tmp_path):
    from PIL import Image

    model = tmp_path / "conv.mlmodel"
    io.save(nnbuild.tiny_conv(image=True), model, check=False)
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    out = tmp_path / "o.npz"
    assert main(["run", str(model), "-i", f"input={tmp_path / 'img.png'}", "-o", str(out)]) == 0
    np.testing.assert_allclose(np.load(out)["out"], predict(model, {"input": img})["out"])


def test_cli_verify_exit_codes(tmp_path, capsys):
    ref, same, off = (tmp_path / n for n in ("ref.mlmodel", "same.mlmodel", "off.mlmodel"))
    io.save(nnbuild.tiny_nn(), ref, check=False)
    io.save(nnbuild.tiny_nn(), same, check=False)
    io.save(_perturbed(nnbuild.tiny_nn(), 0.5), off, check=False)
    assert main(["verify", str(ref), str(same)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", str(ref), str(off), "--json", "--samples", "2"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["samples"] == 2
    assert main(["verify", str(ref), str(off), "--atol", "1"]) == 0
    assert main(["verify", str(ref), str(same), "--int-range", "5,1"]) == 1


def test_cli_run_rejects_unknown_input_names(tmp_path, capsys):
    model = tmp_path / "m.mlmodel"
    io.save(nnbuild.tiny_nn(), model, check=False)
    np.save(tmp_path / "x.npy", np.zeros(4, np.float32))
    assert main(["run", str(model), "-i", f"xx={tmp_path / 'x.npy'}"]) == 1
    err = capsys.readouterr().err
    assert "'xx'" in err and "x" in err
