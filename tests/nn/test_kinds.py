"""The NeuralNetwork layer-kind table: complete, and right about weights, arity and versions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from specsurgery._proto import NeuralNetwork_pb2
from specsurgery.errors import SpecSurgeryError
from specsurgery.nn import KINDS, kind_of, weight_fields
from specsurgery.nn.kinds import dynamic_weights, version_needs
from specsurgery.weights import decode, layer_weights, set_float32

ONEOF = NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"]


def layer(kind: str, n_in: int = 1, n_out: int = 1, **params):
    lay = NeuralNetwork_pb2.NeuralNetworkLayer(name=f"the_{kind}")
    lay.input.extend(f"in{i}" for i in range(n_in))
    lay.output.extend(f"out{i}" for i in range(n_out))
    msg = getattr(lay, kind)
    msg.SetInParent()
    for key, value in params.items():
        field = getattr(msg, key)
        if hasattr(field, "extend"):
            field.extend(value)
        else:
            setattr(msg, key, value)
    return lay


def fields(lay) -> dict:
    return {f.path: f for f in weight_fields(lay)}


# --------------------------------------------------------------------------- completeness

def test_every_oneof_member_is_in_the_table():
    names = [f.name for f in ONEOF.fields]
    missing = [n for n in names if n not in KINDS]
    assert not missing, f"kinds missing from specsurgery/nn/kinds.py: {missing}"
    assert list(KINDS) == names          # no extra entries, proto order


@pytest.mark.parametrize("name", sorted(KINDS))
def test_entry_is_well_formed(name):
    k = KINDS[name]
    assert k.name == name and k.label and k.category
    for lo, hi in (k.inputs, k.outputs):
        assert lo >= 0 and (hi is None or hi >= lo)
    assert k.min_spec_version in (1, 2, 3, 4, 5)
    assert k.compress in ("any", "fp16", "none")
    assert bool(k.compress_reason) == (k.compress != "any")
    # a kind with weight fields in its message has a shape rule, and only those
    assert k.has_weights == bool(k.fields)


def _strip(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def test_resolved_paths_are_static_fields_and_match_the_message_walk():
    samples = [
        layer("convolution", outputChannels=4, kernelChannels=2, hasBias=True),
        layer("innerProduct", inputChannels=3, outputChannels=2, hasBias=True),
        layer("batchedMatmul", weightMatrixFirstDimension=3, weightMatrixSecondDimension=2, hasBias=True),
        layer("embeddingND", vocabSize=5, embeddingSize=2, hasBias=True),
        layer("batchnorm", channels=3),
        layer("gru", inputVectorSize=2, outputVectorSize=3, hasBiasVectors=True),
        layer("biDirectionalLSTM", inputVectorSize=2, outputVectorSize=3),
        layer("layerNormalization", normalizedShape=[4]),
    ]
    samples[-2].biDirectionalLSTM.params.hasBiasVectors = True
    samples[-2].biDirectionalLSTM.params.hasPeepholeVectors = True
    samples[-2].biDirectionalLSTM.weightParams.add()
    samples[-2].biDirectionalLSTM.weightParams.add()
    for lay in samples:
        entry = kind_of(lay)
        for f in weight_fields(lay):
            assert _strip(f.path) in entry.fields, (entry.name, f.path)
            assert f.count == (int(np.prod(f.shape)) if f.shape is not None else None)
        # filling every resolved field makes layer_weights (the message walk) see the same paths
        for f in weight_fields(lay):
            set_float32(f.wp, np.zeros(f.count or 1))
        assert sorted(p for p, _ in layer_weights(lay)) == sorted(f.path for f in weight_fields(lay))


def test_kind_of_unknown_and_unset():
    assert kind_of("innerProduct").name == "innerProduct"
    with pytest.raises(SpecSurgeryError, match="unknown NeuralNetwork layer kind 'innerProdcut'.*innerProduct"):
        kind_of("innerProdcut")
    with pytest.raises(SpecSurgeryError, match="no layer type"):
        kind_of(NeuralNetwork_pb2.NeuralNetworkLayer(name="x"))


# --------------------------------------------------------------------------- shape rules

def test_convolution_shapes():
    f = fields(layer("convolution", outputChannels=8, kernelChannels=3, kernelSize=[5, 7], hasBias=True))
    assert f["weights"].shape == (8, 3, 5, 7) and f["weights"].channels == 8 and f["weights"].main
    assert f["bias"].shape == (8,) and not f["bias"].main
    # Core ML's defaults: a missing kernel entry is 3
    assert fields(layer("convolution", outputChannels=2, kernelChannels=1))["weights"].shape == (2, 1, 3, 3)
    deconv = fields(layer("convolution", outputChannels=6, kernelChannels=4, nGroups=2, kernelSize=[2, 2],
                          isDeconvolution=True))["weights"]
    assert deconv.shape == (4, 3, 2, 2) and deconv.channel_axis == 1
    dyn = layer("convolution", n_in=2, outputChannels=2, kernelChannels=1)
    assert weight_fields(dyn) == [] and "second input" in dynamic_weights(dyn)


def test_convolution3d_deconvolution_shape_follows_the_proto():
    # proto: deconv weights are [outputChannels / nGroups, kernelChannels(=inputChannels), kD, kH, kW]
    w = fields(layer("convolution3d", outputChannels=4, inputChannels=6, nGroups=2, kernelDepth=1,
                     kernelHeight=2, kernelWidth=3, isDeconvolution=True))["weights"]
    assert w.shape == (2, 6, 1, 2, 3) and w.count == 72
    w = fields(layer("convolution3d", outputChannels=4, inputChannels=6, nGroups=2, kernelDepth=1,
                     kernelHeight=2, kernelWidth=3))["weights"]
    assert w.shape == (4, 3, 1, 2, 3)


def test_inner_product_shape_matches_y_equals_w_x():
    lay = layer("innerProduct", inputChannels=3, outputChannels=2, hasBias=True)
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    set_float32(lay.innerProduct.weights, w)
    f = fields(lay)
    assert f["weights"].shape == (2, 3) and f["weights"].channels == 2
    got = decode(f["weights"].wp, shape=f["weights"].shape)
    np.testing.assert_array_equal(got @ np.ones(3, np.float32), w @ np.ones(3, np.float32))
    assert f["bias"].shape == (2,)


def test_batched_matmul_weights_are_x2_by_x1_in_c_order():
    """Regression: graph.weight_shapes said [X1, X2]; the proto stores the logical
    [X1, X2] matrix column-major, which C-order reads as [X2, X1] (runtime, compress)."""
    x1, x2 = 3, 2
    lay = layer("batchedMatmul", weightMatrixFirstDimension=x1, weightMatrixSecondDimension=x2, hasBias=True)
    m = np.arange(x1 * x2, dtype=np.float32).reshape(x1, x2)      # the logical [X1, X2] matrix
    set_float32(lay.batchedMatmul.weights, m.ravel(order="F"))    # stored column-major
    f = fields(lay)
    assert f["weights"].shape == (x2, x1) and f["weights"].channels == x2
    assert f["bias"].shape == (x2,)
    got = decode(f["weights"].wp, shape=f["weights"].shape)
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(a @ got.T, a @ m)               # the layer computes a @ [X1, X2]
    assert weight_fields(layer("batchedMatmul", n_in=2)) == []


def test_embeddings_and_batchnorm():
    e = fields(layer("embeddingND", vocabSize=10, embeddingSize=4, hasBias=True))
    assert e["weights"].shape == (4, 10) and e["weights"].channels == 4 and e["bias"].shape == (4,)
    e = fields(layer("embedding", inputDim=10, outputChannels=4))
    assert e["weights"].shape == (4, 10) and "bias" not in e
    bn = fields(layer("batchnorm", channels=5))
    assert list(bn) == ["gamma", "beta", "mean", "variance"]
    assert all(f.shape == (5,) and f.channels == 1 for f in bn.values())
    assert list(fields(layer("batchnorm", channels=5, computeMeanVar=True))) == ["gamma", "beta"]


def test_bias_layer_weight_is_bias_not_data():
    """Regression: graph.weight_shapes called a bias layer's weight "data"."""
    f = fields(layer("bias", shape=[3, 1, 1]))
    assert list(f) == ["bias"] and f["bias"].shape == (3, 1, 1) and f["bias"].channels == 3
    assert fields(layer("bias"))["bias"].shape == (1,)
    assert list(fields(layer("loadConstant", shape=[2, 4, 4]))) == ["data"]


