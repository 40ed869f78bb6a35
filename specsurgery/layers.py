"""Per-layer-kind facts, as data.

One table drives inspect, render, check and compress: the category of each
``NeuralNetworkLayer`` kind (for colours and summaries), whether it belongs
to the iOS 12 (spec v3) layer set, and the minimum spec version a kind needs.
Weight fields are found by walking the message (see ``weights``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .weights import layer_weights, stored_bits, storage_kind, weight_count, weight_nbytes

_CATEGORIES = {
    "Layer": "convolution innerProduct embedding embeddingND batchedMatmul convolution3d "
             "simpleRecurrent gru uniDirectionalLSTM biDirectionalLSTM dot custom",
    "Activation": "activation softmax softmaxND gelu clip clampedReLU sign round ceil floor "
                  "exp2 sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh erf unary",
    "Pool": "pooling pooling3d globalPooling3d",
    "Normalization": "batchnorm mvn l2normalize lrn layerNormalization",
    "Shape": "reshape flatten permute reshapeStatic reshapeDynamic reshapeLike rankPreservingReshape "
             "flattenTo2D squeeze expandDims transpose reorganizeData getShape sequenceRepeat",
    "Tensor": "concat split concatND splitND slice sliceStatic sliceDynamic sliceBySize crop padding "
              "constantPad upsample resizeBilinear cropResize tile stack gather scatter gatherND "
              "scatterND gatherAlongAxis scatterAlongAxis reverse reverseSeq slidingWindows topK argMin "
              "argMax argSort cumSum oneHot whereNonZero matrixBandPart lowerTriangular upperTriangular "
              "broadcastToLike broadcastToStatic broadcastToDynamic fillLike fillStatic fillDynamic "
              "rangeStatic rangeDynamic NonMaximumSuppression",
    "Elementwise": "add multiply average scale bias max min addBroadcastable subtractBroadcastable "
                   "multiplyBroadcastable divideBroadcastable floorDivBroadcastable modBroadcastable "
                   "powBroadcastable minBroadcastable maxBroadcastable whereBroadcastable equal notEqual "
                   "lessThan lessEqual greaterThan greaterEqual logicalOr logicalXor logicalNot logicalAnd",
    "Reduce": "reduce reduceL1 reduceL2 reduceMax reduceMin reduceSum reduceProd reduceMean "
              "reduceLogSum reduceSumSquare reduceLogSumExp",
    "Data": "loadConstant loadConstantND randomNormalLike randomNormalStatic randomNormalDynamic "
            "randomUniformLike randomUniformStatic randomUniformDynamic randomBernoulliLike "
            "randomBernoulliStatic randomBernoulliDynamic categoricalDistribution",
    "Control": "copy branch loop loopBreak loopContinue",
}

CATEGORY = {kind: cat for cat, kinds in _CATEGORIES.items() for kind in kinds.split()}

#: Colours per category (fill) used by render.
CATEGORY_COLORS = {
    "Layer": "#cfe2f3", "Activation": "#f4cccc", "Pool": "#d9ead3", "Normalization": "#fff2cc",
    "Shape": "#e6e6e6", "Tensor": "#ead1dc", "Elementwise": "#d0e0e3", "Reduce": "#fce5cd",
    "Data": "#d9d2e9", "Control": "#f9cb9c", "Linked": "#b6d7a8", "Model": "#eeeeee",
}

#: Layer kinds that exist in the iOS 12 (spec v3) set; anything else needs v4 ...
IOS12_LAYERS = frozenset(
    "convolution pooling activation innerProduct embedding batchnorm mvn l2normalize softmax lrn "
    "crop padding upsample resizeBilinear cropResize unary add multiply average scale bias max min "
    "dot reduce loadConstant reshape flatten permute concat split sequenceRepeat reorganizeData "
    "slice simpleRecurrent gru uniDirectionalLSTM biDirectionalLSTM custom".split())

#: ... and these need v5 (iOS 14) regardless of parameters.
IOS14_LAYERS = frozenset(
    "cumSum oneHot clampedReLU argSort pooling3d globalPooling3d sliceBySize convolution3d".split())


def category(kind: str | None) -> str:
    return CATEGORY.get(kind or "", "Layer")


@dataclass
class WeightInfo:
    field: str
    count: int
    nbytes: int
    storage: str
    bits: int | None


def weight_infos(layer) -> list[WeightInfo]:
    return [WeightInfo(path, weight_count(wp), weight_nbytes(wp), storage_kind(wp), stored_bits(wp))
            for path, wp in layer_weights(layer)]


def layer_facts(layer) -> dict:
    """kind, category, parameter count, weight bytes and storage of one layer."""
    kind = layer.WhichOneof("layer")
    infos = weight_infos(layer)
    storages = sorted({w.storage for w in infos if w.storage != "empty"})
    return {
        "name": layer.name,
        "kind": kind,
        "category": category(kind),
        "inputs": list(layer.input),
        "outputs": list(layer.output),
        "parameters": sum(w.count for w in infos),
        "weight_bytes": sum(w.nbytes for w in infos),
        "storage": ",".join(storages) if storages else "",
        "weights": [w.__dict__ for w in infos],
    }
