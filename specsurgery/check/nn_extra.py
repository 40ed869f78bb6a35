"""Neural-network rules of Core ML's validator that check/nn.py does not cover:
activation kinds, the array/image shape mappings, and the ranks of model
inputs (``NeuralNetworkValidator.cpp``, ``NeuralNetworkLayerValidator.cpp``,
``NeuralNetworkValidatorUtils.hpp``)."""

from __future__ import annotations

from .findings import Findings, element_prefixes

#: Layer kinds of iOS 12 (Utils.cpp isIOS12NeuralNetworkLayer); some need more
#: than the kind, see :func:`is_ios12_layer`.
IOS12_LAYERS = {
    "convolution", "innerProduct", "batchnorm", "activation", "pooling", "padding", "concat", "lrn",
    "softmax", "split", "add", "multiply", "unary", "upsample", "bias", "l2normalize", "reshape",
    "flatten", "permute", "reduce", "loadConstant", "scale", "simpleRecurrent", "gru",
    "uniDirectionalLSTM", "biDirectionalLSTM", "crop", "average", "max", "min", "dot", "mvn",
    "embedding", "sequenceRepeat", "reorganizeData", "slice", "custom", "resizeBilinear", "cropResize",
}
PIXEL_SHUFFLE = 2  # ReorganizeDataLayerParams.ReorganizationType


def is_ios12_layer(layer) -> bool:
    """Whether Core ML counts ``layer`` as an iOS 12 layer (which keeps the
    legacy rank-5 interpretation possible)."""
    kind = layer.WhichOneof("layer")
    if kind not in IOS12_LAYERS:
        return False
    if kind == "convolution":
        return len(layer.input) == 1
    if kind == "innerProduct":
        return not layer.innerProduct.int8DynamicQuantize
    if kind == "upsample":
        return layer.upsample.linearUpsampleMode == 0 and not len(layer.upsample.fractionalScalingFactor)
    if kind == "reorganizeData":
        return layer.reorganizeData.mode != PIXEL_SHUFFLE
    return True

#: Recurrent activations Core ML accepts (validateRecurrentActivationParams).
RECURRENT_ACTIVATIONS = {"linear", "sigmoid", "tanh", "scaledTanh", "sigmoidHard", "ReLU"}

#: (min, max) rank of input(0) / output(0) per layer kind in the N-d
#: interpretation (validateRankCount calls; max -1 = unbounded).
LAYER_RANKS = {
    "convolution": (4, -1), "convolution3d": (5, -1), "innerProduct": (1, 5), "batchnorm": (3, -1),
    "pooling": (4, -1), "pooling3d": (5, -1), "globalPooling3d": (5, -1), "padding": (2, -1),
    "lrn": (3, -1), "split": (3, -1), "upsample": (3, -1), "bias": (3, -1), "l2normalize": (3, -1),
    "reshape": (5, 5), "flatten": (3, -1), "permute": (5, 5), "reorganizeData": (3, -1),
    "scale": (3, -1), "simpleRecurrent": (5, 5), "gru": (5, 5), "uniDirectionalLSTM": (5, 5),
    "biDirectionalLSTM": (5, 5), "crop": (3, -1), "dot": (3, -1), "mvn": (3, -1),
    "embedding": (4, -1), "embeddingND": (2, 5), "sequenceRepeat": (5, -1), "softmax": (3, -1),
    "resizeBilinear": (3, -1), "cropResize": (5, -1),
}


_ACTIVATION_KINDS = frozenset({"activation", "simpleRecurrent", "gru", "uniDirectionalLSTM",
                               "biDirectionalLSTM"})


def _recurrent_activations(layer):
    kind = layer.WhichOneof("layer")
    if kind == "simpleRecurrent":
        return [layer.simpleRecurrent.activation]
    if kind == "gru":
        return list(layer.gru.activations)
    if kind == "uniDirectionalLSTM":
        return list(layer.uniDirectionalLSTM.activations)
    if kind == "biDirectionalLSTM":
        return list(layer.biDirectionalLSTM.activationsForwardLSTM) + \
            list(layer.biDirectionalLSTM.activationsBackwardLSTM)
    return []


def _layers(nn):
    """Every layer, descending into branch and loop bodies."""
    stack = list(nn.layers)
    while stack:
        layer = stack.pop(0)
        yield layer
        kind = layer.WhichOneof("layer")
        if kind == "branch":
            stack.extend(layer.branch.ifBranch.layers)
            stack.extend(layer.branch.elseBranch.layers)
        elif kind == "loop":
            stack.extend(layer.loop.conditionNetwork.layers)
            stack.extend(layer.loop.bodyNetwork.layers)


