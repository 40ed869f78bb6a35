"""Updatable neural-network rules of Core ML's
``UpdatableNeuralNetworkValidator.cpp`` (and ``ParameterValidator.cpp`` for the
update parameters) that check/nn.py's ``check_updatable`` does not cover:
parameter values, layer-name collisions, loss inputs and targets, and the
training inputs compared by type as ``validateTrainingInputs`` does.

An updatable network with an empty ``lossLayers`` list makes Core ML's own
validator crash (``losslayers(0)`` in validateTrainingInputs); check/nn.py
reports it as ``nn.update-loss``, and nothing here indexes the list."""

from __future__ import annotations

from ..nn.kinds import KINDS
from .findings import Findings, element_prefixes
from .knn import check_int64_parameter
from .pipeline import crashes_compare, type_differences


def check_double_parameter(param, name: str, where: str, out: Findings) -> None:
    if param.WhichOneof("AllowedValues") == "range":
        lo, hi, d = param.range.minValue, param.range.maxValue, param.defaultValue
        if not lo <= d <= hi:
            out.error(where, "nn.update-parameter",
                      f"{name} default value {d} is outside its allowed range [{lo}, {hi}]")


def _parameters(up, out: Findings) -> None:
    opt = up.optimizer.WhichOneof("OptimizerType")
    if opt is not None:
        o = getattr(up.optimizer, opt)
        if o.HasField("learningRate"):
            check_double_parameter(o.learningRate, "learningRate", "updateParams.optimizer", out)
        if o.HasField("miniBatchSize"):
            check_int64_parameter(o.miniBatchSize, "miniBatchSize", "updateParams.optimizer",
                                  "nn.update-parameter", out)
        if opt == "adamOptimizer":
            for name in ("beta1", "beta2", "eps"):
                if o.HasField(name):
                    check_double_parameter(getattr(o, name), name, "updateParams.optimizer", out)
    if up.HasField("epochs"):
        check_int64_parameter(up.epochs, "epochs", "updateParams", "nn.update-parameter", out)
    if up.HasField("seed"):
        check_int64_parameter(up.seed, "seed", "updateParams", "nn.update-parameter", out, positive=False)


def _producers(nn) -> dict:
    out = {}
    for layer in nn.layers:
        for blob in layer.output:
            out.setdefault(blob, layer)
    return out


def _losses(spec, nn, out: Findings) -> None:
    produced = _producers(nn)
    for loss in nn.updateParams.lossLayers:
        which = loss.WhichOneof("LossLayerType")
        if which is None:
            continue  # nn.update-loss
        params = getattr(loss, which)
        where = f"updateParams.lossLayers:{loss.name}"
        if not params.input:
            out.error(where, "nn.update-loss-io",
                      f"loss '{loss.name}' has no input; name the blob it scores"
                      + (" (a softmax output)" if which == "categoricalCrossEntropyLossLayer" else ""))
        elif which == "categoricalCrossEntropyLossLayer":
            src = produced.get(params.input)
            if src is not None and (src.WhichOneof("layer") != "softmax" or src.output[0] != params.input):
                out.error(where, "nn.update-loss-io",
                          f"cross-entropy loss '{loss.name}' reads '{params.input}' from layer "
                          f"'{src.name}' ({src.WhichOneof('layer')}); its input must be a softmax output")
        if params.target in produced:
            out.error(where, "nn.update-loss-io",
                      f"loss '{loss.name}' target '{params.target}' is produced by layer "
                      f"'{produced[params.target].name}'; the target must come from the training data")


