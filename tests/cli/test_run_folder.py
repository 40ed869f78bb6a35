"""specsurgery run MODEL --input NAME=FOLDER -o OUT: every file of the folder, one .npz each."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnbuild
from specsurgery import io
from specsurgery.cli import main
from specsurgery.runtime import clear_cache, predict


@pytest.fixture
def model(tmp_path):
    clear_cache()
    path = tmp_path / "m.mlmodel"
    io.save(nnbuild.tiny_nn(), path)
    return path


def _xs(folder, n=3):
    folder.mkdir()
    arrays = {}
    for i in range(n):
        arrays[f"s{i}"] = np.arange(4, dtype=np.float32) * (i - 1)
        np.save(folder / f"s{i}.npy", arrays[f"s{i}"])
    return arrays


def test_folder_runs_every_file_once_prepared(model, tmp_path, monkeypatch, capsys):
    arrays = _xs(tmp_path / "xs")
    parses = []
    real = io._parse
    monkeypatch.setattr(io, "_parse", lambda data, where: parses.append(where) or real(data, where))
    out = tmp_path / "out"
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}", "-o", str(out)]) == 0
    assert len(parses) == 1                            # one parse for the check and all runs
    assert sorted(p.name for p in out.iterdir()) == ["s0.npz", "s1.npz", "s2.npz"]
    for stem, x in arrays.items():
        with np.load(out / f"{stem}.npz") as got:
            np.testing.assert_array_equal(got["y"], predict(nnbuild.tiny_nn(), {"x": x})["y"])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "s0:" and "  y: float32[3]" in captured.out
    assert "wrote 3 files" in captured.err


def test_folder_json_is_keyed_by_file(model, tmp_path, capsys):
    arrays = _xs(tmp_path / "xs", 2)
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["s0", "s1"]
    assert report["s1"]["y"] == predict(nnbuild.tiny_nn(), {"x": arrays["s1"]})["y"].tolist()


def _two_input_model(tmp_path):
    spec = nnbuild.tiny_nn()
    nnbuild.array_feature(spec.description.input, "z", [4])
    layer = spec.neuralNetwork.layers.add()
    layer.name = "add"
    layer.input.extend(["x", "z"])
    layer.output.append("s")
    layer.add.SetInParent()
    nnbuild.array_feature(spec.description.output, "s", [4])
    path = tmp_path / "two.mlmodel"
    io.save(spec, path)
    return path


def test_folders_pair_by_name_and_a_file_input_is_shared(tmp_path):
    path = _two_input_model(tmp_path)
    xs = _xs(tmp_path / "xs", 2)
    zs = _xs(tmp_path / "zs", 2)
    out = tmp_path / "out"
    assert main(["run", str(path), "--input", f"x={tmp_path / 'xs'}", "--input", f"z={tmp_path / 'zs'}",
                 "-o", str(out)]) == 0
    for stem in xs:
        with np.load(out / f"{stem}.npz") as got:
            np.testing.assert_allclose(got["s"], xs[stem] + zs[stem])
    z = tmp_path / "z.npy"
    np.save(z, np.full(4, 10, np.float32))
    out2 = tmp_path / "out2"
    assert main(["run", str(path), "--input", f"x={tmp_path / 'xs'}", "--input", f"z={z}",
                 "-o", str(out2)]) == 0
    with np.load(out2 / "s1.npz") as got:
        np.testing.assert_allclose(got["s"], xs["s1"] + 10)


def _error(capsys):
    err = capsys.readouterr().err
    return err


def test_folder_errors_name_the_culprit(model, tmp_path, capsys):
    path = _two_input_model(tmp_path)
    _xs(tmp_path / "xs", 3)
    _xs(tmp_path / "zs", 2)
    assert main(["run", str(path), "--input", f"x={tmp_path / 'xs'}", "--input", f"z={tmp_path / 'zs'}"]) == 1
    err = _error(capsys)
    assert "same file names" in err and "zs lacks 's2'" in err
    # -o must be a folder
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}", "-o", str(tmp_path / "o.npz")]) == 1
    assert "name a folder for -o" in _error(capsys)
    assert not (tmp_path / "o.npz").exists()
    # empty folder, stray file, two files for one name
    (tmp_path / "empty").mkdir()
    assert main(["run", str(model), "--input", f"x={tmp_path / 'empty'}"]) == 1
    assert "holds no .npy or image files" in _error(capsys)
    (tmp_path / "xs" / "notes.txt").write_text("hi")
    (tmp_path / "xs" / ".hidden").write_text("skipped")
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}"]) == 1
    err = _error(capsys)
    assert "notes.txt is neither" in err and ".hidden" not in err
    (tmp_path / "xs" / "notes.txt").unlink()
    np.save(tmp_path / "xs" / "bad.npy", np.ones(7, np.float32))
    out = tmp_path / "out"
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}", "-o", str(out)]) == 1
    err = _error(capsys)
    assert "input 'bad'" in err and "bad.npy" in err and "(7,)" in err
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "xs" / "s0.png")
    assert main(["run", str(model), "--input", f"x={tmp_path / 'xs'}"]) == 1
    assert "s0.npy and s0.png are both input 's0'" in _error(capsys)


def test_image_folder(tmp_path):
    from PIL import Image

    spec = nnbuild.tiny_conv(image=True)
    path = tmp_path / "conv.mlmodel"
    io.save(spec, path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b", "a"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    in_name = spec.description.input[0].name
    assert main(["run", str(path), "--input", f"{in_name}={folder}", "-o", str(out), "--quiet"]) == 0
    out_name = spec.description.output[0].name
    for name in ("a", "b"):
        with np.load(out / f"{name}.npz") as got:
            want = predict(spec, {in_name: str(folder / f"{name}.png")})[out_name]
            np.testing.assert_allclose(got[out_name], want, rtol=1e-6)
