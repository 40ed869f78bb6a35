"""Small networks with the shapes surgery cares about (skip connections,
both shape mappings, classifier heads, flexible inputs), built with the
protobuf classes.  Used by tests/ops/test_{split,extract,cuts}.py.

``skip_net`` graph (blob names in quotes)::

    "x" -> conv c1 -> "a" -> relu r1 -> "b" -> conv c2 -> "c" -> add(b, c) -> "d"
        -> relu r2 -> "e" -> conv c3 -> "f" -> pool gp (global avg) -> "g"

"b" and "d"/"e"/"f" separate the graph; "c" alone does not (add reads "b").
"""

from __future__ import annotations

import numpy as np

from nnbuild import _values, array_feature, image_feature
from specsurgery._proto import FeatureTypes_pb2, Model_pb2


def _conv(nn, name, inp, out, c_in, c_out, seed):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(inp)
    layer.output.append(out)
    conv = layer.convolution
    conv.outputChannels = c_out
    conv.kernelChannels = c_in
    conv.nGroups = 1
    conv.kernelSize.extend([3, 3])
    conv.stride.extend([1, 1])
    conv.dilationFactor.extend([1, 1])
    conv.same.SetInParent()
    conv.weights.floatValue.extend((np.asarray(_values(c_out * c_in * 9, seed)) * 0.3).tolist())
    conv.hasBias = True
    conv.bias.floatValue.extend(_values(c_out, seed + 1))
    return layer


def _simple(nn, name, ins, out, kind):
    layer = nn.layers.add()
    layer.name = name
    layer.input.extend(ins)
    layer.output.append(out)
    if kind == "relu":
        layer.activation.ReLU.SetInParent()
    elif kind == "add":
        layer.add.SetInParent()
    elif kind == "gap":
        layer.pooling.type = layer.pooling.AVERAGE
        layer.pooling.globalPooling = True
        layer.pooling.valid.SetInParent()
    elif kind == "flatten":
        layer.flatten.SetInParent()
    elif kind == "softmax":
        layer.softmax.SetInParent()
    return layer


def skip_net(*, legacy: bool = False, image: bool = False, classifier: bool = False,
             flexible: str | None = None, size: int = 8, version: int = 4) -> "Model_pb2.Model":
    """The skip-connection network above.

    legacy: rank-5 mappings (input [3,H,W]); else exact rank (input [1,3,H,W]).
    image: an RGB image input with a scaler preprocessing.
    classifier: a neuralNetworkClassifier over 4 labels (softmax of "g").
    flexible: None, "enum" (sizes 8 and 12) or "range" (8..16) on the input.
    """
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    kind = "neuralNetworkClassifier" if classifier else "neuralNetwork"
    nn = getattr(spec, kind)
    if not legacy:
        nn.arrayInputShapeMapping = 1
        nn.imageInputShapeMapping = 1
    if image:
        f = image_feature(spec.description.input, "x", size, size, "RGB")
        pre = nn.preprocessing.add()
        pre.featureName = "x"
        pre.scaler.channelScale = 1 / 255.0
        pre.scaler.redBias, pre.scaler.greenBias, pre.scaler.blueBias = -0.5, -0.4, -0.3
        if flexible == "enum":
            for s in (size, size + 4):
                e = f.type.imageType.enumeratedSizes.sizes.add()
                e.width = e.height = s
        elif flexible == "range":
            r = f.type.imageType.imageSizeRange
            r.widthRange.lowerBound = r.heightRange.lowerBound = size
            r.widthRange.upperBound = r.heightRange.upperBound = size * 2
    else:
        shape = [3, size, size] if legacy else [1, 3, size, size]
        f = array_feature(spec.description.input, "x", shape)
        arr = f.type.multiArrayType
        if flexible == "enum":
            for s in (size, size + 4):
                arr.enumeratedShapes.shapes.add().shape.extend(shape[:-2] + [s, s])
        elif flexible == "range":
            for d in shape[:-2]:
                r = arr.shapeRange.sizeRanges.add()
                r.lowerBound = r.upperBound = d
            for _ in range(2):
                r = arr.shapeRange.sizeRanges.add()
                r.lowerBound, r.upperBound = size, size * 2
    _conv(nn, "c1", "x", "a", 3, 4, 10)
    _simple(nn, "r1", ["a"], "b", "relu")
    _conv(nn, "c2", "b", "c", 4, 4, 20)
    _simple(nn, "add", ["b", "c"], "d", "add")
    _simple(nn, "r2", ["d"], "e", "relu")
    _conv(nn, "c3", "e", "f", 4, 4, 30)
    _simple(nn, "gp", ["f"], "g", "gap")
    if classifier:
        _simple(nn, "sm", ["g"], "probs", "softmax")
        nn.stringClassLabels.vector.extend(["a", "b", "c", "d"])
        nn.labelProbabilityLayerName = "probs"
        p = spec.description.output.add()
        p.name = "labelProbs"
        p.type.dictionaryType.stringKeyType.SetInParent()
        lab = spec.description.output.add()
        lab.name = "label"
        lab.type.stringType.SetInParent()
        spec.description.predictedFeatureName = "label"
        spec.description.predictedProbabilitiesName = "labelProbs"
    else:
        out = spec.description.output.add()
        out.name = "g"
        out.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        if not flexible:
            out.type.multiArrayType.shape.extend([4, 1, 1] if legacy else [1, 4, 1, 1])
    if flexible:
        spec.specificationVersion = max(version, 3)
    return spec


def updatable_net():
    """skip_net made updatable: c3 trains, with a cross-entropy loss on the softmax."""
    spec = skip_net(classifier=True)
    spec.isUpdatable = True
    nn = spec.neuralNetworkClassifier
    for layer in nn.layers:
        if layer.name == "c3":
            layer.isUpdatable = True
            layer.convolution.weights.isUpdatable = True
            layer.convolution.bias.isUpdatable = True
    loss = nn.updateParams.lossLayers.add()
    loss.name = "loss"
    loss.categoricalCrossEntropyLossLayer.input = "probs"
    loss.categoricalCrossEntropyLossLayer.target = "label"
    sgd = nn.updateParams.optimizer.sgdOptimizer
    sgd.learningRate.defaultValue = 0.01
    sgd.miniBatchSize.defaultValue = 1
    nn.updateParams.epochs.defaultValue = 1
    spec.description.trainingInput.add().CopyFrom(spec.description.input[0])
    target = spec.description.trainingInput.add()
    target.name = "label"
    target.type.stringType.SetInParent()
    return spec