def test_recurrent_shapes():
    g = fields(layer("gru", inputVectorSize=2, outputVectorSize=3))
    assert g["updateGateWeightMatrix"].shape == (3, 2) and g["resetGateRecursionMatrix"].shape == (3, 3)
    assert "outputGateBiasVector" not in g
    bi = layer("biDirectionalLSTM", inputVectorSize=2, outputVectorSize=3)
    bi.biDirectionalLSTM.params.hasPeepholeVectors = True
    f = fields(bi)
    assert f["weightParams[1].forgetGateWeightMatrix"].shape == (3, 2)
    assert f["weightParams[0].outputGatePeepholeVector"].shape == (3,)
    assert len(f) == 2 * (8 + 3)


# --------------------------------------------------------------------------- arity and versions

#: Regression: check.nn.LAYER_ARITY lacked these 14 kinds (Core ML's validators do check them).
MISSING_ARITY = {
    "loop": ((0, 1), (0, 0)), "loopBreak": ((0, 0), (0, 0)), "loopContinue": ((0, 0), (0, 0)),
    "rangeDynamic": ((0, 3), (1, 1)),
    "equal": ((1, 2), (1, 1)), "notEqual": ((1, 2), (1, 1)), "lessThan": ((1, 2), (1, 1)),
    "lessEqual": ((1, 2), (1, 1)), "greaterThan": ((1, 2), (1, 1)), "greaterEqual": ((1, 2), (1, 1)),
    "logicalNot": ((1, 1), (1, 1)), "logicalOr": ((2, 2), (1, 1)), "logicalXor": ((2, 2), (1, 1)),
    "logicalAnd": ((2, 2), (1, 1)),
}


