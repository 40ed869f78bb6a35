"""``specsurgery convert FILE.py:factory --input ... -o OUT`` in-process."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import specsurgery as ss  # noqa: E402
from specsurgery import io as ssio  # noqa: E402
from specsurgery.cli import main  # noqa: E402
from specsurgery.cli.convert import parse_input  # noqa: E402
from specsurgery.convert import ConvertError, Enumerated, Range  # noqa: E402

FACTORY = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, image):
            return torch.softmax(self.fc(torch.relu(self.conv(image)).mean((2, 3))), dim=1)

    class Grow(nn.Module):
        def forward(self, tokens):
            return tokens * 2 + 1

    def classifier():
        return Net().eval()

    def grow():
        return Grow()

    def not_a_module():
        return 42
''')


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    return path


def test_parse_input_forms():
    assert parse_input("image=1x3x8x8") == ("image", [1, 3, 8, 8], "float", None)
    name, shape, dtype, flex = parse_input("tokens=1x8[1..64]:int")
    assert (name, shape, dtype) == ("tokens", [1, 8], "int")
    assert flex[0] == 1 and isinstance(flex[1], Range) and (flex[1].lower, flex[1].upper) == (1, 64)
    _, _, _, flex = parse_input("x=1x4[1..]")
    assert flex[1].upper is None
    name, shape, _, flex = parse_input("x=1x3x8x8,1x3x16x16")
    assert shape == [1, 3, 8, 8] and isinstance(flex, Enumerated) and flex.shapes[1] == (1, 3, 16, 16)
    for bad in ("image", "x=1xAx3", "x=1x3:complex", "=1x3"):
        with pytest.raises(ConvertError):
            parse_input(bad)


def test_convert_classifier_with_image_and_labels(factory_file, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "net.mlmodel"
    code = main(["convert", f"{factory_file}:classifier", "--input", "image=1x3x8x8",
                 "--image", "image", "--mean", "0.485", "0.456", "0.406",
                 "--std", "0.229", "0.224", "0.225", "--labels", str(tmp_path / "labels.txt"),
                 "--author", "cli test", "--meta", "task=demo", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    spec = ssio.load_spec(out)
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert spec.description.metadata.author == "cli test"
    assert spec.description.metadata.userDefined["task"] == "demo"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
    assert got["classLabel"] in ("cat", "dog", "bird")
    assert abs(sum(got["classLabelProbs"].values()) - 1.0) < 1e-5


def test_convert_flexible_int_input_to_mlpackage_json(factory_file, tmp_path, capsys):
    out = tmp_path / "grow.mlpackage"
    code = main(["convert", f"{factory_file}:grow", "--input", "tokens=1x4[1..16]:int",
                 "--output-name", "doubled", "--backend", "mlprogram", "--json", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["type"] == "mlProgram" and "doubled" in summary["outputs"]
    assert "1..16" in summary["inputs"]["tokens"]
    assert ssio.load(out).spec.WhichOneof("Type") == "mlProgram"


@pytest.mark.parametrize("args, pattern", [
    (["{f}:missing", "--input", "image=1x3x8x8"], r"unknown factory.*'missing'"),
    (["{f}:not_a_module", "--input", "image=1x3x8x8"], r"returned a int; the factory must return a torch.nn.Module"),
    (["{f}", "--input", "image=1x3x8x8"], r"expected FILE.py:factory"),
    (["nowhere.py:classifier", "--input", "image=1x3x8x8"], r"nowhere.py: no such file"),
    (["{f}:classifier", "--input", "image=1x3x8x8", "--image", "image", "--mean", "0.5", "0.5"],
     r"mean has 2 value.*3 channel"),
    (["{f}:classifier", "--input", "image=1x3x8x8", "--backend", "mlprogram"],
     r"write it to a .mlpackage"),
])
def test_convert_errors_are_one_line(factory_file, tmp_path, capsys, args, pattern):
    import re

    argv = ["convert"] + [a.format(f=factory_file) for a in args] + ["-o", str(tmp_path / "x.mlmodel")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "x.mlmodel").exists()


@pytest.mark.parametrize("bad", ["x=1x3[5..2]", "x=1x3[0..4]"])
def test_parse_input_bad_range_names_the_flag(bad):
    # used to say only "Range(5, 2): need 1 <= lower <= upper"
    with pytest.raises(ConvertError, match=r"--input 'x=1x3\[.*needs 1 <= LO <= HI"):
        parse_input(bad)


def test_unreadable_label_files_are_one_line_errors(factory_file, tmp_path, capsys):
    # a missing --preview-labels file and a non-UTF-8 labels file used to escape as
    # FileNotFoundError / UnicodeDecodeError
    bad = tmp_path / "labels.txt"
    bad.write_bytes(b"\xff\xfe")
    base = ["convert", f"{factory_file}:classifier", "--input", "image=1x3x8x8", "-o", str(tmp_path / "n.mlmodel")]
    for extra, expect in [(["--labels", str(bad)], "class_labels: cannot read"),
                          (["--preview", "imageSegmenter", "--preview-labels", str(tmp_path / "gone.txt")],
                           "--preview-labels .*gone.txt: cannot read")]:
        assert main(base + extra) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "rerun with --debug" not in err, err
        assert __import__("re").search(expect, err), err
    assert not (tmp_path / "n.mlmodel").exists()
