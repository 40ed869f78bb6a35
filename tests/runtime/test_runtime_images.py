"""Image inputs: PIL / path / array, colour spaces, scaler and mean-image preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from specsurgery._proto import FeatureTypes_pb2, Model_pb2, NeuralNetwork_pb2
from specsurgery.errors import SpecSurgeryError
from specsurgery.runtime import predict

IMG = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)


def identity_image_model(color="RGB", scaler=None, mean=None, rank4=True):
    """image (6x5) -> linear activation (identity) -> y: returns the network's input blob."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    f = spec.description.input.add()
    f.name = "img"
    f.type.imageType.width, f.type.imageType.height = 6, 5
    f.type.imageType.colorSpace = getattr(FeatureTypes_pb2.ImageFeatureType, color)
    o = spec.description.output.add()
    o.name = "y"
    o.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    nn = spec.neuralNetwork
    if rank4:
        nn.imageInputShapeMapping = NeuralNetwork_pb2.RANK4_IMAGE_MAPPING
        nn.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
    l = nn.layers.add()
    l.name = "id"
    l.input.append("img")
    l.output.append("y")
    l.activation.linear.alpha = 1.0
    if scaler is not None:
        pre = nn.preprocessing.add()
        pre.featureName = "img"
        for k, v in scaler.items():
            setattr(pre.scaler, k, v)
    if mean is not None:
        pre = nn.preprocessing.add()
        pre.featureName = "img"
        pre.meanImage.meanImage.extend(np.asarray(mean, np.float32).reshape(-1).tolist())
    return spec


def test_pil_path_and_array_inputs_agree(tmp_path):
    spec = identity_image_model()
    Image.fromarray(IMG).save(tmp_path / "i.png")
    a = predict(spec, {"img": IMG})["y"]
    b = predict(spec, {"img": Image.fromarray(IMG)})["y"]
    c = predict(spec, {"img": str(tmp_path / "i.png")})["y"]
    assert a.shape == (1, 3, 5, 6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a[0], IMG.transpose(2, 0, 1).astype(np.float32))


def test_rank5_image_mapping():
    y = predict(identity_image_model(rank4=False), {"img": IMG})["y"]
    assert y.shape == (3, 5, 6)       # [1,1,C,H,W] returned without Seq/Batch


def test_bgr_and_per_channel_bias():
    sc = {"channelScale": 2.0, "redBias": 1.0, "greenBias": 2.0, "blueBias": 3.0}
    rgb = predict(identity_image_model("RGB", sc), {"img": IMG})["y"][0]
    bgr = predict(identity_image_model("BGR", sc), {"img": IMG})["y"][0]
    planes = IMG.transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_allclose(rgb, 2 * planes + np.array([1, 2, 3], np.float32)[:, None, None])
    # BGR: channel 0 is blue and gets blueBias
    np.testing.assert_allclose(bgr, 2 * planes[::-1] + np.array([3, 2, 1], np.float32)[:, None, None])


def test_grayscale_and_gray_bias():
    sc = {"channelScale": 0.5, "grayBias": -1.0}
    gray = IMG[..., 0]
    y = predict(identity_image_model("GRAYSCALE", sc), {"img": gray})["y"]
    assert y.shape == (1, 1, 5, 6)
    np.testing.assert_allclose(y[0, 0], 0.5 * gray - 1.0)
    # a colour image given to a grayscale input is converted (luma)
    assert predict(identity_image_model("GRAYSCALE"), {"img": Image.fromarray(IMG)})["y"].shape == (1, 1, 5, 6)


def test_mean_image():
    mean = np.arange(3 * 5 * 6, dtype=np.float32).reshape(3, 5, 6)
    y = predict(identity_image_model(mean=mean), {"img": IMG})["y"][0]
    np.testing.assert_allclose(y, IMG.transpose(2, 0, 1) - mean)
    with pytest.raises(SpecSurgeryError, match="mean image has 5 values"):
        predict(identity_image_model(mean=np.zeros(5)), {"img": IMG})


def test_wrong_image_size_and_layout_are_errors():
    spec = identity_image_model()
    with pytest.raises(SpecSurgeryError, match="image is 5x6, the model takes 6x5"):
        predict(spec, {"img": IMG.transpose(1, 0, 2)})
    with pytest.raises(SpecSurgeryError, match="HxWx3"):
        predict(spec, {"img": np.zeros((3, 5, 6), np.uint8)})
