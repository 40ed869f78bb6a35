"""Severity adjustments: rules of check/nn.py that Core ML's validator does
not enforce in some cases become warnings that give the reason.  Kept apart
from the rule table (check/rules.py) so that ``check`` does not import the
table on every run."""

from __future__ import annotations

from ..nn.kinds import dynamic_weights, kinds_where
from .findings import element_prefixes


#: Layer kinds whose Core ML validator skips an empty weight field (it checks
#: sizes only for float/quantized storage: validateInnerProductWeightsBias,
#: validateActivationParams); other kinds reject it
#: (validateGeneralWeightParams: "has empty ...", conv layers "has not specified").
#: The kinds checked by validateInnerProductWeightsBias are the int8-dynamic ones.
EMPTY_WEIGHTS_OK = frozenset(kinds_where("int8_dynamic")) | {"activation"}

#: Rules of check/nn.py that Core ML's validator does not enforce (in the
#: cases the predicate selects) and no citation shows Core ML failing on:
#: reported as warnings, with the reason.  rule -> (reason, predicate name).
DEMOTED = {
    "nn.layer-no-name": ("Core ML's validator accepts an unnamed layer; tools and error "
                         "messages cannot point at it", "always"),
    "weights.empty": ("Core ML's validator accepts an empty weight field for this layer kind "
                      "(only float and quantized storage is size-checked); the runtime's "
                      "behaviour is undocumented", "empty-ok"),
    "weights.raw-without-quantization": ("Core ML's validator reads raw codes without "
                                         "quantization as no weights at all, which it accepts "
                                         "for this layer kind", "empty-ok"),
    "nn.conv-groups": ("Core ML's validator does not check it (a deconvolution's weight count "
                       "uses outputChannels / nGroups); grouped conv layers split the output "
                       "channels into nGroups equal parts, so the model is likely wrong", "always"),
    "preprocessing.mean-image-size": ("Core ML's validator does not look at preprocessing and no "
                                      "documented failure is known; the mean is subtracted per pixel, "
                                      "so it is likely wrong", "always"),
    "nn.output-not-produced": ("Core ML's validator does not check a neural-network regressor's "
                               "outputs; the prediction will lack this output", "regressor"),
    "nn.conv-dynamic-bias": ("Core ML's validator has this check but returns before it for a "
                             "conv layer with two inputs, so it accepts the model; the static "
                             "bias is likely ignored", "always"),
}
#: Any weights.* error on a layer whose weights come as a second input:
#: the validator returns before looking at the static weight fields.
DYNAMIC_CONV_REASON = ("the layer takes its weights as a second input, so Core ML's "
                       "validator ignores its static weight fields")


def _layer_index(spec) -> dict:
    """layer name -> layer, through branch and loop bodies."""
    layers = {}
    kind = spec.WhichOneof("Type")
    nn = getattr(spec, kind, None) if kind else None
    stack = list(getattr(nn, "layers", ()))
    while stack:
        layer = stack.pop()
        k = layer.WhichOneof("layer")
        layers.setdefault(layer.name, layer)
        if k == "branch":
            stack += list(layer.branch.ifBranch.layers) + list(layer.branch.elseBranch.layers)
        elif k == "loop":
            stack += list(layer.loop.conditionNetwork.layers) + list(layer.loop.bodyNetwork.layers)
    return layers


def demote(findings, spec=None):
    """``findings`` with the :data:`DEMOTED` rules as warnings that give the reason."""
    out = []
    layers = None
    for f in findings:
        reason = None
        if f.severity == "error" and (f.rule in DEMOTED or f.rule.startswith("weights.")):
            if layers is None:
                layers = _layer_index(spec) if spec is not None else {}
            layer = None
            for element in element_prefixes(f.path):
                if element.startswith("layer:") and element[6:] in layers:
                    layer = layers[element[6:]]
                    break
            kind = layer.WhichOneof("layer") if layer is not None else None
            if f.rule.startswith("weights.") and layer is not None and dynamic_weights(layer):
                reason = DYNAMIC_CONV_REASON
            elif f.rule in DEMOTED:
                why, when = DEMOTED[f.rule]
                if when == "always" or (when == "empty-ok" and kind in EMPTY_WEIGHTS_OK) or \
                        (when == "regressor" and spec is not None
                         and spec.WhichOneof("Type") == "neuralNetworkRegressor"):
                    reason = why
        if reason:
            f = type(f)("warning", f.path, f.rule, f"{f.message} ({reason})")
        out.append(f)
    return out
