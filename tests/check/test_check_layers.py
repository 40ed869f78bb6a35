"""Weight-size rules per layer kind (format notes §5.1), control-flow blob
scopes, tensor hints and more interface rules."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import nnbuild as b
from specsurgery._proto import FeatureTypes_pb2, Model_pb2
from specsurgery.check import check
from specsurgery.io import load


def errors(spec):
    return {f.rule for f in check(spec) if f.severity == "error"}


def _nn_with(layer_setup, in_shape=(4,), out_name="out", exact=True, version=4):
    """tiny model x[in_shape] -> one layer -> out; ``layer_setup(layer)`` fills it."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    b.array_feature(spec.description.input, "x", list(in_shape))
    b.array_feature(spec.description.output, out_name, [])
    if exact:
        spec.neuralNetwork.arrayInputShapeMapping = 1
    layer = spec.neuralNetwork.layers.add()
    layer.name = "L"
    layer.input.append("x")
    layer.output.append(out_name)
    layer_setup(layer)
    return spec


def _floats(n):
    return np.arange(n, dtype=np.float32).tolist()


def batchnorm(layer, c=4, n=4):
    bn = layer.batchnorm
    bn.channels = c
    for field in ("gamma", "beta", "mean", "variance"):
        getattr(bn, field).floatValue.extend(_floats(n if field == "variance" else c))


def embedding(layer, n=20):
    e = layer.embedding
    e.inputDim, e.outputChannels = 5, 4
    e.weights.floatValue.extend(_floats(n))


def embedding_nd(layer, n=20):
    e = layer.embeddingND
    e.vocabSize, e.embeddingSize = 5, 4
    e.weights.floatValue.extend(_floats(n))


def scale(layer, n=3):
    s = layer.scale
    s.shapeScale.extend([3, 1, 1])
    s.scale.floatValue.extend(_floats(n))


def bias(layer, n=3):
    s = layer.bias
    s.shape.extend([3, 1, 1])
    s.bias.floatValue.extend(_floats(n))


def load_constant_nd(layer, n=6):
    layer.ClearField("input")
    c = layer.loadConstantND
    c.shape.extend([2, 3])
    c.data.floatValue.extend(_floats(n))


def batched_matmul(layer, n=12):
    m = layer.batchedMatmul
    m.weightMatrixFirstDimension, m.weightMatrixSecondDimension = 4, 3
    m.weights.floatValue.extend(_floats(n))


def lstm(layer, n_bias=3):
    layer.output.extend(["h_out", "c_out"])  # output, final hidden and cell state
    p = layer.uniDirectionalLSTM
    p.inputVectorSize, p.outputVectorSize = 4, 3
    p.params.hasBiasVectors = True
    w = p.weightParams
    for gate in ("inputGate", "forgetGate", "blockInput", "outputGate"):
        getattr(w, gate + "WeightMatrix").floatValue.extend(_floats(12))
        getattr(w, gate + "RecursionMatrix").floatValue.extend(_floats(9))
        getattr(w, gate + "BiasVector").floatValue.extend(_floats(n_bias))


def gru(layer, n_rec=9):
    layer.output.append("h_out")  # output and final hidden state
    p = layer.gru
    p.inputVectorSize, p.outputVectorSize = 4, 3
    for gate in ("update", "reset", "output"):
        getattr(p, gate + "GateWeightMatrix").floatValue.extend(_floats(12))
        getattr(p, gate + "GateRecursionMatrix").floatValue.extend(_floats(n_rec))


def conv3d(layer, n=2 * 4 * 8):
    c = layer.convolution3d
    c.outputChannels, c.inputChannels, c.nGroups = 2, 4, 1
    c.kernelDepth = c.kernelHeight = c.kernelWidth = 2
    c.strideDepth = c.strideHeight = c.strideWidth = 1  # Core ML: strides and dilations > 0
    c.dilationDepth = c.dilationHeight = c.dilationWidth = 1
    c.weights.floatValue.extend(_floats(n))


def prelu(layer, n=4):
    layer.activation.PReLU.alpha.floatValue.extend(_floats(n))


