"""Neural-network rules: graph (order, blobs, outputs), weights, preprocessing,
shape mappings and updatable networks (format notes §5, §5.1)."""

from __future__ import annotations

from ..errors import near_matches
from ..nn.kinds import IOS12_KINDS, KINDS, iter_layers, kinds_where, own_weights, weight_fields
from ..weights import storage_kind
from .findings import Findings

COPY_KINDS = ("copy",)
FLOAT16, INT8 = 65552, 131080


def _names(kinds, last: str = "and") -> str:
    """'a, b and c' of a list of kind names."""
    kinds = list(kinds)
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + f" {last} " + kinds[-1]


def _arity_problem(count: int, lo: int, hi, what: str) -> str:
    """Core ML's validateInputCount/validateOutputCount: a bound of 0 is not
    enforced, ``hi`` None is unbounded."""
    if hi and hi == lo and count != hi:
        return f"has {count} {what} but takes exactly {lo}"
    if lo > 0 and count < lo:
        return f"has {count} {what} but takes at least {lo}"
    if hi and count > hi:
        return f"has {count} {what} but takes at most {hi}"
    return ""


def check_arity(nn, out: Findings) -> None:
    for index, layer in enumerate(_all_layers(nn)):
        kind = layer.WhichOneof("layer")
        entry = KINDS.get(kind)
        if entry is None:
            continue
        problems = [p for p in (_arity_problem(len(layer.input), *entry.inputs, "inputs"),
                                _arity_problem(len(layer.output), *entry.outputs, "outputs")) if p]
        if problems:
            out.error(f"layer:{layer.name or index}", "nn.layer-arity",
                      f"{kind} layer '{layer.name}' " + " and ".join(problems))


