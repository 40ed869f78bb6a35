"""Classifier and regressor interface rules (format notes §5 rule 6)."""

from __future__ import annotations

from ..spec import describe_type
from .findings import Findings

NN_CLASSIFIER = "neuralNetworkClassifier"
OTHER_CLASSIFIERS = ("glmClassifier", "supportVectorClassifier", "treeEnsembleClassifier")
REGRESSORS = ("neuralNetworkRegressor",)
#: Classifier kinds whose validator demands labels (kNN may learn them; tree
#: ensembles have their own rules).
LABELS_REQUIRED = (NN_CLASSIFIER, "glmClassifier", "supportVectorClassifier")


def _labels_kind(msg):
    """("string"|"int64"|None, count) of a message with a ClassLabels oneof."""
    which = msg.WhichOneof("ClassLabels")
    if which is None:
        return None, 0
    return ("string" if which == "stringClassLabels" else "int64"), len(getattr(msg, which).vector)


def check_classifier(spec, kind: str, out: Findings) -> None:
    desc = spec.description
    outputs = {f.name: f for f in desc.output}
    msg = getattr(spec, kind)
    label_kind, count = _labels_kind(msg)
    if kind in LABELS_REQUIRED and (label_kind is None or count == 0):
        out.error("classLabels", "classifier.no-labels",
                  f"the {kind} has no class labels; set stringClassLabels or int64ClassLabels")
    if label_kind is None and kind not in LABELS_REQUIRED:
        return  # tree ensembles: labels may be implicit; nothing more to compare
    pf = desc.predictedFeatureName
    if not pf:
        out.error("description", "classifier.no-predicted-feature",
                  "a classifier needs description.predictedFeatureName (the predicted label output)")
    elif pf not in outputs:
        out.error("description", "classifier.predicted-not-output",
                  f"predictedFeatureName '{pf}' is not one of the outputs {sorted(outputs)}")
    else:
        t = outputs[pf].type.WhichOneof("Type")
        want = "stringType" if label_kind == "string" else "int64Type"
        if label_kind and t != want:
            out.error(f"output:{pf}", "classifier.predicted-type",
                      f"predicted feature '{pf}' is {describe_type(outputs[pf].type)} but the labels are "
                      f"{label_kind}; make it {'String' if label_kind == 'string' else 'Int64'}")
    pp = desc.predictedProbabilitiesName
    if pp:
        if pp not in outputs:
            out.error("description", "classifier.probabilities-not-output",
                      f"predictedProbabilitiesName '{pp}' is not one of the outputs {sorted(outputs)}")
        else:
            ft = outputs[pp].type
            t = ft.WhichOneof("Type")
            if t == "multiArrayType":
                out.warning(f"output:{pp}", "classifier.probabilities-multiarray",
                            f"probabilities output '{pp}' is a MultiArray; Core ML tolerates it but "
                            "expects a Dictionary keyed by label")
            elif t != "dictionaryType":
                out.error(f"output:{pp}", "classifier.probabilities-type",
                          f"probabilities output '{pp}' is {describe_type(ft)}; it must be a Dictionary")
            elif label_kind:
                key = ft.dictionaryType.WhichOneof("KeyType")
                want = "stringKeyType" if label_kind == "string" else "int64KeyType"
                if key != want:
                    out.error(f"output:{pp}", "classifier.probabilities-type",
                              f"probabilities output '{pp}' is {describe_type(ft)} but the labels are "
                              f"{label_kind}; key the dictionary by {'String' if label_kind == 'string' else 'Int64'}")


def check_regressor(spec, kind: str, out: Findings) -> None:
    desc = spec.description
    outputs = {f.name: f for f in desc.output}
    pf = desc.predictedFeatureName
    if not pf:
        if kind in REGRESSORS:
            out.error("description", "regressor.no-predicted-feature",
                      "a regressor needs description.predictedFeatureName")
        return
    if pf not in outputs:
        out.error("description", "regressor.predicted-not-output",
                  f"predictedFeatureName '{pf}' is not one of the outputs {sorted(outputs)}")
        return
    t = outputs[pf].type.WhichOneof("Type")
    if kind in REGRESSORS and t not in ("doubleType", "multiArrayType"):
        out.error(f"output:{pf}", "regressor.predicted-type",
                  f"predicted feature '{pf}' is {describe_type(outputs[pf].type)}; a regressor predicts "
                  "a Double or a MultiArray")


def check_pipeline_interface(spec, kind: str, out: Findings) -> None:
    """PipelineClassifier/-Regressor: the predicted names should be outputs."""
    desc = spec.description
    outputs = {f.name for f in desc.output}
    for field in ("predictedFeatureName", "predictedProbabilitiesName"):
        name = getattr(desc, field)
        if name and name not in outputs:
            out.warning("description", "pipeline.predicted-not-output",
                        f"{field} '{name}' is not one of the pipeline outputs {sorted(outputs)}")