#: Repeated parameters a layer kind cannot leave empty ("... are required parameters").
REQUIRED_LISTS = {
    "reshapeStatic": ("targetShape",), "rankPreservingReshape": ("targetShape",),
    "fillStatic": ("targetShape",), "broadcastToStatic": ("targetShape",),
    "randomNormalStatic": ("outputShape",), "randomUniformStatic": ("outputShape",),
    "randomBernoulliStatic": ("outputShape",), "loadConstantND": ("shape",),
    "sliceStatic": ("beginIds", "endIds", "strides", "beginMasks", "endMasks"),
    "transpose": ("axes",), "expandDims": ("axes",),
}
#: Integer parameters that must be positive (validatePositive).
POSITIVE = {
    "convolution3d": ("inputChannels", "outputChannels", "nGroups", "kernelDepth", "kernelHeight",
                      "kernelWidth", "strideDepth", "strideHeight", "strideWidth", "dilationDepth",
                      "dilationHeight", "dilationWidth"),
    "pooling3d": ("kernelDepth", "kernelHeight", "kernelWidth", "strideDepth", "strideHeight",
                  "strideWidth"),
}
#: Weight fields that validateGeneralWeightParams rejects when empty, whatever
#: their expected size ((field, only-if-flag)).
GENERAL_WEIGHTS = {
    "embedding": (("weights", None), ("bias", "hasBias")),
    "embeddingND": (("weights", None), ("bias", "hasBias")),
    "batchnorm": (("gamma", None), ("beta", None), ("mean", "!computeMeanVar"),
                  ("variance", "!computeMeanVar")),
    "bias": (("bias", None),), "scale": (("scale", None), ("bias", "hasBias")),
    "loadConstant": (("data", None),), "loadConstantND": (("data", None),),
}


def _empty_weights(wp) -> bool:
    """Core ML's valueType(...) == EMPTY: nothing stored (raw bytes without
    quantization count as nothing)."""
    if len(wp.floatValue) or len(wp.float16Value) or len(wp.int8RawValue):
        return False
    return not (len(wp.rawValue) and wp.HasField("quantization"))


#: Kinds :func:`_layer_params` has a rule for.
PARAM_KINDS = frozenset(REQUIRED_LISTS) | frozenset(POSITIVE) | frozenset(GENERAL_WEIGHTS) | {
    "permute", "reshape", "reorganizeData", "slice", "pooling", "padding", "squeeze", "crop",
    "constantPad", "upsample", "loop", "branch", "loopBreak", "loopContinue"}