LAYERS = [
    ("batchnorm", batchnorm, dict(n=3), (4, 2, 2)),
    ("embedding", embedding, dict(n=19), (1, 1, 1, 1)),  # Core ML: embedding input rank >= 4
    ("embeddingND", embedding_nd, dict(n=21), (1, 1)),  # embeddingND rank 2..5
    ("scale", scale, dict(n=4), (3, 2, 2)),
    ("bias", bias, dict(n=2), (3, 2, 2)),
    ("loadConstantND", load_constant_nd, dict(n=5), (4,)),
    ("batchedMatmul", batched_matmul, dict(n=11), (2, 4)),
    ("uniDirectionalLSTM", lstm, dict(n_bias=4), (4,)),
    ("gru", gru, dict(n_rec=8), (4,)),
    ("convolution3d", conv3d, dict(n=63), (1, 4, 3, 3, 3)),
]


@pytest.mark.parametrize("kind,setup,broken,shape", LAYERS, ids=[l[0] for l in LAYERS])
def test_layer_weight_counts(kind, setup, broken, shape):
    exact = kind not in ("uniDirectionalLSTM", "gru")
    good = _nn_with(setup, shape, exact=exact)
    assert not errors(good), [str(f) for f in check(good)]
    bad = _nn_with(lambda layer: setup(layer, **broken), shape, exact=exact)
    assert "weights.count-mismatch" in errors(bad)


def test_prelu_needs_alpha():
    assert not errors(_nn_with(prelu, (4, 2, 2)))
    # Core ML's validator accepts an empty alpha (validateActivationParams): a warning
    empty = check(_nn_with(lambda l: prelu(l, 0), (4, 2, 2)))
    assert "weights.empty" in {f.rule for f in empty if f.severity == "warning"}


def test_batchnorm_precision_mix_across_params():
    def setup(layer):
        batchnorm(layer)
        v = layer.batchnorm.variance
        v.Clear()
        v.float16Value = np.ones(4, "<f2").tobytes()
    assert "weights.precision-mix" in errors(_nn_with(setup, (4, 2, 2)))


def test_int8_dynamic_inner_product():
    spec = b.tiny_nn(version=5)
    spec.neuralNetwork.arrayInputShapeMapping = 1  # an int8 innerProduct is no iOS 12 layer
    ip = spec.neuralNetwork.layers[0].innerProduct
    ip.int8DynamicQuantize = True
    assert "weights.int8-dynamic" in errors(spec)
    ip.weights.Clear()
    ip.weights.int8RawValue = np.ones(12, np.int8).tobytes()
    ip.weights.quantization.numberOfBits = 8
    ip.weights.quantization.linearQuantization.scale.append(0.1)
    assert not errors(spec)
    ip.weights.quantization.linearQuantization.bias.append(0.0)
    assert "weights.int8-dynamic" in errors(spec)


def test_custom_layer_needs_class_name():
    spec = _nn_with(lambda l: l.custom.SetInParent(), (4,), exact=False, version=2)
    assert "nn.custom-no-class" in errors(spec)
    spec.neuralNetwork.layers[0].custom.className = "MyLayer"
    assert not errors(spec)


def test_tensor_hints():
    spec = b.tiny_nn()
    spec.neuralNetwork.arrayInputShapeMapping = 1
    layer = spec.neuralNetwork.layers[0]
    layer.inputTensor.add().rank = 1
    layer.outputTensor.add().rank = 1
    assert not errors(spec)
    layer.inputTensor[0].rank = 2
    assert "nn.tensor-hint" in errors(spec)
    layer.inputTensor[0].rank = 1
    layer.inputTensor.add().rank = 1
    assert "nn.tensor-hint" in errors(spec)


def test_branch_sees_outer_blobs_and_publishes_its_outputs():
    spec = b.tiny_nn()
    spec.neuralNetwork.arrayInputShapeMapping = 1
    nn = spec.neuralNetwork
    branch = nn.layers.add()
    branch.name = "br"
    branch.input.append("y")
    b.add_relu(branch.branch.ifBranch, "in_if", "h", "z")
    b.add_relu(branch.branch.elseBranch, "in_else", "y", "z2")
    b.array_feature(spec.description.output, "z", [3])
    assert not errors(spec)
    branch.branch.ifBranch.layers[0].input[0] = "ghost"
    assert "nn.undefined-blob" in errors(spec)


