"""min_spec_version: the Python downgrade logic and its reasons."""

from __future__ import annotations

import numpy as np

import nnbuild as b
from specsurgery._proto import FeatureTypes_pb2
from specsurgery.check import check, min_spec_version
from specsurgery.weights import set_float16, set_lut


def test_plain_nn_needs_v1():
    assert min_spec_version(b.tiny_nn()) == (1, [])


def test_fp16_weights_need_v2():
    spec = b.tiny_nn()
    set_float16(spec.neuralNetwork.layers[0].innerProduct.weights, np.zeros(12))
    set_float16(spec.neuralNetwork.layers[0].innerProduct.bias, np.zeros(3))
    version, reasons = min_spec_version(spec)
    assert version == 2 and any("float16 weights in layer 'fc'" in r for r in reasons)


def test_lut_weights_need_v3():
    spec = b.tiny_nn()
    set_lut(spec.neuralNetwork.layers[0].innerProduct.weights, np.zeros(12, np.uint8), [0.0] * 4, 2)
    assert min_spec_version(spec)[0] == 3


def test_flexible_input_needs_v3():
    spec = b.tiny_nn()
    r = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges.add()
    r.lowerBound, r.upperBound = 1, -1
    spec.description.input[0].type.multiArrayType.shape[:] = [4]
    assert min_spec_version(spec) == (3, ["requires v3 because flexible shape on input 'x'"])


def test_new_layer_needs_v4_and_ios14_layer_v5():
    spec = b.tiny_nn()
    spec.neuralNetwork.arrayInputShapeMapping = 1
    layer = spec.neuralNetwork.layers.add()
    layer.name = "gelu"
    layer.input.append("y")
    layer.output.append("g")
    layer.gelu.SetInParent()
    assert min_spec_version(spec)[0] == 4
    layer.ClearField("gelu")
    layer.clampedReLU.SetInParent()
    version, reasons = min_spec_version(spec)
    assert version == 5 and reasons == ["requires v5 because clampedReLU layer 'gelu'"]


def test_linked_stage_reason_names_the_stage():
    spec = b.tiny_pipeline([b.tiny_linked(), b.tiny_head()])
    assert min_spec_version(spec) == (4, ["requires v4 because linkedModel at stage 'backbone'"])


def test_pipeline_takes_the_max_of_nested_stages():
    head = b.tiny_head(version=7)
    head.description.output[0].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    spec = b.tiny_pipeline([b.tiny_nn(), head], version=7)
    spec.description.output[0].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    version, reasons = min_spec_version(spec)
    assert version == 7
    assert "requires v7 because FLOAT16 multiarray output 'z' at stage 'head'" in reasons
    assert not [f for f in check(spec) if f.severity == "error"]


def test_stage_checked_against_its_own_version():
    head = b.tiny_head(version=4)
    head.description.output[0].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    spec = b.tiny_pipeline([b.tiny_nn(), head], version=7)
    spec.description.output[0].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    errors = [f for f in check(spec) if f.severity == "error"]
    assert [(f.path, f.rule) for f in errors] == [("head/specificationVersion", "version.below-minimum")]


def test_state_and_empty_inputs_need_v9():
    spec = b.tiny_nn(version=9)
    st = spec.description.state.add()
    st.name = "cache"
    st.type.stateType.arrayType.shape.append(4)
    st.type.stateType.arrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    assert min_spec_version(spec)[0] == 9
    spec.specificationVersion = 8
    assert "version.below-minimum" in {f.rule for f in check(spec)}


def test_int8_io_needs_v10():
    spec = b.tiny_nn(version=10)
    spec.description.input[0].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.INT8
    assert min_spec_version(spec)[0] == 10


def test_min_version_accepts_a_path(tmp_path):
    from specsurgery.io import serialize

    path = tmp_path / "m.mlmodel"
    path.write_bytes(serialize(b.tiny_pipeline([b.tiny_linked(), b.tiny_head()])))
    assert min_spec_version(str(path))[0] == 4


def test_every_kind_minimum_comes_from_the_table():
    """Per-kind minimum versions live in nn/kinds.py; check.versions reports them."""
    from specsurgery._proto import NeuralNetwork_pb2
    from specsurgery.check.versions import _layer_needs
    from specsurgery.nn import KINDS

    for name, kind in KINDS.items():
        lay = NeuralNetwork_pb2.NeuralNetworkLayer(name="L")
        getattr(lay, name).SetInParent()
        needs = list(_layer_needs("L", lay))
        if kind.min_spec_version > 1:
            assert (kind.min_spec_version, f"{name} layer 'L'") in needs
        else:
            assert not any(what == f"{name} layer 'L'" for _, what in needs)


def test_loop_needs_come_from_its_nested_layers_once():
    spec = b.tiny_nn()
    nn = spec.neuralNetwork
    loop = nn.layers.add()
    loop.name = "loop"
    loop.loop.maxLoopIterations = 1
    inner = loop.loop.bodyNetwork.layers.add()
    inner.CopyFrom(nn.layers[0])
    inner.name = "inner"
    set_float16(inner.innerProduct.weights, np.zeros(12))
    version, reasons = min_spec_version(spec)
    assert version == 4
    from specsurgery.check.versions import version_needs
    fp16 = [n.what for n in version_needs(spec) if n.what.startswith("float16")]
    assert fp16 == ["float16 weights in layer 'loop.body/inner'.weights"]
