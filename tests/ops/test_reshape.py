"""reshape: flexible input shapes, checked through the network, on both backends."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from nnbuild import add_inner_product, tiny_conv, tiny_pipeline
from surgery_models import _simple, skip_net
from specsurgery import io
from specsurgery.check import assert_valid
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.mil import program as P
from specsurgery.ops.reshape import FlexShape, parse_shape, reshape
from specsurgery.runtime import predict


def _ranges(ft):
    return [(r.lowerBound, r.upperBound) for r in ft.multiArrayType.shapeRange.sizeRanges]


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# --------------------------------------------------------------------------- grammar

def test_grammar():
    assert parse_shape("1x3x64..512x64..-1") == FlexShape("range", ranges=[(1, 1), (3, 3), (64, 512), (64, -1)])
    assert parse_shape("1x3x224x224, 1x3x320x320") == FlexShape("enum", shapes=[[1, 3, 224, 224], [1, 3, 320, 320]])
    assert parse_shape("1x3x8x8") == FlexShape("fixed", shapes=[[1, 3, 8, 8]])
    assert parse_shape("1x3x8..16x8").default == [1, 3, 8, 8]
    assert parse_shape("3x8..-1").variants() == [[3, 8], [3, 19]]


@pytest.mark.parametrize("bad, why", [
    ("", "empty shape"), ("3xax4", "'a' is not a size"), ("3x8..4", "upper bound below"),
    ("3x0x3", "below 1"), ("3x8..16,3x4x4", "cannot hold ranges"), ("3x4,3x4x4", "same rank"),
    ("3x4,,3x5", "empty shape between commas")])
def test_malformed_shape_names_the_flag_and_the_grammar(bad, why):
    with pytest.raises(SpecSurgeryError, match=why) as info:
        reshape(tiny_conv(), {"input": bad})
    assert "--input input" in str(info.value) and "LO..HI" in str(info.value)


# --------------------------------------------------------------------------- NeuralNetwork

def test_nn_range_runs_at_two_sizes():
    spec = tiny_conv(size=8, version=1)
    with pytest.warns(UserWarning, match="spec version raised from 1 to 3"):
        out = reshape(spec, {"input": "3x8..32x8..-1"})
    assert out.specificationVersion == 3
    ft = out.description.input[0].type
    assert list(ft.multiArrayType.shape) == [3, 8, 8] and _ranges(ft) == [(3, 3), (8, 32), (8, -1)]
    assert _ranges(out.description.output[0].type)[0] == (4, 4)      # channels stay fixed
    assert not spec.description.input[0].type.multiArrayType.HasField("shapeRange")   # input untouched
    assert_valid(out)
    small = predict(out, {"input": np.ones((3, 8, 8), np.float32)})["out"]
    big = predict(out, {"input": np.ones((3, 20, 24), np.float32)})["out"]
    assert small.shape == (4, 8, 8) and big.shape == (4, 20, 24)


def test_nn_enumerated_shapes_and_a_fixed_output():
    out = reshape(skip_net(), {"x": "1x3x8x8,1x3x16x16"})
    arr = out.description.input[0].type.multiArrayType
    assert [list(s.shape) for s in arr.enumeratedShapes.shapes] == [[1, 3, 8, 8], [1, 3, 16, 16]]
    g = out.description.output[0].type.multiArrayType
    assert list(g.shape) == [1, 4, 1, 1] and g.WhichOneof("ShapeFlexibility") is None   # global pooling
    assert_valid(out)
    for n in (8, 16):
        assert predict(out, {"x": np.ones((1, 3, n, n), np.float32)})["g"].shape == (1, 4, 1, 1)


def test_nn_image_input_gets_a_size_range():
    out = reshape(skip_net(image=True), {"x": "1x3x8..16x8..24"})
    img = out.description.input[0].type.imageType
    rr = img.imageSizeRange
    assert (rr.heightRange.lowerBound, rr.heightRange.upperBound) == (8, 16)
    assert (rr.widthRange.lowerBound, rr.widthRange.upperBound) == (8, 24)
    assert (img.width, img.height) == (8, 8)
    assert_valid(out)
    pix = np.random.default_rng(0).integers(0, 256, (12, 20, 3)).astype(np.uint8)
    assert predict(out, {"x": pix})["g"].shape == (1, 4, 1, 1)
    out = reshape(skip_net(image=True), {"x": "8x8,12x16"})        # HxW enumerated sizes
    assert [(s.width, s.height) for s in out.description.input[0].type.imageType.enumeratedSizes.sizes] == \
        [(8, 8), (16, 12)]
    with pytest.raises(SpecSurgeryError, match="only its height and width can vary"):
        reshape(skip_net(image=True), {"x": "1x1..3x8x8"})


def test_a_fixed_new_size_updates_the_outputs():
    out = reshape(tiny_conv(size=8), {"input": "3x16x12"})
    assert list(out.description.output[0].type.multiArrayType.shape) == [4, 16, 12]
    assert out.specificationVersion == 4
    assert_valid(out)


def _flatten_fc():
    spec = tiny_conv(size=8)
    nn = spec.neuralNetwork
    nn.layers[0].output[0] = "c"
    _simple(nn, "flat", ["c"], "fl", "flatten")
    add_inner_product(nn, "fc", "fl", "out", 4 * 8 * 8, 5)
    arr = spec.description.output[0].type.multiArrayType
    arr.ClearField("shape")
    arr.shape.extend([5])
    return spec


def test_a_layer_that_pins_the_size_is_named():
    with pytest.raises(SpecSurgeryError, match=r"layer 'fc' \(innerProduct\).*pins dims 1, 2 of 'input'"):
        reshape(_flatten_fc(), {"input": "3x8..16x8..16"})
    with pytest.raises(SpecSurgeryError, match="layer 'fc'"):
        reshape(_flatten_fc(), {"input": "3x8x8,3x4x4"})


def test_a_layer_the_runtime_cannot_run_is_refused_by_name():
    spec = tiny_conv()
    layer = spec.neuralNetwork.layers.add()
    layer.name = "mystery"
    layer.input.append("out")
    layer.output.append("out2")
    layer.custom.className = "Mystery"
    spec.description.output[0].name = "out2"
    with pytest.raises(UnsupportedError, match="cannot check that the network follows.*'mystery'"):
        reshape(spec, {"input": "3x8..16x8..16"})


def test_errors_list_every_unknown_input_and_refuse_other_types():
    with pytest.raises(NotFoundError, match="'nope'.*'zz'"):
        reshape(tiny_conv(), {"nope": "1", "zz": "2"})
    with pytest.raises(SpecSurgeryError, match="rank 3"):
        reshape(tiny_conv(), {"input": "1x3x8x8"})
    with pytest.raises(SpecSurgeryError, match="at least one"):
        reshape(tiny_conv(), {})


def test_pipeline_stages_follow():
    head = tiny_conv(c_in=4, c_out=2, size=8)
    head.description.input[0].name = "out"
    head.neuralNetwork.layers[0].input[0] = "out"
    head.neuralNetwork.layers[0].name = "conv2"
    head.description.output[0].name = "out2"
    head.neuralNetwork.layers[0].output[0] = "out2"
    pipe = tiny_pipeline(stages=[tiny_conv(size=8), head])
    out = reshape(pipe, {"input": "3x8..16x8..16"})
    assert_valid(out)
    assert _ranges(out.pipeline.models[1].description.input[0].type) == [(4, 4), (8, 16), (8, 16)]
    assert _ranges(out.description.output[0].type) == [(2, 2), (8, 16), (8, 16)]
    assert predict(out, {"input": np.ones((3, 12, 16), np.float32)})["out2"].shape == (2, 12, 16)


def test_cli(tmp_path, capsys):
    src = io.save(tiny_conv(), tmp_path / "m.mlmodel")
    out = tmp_path / "r.mlmodel"
    assert main(["reshape", str(src), "--input", "input=3x8..16x8..16", "-o", str(out)]) == 0
    assert "range" in capsys.readouterr().out
    assert _ranges(io.load(out).description.input[0].type) == [(3, 3), (8, 16), (8, 16)]
    assert main(["reshape", str(src), "--input", "input=3x8x8,3x16x16", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["name"] == "input" and "enum" in report["inputs"][0]["type"]
    assert report["spec_version"] == 4
    assert main(["reshape", str(src), "--input", "input=3x8..x8", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--input input" in err and "LO..HI" in err


# --------------------------------------------------------------------------- ML Program

torch = pytest.importorskip("torch")


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = torch.nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x)))


class _FcNet(_ConvNet):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(super().forward(x).reshape(1, -1))


@pytest.fixture(scope="module")
def program():
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    return _quiet(from_torch, _ConvNet().eval(), torch.rand(1, 3, 16, 16), backend="mlprogram")


def test_program_range_runs_at_two_sizes(program, tmp_path):
    out = reshape(program, {"x": "1x3x8..64x8..-1"})
    _, fn = P.get_function(out.spec)
    assert P.describe_value_type(fn.inputs[0].type) == "tensor<float32,[1,3,?,?]>"
    types = {o.name: P.describe_value_type(o.type) for op in P.main_block(fn).operations for o in op.outputs
             if op.type != "const"}
    assert all(t == "tensor<float32,[1,4,?,?]>" for t in types.values()), types   # no stale sizes
    assert _ranges(out.spec.description.output[0].type)[:2] == [(1, 1), (4, 4)]
    path = io.save(out, tmp_path / "flex.mlpackage")
    small = predict(path, {"x": np.ones((1, 3, 8, 8), np.float32)})["output"]
    big = predict(path, {"x": np.ones((1, 3, 20, 24), np.float32)})["output"]
    assert small.shape == (1, 4, 4, 4) and big.shape == (1, 4, 10, 12)
    _, fn0 = P.get_function(program.spec)
    assert P.describe_value_type(fn0.inputs[0].type) == "tensor<float32,[1,3,16,16]>"   # input untouched


def test_program_enumerated(program):
    out = reshape(program, {"x": "1x3x16x16,1x3x32x32"})
    assert_valid(out)
    o = out.spec.description.output[0].type.multiArrayType
    assert [list(s.shape) for s in o.enumeratedShapes.shapes] == [[1, 4, 8, 8], [1, 4, 16, 16]]
    assert predict(out, {"x": np.ones((1, 3, 32, 32), np.float32)})["output"].shape == (1, 4, 16, 16)


def test_program_op_that_pins_the_size_is_named():
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    pkg = _quiet(from_torch, _FcNet().eval(), torch.rand(1, 3, 16, 16), backend="mlprogram")
    with pytest.raises(SpecSurgeryError, match=r"does not follow input 'x'.*\(linear\)"):
        reshape(pkg, {"x": "1x3x8..32x8..32"})


def test_program_cli_and_errors(program, tmp_path, capsys):
    src = io.save(program, tmp_path / "p.mlpackage")
    out = tmp_path / "r.mlpackage"
    assert main(["reshape", str(src), "--input", "x=1x3x16..32x16..32", "-o", str(out)]) == 0
    assert predict(out, {"x": np.ones((1, 3, 24, 32), np.float32)})["output"].shape == (1, 4, 12, 16)
    with pytest.raises(NotFoundError, match="'a'.*'b'"):
        reshape(program, {"a": "1", "b": "1"})
    with pytest.raises(SpecSurgeryError, match="rank 4"):
        reshape(program, {"x": "3x8x8"})


def test_reshaped_image_program_takes_pngs_at_their_own_size(tmp_path):
    from PIL import Image

    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    pkg = _quiet(from_torch, _ConvNet().eval(), torch.rand(1, 3, 16, 16), backend="mlprogram",
                 image_input="x")
    out = reshape(pkg, {"x": "1x3x8..64x8..64"})
    path = io.save(out, tmp_path / "flex.mlpackage")
    sizes = []
    for w, h in ((16, 16), (32, 24)):
        png = tmp_path / f"{w}x{h}.png"
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(png)
        sizes.append(predict(path, {"x": png})["output"].shape)
    assert sizes == [(1, 4, 8, 8), (1, 4, 12, 16)]


def test_an_updatable_models_training_input_is_reshaped_too():
    from surgery_models import updatable_net

    out = _quiet(reshape, updatable_net(), {"x": "1x3x8..16x8..16"})
    [train] = [t for t in out.description.trainingInput if t.name == "x"]
    assert train.type == out.description.input[0].type
    assert_valid(out)