def _training_inputs(spec, nn, out: Findings) -> None:
    if any(f.rule == "nn.training-input" for f in out):
        return  # check/nn.py already said what is missing
    desc = spec.description
    training = list(desc.trainingInput)
    if len(training) <= 1:
        out.error("trainingInput", "nn.training-input-match",
                  f"an updatable network needs at least two training inputs (an input and the loss "
                  f"target); it has {len(training)}")
        return

    for t in training:
        for i in desc.input:
            if t.name == i.name and crashes_compare(t.type, i.type):
                out.error(f"trainingInput:{t.name}", "array.empty-enumeration",
                          f"training input '{t.name}' or the input of that name has an empty "
                          "enumeratedShapes list; Core ML's validator aborts comparing them; list "
                          "the shapes or clear the flexibility")
                return

    def same(a, b):
        return a.name == b.name and not type_differences(a.type, b.type)

    exclusive = [t for t in training if not any(same(t, i) for i in desc.input)]
    shared = len(training) - len(exclusive)
    if not exclusive:
        out.error("trainingInput", "nn.training-input-match",
                  "every training input is a prediction input; add the loss target")
        return
    if shared == 0:
        near = [t.name for t in training if t.name in {i.name for i in desc.input}]
        out.error("trainingInput", "nn.training-input-match",
                  "no training input equals a prediction input (same name and type)"
                  + (f"; {', '.join(repr(n) for n in near)} differ from the input of that name in "
                     "type or shape" if near else "") + "; copy the input's description")
        return
    losses = list(nn.updateParams.lossLayers)
    if not losses:
        return  # nn.update-loss (Core ML's validator would crash here)
    which = losses[0].WhichOneof("LossLayerType")
    target = getattr(losses[0], which).target if which else ""
    classifier = spec.WhichOneof("Type") == "neuralNetworkClassifier"
    outputs = {o.name: o for o in desc.output}
    ok = False
    for t in exclusive:
        if classifier and t.name == desc.predictedFeatureName and t.name in outputs:
            if t.type.WhichOneof("Type") != outputs[t.name].type.WhichOneof("Type") or \
                    type_differences(t.type, outputs[t.name].type):
                out.error(f"trainingInput:{t.name}", "nn.training-input-match",
                          f"training input '{t.name}' must have the type of the classifier's "
                          "predicted label output")
                return
            ok = True
        if target and t.name == target:
            ok = True
    if not ok:
        if classifier:
            out.error("trainingInput", "nn.training-input-match",
                      f"the training inputs do not include the classifier's target "
                      f"'{desc.predictedFeatureName}' (the predicted feature)")
        else:
            out.error("trainingInput", "nn.training-input-match",
                      f"the training inputs do not include the loss target '{target}'"
                      + ("; set the loss layer's target and add it as a training input" if not target else ""))


def _updatable_weights(nn, out: Findings) -> None:
    """validateWeightParamsUpdatable: the flags are read even when the field is empty."""
    flagged = {e for f in out if f.rule == "weights.updatable" for e in element_prefixes(f.path)}
    for layer in nn.layers:
        kind = layer.WhichOneof("layer")
        # the kinds whose own weights/bias flags Core ML reads (LSTM ones it skips)
        entry = KINDS.get(kind)
        if not layer.isUpdatable or entry is None or not entry.updatable or \
                not {"weights", "bias"} <= set(entry.fields):
            continue
        where = f"layer:{layer.name}"
        if where in flagged:
            continue
        p = getattr(layer, kind)
        fields = [("weights", p.weights)] + ([("bias", p.bias)] if p.hasBias else [])
        for name, wp in fields:
            if wp.HasField("quantization") or not wp.isUpdatable:
                out.error(f"{where}.{name}", "weights.updatable",
                          f"updatable layer '{layer.name}' {name} must set WeightParams.isUpdatable "
                          "and must not be quantized" + (" (the field is empty)" if not wp.ListFields() else ""))
                break


def check_updatable_nn(spec, nn, out: Findings) -> None:
    if not spec.isUpdatable:
        return
    _updatable_weights(nn, out)
    names = [l.name for l in nn.layers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        out.error("layers", "nn.update-names",
                  "layer name(s) " + ", ".join(f"'{n}'" for n in dup) + " are used more than once; "
                  "an updatable network needs unique layer names")
    _parameters(nn.updateParams, out)
    _losses(spec, nn, out)
    _training_inputs(spec, nn, out)