def test_new_layer_with_legacy_array_mapping():
    spec = b.tiny_nn()
    layer = spec.neuralNetwork.layers.add()
    layer.name = "g"
    layer.input.append("y")
    layer.output.append("g")
    layer.gelu.SetInParent()
    assert "nn.shape-mapping" in errors(spec)
    spec.neuralNetwork.arrayInputShapeMapping = 1
    assert "nn.shape-mapping" not in errors(spec)


def test_nn_input_must_be_array_or_image():
    spec = b.tiny_nn()
    spec.description.input[0].type.Clear()
    spec.description.input[0].type.doubleType.SetInParent()
    assert "nn.bad-input-type" in errors(spec)


def test_empty_inputs_allowed_at_v9_only():
    spec = _nn_with(lambda l: load_constant_nd(l), (4,), version=9)
    spec.description.ClearField("input")
    assert "interface.no-inputs" not in errors(spec)
    spec.specificationVersion = 8
    assert "interface.no-inputs" in errors(spec)


def test_image_enumerated_and_range_defaults():
    spec = b.tiny_conv(image=True, version=4)
    img = spec.description.input[0].type.imageType
    s = img.enumeratedSizes.sizes.add()
    s.width, s.height = 16, 16
    assert "image.default-not-enumerated" in errors(spec)
    img.ClearField("enumeratedSizes")
    img.imageSizeRange.widthRange.lowerBound = 1
    img.imageSizeRange.widthRange.upperBound = 4
    img.imageSizeRange.heightRange.lowerBound = 1
    img.imageSizeRange.heightRange.upperBound = -1
    assert "image.default-outside-range" in errors(spec)


def test_sequence_and_dictionary_need_element_types():
    spec = Model_pb2.Model()
    spec.specificationVersion = 3
    f = spec.description.input.add()
    f.name = "tokens"
    f.type.sequenceType.SetInParent()
    o = spec.description.output.add()
    o.name = "counts"
    o.type.dictionaryType.SetInParent()
    spec.identity.SetInParent()
    found = errors(spec)
    assert {"sequence.no-element-type", "dictionary.no-key-type"} <= found


def test_default_value_only_on_nn_types():
    spec = b.tiny_nn(version=5)
    spec.description.input[0].type.multiArrayType.floatDefaultValue = 0.5
    assert not errors(spec)
    stub = b.tiny_linked(version=5)
    stub.description.input[0].type.multiArrayType.floatDefaultValue = 0.5
    assert "array.default-value-model" not in errors(stub)  # only optional inputs use defaults
    stub.description.input[0].type.isOptional = True
    assert "array.default-value-model" in errors(stub)
    spec.description.input.add().CopyFrom(spec.description.input[0])
    spec.description.input[1].name = "opt"
    spec.description.input[1].type.isOptional = True
    spec.specificationVersion = 4
    assert "version.below-minimum" in errors(spec)


def test_classifier_with_int_labels_and_multiarray_probabilities():
    spec = b.tiny_classifier(labels=(3, 5, 7))
    assert not errors(spec)
    probs = spec.description.output[0].type
    probs.Clear()
    probs.multiArrayType.dataType = b.FLOAT32
    probs.multiArrayType.shape.append(3)
    findings = check(spec)
    assert "classifier.probabilities-multiarray" in {f.rule for f in findings if f.severity == "warning"}


def test_state_rules():
    spec = b.tiny_nn(version=9)
    st = spec.description.state.add()
    st.name = "kv"
    st.type.stateType.arrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    assert "state.bad-shape" in errors(spec)
    st.type.stateType.arrayType.shape.append(4)
    assert not errors(spec)
    wrong = spec.description.state.add()
    wrong.name = "not_a_state"
    wrong.type.doubleType.SetInParent()
    assert "state.not-state-type" in errors(spec)


def test_multifunction_rules_on_ml_program():
    spec = Model_pb2.Model()
    spec.specificationVersion = 8
    spec.mlProgram.version = 1
    fn = spec.description.functions.add()
    fn.name = "main"
    b.array_feature(fn.input, "x", [1])
    b.array_feature(fn.output, "y", [1])
    spec.description.defaultFunctionName = "other"
    b.array_feature(spec.description.input, "x", [1])
    found = errors(spec)
    assert {"multifunction.version", "multifunction.bad-default", "multifunction.top-level",
            "multifunction.unknown-function"} <= found