def _layer_params(layer, where: str, kind: str, out: Findings, in_loop: bool, flagged: set) -> None:
    if kind not in PARAM_KINDS:
        return
    p = getattr(layer, kind)
    for field in REQUIRED_LISTS.get(kind, ()):
        if not len(getattr(p, field)):
            out.error(where, "nn.layer-param", f"{kind} layer '{layer.name}' has no {field}; it is a "
                      "required parameter")
            break
    for field in POSITIVE.get(kind, ()):
        if getattr(p, field) <= 0:
            out.error(where, "nn.layer-param", f"{kind} layer '{layer.name}' {field} is "
                      f"{getattr(p, field)}; it must be positive")
            break
    if where not in flagged:
        for field, flag in GENERAL_WEIGHTS.get(kind, ()):
            if flag is not None and (not getattr(p, flag.lstrip("!")) if not flag.startswith("!")
                                     else getattr(p, flag[1:])):
                continue
            if _empty_weights(getattr(p, field)):
                out.error(f"{where}.{field}", "weights.empty",
                          f"{kind} layer '{layer.name}' has no {field} values; fill them")
                break
    if kind == "permute" and len(p.axis) != 4:
        out.error(where, "nn.layer-param",
                  f"permute layer '{layer.name}' has {len(p.axis)} axis values; it takes exactly 4 "
                  "(a permutation of 0..3)")
    elif kind == "reshape" and len(p.targetShape) not in (3, 4):
        out.error(where, "nn.layer-param",
                  f"reshape layer '{layer.name}' targetShape has {len(p.targetShape)} values; it "
                  "takes 3 (C,H,W) or 4 (Seq,C,H,W) (use reshapeStatic for N-d)")
    elif kind == "reorganizeData" and p.blockSize < 2:
        out.error(where, "nn.layer-param", f"reorganizeData layer '{layer.name}' blockSize is "
                  f"{p.blockSize}; it must be at least 2")
    elif kind == "slice" and p.stride < 1:
        out.error(where, "nn.layer-param", f"slice layer '{layer.name}' stride is {p.stride}; it "
                  "must be at least 1")
    elif kind == "pooling" and p.WhichOneof("PoolingPaddingType") is None:
        out.error(where, "nn.layer-param", f"pooling layer '{layer.name}' has no padding type; set "
                  "valid, same or includeLastPixel")
    elif kind == "padding" and p.WhichOneof("PaddingType") is None:
        out.error(where, "nn.layer-param", f"padding layer '{layer.name}' has no padding type; set "
                  "constant, reflection or replication")
    elif kind == "squeeze" and not p.squeezeAll and not len(p.axes):
        out.error(where, "nn.layer-param", f"squeeze layer '{layer.name}' has no axes; give axes or "
                  "set squeezeAll")
    elif kind == "crop" and len(layer.input) == 1 and len(p.cropAmounts.borderAmounts) != 2:
        out.error(where, "nn.layer-param", f"crop layer '{layer.name}' with one input needs two "
                  f"cropAmounts (for Y and X), not {len(p.cropAmounts.borderAmounts)}")
    elif kind == "constantPad" and len(layer.input) == 1 and (not len(p.padAmounts) or len(p.padAmounts) % 2):
        out.error(where, "nn.layer-param", f"constantPad layer '{layer.name}' with one input needs "
                  f"an even, non-zero number of padAmounts (has {len(p.padAmounts)})")
    elif kind == "upsample":
        sf, fsf = len(p.scalingFactor), len(p.fractionalScalingFactor)
        if not ((sf == 0 and fsf in (0, 2)) or (fsf == 0 and sf == 2)):
            out.error(where, "nn.layer-param", f"upsample layer '{layer.name}' has {sf} scalingFactor "
                      f"and {fsf} fractionalScalingFactor values; set one of them, with 2 values")
    elif kind == "loop" and not len(p.bodyNetwork.layers):
        out.error(where, "nn.layer-param", f"loop layer '{layer.name}' has an empty bodyNetwork")
    elif kind == "branch" and not len(p.ifBranch.layers):
        out.error(where, "nn.layer-param", f"branch layer '{layer.name}' has an empty ifBranch")
    elif kind in ("loopBreak", "loopContinue") and not in_loop:
        out.error(where, "nn.layer-param", f"{kind} layer '{layer.name}' is not inside the "
                  "bodyNetwork of a loop layer")


def _walk_depth(layers, in_loop=False):
    for layer in layers:
        yield layer, in_loop
        kind = layer.WhichOneof("layer")
        if kind == "branch":
            yield from _walk_depth(layer.branch.ifBranch.layers, in_loop)
            yield from _walk_depth(layer.branch.elseBranch.layers, in_loop)
        elif kind == "loop":
            yield from _walk_depth(layer.loop.conditionNetwork.layers, in_loop)
            yield from _walk_depth(layer.loop.bodyNetwork.layers, True)


def check_activations(nn, out: Findings) -> None:
    """Activation kinds, and the layer parameters above (NeuralNetworkLayerValidator.cpp)."""
    flagged = {e for f in out if f.rule == "weights.empty" for e in element_prefixes(f.path)}
    for layer, in_loop in _walk_depth(nn.layers):
        kind = layer.WhichOneof("layer")
        if kind not in PARAM_KINDS and kind not in _ACTIVATION_KINDS:
            continue
        where = f"layer:{layer.name}"
        _layer_params(layer, where, kind, out, in_loop, flagged)
        if kind == "activation" and \
                layer.activation.WhichOneof("NonlinearityType") is None:
            out.error(where, "nn.activation-type",
                      f"activation layer '{layer.name}' has no nonlinearity set; set one of ReLU, "
                      "leakyReLU, tanh, sigmoid, linear, ...")
        for i, act in enumerate(_recurrent_activations(layer)):  # noqa: B007
            which = act.WhichOneof("NonlinearityType")
            if which not in RECURRENT_ACTIVATIONS:
                out.error(where, "nn.activation-type",
                          f"recurrent layer '{layer.name}' activation {i} is {which or 'unset'}; "
                          "recurrent activations must be " + ", ".join(sorted(RECURRENT_ACTIVATIONS)))


