"""Small neural-network specs built in code, for tests, benchmarks and docs images
(tools/ put tests/ on sys.path to import it).

They are real, valid specs (no coremltools needed): a residual network with
repeated bottleneck blocks, and a long synthetic graph of any size.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from specsurgery._proto import FeatureTypes_pb2, Model_pb2

FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32


def _array_feature(desc_list, name: str, shape: Sequence[int]) -> None:
    f = desc_list.add()
    f.name = name
    f.type.multiArrayType.dataType = FLOAT32
    f.type.multiArrayType.shape.extend(int(s) for s in shape)


class NetBuilder:
    """Append layers to a plain ``neuralNetwork`` (or classifier) spec."""

    def __init__(self, inputs: dict, outputs: dict, *, version: int = 4, seed: int = 0,
                 classifier_labels: Optional[Sequence[str]] = None, image_input: Optional[str] = None):
        self.spec = Model_pb2.Model()
        self.spec.specificationVersion = version
        self.rng = np.random.default_rng(seed)
        for name, shape in inputs.items():
            if name == image_input:
                f = self.spec.description.input.add()
                f.name = name
                f.type.imageType.width = int(shape[-1])
                f.type.imageType.height = int(shape[-2])
                f.type.imageType.colorSpace = FeatureTypes_pb2.ImageFeatureType.RGB
            else:
                _array_feature(self.spec.description.input, name, shape)
        if classifier_labels is not None:
            self.nn = self.spec.neuralNetworkClassifier
            self.nn.stringClassLabels.vector.extend(classifier_labels)
            for name, shape in outputs.items():
                _array_feature(self.spec.description.output, name, shape)
            label = self.spec.description.output.add()
            label.name = "classLabel"
            label.type.stringType.SetInParent()
            probs = self.spec.description.output.add()
            probs.name = "classLabel_probs"
            probs.type.dictionaryType.stringKeyType.SetInParent()
            self.spec.description.predictedFeatureName = "classLabel"
            self.spec.description.predictedProbabilitiesName = "classLabel_probs"
        else:
            self.nn = self.spec.neuralNetwork
            for name, shape in outputs.items():
                _array_feature(self.spec.description.output, name, shape)
        self.nn.arrayInputShapeMapping = 1
        self.nn.imageInputShapeMapping = 1
        if image_input is not None:
            p = self.nn.preprocessing.add()
            p.featureName = image_input
            p.scaler.channelScale = 1 / 255.0

    def _layer(self, name, inputs, outputs):
        layer = self.nn.layers.add()
        layer.name = name
        layer.input.extend(inputs if isinstance(inputs, (list, tuple)) else [inputs])
        layer.output.extend(outputs if isinstance(outputs, (list, tuple)) else [outputs])
        return layer

    def _weights(self, n: int):
        return (self.rng.standard_normal(n) * 0.1).astype(np.float32)

    def conv(self, name, x, y, cin, cout, k=3, stride=1, bias=True):
        layer = self._layer(name, x, y)
        c = layer.convolution
        c.outputChannels, c.kernelChannels, c.nGroups = cout, cin, 1
        c.kernelSize.extend([k, k])
        c.stride.extend([stride, stride])
        c.dilationFactor.extend([1, 1])
        c.same.SetInParent()
        c.weights.floatValue.extend(self._weights(cout * cin * k * k))
        if bias:
            c.hasBias = True
            c.bias.floatValue.extend(self._weights(cout))
        return layer

    def batchnorm(self, name, x, y, channels):
        layer = self._layer(name, x, y)
        b = layer.batchnorm
        b.channels, b.epsilon = channels, 1e-5
        b.gamma.floatValue.extend(np.ones(channels, np.float32))
        b.beta.floatValue.extend(self._weights(channels))
        b.mean.floatValue.extend(self._weights(channels))
        b.variance.floatValue.extend(np.ones(channels, np.float32))
        return layer

    def relu(self, name, x, y):
        layer = self._layer(name, x, y)
        layer.activation.ReLU.SetInParent()
        return layer

    def add(self, name, xs, y):
        layer = self._layer(name, list(xs), y)
        layer.add.SetInParent()
        return layer

    def pool(self, name, x, y, global_pool=False, k=2):
        layer = self._layer(name, x, y)
        p = layer.pooling
        p.type = p.AVERAGE if global_pool else p.MAX
        p.globalPooling = global_pool
        if not global_pool:
            p.kernelSize.extend([k, k])
            p.stride.extend([k, k])
        p.valid.SetInParent()
        return layer

    def flatten(self, name, x, y):
        layer = self._layer(name, x, y)
        layer.flattenTo2D.axis = 1
        return layer

    def dense(self, name, x, y, cin, cout):
        layer = self._layer(name, x, y)
        ip = layer.innerProduct
        ip.inputChannels, ip.outputChannels, ip.hasBias = cin, cout, True
        ip.weights.floatValue.extend(self._weights(cin * cout))
        ip.bias.floatValue.extend(self._weights(cout))
        return layer

    def softmax(self, name, x, y):
        layer = self._layer(name, x, y)
        layer.softmaxND.axis = -1
        return layer


def residual_network(blocks: int = 3, channels: int = 8, size: int = 16, *, classes: int = 0,
                     image: bool = False, seed: int = 0) -> "Model_pb2.Model":
    """stem conv -> ``blocks`` bottleneck blocks (conv-bn-relu-conv-bn, add, relu) -> head.

    With ``classes`` it is a ``neuralNetworkClassifier`` (labels c0, c1...);
    ``image`` makes the input a 3-channel image with a scaler.
    """
    labels = [f"c{i}" for i in range(classes)] if classes else None
    out_name = "probs" if classes else "features"
    out_shape = [1, classes] if classes else [1, channels]
    b = NetBuilder({"image": [1, 3, size, size]}, {out_name: out_shape}, seed=seed,
                   classifier_labels=labels, image_input="image" if image else None)
    b.conv("stem_conv", "image", "stem", 3, channels)
    b.relu("stem_relu", "stem", "x0")
    x = "x0"
    for i in range(blocks):
        p = f"block{i}"
        b.conv(f"{p}_conv1", x, f"{p}_c1", channels, channels)
        b.batchnorm(f"{p}_bn1", f"{p}_c1", f"{p}_b1", channels)
        b.relu(f"{p}_relu1", f"{p}_b1", f"{p}_r1")
        b.conv(f"{p}_conv2", f"{p}_r1", f"{p}_c2", channels, channels)
        b.batchnorm(f"{p}_bn2", f"{p}_c2", f"{p}_b2", channels)
        b.add(f"{p}_add", [x, f"{p}_b2"], f"{p}_sum")
        b.relu(f"{p}_relu2", f"{p}_sum", f"x{i + 1}")
        x = f"x{i + 1}"
    b.pool("gap", x, "pooled", global_pool=True)
    b.flatten("flatten", "pooled", "flat")
    if classes:
        b.dense("fc", "flat", "logits", channels, classes)
        b.softmax("softmax", "logits", "probs")
        b.nn.labelProbabilityLayerName = "probs"
    else:
        b.dense("fc", "flat", "features", channels, channels)
    return b.spec


def synthetic_network(n_layers: int = 2000, channels: int = 4, seed: int = 0) -> "Model_pb2.Model":
    """A long network of ``n_layers`` layers: repeated conv/relu/add units with skips."""
    b = NetBuilder({"x": [1, channels, 8, 8]}, {"y": [1, channels, 8, 8]}, seed=seed)
    x = "x"
    count, i = 0, 0
    while count < n_layers:
        left = n_layers - count
        if left >= 3:
            b.conv(f"u{i}_conv", x, f"u{i}_c", channels, channels, k=1)
            b.relu(f"u{i}_relu", f"u{i}_c", f"u{i}_r")
            b.add(f"u{i}_add", [x, f"u{i}_r"], f"u{i}_out")
            x = f"u{i}_out"
            count += 3
        else:
            b.relu(f"u{i}_tail", x, f"u{i}_t")
            x = f"u{i}_t"
            count += 1
        i += 1
    # the last blob is the model output "y"
    last = b.nn.layers[-1]
    last.output[0] = "y"
    return b.spec
