"""retype: MultiArray inputs become image inputs with their preprocessing, and back."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from nnbuild import tiny_conv, tiny_nn, tiny_pipeline
from surgery_models import skip_net
from specsurgery import io
from specsurgery.check import assert_valid
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError
from specsurgery.mil import program as P
from specsurgery.ops.retype import ImageInput, parse_type, retype
from specsurgery.runtime import predict

PIL = pytest.importorskip("PIL.Image")


def _pixels(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _png(tmp_path, pix, name="in.png"):
    path = tmp_path / name
    PIL.fromarray(pix).save(path)
    return path


def _chw(pix):
    return pix.transpose(2, 0, 1).astype(np.float32)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_grammar():
    assert parse_type("image:RGB,scale=1/255") == ImageInput("RGB", 1 / 255, None)
    assert parse_type("image:bgr,scale=0.5,bias=1,2,3") == ImageInput("BGR", 0.5, [1.0, 2.0, 3.0])
    assert parse_type("image:GRAY,bias=-0.5") == ImageInput("GRAY", 1.0, [-0.5])
    assert parse_type("array") == "array"


@pytest.mark.parametrize("bad, why", [
    ("imag", "neither image:COLOR nor array"), ("image:XYZ", "'XYZ' is not RGB, BGR or GRAY"),
    ("image:RGB,scale=a", "not a number"), ("image:RGB,bias=1,2", "three values"),
    ("image:GRAY,bias=1,2,3", "one value"), ("image:RGB,gamma=2", "unknown option 'gamma'")])
def test_malformed_type_names_the_flag_and_the_grammar(bad, why):
    with pytest.raises(SpecSurgeryError, match=why) as info:
        retype(skip_net(), {"x": bad})
    assert "--input x" in str(info.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_nn_image_fed_a_png_equals_the_array_fed_pixels_over_255(tmp_path, legacy):
    spec = skip_net(legacy=legacy)
    src = io.save(spec, tmp_path / "array.mlmodel")
    out = tmp_path / "image.mlmodel"
    assert main(["retype", str(src), "--input", "x=image:RGB,scale=0.00392156862745098", "-o", str(out)]) == 0
    img = io.load(out)
    assert img.description.input[0].type.imageType.colorSpace == img.description.input[0].type.imageType.RGB
    assert img.neuralNetwork.imageInputShapeMapping == (0 if legacy else 1)
    pix = _pixels()
    png = _png(tmp_path, pix)
    npz = tmp_path / "o.npz"
    assert main(["run", str(out), "--input", f"x={png}", "-o", str(npz)]) == 0
    got = np.load(npz)["g"]
    assert main(["retype", str(src), "--input", "x=image:GRAY", "-o", str(out)]) == 1
    arr = _chw(pix) / 255
    want = predict(spec, {"x": arr if legacy else arr[None]})["g"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and back: the array model takes the values the image gave after its preprocessing
    back = _quiet(retype, out, {"x": "array"})
    assert_valid(back)
    assert list(back.description.input[0].type.multiArrayType.shape) == ([3, 8, 8] if legacy else [1, 3, 8, 8])
    assert not len(back.neuralNetwork.preprocessing)
    np.testing.assert_allclose(predict(back, {"x": arr if legacy else arr[None]})["g"], want, rtol=1e-6)


def test_nn_bgr_bias_and_gray():
    spec = skip_net()
    out = retype(spec, {"x": "image:BGR,scale=0.5,bias=1,2,3"})
    assert_valid(out)
    pix = _pixels()
    arr = _chw(pix[..., ::-1]) * 0.5 + np.array([3, 2, 1], np.float32).reshape(3, 1, 1)   # B, G, R planes
    np.testing.assert_allclose(predict(out, {"x": pix})["g"], predict(spec, {"x": arr[None]})["g"], rtol=1e-5)
    gray = tiny_conv(c_in=1, c_out=2)
    out = retype(gray, {"input": "image:GRAY,scale=0.25,bias=-1"})
    assert_valid(out)
    g = _pixels()[..., 0]
    np.testing.assert_allclose(predict(out, {"input": g})["out"],
                               predict(gray, {"input": (g.astype(np.float32) * 0.25 - 1)[None]})["out"],
                               rtol=1e-5, atol=1e-6)


def test_nn_flexible_array_becomes_a_flexible_image():
    out = retype(skip_net(flexible="range"), {"x": "image:RGB"})
    rr = out.description.input[0].type.imageType.imageSizeRange
    assert (rr.widthRange.lowerBound, rr.widthRange.upperBound) == (8, 16)
    assert_valid(out)
    assert predict(out, {"x": _pixels(12, 16)})["g"].shape == (1, 4, 1, 1)


def test_pipeline_stage_reading_the_input_is_retyped():
    head = tiny_conv(c_in=4, c_out=2, size=8)
    head.description.input[0].name = "out"
    head.neuralNetwork.layers[0].input[0] = "out"
    head.neuralNetwork.layers[0].name = "conv2"
    head.description.output[0].name = "out2"
    head.neuralNetwork.layers[0].output[0] = "out2"
    pipe = tiny_pipeline(stages=[tiny_conv(size=8), head])
    out = retype(pipe, {"input": "image:RGB,scale=1/255"})
    assert_valid(out)
    assert out.description.input[0].type.WhichOneof("Type") == "imageType"
    assert out.pipeline.models[0].description.input[0].type.WhichOneof("Type") == "imageType"
    pix = _pixels()
    np.testing.assert_allclose(predict(out, {"input": pix})["out2"],
                               predict(pipe, {"input": _chw(pix) / 255})["out2"], rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(SpecSurgeryError, match=r"3 channel\(s\).*GRAY takes 1; use RGB or BGR"):
        retype(skip_net(), {"x": "image:GRAY"})
    with pytest.raises(SpecSurgeryError, match=r"1 channel\(s\).*RGB takes 3; use GRAY"):
        retype(tiny_conv(c_in=1), {"input": "image:RGB"})
    with pytest.raises(SpecSurgeryError, match="is Image<RGB 8x8>, not a MultiArray"):
        retype(skip_net(image=True), {"x": "image:RGB"})
    with pytest.raises(SpecSurgeryError, match="not an image"):
        retype(skip_net(), {"x": "array"})
    with pytest.raises(SpecSurgeryError, match=r"shape 4.*\[1,C,H,W\] or \[C,H,W\]"):
        retype(tiny_nn(), {"x": "image:RGB"})
    with pytest.raises(NotFoundError, match="'nope'.*'zz'"):
        retype(skip_net(), {"nope": "array", "zz": "image:RGB"})


# --------------------------------------------------------------------------- ML Program

torch = pytest.importorskip("torch")


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.fixture(scope="module")
def program():
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    return _quiet(from_torch, _ConvNet().eval(), torch.rand(1, 3, 8, 8), backend="mlprogram")


def test_program_image_fed_a_png_equals_the_array_fed_pixels_over_255(program, tmp_path, capsys):
    src = io.save(program, tmp_path / "array.mlpackage")
    out = tmp_path / "image.mlpackage"
    assert main(["retype", str(src), "--input", "x=image:RGB,scale=1/255", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"][0]["type"] == "Image<RGB 8x8>"
    pkg = io.load(out)
    _, fn = P.get_function(pkg.spec)
    ops = [op.type for op in P.main_block(fn).operations if op.type != "const"]
    assert ops[:2] == ["mul", "conv"]
    pix = _pixels()
    png = _png(tmp_path, pix)
    npz = tmp_path / "o.npz"
    assert main(["run", str(out), "--input", f"x={png}", "-o", str(npz)]) == 0
    want = predict(program, {"x": (_chw(pix) / 255)[None]})["output"]
    np.testing.assert_allclose(np.load(npz)["output"], want, rtol=1e-5, atol=1e-6)


def test_program_bgr_bias_and_back(program):
    out = retype(program, {"x": ImageInput("BGR", 0.5, (1, 2, 3))})
    assert_valid(out)
    pix = _pixels()
    arr = (_chw(pix[..., ::-1]) * 0.5 + np.array([3, 2, 1], np.float32).reshape(3, 1, 1))[None]
    want = predict(program, {"x": arr})["output"]
    np.testing.assert_allclose(predict(out, {"x": pix})["output"], want, rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="mul and add.*folded away"):
        back = retype(out, {"x": "array"})
    assert_valid(back)
    _, fn = P.get_function(back.spec)
    assert [op.type for op in P.main_block(fn).operations if op.type != "const"][0] == "conv"
    assert back.spec.description.input[0].type.WhichOneof("Type") == "multiArrayType"
    np.testing.assert_allclose(predict(back, {"x": arr})["output"], want, rtol=1e-6)


def test_program_converted_image_input_back_to_array():
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    pkg = _quiet(from_torch, _ConvNet().eval(), torch.rand(1, 3, 8, 8), backend="mlprogram",
                 image_input="x", mean=[0.5, 0.4, 0.3], std=0.25)
    back = _quiet(retype, pkg, {"x": "array"})
    assert_valid(back)
    pix = _pixels()
    pre = (_chw(pix) / 255 - np.array([0.5, 0.4, 0.3], np.float32).reshape(3, 1, 1)) / 0.25
    np.testing.assert_allclose(predict(back, {"x": pre[None]})["output"], predict(pkg, {"x": pix})["output"],
                               rtol=1e-4, atol=1e-4)


def test_program_errors(program):
    with pytest.raises(SpecSurgeryError, match=r"3 channel\(s\).*GRAY"):
        retype(program, {"x": "image:GRAY"})
    with pytest.raises(SpecSurgeryError, match="not an image"):
        retype(program, {"x": "array"})
    with pytest.raises(NotFoundError, match="'q'"):
        retype(program, {"q": "array"})


def test_program_whose_description_names_an_input_the_function_lacks(program):
    bad = program.copy()
    bad.spec.description.input[0].name = "renamed"       # the function still reads 'x'
    with pytest.raises(SpecSurgeryError, match="'renamed' is an input of the description but not of "
                                               "the program's function 'main'"):
        retype(bad, {"renamed": "image:RGB"})


def test_an_updatable_models_training_input_is_retyped_too():
    from surgery_models import updatable_net

    out = retype(updatable_net(), {"x": "image:RGB"})
    [train] = [t for t in out.description.trainingInput if t.name == "x"]
    assert train.type == out.description.input[0].type and train.type.WhichOneof("Type") == "imageType"
    assert_valid(out)