def test_updatable_network_complete_passes():
    spec = b.tiny_classifier()
    spec.isUpdatable = True
    layer = spec.neuralNetworkClassifier.layers[0]
    layer.isUpdatable = True
    layer.innerProduct.weights.isUpdatable = True
    layer.innerProduct.bias.isUpdatable = True
    up = spec.neuralNetworkClassifier.updateParams
    loss = up.lossLayers.add()
    loss.name = "loss"
    loss.categoricalCrossEntropyLossLayer.input = "probs"
    loss.categoricalCrossEntropyLossLayer.target = "classLabel"
    up.optimizer.sgdOptimizer.learningRate.defaultValue = 0.01
    up.optimizer.sgdOptimizer.miniBatchSize.defaultValue = 8
    up.epochs.defaultValue = 5
    spec.description.trainingInput.add().CopyFrom(spec.description.input[0])
    label = spec.description.trainingInput.add()
    label.name = "classLabel"
    label.type.stringType.SetInParent()
    assert not errors(spec), [str(f) for f in check(spec)]
    layer.innerProduct.weights.isUpdatable = False
    assert "weights.updatable" in errors(spec)
    layer.innerProduct.weights.isUpdatable = True
    # put an lrn layer (no back-propagation) between the updatable layer and the softmax
    nn = spec.neuralNetworkClassifier
    fc, softmax = nn.layers[0], nn.layers[1]
    fc_copy, softmax_copy = type(fc)(), type(softmax)()
    fc_copy.CopyFrom(fc)
    softmax_copy.CopyFrom(softmax)
    softmax_copy.input[0] = "normed"
    nn.ClearField("layers")
    nn.layers.add().CopyFrom(fc_copy)
    lrn = nn.layers.add()
    lrn.name = "lrn"
    lrn.input.append("logits")
    lrn.output.append("normed")
    lrn.lrn.alpha, lrn.lrn.beta, lrn.lrn.localSize, lrn.lrn.k = 1e-4, 0.75, 3, 1.0
    nn.layers.add().CopyFrom(softmax_copy)
    assert "nn.updatable-behind-non-backprop" in errors(spec)
    lrn_layer = nn.layers[1]
    lrn_layer.ClearField("lrn")
    lrn_layer.activation.ReLU.SetInParent()
    assert not errors(spec)
    loss.categoricalCrossEntropyLossLayer.target = "truth"
    assert not errors(spec)  # a classifier may train on its predicted feature instead
    label.name = "label"
    assert "nn.training-input" in errors(spec)
    label.name = "classLabel"
    loss.categoricalCrossEntropyLossLayer.target = "classLabel"
    loss.categoricalCrossEntropyLossLayer.input = "logitz"
    assert "nn.update-loss" in errors(spec)