def _hint(name, known) -> str:
    close = near_matches(name, known, n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


# --------------------------------------------------------------------------- graph

def _walk(nn, available: set, produced: dict, out: Findings, scope: str) -> None:
    """Check blob order inside one network; ``available`` grows as layers run.

    ``produced`` maps blob -> first producing layer over the whole model
    (sub-networks included) and is filled before the walk.
    """
    seen_layers = set()
    for index, layer in enumerate(nn.layers):
        name = layer.name
        where = f"layer:{scope}{name or index}"
        kind = layer.WhichOneof("layer")
        if not name:
            out.error(where, "nn.layer-no-name", f"layer #{index} has no name; every layer needs one")
        elif name in seen_layers:
            out.warning(where, "nn.duplicate-layer-name",
                        f"layer name '{name}' is used by more than one layer; Core ML accepts it, but "
                        "tools, renders and error messages refer to layers by name: make it unique")
        seen_layers.add(name)
        if kind is None:
            out.error(where, "nn.layer-no-type", f"layer '{name}' has no layer type set")
        undefined, later = [], []
        for blob in layer.input:
            if blob in available:
                continue
            if blob in produced:
                later.append(blob)
            else:
                undefined.append(blob)
        if undefined:
            known = sorted(available)
            out.error(where, "nn.undefined-blob",
                      f"layer '{name}' consumes " + ", ".join(f"'{b}'{_hint(b, known)}" for b in undefined)
                      + " which no model input or earlier layer produces; rewire the layer or add "
                      "the missing input")
        if later:
            out.error(where, "nn.not-topological",
                      f"layer '{name}' consumes " + ", ".join(
                          f"'{b}' (produced later by layer '{produced[b]}')" for b in later)
                      + "; layers must be listed in topological order")
        if kind == "branch":
            _walk(layer.branch.ifBranch, set(available), produced, out, f"{scope}{name}.if/")
            _walk(layer.branch.elseBranch, set(available), produced, out, f"{scope}{name}.else/")
            for sub in (layer.branch.ifBranch, layer.branch.elseBranch):
                available.update(_all_outputs(sub))
        elif kind == "loop":
            _walk(layer.loop.conditionNetwork, set(available), produced, out, f"{scope}{name}.cond/")
            inner = set(available) | set(_all_outputs(layer.loop.conditionNetwork))
            _walk(layer.loop.bodyNetwork, inner, produced, out, f"{scope}{name}.body/")
            for sub in (layer.loop.conditionNetwork, layer.loop.bodyNetwork):
                available.update(_all_outputs(sub))
        for blob in layer.output:
            if blob in available and kind not in COPY_KINDS:
                out.error(where, "nn.duplicate-output",
                          f"layer '{name}' produces '{blob}', which a model input or an earlier layer "
                          "already produces; a blob may be produced once (only copy layers may "
                          "re-produce); rename the output")
            available.add(blob)


def _all_layers(nn):
    """Every layer, those of branch and loop networks included."""
    return (layer for _, layer in iter_layers(nn))


def _all_outputs(nn):
    for layer in _all_layers(nn):
        yield from layer.output


def _find_cycles(nn, inputs: set) -> list[list[str]]:
    """Top-level layer cycles (Kahn's algorithm; what is left sits on a cycle)."""
    layers = list(nn.layers)
    producer = {}
    for i, layer in enumerate(layers):
        for blob in layer.output:
            producer.setdefault(blob, i)
    deps = {i: set() for i in range(len(layers))}
    users = {i: set() for i in range(len(layers))}
    for i, layer in enumerate(layers):
        for blob in layer.input:
            j = producer.get(blob)
            if j is not None and blob not in inputs and j != i:
                deps[i].add(j)
                users[j].add(i)
            elif j == i and blob not in inputs:
                deps[i].add(i)
    ready = [i for i, d in deps.items() if not d]
    done = set()
    while ready:
        i = ready.pop()
        done.add(i)
        for u in users[i]:
            deps[u].discard(i)
            if not deps[u] and u not in done:
                ready.append(u)
    left = [i for i in range(len(layers)) if i not in done]
    return [[layers[i].name for i in left]] if left else []


def check_graph(spec, kind: str, nn, out: Findings) -> None:
    desc = spec.description
    inputs = [f.name for f in desc.input] + [f.name for f in desc.state]
    if len(nn.layers) == 0:
        out.error("layers", "nn.no-layers", "the neural network has no layers; add at least one")
    for f in desc.input:
        t = f.type.WhichOneof("Type")
        if t not in ("imageType", "multiArrayType", "stateType", None):
            out.error(f"input:{f.name}", "nn.bad-input-type",
                      f"input '{f.name}' is {t}; neural-network inputs must be Image or MultiArray")
    produced = {}
    for layer in _all_layers(nn):
        for blob in layer.output:
            produced.setdefault(blob, layer.name)
    cycles = _find_cycles(nn, set(inputs))
    for cyc in cycles:
        out.error("layers", "nn.cycle",
                  "layers " + ", ".join(f"'{n}'" for n in cyc) + " depend on each other in a cycle; "
                  "a neural network must be acyclic (use a loop layer for iteration)")
    _walk(nn, set(inputs), produced, out, "")
    consumed = set()
    for layer in _all_layers(nn):
        consumed.update(layer.input)
    for f in desc.input:
        if f.name not in consumed and f.name not in produced:
            out.warning(f"input:{f.name}", "nn.unused-input",
                        f"input '{f.name}' is not consumed by any layer")
    # outputs
    special = set()
    if kind == "neuralNetworkClassifier":
        special = {desc.predictedFeatureName, desc.predictedProbabilitiesName} - {""}
    for f in desc.output:
        if f.name in special:
            continue
        if f.name not in produced:
            out.error(f"output:{f.name}", "nn.output-not-produced",
                      f"interface output '{f.name}' is not produced by any layer{_hint(f.name, produced)}; "
                      "add a layer that outputs it or rename the output")
        t = f.type.WhichOneof("Type")
        if kind == "neuralNetwork" and t not in ("imageType", "multiArrayType", None):
            out.error(f"output:{f.name}", "nn.bad-output-type",
                      f"output '{f.name}' is {t}; neural-network outputs must be Image or MultiArray")
    if kind == "neuralNetworkClassifier":
        name = nn.labelProbabilityLayerName
        if name and name not in produced:
            out.error("labelProbabilityLayerName", "nn.label-probability-layer",
                      f"labelProbabilityLayerName '{name}' is not a blob produced by any layer"
                      f"{_hint(name, produced)}")
        if not name and desc.predictedProbabilitiesName and desc.predictedProbabilitiesName not in produced:
            # The runtime takes the last layer's output as the probabilities.
            pass
    _check_mappings(spec, nn, out)
    _check_preprocessing(spec, nn, out)
    _check_tensor_hints(spec, nn, out)


def _check_tensor_hints(spec, nn, out: Findings) -> None:
    """inputTensor/outputTensor: one entry per blob, ranks consistent everywhere."""
    ranks: dict = {}
    if nn.arrayInputShapeMapping == 1:
        for f in spec.description.input:
            if f.type.WhichOneof("Type") == "multiArrayType" and len(f.type.multiArrayType.shape):
                ranks[f.name] = (len(f.type.multiArrayType.shape), f"model input '{f.name}'")
    for layer in _all_layers(nn):
        where = f"layer:{layer.name}"
        for field, blobs in (("inputTensor", layer.input), ("outputTensor", layer.output)):
            hints = getattr(layer, field)
            if not len(hints):
                continue
            if len(hints) != len(blobs):
                out.error(where, "nn.tensor-hint",
                          f"layer '{layer.name}' has {len(hints)} {field} entries for {len(blobs)} "
                          f"{'inputs' if field == 'inputTensor' else 'outputs'}; give one per blob or none")
                continue
            for blob, hint in zip(blobs, hints):
                if len(hint.dimValue) and len(hint.dimValue) != hint.rank:
                    out.error(where, "nn.tensor-hint",
                              f"layer '{layer.name}' {field} for '{blob}' has rank {hint.rank} but "
                              f"{len(hint.dimValue)} dimValue entries")
                if blob in ranks and ranks[blob][0] != hint.rank:
                    out.error(where, "nn.tensor-hint",
                              f"layer '{layer.name}' says '{blob}' has rank {hint.rank} but "
                              f"{ranks[blob][1]} says rank {ranks[blob][0]}")
                else:
                    ranks.setdefault(blob, (hint.rank, f"layer '{layer.name}'"))


def _check_mappings(spec, nn, out: Findings) -> None:
    arrays = [f for f in spec.description.input if f.type.WhichOneof("Type") == "multiArrayType"]
    if not arrays:
        return
    new_layers = sorted({l.WhichOneof("layer") for l in _all_layers(nn)} - IOS12_KINDS - {None})
    if nn.arrayInputShapeMapping == 0:
        if new_layers:
            out.error("arrayInputShapeMapping", "nn.shape-mapping",
                      f"layers of kind {', '.join(new_layers[:5])} need arrayInputShapeMapping "
                      "EXACT_ARRAY_MAPPING with multiarray inputs (legacy RANK5 mapping is set)")
        if nn.imageInputShapeMapping == 1:
            out.error("imageInputShapeMapping", "nn.shape-mapping",
                      "RANK4_IMAGE_MAPPING cannot be combined with RANK5_ARRAY_MAPPING when the model "
                      "has multiarray inputs; set arrayInputShapeMapping to EXACT_ARRAY_MAPPING")
        for f in arrays:
            arr = f.type.multiArrayType
            flex = arr.WhichOneof("ShapeFlexibility")
            if len(arr.shape):
                rank = len(arr.shape)
            elif flex == "enumeratedShapes" and len(arr.enumeratedShapes.shapes):
                rank = len(arr.enumeratedShapes.shapes[0].shape)
            elif flex == "shapeRange":
                rank = len(arr.shapeRange.sizeRanges)
            else:
                continue
            if rank not in (1, 3):
                out.error(f"input:{f.name}", "nn.legacy-rank",
                          f"input '{f.name}' has rank {rank}; with the legacy RANK5_ARRAY_MAPPING "
                          "multiarray inputs must be rank 1 [C] or rank 3 [C,H,W]; set "
                          "arrayInputShapeMapping to EXACT_ARRAY_MAPPING (v4)")


def _check_preprocessing(spec, nn, out: Findings) -> None:
    images = {f.name: f.type.imageType for f in spec.description.input
              if f.type.WhichOneof("Type") == "imageType"}
    seen = set()
    for i, pre in enumerate(nn.preprocessing):
        name = pre.featureName
        where = f"preprocessing[{i}]"
        if not name:
            if len(images) == 1:
                name = next(iter(images))
            else:
                out.error(where, "preprocessing.not-image-input",
                          "preprocessing has no featureName and the model does not have exactly one "
                          "image input; set featureName to the image input it applies to")
                continue
        if name not in images:
            out.error(where, "preprocessing.not-image-input",
                      f"preprocessing featureName '{name}' is not an image input"
                      f"{_hint(name, images)}; image inputs: {sorted(images)}")
            continue
        if name in seen:
            out.warning(where, "preprocessing.duplicate",
                        f"image input '{name}' has more than one preprocessing entry; use one")
        seen.add(name)
        if pre.WhichOneof("preprocessor") == "meanImage":
            img = images[name]
            channels = 1 if img.colorSpace in (10, 40) else 3
            need = channels * int(img.height) * int(img.width)
            if len(pre.meanImage.meanImage) != need:
                out.error(where, "preprocessing.mean-image-size",
                          f"meanImage of '{name}' has {len(pre.meanImage.meanImage)} values; a "
                          f"{img.width}x{img.height} image with {channels} channels needs {need}")


# --------------------------------------------------------------------------- weights

def _check_wp(wp, expected, out_channels, where, name, field, out: Findings, *,
              int8_ok=False, required=True) -> None:
    kind = storage_kind(wp)
    label = f"layer '{name}' {field}"
    if kind == "invalid":
        filled = [f for f in ("floatValue", "float16Value", "rawValue", "int8RawValue") if len(getattr(wp, f))]
        if len(filled) > 1:
            out.error(where, "weights.multiple-storage",
                      f"{label} fills {', '.join(filled)}; a weight uses exactly one storage kind")
        else:
            out.error(where, "weights.no-quantization-kind",
                      f"{label}: quantization sets neither linearQuantization nor lookupTableQuantization")
        return
    if kind == "empty":
        if len(wp.rawValue) or len(wp.int8RawValue):
            out.error(where, "weights.raw-without-quantization",
                      f"{label} stores raw codes without a quantization message, so Core ML sees no "
                      "weights; add quantization (numberOfBits and linear or look-up table)")
        elif required and expected:
            out.error(where, "weights.empty",
                      f"{label} is empty; the layer needs {expected} values")
        return
    if kind == "float32":
        n = len(wp.floatValue)
    elif kind == "float16":
        if len(wp.float16Value) % 2:
            out.error(where, "weights.count-mismatch",
                      f"{label}: float16Value has an odd number of bytes ({len(wp.float16Value)})")
        n = len(wp.float16Value) // 2
    elif kind == "int8":
        if not int8_ok:
            out.error(where, "weights.int8-not-allowed",
                      f"{label} uses int8RawValue, which only {'/'.join(kinds_where('int8_dynamic'))} "
                      "with int8DynamicQuantize accept")
            return
        q = wp.quantization
        if q.numberOfBits != 8 or q.WhichOneof("QuantizationType") != "linearQuantization" \
                or len(q.linearQuantization.scale) != 1 or len(q.linearQuantization.bias):
            out.error(where, "weights.int8-dynamic",
                      f"{label}: int8 dynamic quantization needs numberOfBits 8, linear quantization "
                      "with exactly one scale and no bias")
        n = len(wp.int8RawValue)
    else:  # linear<n> / lut<n>
        q = wp.quantization
        bits = int(q.numberOfBits)
        if not 1 <= bits <= 8:
            out.error(where, "weights.bad-bits",
                      f"{label}: numberOfBits {bits} is outside 1..8")
            return
        if expected is not None:
            need = (bits * expected + 7) // 8
            if len(wp.rawValue) < need:
                out.error(where, "weights.count-mismatch",
                          f"{label} holds {len(wp.rawValue)} bytes of {bits}-bit codes; "
                          f"{expected} values need {need} bytes")
        if kind.startswith("linear"):
            lin = q.linearQuantization
            ns = len(lin.scale)
            if ns not in (1, out_channels) or ns == 0:
                out.error(where, "weights.scale-size",
                          f"{label}: linear quantization has {ns} scales; use 1 or one per output "
                          f"channel ({out_channels})")
            if len(lin.bias) not in (0, ns):
                out.error(where, "weights.scale-size",
                          f"{label}: linear quantization has {len(lin.bias)} biases for {ns} scales; "
                          "use none or one per scale")
        else:
            table = len(q.lookupTableQuantization.floatValue)
            if table != (1 << bits):
                out.error(where, "weights.lut-size",
                          f"{label}: look-up table has {table} entries; {bits}-bit codes need exactly "
                          f"{1 << bits}")
        return
    if expected is not None and n != expected:
        out.error(where, "weights.count-mismatch",
                  f"{label} holds {n} values; the layer's parameters need {expected}")


def _expected(layer) -> dict:
    """{field: (expected count or None, per-channel scale count, required)} for one layer."""
    return {f.path: (f.count, f.channels, f.required) for f in weight_fields(layer)}


#: Rule ids of the parameter problems the layer-kind table reports (nn/kinds.py).
PARAM_RULES = {"conv-no-padding": "nn.conv-no-padding", "conv-dynamic-bias": "nn.conv-dynamic-bias",
               "conv-groups": "nn.conv-groups", "conv-channels": "nn.conv-channels"}


def _input_channels(spec) -> dict:
    """Channel count of fixed-shape model inputs: images by colour space,
    multiarrays of rank >= 3 by their C axis (third from the end)."""
    out = {}
    for f in spec.description.input:
        t = f.type.WhichOneof("Type")
        if t == "imageType":
            out[f.name] = 1 if f.type.imageType.colorSpace in (10, 40) else 3
        elif t == "multiArrayType":
            arr = f.type.multiArrayType
            if arr.WhichOneof("ShapeFlexibility") is None and len(arr.shape) >= 3:
                out[f.name] = int(arr.shape[-3])
    return out


def check_weights(nn, out: Findings, spec=None) -> None:
    channels = _input_channels(spec) if spec is not None else {}
    for index, layer in enumerate(_all_layers(nn)):
        kind = layer.WhichOneof("layer")
        if kind is None:
            continue
        name = layer.name
        where = f"layer:{name or index}"
        params = getattr(layer, kind)
        entry = KINDS.get(kind)
        if entry is not None and entry.param_rules is not None:
            for suffix, problem, message in entry.param_rules(layer, channels):
                out.error(where + suffix, PARAM_RULES[problem], message)
        if kind == "custom" and not params.className:
            out.error(where, "nn.custom-no-class",
                      f"custom layer '{name}' has no className; name the Swift/Objective-C class "
                      "that implements it")
        int8_ok = entry is not None and entry.int8_dynamic and params.int8DynamicQuantize
        if int8_ok and storage_kind(params.weights) != "int8":
            out.error(f"{where}.weights", "weights.int8-dynamic",
                      f"layer '{name}' sets int8DynamicQuantize but its weights are "
                      f"{storage_kind(params.weights)}; store int8RawValue with linear quantization")
        if int8_ok and params.hasBias and storage_kind(params.bias) not in ("float32", "empty"):
            out.error(f"{where}.bias", "weights.int8-dynamic",
                      f"layer '{name}' is int8 dynamic-quantized; its bias must stay float32")
        if kind == "scale":
            for field in ("shapeScale", "shapeBias"):
                shape = getattr(params, field)
                if len(shape) not in (0, 1, 3):
                    out.error(where, "nn.scale-shape",
                              f"scale layer '{name}': {field} has rank {len(shape)}; use rank 1 or 3")
        expected = _expected(layer)
        # the layer's own weights: a loop or branch holds none itself, its nested
        # layers are checked on their own (as Core ML's validator does)
        present = dict(own_weights(layer))
        kinds = {}
        for field, wp in present.items():
            exp, oc, req = expected.get(field, (None, 0, False))
            _check_wp(wp, exp, oc, f"{where}.{field}", name, field, out, int8_ok=int8_ok, required=req)
            kinds[field] = storage_kind(wp)
        for field, (exp, oc, req) in expected.items():
            if field not in present and req and exp:
                out.error(f"{where}.{field}", "weights.empty",
                          f"layer '{name}' {field} is empty; the layer needs {exp} values")
        floats = {k for k in kinds.values() if k in ("float32", "float16")}
        if len(floats) > 1:
            mixed = ", ".join(f"{f}={k}" for f, k in sorted(kinds.items()) if k in floats)
            out.error(where, "weights.precision-mix",
                      f"layer '{name}' mixes float16 and float32 weights ({mixed}); store all of them "
                      "in one precision")
        if kind == "activation":
            act = params.WhichOneof("NonlinearityType")
            if act in ("PReLU", "parametricSoftplus"):
                sub = getattr(params, act)
                for field in ("alpha", "beta") if act == "parametricSoftplus" else ("alpha",):
                    if storage_kind(getattr(sub, field)) == "empty":
                        out.error(f"{where}.{act}.{field}", "weights.empty",
                                  f"{act} activation '{name}' has no {field} values; give 1 or one "
                                  "per channel")


# --------------------------------------------------------------------------- updatable

#: Layers gradients flow through (Core ML's updatable-network graph); for
#: activations only these nonlinearities.
BACKPROP_ACTIVATIONS = ("ReLU", "sigmoid", "tanh")


def _backpropagable(layer) -> bool:
    kind = layer.WhichOneof("layer")
    if kind == "activation":
        return layer.activation.WhichOneof("NonlinearityType") in BACKPROP_ACTIVATIONS
    return kind in KINDS and KINDS[kind].backprop


def _check_backprop_path(nn, up, out: Findings) -> None:
    """Walk back from each loss layer: an updatable layer must not sit behind a
    layer that cannot back-propagate (softmax right before a cross-entropy
    loss is fine)."""
    producer = {}
    for layer in nn.layers:
        for blob in layer.output:
            producer.setdefault(blob, layer)
    reported = set()
    for loss in up.lossLayers:
        which = loss.WhichOneof("LossLayerType")
        if which is None:
            continue
        start = producer.get(getattr(loss, which).input)
        if start is None:
            continue
        # state: (layer, name of the first non-backpropagable layer on the way, or "")
        queue = [(start, "")]
        seen = set()
        while queue:
            layer, blocker = queue.pop(0)
            if (layer.name, blocker) in seen:
                continue
            seen.add((layer.name, blocker))
            if layer.isUpdatable and blocker and layer.name not in reported:
                reported.add(layer.name)
                out.error(f"layer:{layer.name}", "nn.updatable-behind-non-backprop",
                          f"updatable layer '{layer.name}' sits behind layer '{blocker}', which does not "
                          f"support back-propagation, on the way to loss '{loss.name}'; move the "
                          "updatable layers after it or freeze them")
            softmax_into_cce = (layer is start and layer.WhichOneof("layer") == "softmax"
                                and which == "categoricalCrossEntropyLossLayer")
            if not blocker and not _backpropagable(layer) and not softmax_into_cce:
                blocker = layer.name
            for blob in layer.input:
                parent = producer.get(blob)
                if parent is not None and parent is not layer:
                    queue.append((parent, blocker))

def check_updatable(spec, nn, out: Findings) -> None:
    layers = list(_all_layers(nn))
    updatable = [l for l in layers if l.isUpdatable]
    if not spec.isUpdatable:
        for l in updatable:
            out.warning(f"layer:{l.name}", "nn.updatable-layer-in-static-model",
                        f"layer '{l.name}' is marked updatable but the model is not; Core ML ignores it")
        return
    if not updatable:
        out.error("layers", "nn.updatable-no-layer",
                  "the model is updatable but no layer is; mark at least one "
                  f"{_names(kinds_where('updatable'), 'or')} layer isUpdatable")
    for l in updatable:
        kind = l.WhichOneof("layer")
        where = f"layer:{l.name}"
        if kind not in KINDS or not KINDS[kind].updatable:
            out.error(where, "nn.updatable-layer-kind",
                      f"layer '{l.name}' ({kind}) is marked updatable; only "
                      f"{_names(kinds_where('updatable'))} layers can be")
            continue
        called_for = {f.path for f in weight_fields(l)}
        for field, wp in own_weights(l):
            if field not in called_for:   # e.g. a bias with hasBias false: Core ML ignores it
                continue
            sk = storage_kind(wp)
            if not wp.isUpdatable or sk not in ("float32", "float16", "empty"):
                out.error(f"{where}.{field}", "weights.updatable",
                          f"updatable layer '{l.name}' {field} must set WeightParams.isUpdatable and "
                          f"must not be quantized (storage {sk})")
    up = nn.updateParams
    layer_names = {l.name for l in layers}
    if len(up.lossLayers) != 1:
        out.error("updateParams", "nn.update-loss",
                  f"an updatable network needs exactly one loss layer (has {len(up.lossLayers)})")
    for loss in up.lossLayers:
        if loss.name in layer_names:
            out.error("updateParams", "nn.update-loss",
                      f"loss layer name '{loss.name}' collides with a layer name")
        if loss.WhichOneof("LossLayerType") is None:
            out.error("updateParams", "nn.update-loss",
                      f"loss layer '{loss.name}' sets neither categoricalCrossEntropy nor meanSquaredError")
    opt = up.optimizer.WhichOneof("OptimizerType")
    if opt is None:
        out.error("updateParams", "nn.update-optimizer",
                  "an updatable network needs an optimizer (sgdOptimizer or adamOptimizer)")
    else:
        o = getattr(up.optimizer, opt)
        need = ["learningRate", "miniBatchSize"] + (["beta1", "beta2", "eps"] if opt == "adamOptimizer" else [])
        missing = [f for f in need if not o.HasField(f)]
        if missing:
            out.error("updateParams", "nn.update-optimizer",
                      f"{opt} lacks {', '.join(missing)}")
    if not up.HasField("epochs"):
        out.error("updateParams", "nn.update-epochs", "an updatable network needs updateParams.epochs")
    produced = {b for l in layers for b in l.output}
    _check_backprop_path(nn, up, out)
    training = {f.name for f in spec.description.trainingInput}
    for loss in up.lossLayers:
        which = loss.WhichOneof("LossLayerType")
        if which is None:
            continue
        params = getattr(loss, which)
        if params.input and params.input not in produced:
            out.error("updateParams", "nn.update-loss",
                      f"loss layer '{loss.name}' reads '{params.input}', which no layer produces")
        predicted = spec.description.predictedFeatureName if spec.WhichOneof("Type") == \
            "neuralNetworkClassifier" else ""
        if training and params.target and params.target not in training and predicted not in training:
            out.error("trainingInput", "nn.training-input",
                      f"loss target '{params.target}' of loss layer '{loss.name}' is not a training "
                      "input" + (f" (nor is the predicted feature '{predicted}')" if predicted else "")
                      + "; add it to description.trainingInput")
    if not training:
        out.error("trainingInput", "nn.training-input",
                  "an updatable model needs description.trainingInput (an input plus the loss target)")
    else:
        inputs = {f.name for f in spec.description.input}
        if not training & inputs:
            out.error("trainingInput", "nn.training-input",
                      "trainingInput shares no feature with the prediction inputs; include the "
                      "input(s) training needs")
        if not training - inputs:
            out.error("trainingInput", "nn.training-input",
                      "trainingInput lists only prediction inputs; add the loss target")