def check_input_ranks(spec, nn, out: Findings) -> None:
    """Ranks of multiarray inputs in the N-d interpretation, and ranks of model
    inputs/outputs against the layers that read/write them directly."""
    desc = spec.description
    arrays = [f for f in desc.input if f.type.WhichOneof("Type") == "multiArrayType"]
    layers = list(nn.layers)
    new_layer = any(not is_ios12_layer(l) for l in layers)
    array_map, image_map = nn.arrayInputShapeMapping, nn.imageInputShapeMapping
    if arrays and array_map == 0 and new_layer and not any(f.rule == "nn.shape-mapping" for f in out):
        late = [l.name for l in layers if not is_ios12_layer(l)]
        out.error("arrayInputShapeMapping", "nn.shape-mapping",
                  f"layer(s) {', '.join(repr(n) for n in late[:5])} are not iOS 12 layers (a "
                  "convolution with weights as a second input, an int8 innerProduct, linear or "
                  "fractional upsampling, pixel shuffle, or a newer kind), so multiarray inputs "
                  "need arrayInputShapeMapping EXACT_ARRAY_MAPPING, not RANK5_ARRAY_MAPPING")
    if arrays and array_map == 0 and image_map not in (0, 1):
        out.error("imageInputShapeMapping", "nn.shape-mapping",
                  f"imageInputShapeMapping {image_map} is not RANK5_IMAGE_MAPPING, which cannot be "
                  "combined with RANK5_ARRAY_MAPPING when the model has multiarray inputs; set "
                  "arrayInputShapeMapping to EXACT_ARRAY_MAPPING")
    nd = new_layer or array_map != 0 or image_map != 0
    if not nd:
        return  # the legacy rank-5 path: check/nn.py's nn.legacy-rank
    ranks = {}
    for f in desc.input:
        t = f.type.WhichOneof("Type")
        if t == "multiArrayType":
            arr = f.type.multiArrayType
            rank = len(arr.shape)
            if rank == 0:
                out.error(f"input:{f.name}", "nn.input-rank",
                          f"input '{f.name}' has no default shape; a neural network with N-d "
                          "array interpretation needs at least one dimension (set "
                          "multiArrayType.shape, even with flexible shapes)")
            elif arr.WhichOneof("ShapeFlexibility") == "shapeRange" and \
                    len(arr.shapeRange.sizeRanges) != rank:
                out.error(f"input:{f.name}", "nn.input-rank",
                          f"input '{f.name}' has a rank-{rank} default shape but a "
                          f"{len(arr.shapeRange.sizeRanges)}-d shape range; give one range per dimension")
            ranks[f.name] = 5 if array_map == 0 else rank
        elif t == "imageType":
            ranks[f.name] = 5 if image_map == 0 else 4
    for f in desc.output:
        if f.type.WhichOneof("Type") == "multiArrayType" and len(f.type.multiArrayType.shape):
            ranks.setdefault(f.name, len(f.type.multiArrayType.shape))
    for layer in layers:  # rank hints of layers against the model's own inputs/outputs
        for field, blobs in (("inputTensor", layer.input), ("outputTensor", layer.output)):
            hints = getattr(layer, field)
            for blob, hint in zip(blobs, hints):
                if blob in ranks and hint.rank != ranks[blob]:
                    out.error(f"layer:{layer.name}", "nn.tensor-hint",
                              f"layer '{layer.name}' {field} says model {'input' if field == 'inputTensor' else 'output'} "
                              f"'{blob}' has rank {hint.rank}, but the model description gives it "
                              f"rank {ranks[blob]}; make them agree")
    for layer in layers:
        kind = layer.WhichOneof("layer")
        bounds = LAYER_RANKS.get(kind)
        if kind == "concat":
            bounds = (5, -1) if layer.concat.sequenceConcat else (3, -1)
        elif kind == "activation" and layer.activation.WhichOneof("NonlinearityType") in \
                ("PReLU", "parametricSoftplus"):
            bounds = (3, -1)
        if bounds is None:
            continue
        lo, hi = bounds
        for role, blobs in (("input", layer.input), ("output", layer.output)):
            if not len(blobs) or blobs[0] not in ranks:
                continue
            rank = ranks[blobs[0]]
            bad = (hi > 0 and lo == hi and rank != hi) or (lo > 0 and rank < lo) or (hi > 0 and rank > hi)
            if bad:
                need = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi < 0 else f"{lo} to {hi}"
                out.error(f"layer:{layer.name}", "nn.input-rank",
                          f"layer '{layer.name}' ({kind}) {'reads' if role == 'input' else 'writes'} "
                          f"model {role} '{blobs[0]}' of rank {rank} but takes rank {need}; "
                          "reshape the feature (or, for a legacy model, keep RANK5 shape mappings)")
                break
