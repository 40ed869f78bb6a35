"""``rename``'s NeuralNetwork part: the places a name is written in the
messages of an ``.mlmodel`` model other than its description.

Neural-network layer inputs and outputs (inside branch and loop bodies too),
a loop's condition variable, preprocessing ``featureName``, a classifier's
``labelProbabilityLayerName``, loss layers, and the classic models that name
features: feature vectorizer columns and NMS feature names.
"""

from __future__ import annotations

from ... import spec as S
from ...nn.kinds import iter_layers

__all__ = ["collect_names", "rename_in_model"]

_NMS_FIELDS = ("confidenceInputFeatureName", "coordinatesInputFeatureName",
               "iouThresholdInputFeatureName", "confidenceThresholdInputFeatureName",
               "confidenceOutputFeatureName", "coordinatesOutputFeatureName")
_LOSS_KINDS = ("categoricalCrossEntropyLossLayer", "meanSquaredErrorLossLayer")


def collect_names(model, out: dict, where: str) -> None:
    """Add every blob name of ``model``'s network (if it has one) to ``out``."""
    nn = S.nn_of(model)
    for _, layer in iter_layers(nn) if nn is not None else ():
        for b in list(layer.input) + list(layer.output):
            out.setdefault(b, f"{where}layer {layer.name!r}")


def _sub(container, old, new) -> None:
    for i, v in enumerate(container):
        if v == old:
            container[i] = new


def _rename_nn(nn, old, new) -> None:
    for _, layer in iter_layers(nn):
        _sub(layer.input, old, new)
        _sub(layer.output, old, new)
        if layer.WhichOneof("layer") == "loop" and layer.loop.conditionVar == old:
            layer.loop.conditionVar = new
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


def rename_in_model(m, old, new) -> None:
    """Rename ``old`` in ``m``'s network or classic-model fields (not its
    description, not its stages)."""
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
