"""NeuralNetwork layer kinds, as data: one entry per member of the
``NeuralNetworkLayer.layer`` oneof.

Every per-kind fact the library needs lives here, once:

- ``inputs`` / ``outputs``: the blob counts Core ML's validator allows,
  ``(min, max)`` with ``max`` None for unbounded.  ``(0, 0)`` means "none";
  Core ML's validator does not enforce a bound of 0 (its ``validateInputCount``
  only checks positive bounds), and neither does ``check``.
- the weight fields and their shape rules (:func:`weight_fields`), as the
  proto comments of NeuralNetwork.proto and Core ML's layer validators define
  them and as the reference runtime reads them: shapes are C-order;
- ``min_spec_version`` plus ``version_rule`` for needs that depend on the
  parameters (``check.versions``);
- ``compress``: ``"any"`` (float16 and n-bit), ``"fp16"`` (float16 only) or
  ``"none"``, with ``compress_reason`` when not ``"any"``;
- ``category`` and ``label`` for inspect and render, and ``params`` (the key
  parameters shown in labels and listings);
- ``updatable`` / ``backprop`` / ``int8_dynamic`` for the updatable-network
  and int8 rules, and ``param_rules`` for per-kind parameter checks.

Adding a layer kind: add one ``_kind(...)`` line below (plus a runtime kernel
in ``runtime/nn`` if it should run); ``tests/nn/test_kinds.py`` fails until
the table covers every oneof member.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Iterable, Optional

from .._proto import NeuralNetwork_pb2
from ..errors import SpecSurgeryError, near_matches
from ..weights import layer_weights, stored_bits, storage_kind, weight_count, weight_nbytes

WeightParams = NeuralNetwork_pb2.WeightParams

# --------------------------------------------------------------------------- records


@dataclass(eq=False)
class WeightField:
    """One weight a layer's parameters call for, resolved against the layer.

    ``channels`` is the scale count Core ML's validator accepts besides 1; the
    scales run along ``channel_axis``.  Use per-channel scales only where
    ``shape[channel_axis] == channels``: a grouped deconvolution is validated
    against outputChannels scales but holds outputChannels / nGroups along its
    axis 1 (coremltools quantizes it along that axis).
    """

    path: str                       # relative to the oneof message, e.g. "weightParams[1].forgetGateBiasVector"
    wp: object                      # the WeightParams message (a detached empty one if the layer lacks it)
    shape: Optional[tuple]          # declared C-order shape, as the runtime reads it; None: not fixed by params
    count: Optional[int]            # expected number of values (prod(shape)); None: not fixed by params
    channels: int = 1               # per-channel count Core ML accepts for linear/LUT scales (1: per tensor)
    channel_axis: int = 0           # axis of ``shape`` the per-channel scales run along
    required: bool = True           # Core ML needs values in it
    main: bool = True               # the layer's big matrix/tensor (False: bias and gate vectors)

    def __repr__(self) -> str:
        return (f"WeightField({self.path!r}, shape={self.shape}, count={self.count}, "
                f"channels={self.channels}, axis={self.channel_axis}, required={self.required}, "
                f"main={self.main})")


Rule = Callable[[object], Iterable[tuple]]


@dataclass(frozen=True)
class LayerKind:
    name: str
    category: str
    label: str
    inputs: tuple
    outputs: tuple
    min_spec_version: int
    compress: str                   # "any" | "fp16" | "none"
    compress_reason: str
    fields: tuple                   # static WeightParams paths the message can hold ("" indices dropped)
    updatable: bool = False         # Core ML trains layers of this kind (isUpdatable)
    backprop: bool = False          # gradients flow through it in an updatable network
    int8_dynamic: bool = False      # has int8DynamicQuantize
    weights: Optional[Callable] = None          # (params, layer) -> list[WeightField]
    dynamic: Optional[Callable] = None          # layer -> reason its weights come from an input, or ""
    version_rule: Optional[Rule] = None         # layer -> [(version, "with ...")] beyond min_spec_version
    param_rules: Optional[Callable] = None      # (layer, input_channels) -> [(field, problem, message)]
    params: Optional[Callable] = None           # params message -> dict of key parameters
    networks: tuple = ()            # (label, field) of the sub-networks a control-flow kind holds
    ranks: Optional[tuple] = None   # (min, max|None) rank of input(0)/output(0), N-d interpretation
    activation_fields: tuple = ()   # fields holding a recurrent kind's ActivationParams

    @property
    def has_weights(self) -> bool:
        return self.weights is not None


# --------------------------------------------------------------------------- shape rules

def _count(shape) -> int:
    return int(prod(shape)) if shape is not None else None


def _wf(p, path, shape, channels=1, axis=0, *, required=True, main=True, wp=None) -> WeightField:
    if wp is None:
        wp = p
        for part in path.split("."):
            wp = getattr(wp, part)
    shape = tuple(int(s) for s in shape) if shape is not None else None
    return WeightField(path, wp, shape, _count(shape), int(channels), axis, required, main)


def _kernel2d(p) -> tuple:
    """Core ML's defaults: a missing kernelSize entry is 3."""
    ks = list(p.kernelSize)
    return (int(ks[0]) if len(ks) > 0 else 3, int(ks[1]) if len(ks) > 1 else 3)