@pytest.mark.parametrize("name", sorted(MISSING_ARITY))
def test_arity_of_the_kinds_check_used_to_skip(name):
    assert (KINDS[name].inputs, KINDS[name].outputs) == MISSING_ARITY[name]


def test_versions():
    assert KINDS["innerProduct"].min_spec_version == 1
    assert KINDS["custom"].min_spec_version == 2
    assert KINDS["resizeBilinear"].min_spec_version == 3
    assert KINDS["batchedMatmul"].min_spec_version == 4
    assert KINDS["convolution3d"].min_spec_version == 5
    lay = layer("innerProduct", inputChannels=1, outputChannels=1, int8DynamicQuantize=True)
    assert version_needs(lay) == [(5, "with int8DynamicQuantize")]
    assert version_needs(layer("convolution", n_in=2)) == [(4, "with weights as a second input")]


def test_compress_facts():
    assert KINDS["convolution3d"].compress == "fp16" and KINDS["activation"].compress == "fp16"
    assert KINDS["layerNormalization"].compress == "none" and KINDS["custom"].compress == "none"
    assert KINDS["embeddingND"].compress == "any" and KINDS["add"].compress == "none"
    assert "nested" not in KINDS["add"].compress_reason
    assert "one by one" in KINDS["loop"].compress_reason


def test_ranks_and_recurrent_activations():
    from specsurgery.nn.kinds import recurrent_activations

    assert KINDS["convolution"].ranks == (4, None) and KINDS["embeddingND"].ranks == (2, 5)
    assert KINDS["add"].ranks is None
    bi = layer("biDirectionalLSTM")
    bi.biDirectionalLSTM.activationsForwardLSTM.add().sigmoid.SetInParent()
    bi.biDirectionalLSTM.activationsBackwardLSTM.add().tanh.SetInParent()
    assert [a.WhichOneof("NonlinearityType") for a in recurrent_activations(bi)] == ["sigmoid", "tanh"]
    rnn = layer("simpleRecurrent")
    rnn.simpleRecurrent.activation.ReLU.SetInParent()
    assert [a.WhichOneof("NonlinearityType") for a in recurrent_activations(rnn)] == ["ReLU"]
    assert recurrent_activations(layer("add")) == []
    # every activation field named in the table exists on its message
    for name, kind in KINDS.items():
        for field in kind.activation_fields:
            assert field in NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.fields_by_name[name] \
                .message_type.fields_by_name
