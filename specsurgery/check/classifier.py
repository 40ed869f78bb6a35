"""Classifier and regressor interface rules, after Core ML's
``validateClassifierInterface`` (Validators.hpp), ``validateClassifierFeatureDescriptions``
and ``validateRegressorInterface`` (InterfaceValidators.cpp), which use
``validateDescriptionsContainFeatureWithNameAndType`` (ValidatorUtils-inl.hpp).

Tree ensembles are the exception: Core ML's TreeEnsembleValidator checks the
trees only, never the interface, so for them the same findings are warnings
(``tree.interface``)."""

from __future__ import annotations

from ..spec import describe_type
from .findings import Findings

#: Regressors whose validator calls validateRegressorInterface.
STRICT_REGRESSORS = ("neuralNetworkRegressor", "glmRegressor", "supportVectorRegressor")


def label_kind(msg):
    """("string"|"int64"|None, count) of a message with a ClassLabels oneof."""
    which = msg.WhichOneof("ClassLabels")
    if which is None:
        return None, 0
    return ("string" if which == "stringClassLabels" else "int64"), len(getattr(msg, which).vector)


_labels_kind = label_kind  # the old private name


def check_predicted(spec, label: str, out: Findings, kind: str, tree: bool = False) -> None:
    """predictedFeatureName / predictedProbabilitiesName of a classifier whose
    labels are ``label`` ("string" or "int64")."""
    def report(where, rule, text):
        if tree:
            out.warning(where, "tree.interface", text + " (Core ML's tree-ensemble validator does "
                        "not check the interface; other tools will misread the model)")
        else:
            out.error(where, rule, text)

    desc = spec.description
    outputs = {f.name: f for f in desc.output}
    pf = desc.predictedFeatureName
    want = "String" if label == "string" else "Int64"
    if not pf:
        report("description", "classifier.no-predicted-feature",
               f"a {kind} needs description.predictedFeatureName (the output holding the predicted "
               f"{want} label)")
    elif pf not in outputs:
        report("description", "classifier.predicted-not-output",
               f"predictedFeatureName '{pf}' is not one of the outputs {sorted(outputs)}; name the "
               "label output")
    else:
        t = outputs[pf].type.WhichOneof("Type")
        if t != ("stringType" if label == "string" else "int64Type"):
            report(f"output:{pf}", "classifier.predicted-type",
                   f"predicted feature '{pf}' is {describe_type(outputs[pf].type)} but the labels "
                   f"are {label}; make it {want}")
    pp = desc.predictedProbabilitiesName
    if not pp:
        return
    if pp not in outputs:
        report("description", "classifier.probabilities-not-output",
               f"predictedProbabilitiesName '{pp}' is not one of the outputs {sorted(outputs)}")
        return
    ft = outputs[pp].type
    t = ft.WhichOneof("Type")
    if t == "multiArrayType":
        out.warning(f"output:{pp}", "classifier.probabilities-multiarray",
                    f"probabilities output '{pp}' is a MultiArray; Core ML tolerates it but "
                    "expects a Dictionary keyed by label")
    elif t != "dictionaryType":
        report(f"output:{pp}", "classifier.probabilities-type",
               f"probabilities output '{pp}' is {describe_type(ft)}; it must be a Dictionary "
               f"keyed by {want}")
    else:
        key = ft.dictionaryType.WhichOneof("KeyType")
        if key is not None and key != ("stringKeyType" if label == "string" else "int64KeyType"):
            out.warning(f"output:{pp}", "classifier.probabilities-key",
                        f"probabilities output '{pp}' is {describe_type(ft)} but the labels are "
                        f"{label}; key the dictionary by {want} (Core ML's validator accepts it, "
                        "but the dictionary it returns is keyed by the labels)")


def check_classifier(spec, kind: str, out: Findings) -> None:
    """NN, GLM, SVM and tree-ensemble classifiers (kNN: check/knn.py + check_predicted)."""
    msg = getattr(spec, kind)
    label, count = label_kind(msg)
    if kind == "treeEnsembleClassifier":
        if label is not None or spec.description.predictedFeatureName:
            check_predicted(spec, label or "int64", out, kind, tree=True)
        return
    if label is None or count == 0:
        out.error("classLabels", "classifier.no-labels",
                  f"the {kind} has no class labels; set stringClassLabels or int64ClassLabels")
    check_predicted(spec, label or "string", out, kind)


def check_regressor(spec, kind: str, out: Findings) -> None:
    desc = spec.description
    outputs = {f.name: f for f in desc.output}
    pf = desc.predictedFeatureName
    strict = kind in STRICT_REGRESSORS

    def report(where, rule, text):
        if strict:
            out.error(where, rule, text)
        else:
            out.warning(where, "tree.interface", text + " (Core ML's tree-ensemble validator does "
                        "not check the interface; other tools will misread the model)")

    if not pf:
        if strict:
            out.error("description", "regressor.no-predicted-feature",
                      f"a {kind} needs description.predictedFeatureName (its Double or MultiArray "
                      "output)")
        return
    if pf not in outputs:
        report("description", "regressor.predicted-not-output",
               f"predictedFeatureName '{pf}' is not one of the outputs {sorted(outputs)}")
        return
    t = outputs[pf].type.WhichOneof("Type")
    if t not in ("doubleType", "multiArrayType"):
        report(f"output:{pf}", "regressor.predicted-type",
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