def _w_convolution(p, layer):
    kh, kw = _kernel2d(p)
    o, kc, groups = int(p.outputChannels), int(p.kernelChannels), int(p.nGroups) or 1
    if p.isDeconvolution:   # [kernelChannels, outputChannels / nGroups, kH, kW]
        out = [_wf(p, "weights", (kc, o // groups, kh, kw), o, 1)]
    else:                   # [outputChannels, kernelChannels, kH, kW]
        out = [_wf(p, "weights", (o, kc, kh, kw), o, 0)]
    if p.hasBias:
        out.append(_wf(p, "bias", (o,), main=False))
    return out


def _w_convolution3d(p, layer):
    o, cin, groups = int(p.outputChannels), int(p.inputChannels), int(p.nGroups) or 1
    k = (int(p.kernelDepth), int(p.kernelHeight), int(p.kernelWidth))
    if p.isDeconvolution:   # [outputChannels / nGroups, inputChannels, kD, kH, kW]
        shape = (o // groups, cin) + k
    else:                   # [outputChannels, inputChannels / nGroups, kD, kH, kW]
        shape = (o, cin // groups) + k
    out = [_wf(p, "weights", shape, o, 0)]
    if p.hasBias:
        out.append(_wf(p, "bias", (o,), main=False))
    return out


def _matrix(out_dim, in_dim):
    def rule(p, layer):
        o, i = int(getattr(p, out_dim)), int(getattr(p, in_dim))
        fields = [_wf(p, "weights", (o, i), o, 0)]
        if p.hasBias:
            fields.append(_wf(p, "bias", (o,), main=False))
        return fields
    return rule


# innerProduct: weights [outputChannels, inputChannels].
_w_inner_product = _matrix("outputChannels", "inputChannels")
# batchedMatmul: the proto's logical [X1, X2] matrix is stored column-major,
# i.e. C-order [X2, X1] (= [out, in], like innerProduct); bias [X2].
_w_batched_matmul = _matrix("weightMatrixSecondDimension", "weightMatrixFirstDimension")
# embedding: weights [outputChannels, inputDim]; embeddingND: [embeddingSize, vocabSize].
_w_embedding = _matrix("outputChannels", "inputDim")
_w_embedding_nd = _matrix("embeddingSize", "vocabSize")


def _w_batchnorm(p, layer):
    c = (int(p.channels),)
    names = ("gamma", "beta") if p.computeMeanVar else ("gamma", "beta", "mean", "variance")
    return [_wf(p, n, c) for n in names]


def _lead_channels(shape) -> int:
    """[C, H, W] tensors take C per-channel scales (C > 1); others per tensor."""
    return int(shape[0]) if len(shape) == 3 and shape[0] > 1 else 1


def _w_scale(p, layer):
    shape = tuple(p.shapeScale) or (1,)
    out = [_wf(p, "scale", shape, _lead_channels(shape))]
    if p.hasBias:
        bshape = tuple(p.shapeBias) or (1,)
        out.append(_wf(p, "bias", bshape, _lead_channels(bshape)))
    return out


def _w_bias(p, layer):
    shape = tuple(p.shape) or (1,)
    return [_wf(p, "bias", shape, _lead_channels(shape))]


def _w_load_constant(p, layer):
    shape = tuple(p.shape)
    return [_wf(p, "data", shape, _lead_channels(shape))]


def _w_load_constant_nd(p, layer):
    return [_wf(p, "data", tuple(p.shape))]


def _w_layer_norm(p, layer):
    shape = tuple(p.normalizedShape)
    return [_wf(p, "gamma", shape), _wf(p, "beta", shape)]


def _w_simple_recurrent(p, layer):
    i, o = int(p.inputVectorSize), int(p.outputVectorSize)
    out = [_wf(p, "weightMatrix", (o, i), o), _wf(p, "recursionMatrix", (o, o), o)]
    if p.hasBiasVector:
        out.append(_wf(p, "biasVector", (o,), main=False))
    return out


def _w_gru(p, layer):
    i, o = int(p.inputVectorSize), int(p.outputVectorSize)
    out = []
    for gate in ("update", "reset", "output"):
        out.append(_wf(p, f"{gate}GateWeightMatrix", (o, i), o))
        out.append(_wf(p, f"{gate}GateRecursionMatrix", (o, o), o))
        if p.hasBiasVectors:
            out.append(_wf(p, f"{gate}GateBiasVector", (o,), main=False))
    return out


_LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")
_LSTM_PEEPHOLES = ("inputGate", "forgetGate", "outputGate")


def _lstm_group(prefix, w, params, x, h):
    out = []
    for gate in _LSTM_GATES:
        out.append(_wf(None, f"{prefix}.{gate}WeightMatrix", (h, x), h, wp=getattr(w, f"{gate}WeightMatrix")))
        out.append(_wf(None, f"{prefix}.{gate}RecursionMatrix", (h, h), h,
                       wp=getattr(w, f"{gate}RecursionMatrix")))
    if params.hasBiasVectors:
        for gate in _LSTM_GATES:
            out.append(_wf(None, f"{prefix}.{gate}BiasVector", (h,), main=False,
                           wp=getattr(w, f"{gate}BiasVector")))
    if params.hasPeepholeVectors:
        for gate in _LSTM_PEEPHOLES:
            out.append(_wf(None, f"{prefix}.{gate}PeepholeVector", (h,), main=False,
                           wp=getattr(w, f"{gate}PeepholeVector")))
    return out


def _w_uni_lstm(p, layer):
    return _lstm_group("weightParams", p.weightParams, p.params, int(p.inputVectorSize),
                       int(p.outputVectorSize))


def _w_bi_lstm(p, layer):
    out = []
    for d in range(2):   # forward, backward; a missing group reads as empty weights
        w = p.weightParams[d] if d < len(p.weightParams) else NeuralNetwork_pb2.LSTMWeightParams()
        out += _lstm_group(f"weightParams[{d}]", w, p.params, int(p.inputVectorSize),
                           int(p.outputVectorSize))
    return out


def _w_activation(p, layer):
    # PReLU / parametric softplus parameters: 1 value or one per channel of the
    # input, which the params do not say: no fixed shape.
    which = p.WhichOneof("NonlinearityType")
    if which == "PReLU":
        return [_wf(p, "PReLU.alpha", None)]
    if which == "parametricSoftplus":
        return [_wf(p, "parametricSoftplus.alpha", None), _wf(p, "parametricSoftplus.beta", None)]
    return []


def _w_custom(p, layer):
    # read by the app's own layer class: any number, any shape
    return [_wf(None, f"weights[{i}]", None, required=False, wp=wp) for i, wp in enumerate(p.weights)]


def _dynamic_conv(layer) -> str:
    return "its weights come from the second input" if len(layer.input) > 1 else ""


def _dynamic_matmul(layer) -> str:
    return "its weight matrix comes from the second input" if len(layer.input) > 1 else ""


# --------------------------------------------------------------------------- version rules

def _v_convolution(layer):
    if len(layer.input) > 1:
        yield 4, "with weights as a second input"


def _v_upsample(layer):
    up = layer.upsample
    if up.linearUpsampleMode != 0 or len(up.fractionalScalingFactor):
        yield 5, "with align-corners mode or fractional scaling factors"


def _v_reorganize(layer):
    if layer.reorganizeData.mode == 2:
        yield 5, "in PIXEL_SHUFFLE mode"


def _v_int8(layer):
    if getattr(layer, layer.WhichOneof("layer")).int8DynamicQuantize:
        yield 5, "with int8DynamicQuantize"


def _v_concat_nd(layer):
    if layer.concatND.interleave:
        yield 5, "with interleave"


def _v_slice_dynamic(layer):
    if len(layer.input) == 7 or len(layer.sliceDynamic.squeezeMasks):
        yield 5, "with 7 inputs or squeeze masks"


# --------------------------------------------------------------------------- parameter rules

def _r_convolution(layer, input_channels: dict):
    """Convolution parameters Core ML's validator refuses: (field suffix, problem, message);
    ``check`` names the rule of each problem."""
    p, name, kind = layer.convolution, layer.name, layer.WhichOneof("layer")
    if p.WhichOneof("ConvolutionPaddingType") is None:
        yield "", "conv-no-padding", f"{kind} '{name}' sets no padding type; set valid or same"
    if len(layer.input) > 1 and p.hasBias:
        yield "", "conv-dynamic-bias", (
            f"{kind} '{name}' takes its weights as a second input and cannot also have a static "
            "bias; clear hasBias")
    if p.nGroups > 1 and p.outputChannels % p.nGroups:
        yield "", "conv-groups", (
            f"{kind} '{name}': outputChannels {p.outputChannels} is not divisible by nGroups "
            f"{p.nGroups}")
    src = layer.input[0] if len(layer.input) else None
    if src in input_channels and not p.isDeconvolution and len(layer.input) == 1:
        c, groups = input_channels[src], p.nGroups or 1
        if p.kernelChannels * groups != c:
            yield "", "conv-channels", (
                f"{kind} '{name}' reads model input '{src}' with {c} channels but kernelChannels "
                f"{p.kernelChannels} x nGroups {groups} = {p.kernelChannels * groups}; make "
                f"kernelChannels {c // groups}")


# --------------------------------------------------------------------------- key parameters

def _x(values) -> str:
    return "x".join(str(s) for s in values)


def _p_conv(c) -> dict:
    out = {"out_channels": int(c.outputChannels), "in_channels": int(c.kernelChannels)}
    out["kernel"] = _x(c.kernelSize) if len(c.kernelSize) else "3x3"
    if len(c.stride) and any(s != 1 for s in c.stride):
        out["stride"] = _x(c.stride)
    if c.nGroups > 1:
        out["groups"] = int(c.nGroups)
    if len(c.dilationFactor) and any(d != 1 for d in c.dilationFactor):
        out["dilation"] = _x(c.dilationFactor)
    if c.isDeconvolution:
        out["deconv"] = True
    return out


def _p_pool(p) -> dict:
    names = {0: "max", 1: "avg", 2: "l2"}
    out = {"pool": names.get(p.type, str(p.type))}
    if p.globalPooling:
        out["global"] = True
    else:
        if len(p.kernelSize):
            out["kernel"] = _x(p.kernelSize)
        if len(p.stride) and any(s != 1 for s in p.stride):
            out["stride"] = _x(p.stride)
    return out


def _p_shape(field):
    return lambda m: {"shape": _x(getattr(m, field))}


def _p_rnn(m) -> dict:
    return {"in": int(m.inputVectorSize), "out": int(m.outputVectorSize)}


_PARAMS = {
    "convolution": _p_conv,
    "pooling": _p_pool,
    "activation": lambda a: {"fn": a.WhichOneof("NonlinearityType") or "?"},
    "innerProduct": lambda m: {"out_channels": int(m.outputChannels), "in_channels": int(m.inputChannels)},
    "batchnorm": lambda m: {"channels": int(m.channels)},
    "embedding": lambda m: {"vocab": int(m.inputDim), "out_channels": int(m.outputChannels)},
    "embeddingND": lambda m: {"vocab": int(m.vocabSize), "size": int(m.embeddingSize)},
    "batchedMatmul": lambda m: ({"in": int(m.weightMatrixFirstDimension),
                                 "out": int(m.weightMatrixSecondDimension)}
                                if m.weightMatrixFirstDimension else {}),
    "upsample": lambda m: {"scale": _x(m.scalingFactor or m.fractionalScalingFactor)},
    "reshape": _p_shape("targetShape"),
    "reshapeStatic": _p_shape("targetShape"),
    "permute": lambda m: {"axes": ",".join(str(s) for s in m.axis)},
    "transpose": lambda m: {"axes": ",".join(str(s) for s in m.axes)},
    "concat": lambda m: {"sequence": True} if m.sequenceConcat else {},
    "concatND": lambda m: {"axis": int(m.axis)},
    "softmaxND": lambda m: {"axis": int(m.axis)},
    "unary": lambda m: {"fn": str(m.type)},
    "loadConstant": _p_shape("shape"),
    "loadConstantND": _p_shape("shape"),
    "scale": _p_shape("shapeScale"),
    "bias": _p_shape("shape"),
    "uniDirectionalLSTM": _p_rnn,
    "biDirectionalLSTM": _p_rnn,
    "gru": _p_rnn,
    "convolution3d": lambda m: {"out_channels": int(m.outputChannels), "in_channels": int(m.inputChannels),
                                "kernel": f"{m.kernelDepth}x{m.kernelHeight}x{m.kernelWidth}"},
}


# --------------------------------------------------------------------------- the table

def _groups(table: dict) -> dict:
    return {kind: key for key, kinds in table.items() for kind in kinds.split()}


_CATEGORY = _groups({
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
})

#: (min inputs, max inputs, min outputs, max outputs), as Core ML's layer
#: validators check them (None: unbounded).
_ARITY = _groups({
    (0, 0, 0, 0): "loopBreak loopContinue",
    (0, 0, 1, 1): "fillStatic loadConstant loadConstantND randomBernoulliStatic randomNormalStatic "
                  "randomUniformStatic rangeStatic",
    (0, 1, 0, 0): "loop",
    (0, 3, 1, 1): "rangeDynamic",
    (1, None, 1, None): "custom",
    (1, None, 1, 1): "add average max min multiply",
    (1, 1, 0, 0): "branch",
    (1, 1, 1, 1): "acos acosh activation argMax argMin argSort asin asinh atan atanh batchnorm bias "
                  "broadcastToStatic categoricalDistribution ceil clampedReLU clip convolution3d copy cos "
                  "cosh embedding embeddingND erf exp2 expandDims fillDynamic fillLike flatten flattenTo2D "
                  "floor gelu getShape globalPooling3d innerProduct l2normalize layerNormalization "
                  "logicalNot lowerTriangular lrn matrixBandPart mvn padding permute pooling pooling3d "
                  "randomBernoulliDynamic randomBernoulliLike randomNormalDynamic randomNormalLike "
                  "randomUniformDynamic randomUniformLike rankPreservingReshape reduce reduceL1 reduceL2 "
                  "reduceLogSum reduceLogSumExp reduceMax reduceMean reduceMin reduceProd reduceSum "
                  "reduceSumSquare reorganizeData reshape reshapeStatic resizeBilinear reverse round scale "
                  "sequenceRepeat sign sin sinh slice sliceStatic slidingWindows softmax softmaxND squeeze "
                  "tan tanh transpose unary upperTriangular upsample whereNonZero",
    (1, 1, 2, None): "split splitND",
    (1, 2, 1, 1): "batchedMatmul constantPad convolution crop cumSum oneHot tile "
                  "equal notEqual lessThan lessEqual greaterThan greaterEqual",
    (1, 2, 2, 2): "gru topK",
    (1, 3, 3, 3): "uniDirectionalLSTM",
    (1, 5, 5, 5): "biDirectionalLSTM",
    (2, None, 1, 1): "concat concatND stack",
    (2, 2, 1, 1): "addBroadcastable broadcastToDynamic broadcastToLike cropResize divideBroadcastable dot "
                  "floorDivBroadcastable gather gatherAlongAxis gatherND maxBroadcastable minBroadcastable "
                  "modBroadcastable multiplyBroadcastable powBroadcastable reshapeDynamic reshapeLike "
                  "reverseSeq sliceBySize subtractBroadcastable logicalOr logicalXor logicalAnd",
    (2, 2, 2, 2): "simpleRecurrent",
    (2, 5, 4, 4): "NonMaximumSuppression",
    (2, 7, 1, 1): "sliceDynamic",
    (3, 3, 1, 1): "scatter scatterAlongAxis scatterND whereBroadcastable",
})

#: Minimum specificationVersion of a kind by itself: the iOS 11 set is v1,
#: custom layers v2, resizeBilinear/cropResize v3 (iOS 12), the iOS 14 kinds v5,
#: every other kind (the iOS 13 set) v4.
_VERSION = _groups({
    1: "convolution pooling activation innerProduct embedding batchnorm mvn l2normalize softmax lrn "
       "crop padding upsample unary add multiply average scale bias max min dot reduce loadConstant "
       "reshape flatten permute concat split sequenceRepeat reorganizeData slice simpleRecurrent gru "
       "uniDirectionalLSTM biDirectionalLSTM",
    2: "custom",
    3: "resizeBilinear cropResize",
    5: "cumSum oneHot clampedReLU argSort pooling3d globalPooling3d sliceBySize convolution3d",
})

_WEIGHTS = {
    "convolution": _w_convolution, "convolution3d": _w_convolution3d, "innerProduct": _w_inner_product,
    "batchedMatmul": _w_batched_matmul, "embedding": _w_embedding, "embeddingND": _w_embedding_nd,
    "batchnorm": _w_batchnorm, "scale": _w_scale, "bias": _w_bias, "loadConstant": _w_load_constant,
    "loadConstantND": _w_load_constant_nd, "layerNormalization": _w_layer_norm,
    "simpleRecurrent": _w_simple_recurrent, "gru": _w_gru, "uniDirectionalLSTM": _w_uni_lstm,
    "biDirectionalLSTM": _w_bi_lstm, "activation": _w_activation, "custom": _w_custom,
}

_DYNAMIC = {"convolution": _dynamic_conv, "batchedMatmul": _dynamic_matmul}

_VERSION_RULES = {
    "convolution": _v_convolution, "upsample": _v_upsample, "reorganizeData": _v_reorganize,
    "innerProduct": _v_int8, "batchedMatmul": _v_int8, "concatND": _v_concat_nd,
    "sliceDynamic": _v_slice_dynamic,
}

_PARAM_RULES = {"convolution": _r_convolution}

#: Kinds whose weights compress may store as float16 but not quantize, and kinds
#: it leaves alone, with the reason.
_COMPRESS = {
    "convolution3d": ("fp16", "Core ML's validator rejects quantized convolution3d weights "
                              "(float16 is allowed)"),
    "activation": ("fp16", "PReLU/ParametricSoftplus parameters: float16 only"),
    "layerNormalization": ("none", "Core ML requires float32 gamma and beta in layerNormalization"),
    "custom": ("none", "custom-layer weights are read by the app's own layer code"),
    "loop": ("none", "a loop holds no weights itself; the layers of its condition and body "
                     "networks are compressed one by one"),
    "branch": ("none", "a branch holds no weights itself; the layers of its if and else "
                       "networks are compressed one by one"),
}

#: Control-flow kinds: (label used in nested layer paths, NeuralNetwork field).
_NETWORKS = {"branch": (("if", "ifBranch"), ("else", "elseBranch")),
             "loop": (("cond", "conditionNetwork"), ("body", "bodyNetwork"))}

#: (min, max) rank of input(0) / output(0) in the N-d interpretation, as the
#: layer validators' validateRankCount calls check them (None: unbounded).
_RANKS = {
    "convolution": (4, None), "convolution3d": (5, None), "innerProduct": (1, 5), "batchnorm": (3, None),
    "pooling": (4, None), "pooling3d": (5, None), "globalPooling3d": (5, None), "padding": (2, None),
    "lrn": (3, None), "split": (3, None), "upsample": (3, None), "bias": (3, None),
    "l2normalize": (3, None), "reshape": (5, 5), "flatten": (3, None), "permute": (5, 5),
    "reorganizeData": (3, None), "scale": (3, None), "simpleRecurrent": (5, 5), "gru": (5, 5),
    "uniDirectionalLSTM": (5, 5), "biDirectionalLSTM": (5, 5), "crop": (3, None), "dot": (3, None),
    "mvn": (3, None), "embedding": (4, None), "embeddingND": (2, 5), "sequenceRepeat": (5, None),
    "softmax": (3, None), "resizeBilinear": (3, None), "cropResize": (5, None),
}

#: Recurrent kinds: the fields holding their ActivationParams.
_ACTIVATIONS = {"simpleRecurrent": ("activation",), "gru": ("activations",),
                "uniDirectionalLSTM": ("activations",),
                "biDirectionalLSTM": ("activationsForwardLSTM", "activationsBackwardLSTM")}

_UPDATABLE = frozenset("convolution innerProduct uniDirectionalLSTM".split())
_BACKPROP = frozenset("convolution innerProduct uniDirectionalLSTM flatten pooling batchnorm".split())
_INT8_DYNAMIC = frozenset("innerProduct batchedMatmul".split())


def _is_repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _static_fields(descriptor, prefix: str = "", depth: int = 0) -> list:
    """Every WeightParams path a message type can hold (repeated indices dropped)."""
    out = []
    for f in descriptor.fields:
        if f.message_type is None:
            continue
        if f.message_type is WeightParams.DESCRIPTOR:
            out.append(prefix + f.name)
        elif depth < 3 and f.message_type.name != "NeuralNetwork":
            out += _static_fields(f.message_type, f"{prefix}{f.name}.", depth + 1)
    return out


_ONEOF = NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"]


def _make(field) -> LayerKind:
    name = field.name
    lo_in, hi_in, lo_out, hi_out = _ARITY[name]
    fields = tuple(_static_fields(field.message_type))
    weights = _WEIGHTS.get(name)
    if name in _COMPRESS:
        compress, reason = _COMPRESS[name]
    elif weights is not None:
        compress, reason = "any", ""
    else:
        compress, reason = "none", f"{name} layers have no weights"
    return LayerKind(
        name=name, category=_CATEGORY[name], label=name, inputs=(lo_in, hi_in),
        outputs=(lo_out, hi_out), min_spec_version=_VERSION.get(name, 4), compress=compress,
        compress_reason=reason, fields=fields, updatable=name in _UPDATABLE,
        backprop=name in _BACKPROP, int8_dynamic=name in _INT8_DYNAMIC, weights=weights,
        dynamic=_DYNAMIC.get(name), version_rule=_VERSION_RULES.get(name),
        param_rules=_PARAM_RULES.get(name), params=_PARAMS.get(name), networks=_NETWORKS.get(name, ()),
        ranks=_RANKS.get(name), activation_fields=_ACTIVATIONS.get(name, ()))


#: kind name -> LayerKind, in the proto's field order.
KINDS: dict = {f.name: _make(f) for f in _ONEOF.fields}

#: Kinds of the iOS 12 (spec v3) set, which the legacy rank-5 shape mapping can run.
IOS12_KINDS = frozenset(k for k, v in KINDS.items() if v.min_spec_version <= 3)


# --------------------------------------------------------------------------- lookups

def kind_of(layer) -> LayerKind:
    """The table entry of a NeuralNetworkLayer (or of a kind name)."""
    name = layer if isinstance(layer, str) else layer.WhichOneof("layer")
    entry = KINDS.get(name)
    if entry is None:
        if name is None:
            raise SpecSurgeryError(f"layer {getattr(layer, 'name', '')!r} has no layer type set; "
                                   "set one member of NeuralNetworkLayer.layer")
        close = near_matches(name, KINDS, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise SpecSurgeryError(f"unknown NeuralNetwork layer kind {name!r}{hint}; known kinds are "
                               "the members of NeuralNetworkLayer.layer (specsurgery.nn.KINDS)")
    return entry


def dynamic_weights(layer) -> str:
    """Why this layer's weights come from an input blob instead of the spec, or ""."""
    entry = KINDS.get(layer.WhichOneof("layer"))
    return entry.dynamic(layer) if entry is not None and entry.dynamic is not None else ""


def weight_fields(layer) -> list:
    """The weights this layer's parameters call for, resolved (see :class:`WeightField`).

    Empty for kinds without weights, and for layers whose weights come from a
    second input (:func:`dynamic_weights`).
    """
    kind = layer.WhichOneof("layer")
    entry = KINDS.get(kind)
    if entry is None or entry.weights is None or dynamic_weights(layer):
        return []
    return entry.weights(getattr(layer, kind), layer)


def sub_networks(layer) -> list:
    """[(label, NeuralNetwork)] a branch or loop layer holds ([] for other kinds)."""
    entry = KINDS.get(layer.WhichOneof("layer"))
    if entry is None or not entry.networks:
        return []
    msg = getattr(layer, entry.name)
    return [(label, getattr(msg, field)) for label, field in entry.networks]


def iter_layers(nn, prefix: str = ""):
    """(path, layer) of every layer of ``nn``, the layers of branch and loop
    networks included, right after their container; nested paths read
    ``<container>.<if|else|cond|body>/<name>``."""
    for layer in nn.layers:
        yield prefix + layer.name, layer
        for label, sub in sub_networks(layer):
            yield from iter_layers(sub, f"{prefix}{layer.name}.{label}/")


def recurrent_activations(layer) -> list:
    """The ActivationParams of a recurrent layer, in field order ([] for other kinds)."""
    entry = KINDS.get(layer.WhichOneof("layer"))
    if entry is None or not entry.activation_fields:
        return []
    msg = getattr(layer, entry.name)
    out = []
    for field in entry.activation_fields:
        value = getattr(msg, field)
        out += list(value) if hasattr(value, "extend") else [value]
    return out


def own_weights(layer) -> list:
    """(path, WeightParams) of the weights stored in the layer's own message.

    Like :func:`specsurgery.weights.layer_weights`, except that a ``loop`` or
    ``branch`` has none of its own: the layers of its sub-networks are layers
    in their own right and hold their weights themselves.
    """
    entry = KINDS.get(layer.WhichOneof("layer"))
    if entry is None or not entry.fields:
        return []
    return layer_weights(layer)


def key_params(layer) -> dict:
    """Kernel, stride, channels... of a layer, for labels and listings ({} if none)."""
    kind = layer.WhichOneof("layer")
    entry = KINDS.get(kind)
    if entry is None or entry.params is None:
        return {}
    try:
        return entry.params(getattr(layer, kind))
    except (AttributeError, TypeError, ValueError):  # older/odd messages: labels only
        return {}


def version_needs(layer) -> list:
    """[(version, qualifier)] this layer needs by its kind and parameters; the
    qualifier is "" for the kind itself, e.g. "with int8DynamicQuantize"."""
    entry = KINDS.get(layer.WhichOneof("layer"))
    if entry is None:
        return []
    out = [(entry.min_spec_version, "")] if entry.min_spec_version > 1 else []
    if entry.version_rule is not None:
        out += list(entry.version_rule(layer))
    return out


def category(kind: Optional[str]) -> str:
    entry = KINDS.get(kind or "")
    return entry.category if entry is not None else "Layer"


def kinds_where(flag: str) -> list:
    """Names of the kinds whose boolean ``flag`` (updatable, backprop, int8_dynamic) is set."""
    return [k for k, v in KINDS.items() if getattr(v, flag)]


# --------------------------------------------------------------------------- facts of one layer

@dataclass
class WeightInfo:
    field: str
    count: int
    nbytes: int
    storage: str
    bits: Optional[int]


def weight_infos(layer) -> list:
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


__all__ = ["KINDS", "LayerKind", "WeightField", "IOS12_KINDS", "kind_of", "weight_fields",
           "dynamic_weights", "own_weights", "sub_networks", "iter_layers", "recurrent_activations", "key_params", "version_needs", "category", "kinds_where",
           "layer_facts", "weight_infos", "WeightInfo"]
