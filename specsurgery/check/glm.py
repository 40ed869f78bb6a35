"""Generalized linear model rules (glmClassifier / glmRegressor), after Core
ML's ``LinearModelValidator.cpp``."""

from __future__ import annotations

from .features import check_feature_types
from .findings import Findings

VECTORIZABLE = ("doubleType", "int64Type", "multiArrayType")
LOGIT, PROBIT = 0, 1  # GLMClassifier.PostEvaluationTransform
REFERENCE_CLASS, ONE_VS_REST = 0, 1  # GLMClassifier.ClassEncoding


def _weight_lengths(weights, out: Findings, nonempty: bool) -> None:
    lengths = [len(w.value) for w in weights]
    if not lengths:
        return
    if nonempty and lengths[0] == 0:
        out.error("weights", "glm.weights-length",
                  "weights[0] is empty; every weight DoubleArray holds one coefficient per input "
                  "value")
    odd = [i for i, n in enumerate(lengths) if n != lengths[0]]
    if odd:
        out.error("weights", "glm.weights-length",
                  f"weight DoubleArrays differ in length ({', '.join(map(str, sorted(set(lengths))))}"
                  f" values; weights[{odd[0]}] has {lengths[odd[0]]}, weights[0] has {lengths[0]}); "
                  "give each the same number of coefficients")


def check_glm_regressor(spec, out: Findings) -> None:
    desc = spec.description
    check_feature_types(desc.input, "input", VECTORIZABLE, "glmRegressor", out)
    check_feature_types(desc.output, "output", ("doubleType",), "glmRegressor", out)
    glm = spec.glmRegressor
    if len(glm.weights) != len(glm.offset):
        out.error("weights", "glm.weights-offsets",
                  f"{len(glm.weights)} weight arrays but {len(glm.offset)} offsets; give one offset "
                  "per weight array (one per output)")
    _weight_lengths(glm.weights, out, nonempty=False)


def check_glm_classifier(spec, out: Findings) -> None:
    desc = spec.description
    check_feature_types(desc.input, "input", VECTORIZABLE, "glmClassifier", out)
    glm = spec.glmClassifier
    if glm.postEvaluationTransform not in (LOGIT, PROBIT):
        out.error("postEvaluationTransform", "glm.bad-transform",
                  f"postEvaluationTransform {glm.postEvaluationTransform} is not Logit (0) or Probit (1)")
    if glm.classEncoding not in (REFERENCE_CLASS, ONE_VS_REST):
        out.error("classEncoding", "glm.bad-encoding",
                  f"classEncoding {glm.classEncoding} is not ReferenceClass (0) or OneVsRest (1)")
    n = len(glm.weights)
    if n == 0:
        out.error("weights", "glm.no-weights", "the classifier has no weight arrays; add one per "
                  "class (OneVsRest) or one per class but the first (ReferenceClass)")
        return
    if n != len(glm.offset):
        out.error("weights", "glm.weights-offsets",
                  f"{n} weight arrays but {len(glm.offset)} offsets; give one offset per weight array")
    which = glm.WhichOneof("ClassLabels")
    classes = len(getattr(glm, which).vector) if which else None
    if classes is not None:
        if glm.classEncoding == REFERENCE_CLASS:
            if n != classes - 1:
                out.error("weights", "glm.weights-classes",
                          f"ReferenceClass encoding with {classes} classes needs {classes - 1} weight "
                          f"arrays (one per class but the reference), not {n}")
        elif glm.classEncoding == ONE_VS_REST:
            want = 1 if classes == 2 else classes
            if n != want:
                out.error("weights", "glm.weights-classes",
                          f"OneVsRest encoding with {classes} classes needs {want} weight "
                          f"array{'s' * (want != 1)}"
                          + (" (two classes share one)" if classes == 2 else " (one per class)")
                          + f", not {n}")
        if classes > 2 and glm.postEvaluationTransform == PROBIT:
            out.error("postEvaluationTransform", "glm.probit-multiclass",
                      f"Probit is only supported for binary classification, but there are {classes} "
                      "classes; use Logit")
    _weight_lengths(glm.weights, out, nonempty=True)