def test_package_manifest_and_missing_weight_file(corpus, tmp_path):
    src = corpus / "generated" / "shared_backbone_classifier.mlpackage"
    if not src.is_dir():
        pytest.skip("no mlpackage in the corpus")
    dst = tmp_path / "m.mlpackage"
    shutil.copytree(src, dst)
    assert not errors(load(dst))
    (dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    found = errors(load(dst))
    assert found and all(r.startswith(("mlprogram.", "package.")) for r in found)
    manifest = dst / "Manifest.json"
    manifest.write_text(manifest.read_text().replace('"1.0.0"', '"2.0.0"'))
    assert "package.manifest-version" in errors(load(dst))


def test_unknown_model_type_number_is_named():
    spec = b.tiny_nn()
    spec.ClearField("neuralNetwork")
    raw = spec.SerializeToString() + bytes([0x82, 0xFA, 0x01, 0x00])  # field 4000, empty bytes
    parsed = Model_pb2.Model()
    parsed.ParseFromString(raw)
    [f] = [f for f in check(parsed) if f.rule == "model.no-type"]
    assert "4000" in f.message


def test_conv_channels_against_model_input():
    assert not errors(b.tiny_conv(c_in=4, groups=2))
    spec = b.tiny_conv(c_in=3)
    spec.description.input[0].type.multiArrayType.shape[0] = 5
    assert "nn.conv-channels" in errors(spec)
    gray = b.tiny_conv(c_in=3, image=True)
    gray.description.input[0].type.imageType.colorSpace = 10
    assert "nn.conv-channels" in errors(gray)


# --------------------------------------------------------------------------- per-layer precision in loops

def _loop_model(mixed_layer: bool):
    """x[4] -> loop (body: ip1 float16, ip2 float32) -> y[3]; with ``mixed_layer``
    ip2 stores float32 weights with a float16 bias."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    b.array_feature(spec.description.input, "x", [4])
    b.array_feature(spec.description.output, "y", [3])
    nn = spec.neuralNetwork
    nn.arrayInputShapeMapping = 1
    loop = nn.layers.add()
    loop.name = "loop"
    loop.loop.maxLoopIterations = 2
    body = loop.loop.bodyNetwork
    b.add_inner_product(body, "ip1", "x", "h", 4, 4)
    b.add_inner_product(body, "ip2", "h", "y", 4, 3)
    ip1 = body.layers[0].innerProduct
    for wp in (ip1.weights, ip1.bias):
        values = np.asarray(wp.floatValue, np.float32)
        wp.Clear()
        wp.float16Value = values.astype("<f2").tobytes()
    if mixed_layer:
        bias = body.layers[1].innerProduct.bias
        values = np.asarray(bias.floatValue, np.float32)
        bias.Clear()
        bias.float16Value = values.astype("<f2").tobytes()
    return spec


def test_precision_mix_is_per_nested_layer():
    """Regression (issue 19): the rule gathered every weight of a loop body as if
    it were the loop layer's own; Apple's validator checks each nested layer."""
    assert "weights.precision-mix" not in errors(_loop_model(mixed_layer=False))
    findings = [f for f in check(_loop_model(mixed_layer=True)) if f.rule == "weights.precision-mix"]
    assert len(findings) == 1 and "'ip2'" in findings[0].message


# --------------------------------------------------------------------------- facts that used to disagree

def test_convolution3d_deconvolution_weight_count():
    """Regression: check counted deconvolution3d weights as outC x inC/groups x k;
    the proto says outC/groups x inC x k (as compress and the runtime read them)."""
    def setup(layer, n):
        c = layer.convolution3d
        c.outputChannels, c.inputChannels, c.nGroups, c.isDeconvolution = 4, 2, 2, True
        c.kernelDepth = c.kernelHeight = c.kernelWidth = 1
        c.weights.floatValue.extend(_floats(n))
    assert "weights.count-mismatch" not in errors(_nn_with(lambda l: setup(l, 4), (1, 2, 3, 3, 3)))
    assert "weights.count-mismatch" in errors(_nn_with(lambda l: setup(l, 8), (1, 2, 3, 3, 3)))


def test_layer_normalization_gamma_and_beta_match_normalized_shape():
    def setup(layer, n):
        ln = layer.layerNormalization
        ln.normalizedShape.append(4)
        ln.eps = 1e-5
        ln.gamma.floatValue.extend(_floats(4))
        ln.beta.floatValue.extend(_floats(n))
    assert not errors(_nn_with(lambda l: setup(l, 4), (2, 4)))
    assert "weights.count-mismatch" in errors(_nn_with(lambda l: setup(l, 3), (2, 4)))


@pytest.mark.parametrize("kind,n_inputs,ok", [
    ("logicalAnd", 2, True), ("logicalAnd", 1, False), ("logicalNot", 2, False),
    ("greaterThan", 1, True), ("greaterThan", 3, False), ("rangeDynamic", 4, False),
])
def test_arity_of_kinds_check_used_to_skip(kind, n_inputs, ok):
    """Regression: LAYER_ARITY lacked loop, loopBreak/Continue, rangeDynamic and the
    comparison and logical kinds."""
    def setup(layer):
        getattr(layer, kind).SetInParent()
        del layer.input[:]
        layer.input.extend(["x"] * n_inputs)
    assert ("nn.layer-arity" not in errors(_nn_with(setup, (4,)))) == ok
