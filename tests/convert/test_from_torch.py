"""from_torch: parity with torch through the reference runtime, and the pitfalls it handles.

Models are tiny; conversions used by several tests are cached per session.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import specsurgery as ss  # noqa: E402
from specsurgery import io as ssio  # noqa: E402
from specsurgery.convert import ConvertError, ConvertWarning, Enumerated, Range, from_torch  # noqa: E402
from specsurgery.errors import SpecSurgeryError  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# --------------------------------------------------------------------------- tiny models

class TinyCNN(nn.Module):
    def __init__(self, classes=4, cin=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.head = nn.Linear(6, classes)

    def forward(self, image):
        return torch.softmax(self.head(self.body(image).mean((2, 3))), dim=1)


def _init_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return collections.OrderedDict(out=y, aux=torch.sigmoid(y) * 2)


Pair = collections.namedtuple("Pair", ["logits", "features"])


class NamedTupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        f = torch.tanh(x)
        return Pair(self.fc(f), f)


class TwoInputs(nn.Module):
    def forward(self, left, right):
        return left * right + 1, left - right


class DataBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class ShapeBranch(nn.Module):
    def forward(self, x):
        if x.size(1) > 2:  # a tensor in a trace, but shape-only: fine
            return x * 2
        return x


class Counter(nn.Module):
    """Doubles x until its sum passes a limit: a data-dependent while loop."""

    def forward(self, x):
        steps = torch.zeros(1)
        while bool(x.sum() < 100.0):
            x = x * 2.0
            steps = steps + 1.0
        return {"value": x, "steps": steps}


class ReturnsInt(nn.Module):
    def forward(self, x):
        return {"y": x + 1, "count": 3}


def _image(seed, h=8, w=8, c=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def _normalised(pixels, mean, std):
    x = torch.from_numpy(pixels).float() / 255.0
    x = x.permute(2, 0, 1)[None] if x.dim() == 3 else x[None, None]
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    return (x - m) / s


@pytest.fixture(scope="session")
def classifier():
    torch.manual_seed(0)
    model = _init_bn(TinyCNN()).eval()
    spec = from_torch(model, torch.rand(1, 3, 8, 8), image_input="image", mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, class_labels=["a", "b", "c", "d"],
                      metadata={"author": "tests", "license": "MIT", "version": "2.1",
                                "description": "tiny", "user_defined": {"k": "v"}})
    return model, spec


@pytest.fixture(scope="session")
def dict_model():
    torch.manual_seed(1)
    model = DictNet().eval()
    spec = from_torch(model, torch.rand(1, 3, 4, 4), image_input="x", mean=0.5, std=0.25,
                      metadata={"preview": {"type": "imageSegmenter", "labels": ["bg", "fg"]}})
    return model, spec


# --------------------------------------------------------------------------- image classifier

def test_classifier_matches_torch_on_the_same_uint8_image(classifier):
    model, spec = classifier
    from PIL import Image

    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert [o.name for o in spec.description.output] == ["classLabelProbs", "classLabel"]
    assert spec.description.predictedProbabilitiesName == "classLabelProbs"
    for seed in range(3):
        pixels = _image(seed)
        with torch.no_grad():
            expected = model(_normalised(pixels, IMAGENET_MEAN, IMAGENET_STD))[0].numpy()
        got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
        probs = np.array([got["classLabelProbs"][k] for k in "abcd"])
        np.testing.assert_allclose(probs, expected, atol=1e-4, rtol=0)
        assert got["classLabel"] == "abcd"[int(expected.argmax())]


def test_per_channel_std_uses_one_scale_and_an_exact_multiply(classifier):
    _, spec = classifier
    pre = spec.neuralNetworkClassifier.preprocessing[0].scaler
    assert pre.channelScale == pytest.approx(1 / 255, rel=1e-6)
    assert [pre.redBias, pre.greenBias, pre.blueBias] == pytest.approx([-m for m in IMAGENET_MEAN], rel=1e-6)
    kinds = [layer.WhichOneof("layer") for layer in spec.neuralNetworkClassifier.layers]
    assert "multiply" in kinds[:3] or "scale" in kinds[:3], kinds


def test_uniform_std_folds_into_the_image_type(dict_model):
    _, spec = dict_model
    pre = spec.neuralNetwork.preprocessing[0].scaler
    assert pre.channelScale == pytest.approx(1 / (255 * 0.25), rel=1e-6)
    assert [pre.redBias, pre.greenBias, pre.blueBias] == pytest.approx([-2.0] * 3, rel=1e-6)
    first = spec.neuralNetwork.layers[0]  # the image goes straight into the convolution
    assert first.WhichOneof("layer") == "convolution" and list(first.input) == ["x"]


def test_metadata_is_written(classifier):
    _, spec = classifier
    meta = spec.description.metadata
    assert (meta.author, meta.license, meta.versionString, meta.shortDescription) == ("tests", "MIT", "2.1", "tiny")
    assert meta.userDefined["k"] == "v"
    assert "com.github.apple.coremltools.version" in meta.userDefined


def test_bgr_and_grayscale_layouts():
    from PIL import Image

    torch.manual_seed(2)
    model = TinyCNN().eval()
    spec = from_torch(model, torch.rand(1, 3, 6, 6), image_input="image", mean=[0.1, 0.2, 0.3],
                      std=0.5, color_layout="BGR")
    assert spec.description.input[0].type.imageType.colorSpace == \
        type(spec.description.input[0].type.imageType).BGR
    pixels = _image(5, 6, 6)  # stored RGB; the model sees BGR
    bgr = np.ascontiguousarray(pixels[:, :, ::-1])
    with torch.no_grad():
        expected = model(_normalised(bgr, [0.1, 0.2, 0.3], [0.5] * 3))[0].numpy()
    got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
    np.testing.assert_allclose(got["output"].reshape(-1), expected, atol=1e-4)

    gray = TinyCNN(cin=1).eval()
    spec = from_torch(gray, torch.rand(1, 1, 6, 6), image_input="image", mean=[0.5], std=[0.2])
    img = spec.description.input[0].type.imageType
    assert img.colorSpace == type(img).GRAYSCALE
    pixels = _image(6, 6, 6, c=1)
    with torch.no_grad():
        expected = gray(_normalised(pixels, [0.5], [0.2]))[0].numpy()
    got = ss.predict(spec, {"image": Image.fromarray(pixels, "L")})
    np.testing.assert_allclose(got["output"].reshape(-1), expected, atol=1e-4)


# --------------------------------------------------------------------------- outputs

def test_dict_outputs_are_named_after_keys_and_match(dict_model):
    from PIL import Image

    model, spec = dict_model
    assert [o.name for o in spec.description.output] == ["out", "aux"]
    pixels = _image(3, 4, 4)
    with torch.no_grad():
        expected = model(_normalised(pixels, [0.5] * 3, [0.25] * 3))
    got = ss.predict(spec, {"x": Image.fromarray(pixels, "RGB")})
    for key in ("out", "aux"):
        np.testing.assert_allclose(np.asarray(got[key]).reshape(expected[key].shape),
                                   expected[key].numpy(), atol=1e-4)


def test_segmentation_preview_metadata(dict_model):
    _, spec = dict_model
    user = spec.description.metadata.userDefined
    assert user["com.apple.coreml.model.preview.type"] == "imageSegmenter"
    assert json.loads(user["com.apple.coreml.model.preview.params"]) == {"labels": ["bg", "fg"]}


def test_namedtuple_and_tuple_outputs():
    torch.manual_seed(3)
    model = NamedTupleNet().eval()
    x = torch.randn(2, 5)
    spec = from_torch(model, x)
    assert [o.name for o in spec.description.output] == ["logits", "features"]
    got = ss.predict(spec, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_allclose(got["logits"], expected.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["features"], expected.features.numpy(), atol=1e-5)

    spec = from_torch(TwoInputs(), (torch.rand(1, 3), torch.rand(1, 3)), output_names=["prod", "diff"])
    assert [i.name for i in spec.description.input] == ["left", "right"]
    assert [o.name for o in spec.description.output] == ["prod", "diff"]
    spec = from_torch(TwoInputs(), (torch.rand(1, 3), torch.rand(1, 3)), inputs=["a", "b"])
    assert [i.name for i in spec.description.input] == ["a", "b"]
    assert [o.name for o in spec.description.output] == ["output_0", "output_1"]


def test_output_that_is_not_a_tensor_is_named():
    with pytest.raises(ConvertError, match=r"output 'count' is a int .*not a tensor"):
        from_torch(ReturnsInt(), torch.rand(1, 2))


def test_output_names_of_the_wrong_length():
    with pytest.raises(ConvertError, match=r"output_names gives 1 name.*returns 2 tensor"):
        from_torch(TwoInputs(), (torch.rand(1, 3), torch.rand(1, 3)), output_names=["only"])


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, pattern", [
    ({"mean": [0.5, 0.5], "std": 0.5}, r"mean has 2 value.*'image' has 3 channel.*give 3 value"),
    ({"mean": 0.5, "std": [0.1, 0.2, 0.3, 0.4]}, r"std has 4 value.*3 channel"),
])
def test_mean_or_std_of_the_wrong_length(kwargs, pattern):
    with pytest.raises(ConvertError, match=pattern):
        from_torch(TinyCNN().eval(), torch.rand(1, 3, 4, 4), image_input="image", **kwargs)


def test_grayscale_mean_length_names_one_channel():
    with pytest.raises(ConvertError, match=r"mean has 3 value.*1 channel.*grayscale"):
        from_torch(TinyCNN(cin=1).eval(), torch.rand(1, 1, 4, 4), image_input="image",
                   mean=IMAGENET_MEAN, std=0.5)


def test_bad_arguments_are_clear():
    m = TinyCNN().eval()
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ConvertError, match=r"unknown input in image_input: 'img' \(did you mean 'image'"):
        from_torch(m, x, image_input="img")
    with pytest.raises(ConvertError, match="also pass image_input"):
        from_torch(m, x, mean=IMAGENET_MEAN)
    with pytest.raises(ConvertError, match="backend 'onnx' is not one of neuralnetwork, mlprogram"):
        from_torch(m, x, backend="onnx")
    with pytest.raises(ConvertError, match=r"unknown metadata key.*'autor' \(did you mean 'author'"):
        from_torch(m, x, metadata={"autor": "x"})
    with pytest.raises(ConvertError, match=r"class_labels has 3 label.*4 scores"):
        from_torch(m, x, class_labels=["a", "b", "c"])
    with pytest.raises(ConvertError, match=r"inputs= gives 2 name"):
        from_torch(m, x, inputs=["a", "b"])
    with pytest.raises(ConvertError, match="example_inputs must be a tensor"):
        from_torch(m, "not a tensor")
    assert issubclass(ConvertError, SpecSurgeryError)


def test_data_dependent_trace_is_refused_with_advice():
    with pytest.raises(ConvertError, match=r"data-dependent control flow.*test_from_torch.py:\d+.*script=True"):
        from_torch(DataBranch(), torch.rand(1, 3))


def test_shape_dependent_branch_traces_fine():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvertWarning)
        spec = from_torch(ShapeBranch(), torch.rand(1, 4))
    got = ss.predict(spec, {"x": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(got["output"], 2.0)


def test_trace_failure_explains_control_flow():
    class NeedsInt(nn.Module):
        def forward(self, x, n: int):
            return x * n

    with pytest.raises(ConvertError, match=r"failed"):
        from_torch(NeedsInt(), torch.rand(1, 2))


# --------------------------------------------------------------------------- eval mode

def test_training_module_warns_converts_in_eval_and_is_restored():
    torch.manual_seed(4)
    model = _init_bn(TinyCNN())
    model.train()
    with pytest.warns(ConvertWarning, match=r"training mode and has BatchNorm2d, Dropout"):
        spec = from_torch(model, torch.rand(1, 3, 5, 5))
    assert model.training and all(m.training for m in model.modules())
    x = torch.rand(1, 3, 5, 5)
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(ss.predict(spec, {"image": x.numpy()})["output"], expected, atol=1e-5)


# --------------------------------------------------------------------------- script / flexible

def test_scripted_while_loop_with_dict_output():
    spec = from_torch(Counter(), torch.full((1, 2), 3.0), script=True)
    assert [o.name for o in spec.description.output] == ["value", "steps"]
    assert any(layer.WhichOneof("layer") == "loop" for layer in spec.neuralNetwork.layers)
    for start in (0.5, 3.0, 40.0):
        x = torch.full((1, 2), start)
        expected = Counter()(x)
        got = ss.predict(spec, {"x": x.numpy()})
        np.testing.assert_allclose(got["value"].reshape(1, 2), expected["value"].numpy(), rtol=1e-6)
        assert float(np.asarray(got["steps"]).reshape(-1)[0]) == float(expected["steps"][0])


def test_range_and_enumerated_shapes():
    spec = from_torch(TwoInputs(), (torch.rand(1, 4), torch.rand(1, 4)),
                      flexible={"left": (1, Range(1, 16)), "right": Enumerated([(1, 4), (1, 8)])})
    left, right = (f.type.multiArrayType for f in spec.description.input)
    assert [(r.lowerBound, r.upperBound) for r in left.shapeRange.sizeRanges] == [(1, 1), (1, 16)]
    assert [list(s.shape) for s in right.enumeratedShapes.shapes] == [[1, 4], [1, 8]]
    assert spec.specificationVersion >= 3
    with pytest.raises(ConvertError, match=r"example size 4 is outside Range\(5, 9\)"):
        from_torch(TwoInputs(), (torch.rand(1, 4), torch.rand(1, 4)), flexible={"left": (1, Range(5, 9))})
    with pytest.raises(ConvertError, match=r"unknown input in flexible: 'lft'"):
        from_torch(TwoInputs(), (torch.rand(1, 4), torch.rand(1, 4)), flexible={"lft": (1, Range(1, 9))})


def test_unbounded_range_runs_at_other_sizes():
    class Scale(nn.Module):
        def forward(self, tokens):
            return tokens * 3.0 + 1.0

    spec = from_torch(Scale(), torch.rand(1, 4), flexible={"tokens": (1, Range(1))})
    rng = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges[1]
    assert (rng.lowerBound, rng.upperBound) == (1, -1)
    for n in (1, 7):
        x = np.arange(n, dtype=np.float32)[None]
        np.testing.assert_allclose(ss.predict(spec, {"tokens": x})["output"].reshape(1, n), x * 3 + 1)


# --------------------------------------------------------------------------- backends, files, temp folders

def test_mlprogram_returns_a_package_in_memory_and_leaves_no_temp_folders(tmp_path, monkeypatch):
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    torch.manual_seed(5)
    model = NamedTupleNet().eval()
    x = torch.randn(1, 5)
    pkg = from_torch(model, x, backend="mlprogram")
    assert isinstance(pkg, ssio.MLPackage)
    assert pkg.spec.WhichOneof("Type") == "mlProgram"
    assert pkg.path is None and pkg.weights and all(not w.missing for w in pkg.weights.values())
    assert os.listdir(root) == [], os.listdir(root)  # every coremltools temp folder is gone
    got = ss.predict(pkg, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_allclose(got["logits"], expected.logits.numpy(), atol=1e-4)
    saved = ssio.save(pkg, tmp_path / "m.mlpackage")
    assert ssio.load(saved).spec.description.output[0].name == "logits"


def test_neuralnetwork_leaves_no_temp_folders_and_save_to_writes(tmp_path, monkeypatch):
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    spec = from_torch(TwoInputs(), (torch.rand(1, 3), torch.rand(1, 3)), save_to=tmp_path / "two.mlmodel")
    assert os.listdir(root) == []
    back = ssio.load(tmp_path / "two.mlmodel")
    assert back == spec


def test_exported_program_needs_and_gets_run_decompositions():
    torch.manual_seed(6)
    model = NamedTupleNet().eval()
    x = torch.randn(2, 5)
    exported = torch.export.export(model, (x,))
    spec = from_torch(exported, (x,))  # names come from the output pytree (namedtuple fields)
    assert [o.name for o in spec.description.output] == ["logits", "features"]
    got = ss.predict(spec, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_allclose(got["logits"], expected.logits.numpy(), atol=1e-5)


def test_flexible_image_size_and_mlprogram_classifier():
    from PIL import Image

    torch.manual_seed(7)
    model = TinyCNN(classes=3).eval()
    spec = from_torch(model, torch.rand(1, 3, 8, 8), image_input="image", mean=0.5, std=0.5,
                      flexible={"image": (1, 3, Range(8, 64), Range(8, 64))})
    size_range = spec.description.input[0].type.imageType.imageSizeRange
    assert (size_range.widthRange.lowerBound, size_range.widthRange.upperBound) == (8, 64)
    pixels = _image(8, 20, 12)
    with torch.no_grad():
        expected = model(_normalised(pixels, [0.5] * 3, [0.5] * 3)).numpy()
    got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
    np.testing.assert_allclose(got["output"].reshape(expected.shape), expected, atol=1e-4)

    pkg = from_torch(model, torch.rand(1, 3, 8, 8), image_input="image", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, class_labels=["x", "y", "z"], backend="mlprogram",
                     minimum_deployment_target="iOS16")
    assert pkg.spec.specificationVersion == 7
    assert pkg.spec.description.predictedProbabilitiesName == "classLabelProbs"
    pixels = _image(9)
    with torch.no_grad():
        expected = model(_normalised(pixels, IMAGENET_MEAN, IMAGENET_STD))[0].numpy()
    got = ss.predict(pkg, {"image": Image.fromarray(pixels, "RGB")})
    np.testing.assert_allclose([got["classLabelProbs"][k] for k in "xyz"], expected, atol=1e-4)
    with pytest.raises(ConvertError, match="minimum_deployment_target 'iOS99' is not one of"):
        from_torch(model, torch.rand(1, 3, 8, 8), minimum_deployment_target="iOS99")


def test_exported_program_with_per_channel_std_and_labels():
    from PIL import Image

    torch.manual_seed(8)
    model = TinyCNN(classes=3).eval()
    x = torch.rand(1, 3, 8, 8)
    exported = torch.export.export(model, (x,))
    spec = from_torch(exported, (x,), image_input="image", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      class_labels=["x", "y", "z"])
    assert spec.description.predictedProbabilitiesName == "classLabelProbs"
    pixels = _image(10)
    with torch.no_grad():
        expected = model(_normalised(pixels, IMAGENET_MEAN, IMAGENET_STD))[0].numpy()
    got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
    np.testing.assert_allclose([got["classLabelProbs"][k] for k in "xyz"], expected, atol=1e-4)


def test_a_script_module_keeps_its_loop_and_names():
    scripted = torch.jit.script(Counter())
    spec = from_torch(scripted, torch.full((1, 2), 7.0))
    assert [i.name for i in spec.description.input] == ["x"]
    assert [o.name for o in spec.description.output] == ["value", "steps"]
    got = ss.predict(spec, {"x": np.full((1, 2), 0.75, np.float32)})
    expected = Counter()(torch.full((1, 2), 0.75))
    np.testing.assert_allclose(got["value"].reshape(1, 2), expected["value"].numpy(), rtol=1e-6)


def test_enumerated_shapes_run_at_each_shape():
    spec = from_torch(TwoInputs(), (torch.rand(1, 4), torch.rand(1, 4)),
                      flexible={"left": Enumerated([(1, 4), (1, 8)]),
                                "right": Enumerated([(1, 4), (1, 8)])})
    for n in (4, 8):
        a, b = np.full((1, n), 2.0, np.float32), np.full((1, n), 3.0, np.float32)
        got = ss.predict(spec, {"left": a, "right": b})
        np.testing.assert_allclose(got["output_0"].reshape(1, n), a * b + 1)


def test_dead_layer_after_a_loop_is_dropped_but_loop_inputs_stay():
    from specsurgery._proto import Model_pb2
    from specsurgery.convert.pytorch import _drop_dead_layers

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    net = spec.neuralNetwork
    init = net.layers.add(name="init", output=["counter"])
    init.loadConstantND.shape.append(1)
    init.loadConstantND.data.floatValue.append(0.0)
    loop = net.layers.add(name="loop")
    body = loop.loop.bodyNetwork.layers.add(name="c", output=["c"])
    body.loadConstantND.shape.append(1)
    body.loadConstantND.data.floatValue.append(1.0)
    step = loop.loop.bodyNetwork.layers.add(name="step", input=["counter", "c"], output=["counter"])
    step.add.MergeFromString(b"")
    again = net.layers.add(name="c", output=["c"])  # coremltools' duplicate: nothing reads it
    again.loadConstantND.shape.append(1)
    again.loadConstantND.data.floatValue.append(1.0)
    out = net.layers.add(name="out", input=["counter"], output=["y"])
    out.activation.linear.alpha = 1.0
    spec.description.output.add(name="y")
    assert _drop_dead_layers(spec) == 1
    assert [layer.name for layer in net.layers] == ["init", "loop", "out"]
