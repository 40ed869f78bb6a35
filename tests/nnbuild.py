"""Tiny Core ML specs built directly with the protobuf classes (no coremltools
builders), for tests anywhere: ``tiny_nn()``, ``tiny_classifier()``,
``tiny_regressor()``, ``tiny_conv()``, ``tiny_pipeline()``, ``tiny_linked()``.

Every builder returns a fresh ``Model_pb2.Model`` that passes ``check`` with
zero errors; tests break one thing and look for the rule id.
"""

from __future__ import annotations

import numpy as np

from specsurgery._proto import FeatureTypes_pb2, Model_pb2

FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE


def array_feature(desc_list, name: str, shape, dtype=FLOAT32):
    f = desc_list.add()
    f.name = name
    f.type.multiArrayType.dataType = dtype
    f.type.multiArrayType.shape.extend(list(shape))
    return f


def image_feature(desc_list, name: str, width=8, height=8, color="RGB"):
    f = desc_list.add()
    f.name = name
    f.type.imageType.width = width
    f.type.imageType.height = height
    f.type.imageType.colorSpace = getattr(FeatureTypes_pb2.ImageFeatureType, color)
    return f


def _values(n, seed):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32).tolist()


def add_inner_product(nn, name, inp, out, n_in, n_out, bias=True, seed=0):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(inp)
    layer.output.append(out)
    ip = layer.innerProduct
    ip.inputChannels = n_in
    ip.outputChannels = n_out
    ip.weights.floatValue.extend(_values(n_in * n_out, seed))
    if bias:
        ip.hasBias = True
        ip.bias.floatValue.extend(_values(n_out, seed + 1))
    return layer


def add_relu(nn, name, inp, out):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(inp)
    layer.output.append(out)
    layer.activation.ReLU.SetInParent()
    return layer


def add_softmax(nn, name, inp, out):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(inp)
    layer.output.append(out)
    layer.softmax.SetInParent()
    return layer


def tiny_nn(n_in=4, n_hidden=3, version=4, input_name="x", output_name="y", seed=0):
    """neuralNetwork: x[n_in] -> innerProduct 'fc' -> h -> ReLU 'relu' -> y[n_hidden]."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    array_feature(spec.description.input, input_name, [n_in])
    array_feature(spec.description.output, output_name, [n_hidden])
    nn = spec.neuralNetwork
    add_inner_product(nn, "fc", input_name, "h", n_in, n_hidden, seed=seed)
    add_relu(nn, "relu", "h", output_name)
    return spec


def tiny_classifier(labels=("cat", "dog", "bird"), n_in=4, version=4):
    """neuralNetworkClassifier: x -> fc -> softmax 'probs' -> classLabel / classLabelProbs."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    array_feature(spec.description.input, "x", [n_in])
    probs = spec.description.output.add()
    probs.name = "classLabelProbs"
    label = spec.description.output.add()
    label.name = "classLabel"
    nn = spec.neuralNetworkClassifier
    if labels and isinstance(labels[0], str):
        probs.type.dictionaryType.stringKeyType.SetInParent()
        label.type.stringType.SetInParent()
        nn.stringClassLabels.vector.extend(labels)
    else:
        probs.type.dictionaryType.int64KeyType.SetInParent()
        label.type.int64Type.SetInParent()
        nn.int64ClassLabels.vector.extend(labels)
    spec.description.predictedFeatureName = "classLabel"
    spec.description.predictedProbabilitiesName = "classLabelProbs"
    add_inner_product(nn, "fc", "x", "logits", n_in, len(labels))
    add_softmax(nn, "softmax", "logits", "probs")
    nn.labelProbabilityLayerName = "probs"
    return spec


def tiny_regressor(n_in=4, version=4):
    """neuralNetworkRegressor: x -> fc -> 'value' (MultiArray[1])."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    array_feature(spec.description.input, "x", [n_in])
    array_feature(spec.description.output, "value", [1])
    spec.description.predictedFeatureName = "value"
    add_inner_product(spec.neuralNetworkRegressor, "fc", "x", "value", n_in, 1)
    return spec


def tiny_conv(c_in=3, c_out=4, size=8, kernel=3, groups=1, version=4, image=False):
    """neuralNetwork: input[c_in,size,size] -> convolution 'conv' (same padding) -> out."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    if image:
        image_feature(spec.description.input, "input", size, size, "RGB" if c_in == 3 else "GRAYSCALE")
    else:
        array_feature(spec.description.input, "input", [c_in, size, size])
    array_feature(spec.description.output, "out", [c_out, size, size])
    layer = spec.neuralNetwork.layers.add()
    layer.name = "conv"
    layer.input.append("input")
    layer.output.append("out")
    conv = layer.convolution
    conv.outputChannels = c_out
    conv.kernelChannels = c_in // groups
    conv.nGroups = groups
    conv.kernelSize.extend([kernel, kernel])
    conv.stride.extend([1, 1])
    conv.dilationFactor.extend([1, 1])
    conv.same.SetInParent()
    conv.weights.floatValue.extend(_values(c_out * (c_in // groups) * kernel * kernel, 3))
    conv.hasBias = True
    conv.bias.floatValue.extend(_values(c_out, 4))
    return spec


def tiny_head(n_in=3, n_out=2, version=4, input_name="y", output_name="z"):
    """neuralNetwork: y[n_in] -> innerProduct 'head_fc' -> z[n_out]."""
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    array_feature(spec.description.input, input_name, [n_in])
    array_feature(spec.description.output, output_name, [n_out])
    add_inner_product(spec.neuralNetwork, "head_fc", input_name, output_name, n_in, n_out, seed=7)
    return spec


def tiny_linked(file_name="Backbone.mlmodelc", search_path=".:$BUNDLE_MAIN", like=None, version=4):
    """linkedModel stub with the interface of ``like`` (default: tiny_nn's x -> y)."""
    like = like if like is not None else tiny_nn()
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    spec.description.input.extend(like.description.input)
    spec.description.output.extend(like.description.output)
    lf = spec.linkedModel.linkedModelFile
    lf.linkedModelFileName.defaultValue = file_name
    lf.linkedModelSearchPath.defaultValue = search_path
    return spec


def tiny_pipeline(stages=None, names=("backbone", "head"), version=4):
    """pipeline: backbone (tiny_nn x -> y) then head (tiny_head y -> z); input x, output z."""
    stages = list(stages) if stages is not None else [tiny_nn(), tiny_head()]
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    produced = set()
    for stage in stages:
        for f in stage.description.input:
            if f.name not in produced and f.name not in {i.name for i in spec.description.input}:
                spec.description.input.add().CopyFrom(f)
        produced.update(f.name for f in stage.description.output)
    spec.description.output.extend(stages[-1].description.output)
    for stage in stages:
        spec.pipeline.models.add().CopyFrom(stage)
    if names:
        spec.pipeline.names.extend(names)
    return spec
