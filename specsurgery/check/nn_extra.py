"""Neural-network rules of Core ML's validator that check/nn.py does not cover:
activation kinds, the array/image shape mappings, and the ranks of model
inputs (``NeuralNetworkValidator.cpp``, ``NeuralNetworkLayerValidator.cpp``,
``NeuralNetworkValidatorUtils.hpp``)."""

from __future__ import annotations

from ..nn.kinds import IOS12_KINDS, KINDS, recurrent_activations, weight_fields
from .findings import Findings, element_prefixes
from .severity import EMPTY_WEIGHTS_OK

def is_ios12_layer(layer) -> bool:
    """Whether Core ML counts ``layer`` as an iOS 12 layer (Utils.cpp
    isIOS12NeuralNetworkLayer), which keeps the legacy rank-5 interpretation
    possible: an iOS 12 kind used without a later feature (weights as a second
    input, int8 weights, linear/fractional upsampling, pixel shuffle: the
    kinds table's version rules)."""
    kind = layer.WhichOneof("layer")
    if kind not in IOS12_KINDS:
        return False
    rule = KINDS[kind].version_rule
    return rule is None or all(version <= 3 for version, _ in rule(layer))


#: Recurrent activations Core ML accepts (validateRecurrentActivationParams).
RECURRENT_ACTIVATIONS = {"linear", "sigmoid", "tanh", "scaledTanh", "sigmoidHard", "ReLU"}

_ACTIVATION_KINDS = frozenset({"activation"} | {k for k, v in KINDS.items() if v.activation_fields})


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
def _empty_weights(wp) -> bool:
    """Core ML's valueType(...) == EMPTY: nothing stored (raw bytes without
    quantization count as nothing)."""
    if len(wp.floatValue) or len(wp.float16Value) or len(wp.int8RawValue):
        return False
    return not (len(wp.rawValue) and wp.HasField("quantization"))


#: Kinds :func:`_layer_params` has a rule for.
PARAM_KINDS = frozenset(REQUIRED_LISTS) | frozenset(POSITIVE) | frozenset(
    k for k, v in KINDS.items() if v.has_weights) | {
    "permute", "reshape", "reorganizeData", "slice", "pooling", "padding", "squeeze", "crop",
    "constantPad", "upsample", "loop", "branch", "loopBreak", "loopContinue"}


def _has_empty_field(p, kind: str) -> bool:
    """A quick look before resolving the weight fields: is any top-level
    WeightParams of this layer empty?"""
    entry = KINDS.get(kind)
    if entry is None or not entry.has_weights:
        return False
    for field in entry.fields:
        if "." in field or "[" in field:
            return True   # nested fields (recurrent kinds): resolve them
        wp = getattr(p, field)
        if not hasattr(wp, "floatValue") or _empty_weights(wp):
            return True   # a repeated field (custom layers): resolve it; or an empty one
    return False


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
    if where not in flagged and kind not in EMPTY_WEIGHTS_OK and _has_empty_field(p, kind):
        # validateGeneralWeightParams rejects an empty field even where the
        # parameters call for no value (check/nn.py reports the other cases)
        for wf in weight_fields(layer):
            if wf.required and wf.count == 0 and _empty_weights(wf.wp):
                out.error(f"{where}.{wf.path}", "weights.empty",
                          f"{kind} layer '{layer.name}' has no {wf.path} values and its parameters "
                          "call for none; Core ML still wants the field filled: fix the sizes")
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
        for i, act in enumerate(recurrent_activations(layer)):  # noqa: B007
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
                  "conv layer with weights as a second input, an int8 inner product, linear or "
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
        entry = KINDS.get(kind)
        bounds = entry.ranks if entry is not None else None
        if bounds is not None:
            bounds = (bounds[0], -1 if bounds[1] is None else bounds[1])
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
