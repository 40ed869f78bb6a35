"""``rename_feature``: rename a feature or blob everywhere it is named.

A name is written in many places: the model description (inputs, outputs,
training inputs, predicted feature names), neural-network layer inputs and
outputs (inside branch and loop bodies too), preprocessing ``featureName``,
a classifier's ``labelProbabilityLayerName``, loss layers, feature
vectorizer columns, NMS feature names, and, in a pipeline, every stage that
shares the namespace, nested pipelines and linked stubs' descriptions
included (coremltools' rename misses the nested ones, #2494).
"""

from __future__ import annotations

from .. import spec as S
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ..io import MLPackage, copy_spec, load

__all__ = ["rename_feature", "names_in"]

_NMS_FIELDS = ("confidenceInputFeatureName", "coordinatesInputFeatureName",
               "iouThresholdInputFeatureName", "confidenceThresholdInputFeatureName",
               "confidenceOutputFeatureName", "coordinatesOutputFeatureName")
_LOSS_KINDS = ("categoricalCrossEntropyLossLayer", "meanSquaredErrorLossLayer")


def _desc_lists(desc):
    return (desc.input, desc.output, desc.trainingInput, desc.state)


def _nn_names(nn, out: dict, where: str) -> None:
    for layer in nn.layers:
        for b in list(layer.input) + list(layer.output):
            out.setdefault(b, f"{where}layer {layer.name!r}")
        kind = layer.WhichOneof("layer")
        if kind == "branch":
            for sub in ("ifBranch", "elseBranch"):
                _nn_names(getattr(layer.branch, sub), out, where)
        elif kind == "loop":
            for sub in ("conditionNetwork", "bodyNetwork"):
                _nn_names(getattr(layer.loop, sub), out, where)


def names_in(spec) -> dict:
    """Every feature and blob name of a model (nested stages included) ->
    where it is first seen."""
    out: dict = {}
    for info in S.iter_models(spec):
        where = f"stage {info.path!r}: " if info.path else ""
        m = info.model
        for lst in _desc_lists(m.description):
            for f in lst:
                out.setdefault(f.name, f"{where}feature")
        for name in (m.description.predictedFeatureName, m.description.predictedProbabilitiesName):
            if name:
                out.setdefault(name, f"{where}predicted feature")
        nn = S.nn_of(m)
        if nn is not None:
            _nn_names(nn, out, where)
    return out


def _sub(container, old, new) -> None:
    for i, v in enumerate(container):
        if v == old:
            container[i] = new


def _rename_nn(nn, old, new) -> None:
    for layer in nn.layers:
        _sub(layer.input, old, new)
        _sub(layer.output, old, new)
        kind = layer.WhichOneof("layer")
        if kind == "branch":
            _rename_nn(layer.branch.ifBranch, old, new)
            _rename_nn(layer.branch.elseBranch, old, new)
        elif kind == "loop":
            if layer.loop.conditionVar == old:
                layer.loop.conditionVar = new
            _rename_nn(layer.loop.conditionNetwork, old, new)
            _rename_nn(layer.loop.bodyNetwork, old, new)
    for pre in nn.preprocessing:
        if pre.featureName == old:
            pre.featureName = new
    if nn.HasField("updateParams"):
        for loss in nn.updateParams.lossLayers:
            which = loss.WhichOneof("LossLayerType")
            if which in _LOSS_KINDS:
                msg = getattr(loss, which)
                if msg.input == old:
                    msg.input = new
                if msg.target == old:
                    msg.target = new


def _rename_model(m, old, new) -> None:
    desc = m.description
    for lst in _desc_lists(desc):
        for f in lst:
            if f.name == old:
                f.name = new
    if desc.predictedFeatureName == old:
        desc.predictedFeatureName = new
    if desc.predictedProbabilitiesName == old:
        desc.predictedProbabilitiesName = new
    kind = S.model_type(m)
    nn = S.nn_of(m)
    if nn is not None:
        _rename_nn(nn, old, new)
        if kind == "neuralNetworkClassifier" and nn.labelProbabilityLayerName == old:
            nn.labelProbabilityLayerName = new
    elif kind == "featureVectorizer":
        for col in m.featureVectorizer.inputList:
            if col.inputColumn == old:
                col.inputColumn = new
    elif kind == "nonMaximumSuppression":
        for field in _NMS_FIELDS:
            if getattr(m.nonMaximumSuppression, field) == old:
                setattr(m.nonMaximumSuppression, field, new)


def rename_feature(spec, old: str, new: str, *, inplace: bool = False):
    """Rename feature/blob ``old`` to ``new`` everywhere in the model.

    Errors: ``old`` names nothing (with near matches); ``new`` is already a
    name in the model (renaming would merge two values); an ML Program whose
    interface carries the name.
    """
    if not new or not isinstance(new, str):
        raise SpecSurgeryError(f"rename: the new name for {old!r} is empty")
    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    names = names_in(root)
    if old not in names:
        raise NotFoundError(missing_message("feature or blob", [old], names) + " (rename)")
    if old == new:
        return root if inplace else copy_spec(root)
    if new in names:
        raise SpecSurgeryError(
            f"rename: {new!r} already names a value in this model ({names[new]}); renaming {old!r} to "
            f"it would merge two values. Pick another name, or rename {new!r} first")
    programs = [i.path or "the model" for i in S.iter_models(root) if S.model_type(i.model) == "mlProgram"
                and any(f.name == old for lst in _desc_lists(i.model.description) for f in lst)]
    if programs:
        raise UnsupportedError(f"rename: {old!r} is a feature of the ML Program in {', '.join(programs)}; "
                               "mlProgram surgery (rename) is not supported yet")
    out = root if inplace else copy_spec(root)
    for info in S.iter_models(out):
        _rename_model(info.model, old, new)
    if isinstance(model, MLPackage) and not inplace:
        pkg = model.copy()
        pkg.spec = out
        return pkg
    return out
