"""Classic (non-neural) model types in the reference runtime: small specs built
here with hand-computed results, the corpus's GLM / tree pipelines on random
inputs, and (when scikit-learn is installed) a cross-check against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import CORPUS
from specsurgery import io, spec as sp
from specsurgery._proto import Model_pb2
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.runtime import predict, random_inputs, verify
from specsurgery.runtime.classic import RUNNERS, ClassicModelError

DOUBLE_ARRAY = 65600


def sig(x):
    return 1 / (1 + math.exp(-x))


def _feature(desc_list, name, kind, shape=None, key="string"):
    f = desc_list.add()
    f.name = name
    if kind == "double":
        f.type.doubleType.SetInParent()
    elif kind == "int64":
        f.type.int64Type.SetInParent()
    elif kind == "string":
        f.type.stringType.SetInParent()
    elif kind == "array":
        f.type.multiArrayType.dataType = DOUBLE_ARRAY
        f.type.multiArrayType.shape.extend(shape or [1])
    elif kind == "dict":
        (f.type.dictionaryType.stringKeyType if key == "string"
         else f.type.dictionaryType.int64KeyType).SetInParent()
    elif kind == "seq_string":
        f.type.sequenceType.stringType.SetInParent()
    elif kind == "seq_int64":
        f.type.sequenceType.int64Type.SetInParent()
    else:
        raise AssertionError(kind)
    return f


def model(inputs, outputs, pred=None, probs=None):
    """A v1 spec with the given [(name, kind[, shape|key])] inputs and outputs."""
    m = Model_pb2.Model()
    m.specificationVersion = 1
    for spec_ in inputs:
        _feature(m.description.input, *spec_)
    for spec_ in outputs:
        _feature(m.description.output, *spec_)
    if pred:
        m.description.predictedFeatureName = pred
    if probs:
        m.description.predictedProbabilitiesName = probs
    return m


def classifier(kind, labels, inputs=(("x", "array", [2]),)):
    label_kind = "int64" if isinstance(labels[0], int) else "string"
    m = model(list(inputs), [("label", label_kind), ("probs", "dict", None, label_kind)],
              pred="label", probs="probs")
    msg = getattr(m, kind)
    (msg.int64ClassLabels if label_kind == "int64" else msg.stringClassLabels).vector.extend(labels)
    return m, msg


# --------------------------------------------------------------------------- GLM

def test_glm_regressor_scalar_inputs_and_transforms():
    m = model([("a", "double"), ("b", "int64")], [("y", "double")], pred="y")
    m.glmRegressor.weights.add().value.extend([2.0, -3.0])
    m.glmRegressor.offset.append(1.0)
    assert predict(m, {"a": 1.5, "b": 2})["y"] == pytest.approx(2 * 1.5 - 3 * 2 + 1)
    m.glmRegressor.postEvaluationTransform = 1          # Logit
    assert predict(m, {"a": 1.5, "b": 2})["y"] == pytest.approx(sig(-2.0))
    m.glmRegressor.postEvaluationTransform = 2          # Probit
    assert predict(m, {"a": 1.5, "b": 2})["y"] == pytest.approx(0.5 * (1 + math.erf(-2 / math.sqrt(2))))


def test_glm_regressor_several_outputs_and_width_check():
    m = model([("x", "array", [3])], [("y", "array", [2])], pred="y")
    for row, b in (([1, 0, 2], 0.5), ([0, 1, -1], -1.0)):
        m.glmRegressor.weights.add().value.extend(row)
        m.glmRegressor.offset.append(b)
    out = predict(m, {"x": np.array([1.0, 2.0, 3.0])})["y"]
    assert out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, [7.5, -2.0])
    with pytest.raises(ClassicModelError, match="weights take 3 input values, the inputs give 2"):
        predict(m, {"x": np.array([1.0, 2.0])}, strict=False)


def test_glm_classifier_binary_logit_and_probit():
    m, glm = classifier("glmClassifier", ["no", "yes"])
    glm.weights.add().value.extend([1.0, 2.0])
    glm.offset.append(-1.0)
    out = predict(m, {"x": [0.5, 0.25]})           # s = 0.5 + 0.5 - 1 = 0
    assert out["probs"] == pytest.approx({"no": 0.5, "yes": 0.5})
    out = predict(m, {"x": [1.0, 1.0]})            # s = 2
    assert out["label"] == "yes" and out["probs"]["yes"] == pytest.approx(sig(2))
    glm.postEvaluationTransform = 1                # Probit
    out = predict(m, {"x": [-1.0, 0.0]})           # s = -2
    assert out["label"] == "no"
    assert out["probs"]["yes"] == pytest.approx(0.5 * (1 + math.erf(-2 / math.sqrt(2))))
    glm.classEncoding = 1                          # OneVsRest with 2 classes: one row too
    assert predict(m, {"x": [-1.0, 0.0]})["probs"]["yes"] == pytest.approx(0.02275013, abs=1e-7)


def test_glm_classifier_reference_class_is_a_softmax_with_class0_at_zero():
    m, glm = classifier("glmClassifier", [10, 20, 30])
    for row, b in (([1.0, 0.0], 0.0), ([0.0, 1.0], 1.0)):
        glm.weights.add().value.extend(row)
        glm.offset.append(b)
    out = predict(m, {"x": [2.0, -1.0]})           # scores [0, 2, 0]
    e = [1.0, math.exp(2), 1.0]
    assert out["probs"] == pytest.approx({10: e[0] / sum(e), 20: e[1] / sum(e), 30: e[2] / sum(e)})
    assert out["label"] == 20 and isinstance(out["label"], int)


def test_glm_classifier_one_vs_rest_normalises_sigmoids():
    m, glm = classifier("glmClassifier", ["a", "b", "c"])
    glm.classEncoding = 1
    for row, b in (([1.0, 0.0], 0.0), ([0.0, 1.0], 0.0), ([1.0, 1.0], -3.0)):
        glm.weights.add().value.extend(row)
        glm.offset.append(b)
    out = predict(m, {"x": [1.0, -2.0]})           # s = [1, -2, -4]
    p = [sig(1), sig(-2), sig(-4)]
    assert out["probs"] == pytest.approx({"a": p[0] / sum(p), "b": p[1] / sum(p), "c": p[2] / sum(p)})
    assert out["label"] == "a"
    del glm.weights[2]
    del glm.offset[2]
    with pytest.raises(ClassicModelError, match="OneVsRest encoding needs one weight row per class"):
        predict(m, {"x": [1.0, -2.0]})


# --------------------------------------------------------------------------- trees

def _branch(te, tree, node, behaviour, feature, value, t, f, missing_true=False):
    n = te.nodes.add()
    n.treeId, n.nodeId, n.nodeBehavior = tree, node, behaviour
    n.branchFeatureIndex, n.branchFeatureValue = feature, value
    n.trueChildNodeId, n.falseChildNodeId = t, f
    n.missingValueTracksTrueChild = missing_true


def _leaf(te, tree, node, *values):
    n = te.nodes.add()
    n.treeId, n.nodeId, n.nodeBehavior = tree, node, 6
    for i, v in enumerate(values):
        if v:
            e = n.evaluationInfo.add()
            e.evaluationIndex, e.evaluationValue = i, v


@pytest.mark.parametrize("behaviour,x,goes_true", [
    (0, 1.0, True), (0, 1.5, False),               # <=
    (1, 1.0, False), (1, 0.5, True),               # <
    (2, 1.0, True), (2, 0.5, False),               # >=
    (3, 1.0, False), (3, 2.0, True),               # >
    (4, 1.0, True), (4, 2.0, False),               # ==
    (5, 1.0, False), (5, 2.0, True),               # !=
])
def test_tree_node_behaviours(behaviour, x, goes_true):
    m = model([("x", "double")], [("y", "double")], pred="y")
    te = m.treeEnsembleRegressor.treeEnsemble
    te.numPredictionDimensions = 1
    te.basePredictionValue.append(0.5)
    # the root is declared last: roots are found by structure, not order
    _leaf(te, 0, 1, 10.0)
    _leaf(te, 0, 2, 20.0)
    _branch(te, 0, 7, behaviour, 0, 1.0, 1, 2)
    assert predict(m, {"x": x})["y"] == pytest.approx(0.5 + (10.0 if goes_true else 20.0))


def test_tree_missing_values_and_several_trees_and_dimensions():
    m = model([("a", "double"), ("v", "array", [2])], [("y", "array", [2])], pred="y")
    te = m.treeEnsembleRegressor.treeEnsemble
    te.numPredictionDimensions = 2
    te.basePredictionValue.extend([1.0, -1.0])
    _branch(te, 0, 0, 1, 0, 0.0, 1, 2, missing_true=True)     # a < 0 (NaN -> true)
    _leaf(te, 0, 1, 1.0, 0.0)
    _leaf(te, 0, 2, 0.0, 2.0)
    _branch(te, 1, 0, 0, 2, 5.0, 1, 2)                         # v[1] <= 5 (NaN -> false)
    _leaf(te, 1, 1, 0.25, 0.25)
    _leaf(te, 1, 2, 0.0, 4.0)
    run = lambda a, v: predict(m, {"a": a, "v": np.array(v)})["y"]
    np.testing.assert_allclose(run(-1.0, [0, 3.0]), [1 + 1 + 0.25, -1 + 0.25])
    np.testing.assert_allclose(run(1.0, [0, 9.0]), [1.0, -1 + 2 + 4])
    np.testing.assert_allclose(run(float("nan"), [0, float("nan")]), [2.0, 3.0])
    m.treeEnsembleRegressor.postEvaluationTransform = 2         # Regression_Logistic element-wise
    np.testing.assert_allclose(run(1.0, [0, 9.0]), [sig(1.0), sig(5.0)])


def test_tree_errors_are_clear():
    m = model([("x", "double")], [("y", "double")], pred="y")
    te = m.treeEnsembleRegressor.treeEnsemble
    te.numPredictionDimensions = 1
    _branch(te, 0, 0, 0, 3, 1.0, 1, 2)
    _leaf(te, 0, 1, 1.0)
    _leaf(te, 0, 2, 2.0)
    with pytest.raises(ClassicModelError, match=r"\(tree 0, node 0\) reads feature 3, the inputs give 1"):
        predict(m, {"x": 0.0})
    te.nodes[0].branchFeatureIndex = 0
    te.nodes[0].falseChildNodeId = 9
    with pytest.raises(ClassicModelError, match=r"\(tree 0, node 9\) are referenced but not declared"):
        predict(m, {"x": 5.0})


def _binary_tree_classifier(transform, leaf_values, labels=(0, 1)):
    m, tec = classifier("treeEnsembleClassifier", list(labels), inputs=[("x", "double")])
    tec.postEvaluationTransform = transform
    te = tec.treeEnsemble
    te.numPredictionDimensions = 1
    _branch(te, 0, 0, 0, 0, 0.0, 1, 2)
    _leaf(te, 0, 1, leaf_values[0])
    _leaf(te, 0, 2, leaf_values[1])
    return m


def test_tree_classifier_binary_mode():
    m = _binary_tree_classifier(2, (-1.5, 2.0))                 # Regression_Logistic
    out = predict(m, {"x": -1.0})
    assert out["label"] == 0 and out["probs"][1] == pytest.approx(sig(-1.5))
    assert predict(m, {"x": 1.0})["probs"] == pytest.approx({0: 1 - sig(2.0), 1: sig(2.0)})
    m = _binary_tree_classifier(0, (0.3, 0.5), labels=("neg", "pos"))   # NoTransform: leaf = p(pos)
    assert predict(m, {"x": -1.0})["probs"] == pytest.approx({"neg": 0.7, "pos": 0.3})
    assert predict(m, {"x": 1.0})["label"] == "pos"           # 0.5 goes to the second class
    m = _binary_tree_classifier(3, (-1.5, 2.0))                 # zero-class reference: sigmoid
    assert predict(m, {"x": 1.0})["probs"][1] == pytest.approx(sig(2.0))


def test_tree_classifier_multiclass_softmax():
    m, tec = classifier("treeEnsembleClassifier", ["a", "b", "c"], inputs=[("x", "double")])
    tec.postEvaluationTransform = 1
    te = tec.treeEnsemble
    te.numPredictionDimensions = 3
    te.basePredictionValue.extend([0.5, 0.0, 0.0])
    for tree, cls in ((0, 0), (1, 1), (2, 2)):
        vals = [[0.0] * 3, [0.0] * 3]
        vals[0][cls], vals[1][cls] = 1.0 * (cls + 1), -1.0
        _branch(te, tree, 0, 3, 0, 0.0, 1, 2)                   # x > 0
        _leaf(te, tree, 1, *vals[0])
        _leaf(te, tree, 2, *vals[1])
    out = predict(m, {"x": 1.0})                                # scores [1.5, 2, 3]
    e = np.exp([1.5, 2.0, 3.0])
    assert list(out["probs"].values()) == pytest.approx(list(e / e.sum()))
    assert out["label"] == "c"
    tec.postEvaluationTransform = 3                             # class 0 pinned at score 0
    e = np.exp([0.0, 2.0, 3.0])
    assert list(predict(m, {"x": 1.0})["probs"].values()) == pytest.approx(list(e / e.sum()))
    te.numPredictionDimensions = 2
    with pytest.raises(ClassicModelError):
        predict(m, {"x": 1.0})


# --------------------------------------------------------------------------- SVM

SV = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])


def _kernel(kind, K):
    if kind == "linear":
        K.linearKernel.SetInParent()
        return lambda a, b: a @ b
    if kind == "rbf":
        K.rbfKernel.gamma = 0.5
        return lambda a, b: math.exp(-0.5 * ((a - b) ** 2).sum())
    if kind == "poly":
        K.polyKernel.gamma, K.polyKernel.c, K.polyKernel.degree = 0.5, 1.0, 3
        return lambda a, b: (0.5 * (a @ b) + 1.0) ** 3
    K.sigmoidKernel.gamma, K.sigmoidKernel.c = 0.3, -0.2
    return lambda a, b: math.tanh(0.3 * (a @ b) - 0.2)


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly", "sigmoid"])
@pytest.mark.parametrize("sparse", [False, True])
def test_svm_regressor_kernels(kernel, sparse):
    m = model([("x", "array", [2])], [("y", "double")], pred="y")
    svr = m.supportVectorRegressor
    k = _kernel(kernel, svr.kernel)
    for row in SV:
        if sparse:
            v = svr.sparseSupportVectors.vectors.add()
            for i, val in enumerate(row):
                if val:
                    n = v.nodes.add()
                    n.index, n.value = i + 1, val
        else:
            svr.denseSupportVectors.vectors.add().values.extend(row)
    alpha = [0.5, -1.0, 2.0]
    svr.coefficients.alpha.extend(alpha)
    svr.rho = 0.75
    x = np.array([0.3, -0.7])
    expected = sum(a * k(s, x) for a, s in zip(alpha, SV)) - 0.75
    assert predict(m, {"x": x})["y"] == pytest.approx(expected)


def test_svm_classifier_one_vs_one_votes_and_probabilities():
    m, svc = classifier("supportVectorClassifier", ["a", "b", "c"])
    svc.kernel.linearKernel.SetInParent()
    for row in SV:                                      # one support vector per class
        svc.denseSupportVectors.vectors.add().values.extend(row)
    svc.numberOfSupportVectorsPerClass.extend([1, 1, 1])
    coef = np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]])
    for row in coef:
        svc.coefficients.add().alpha.extend(row)
    rho = [0.1, -0.2, 0.3]
    svc.rho.extend(rho)
    x = np.array([1.0, 2.0])
    kv = SV @ x                                        # [1, 4, 3]
    dec = {(0, 1): coef[0, 0] * kv[0] + coef[0, 1] * kv[1] - rho[0],
           (0, 2): coef[1, 0] * kv[0] + coef[0, 2] * kv[2] - rho[1],
           (1, 2): coef[1, 1] * kv[1] + coef[1, 2] * kv[2] - rho[2]}
    votes = [0, 0, 0]
    for (i, j), d in dec.items():
        votes[i if d > 0 else j] += 1
    m.description.predictedProbabilitiesName = ""
    del m.description.output[1]
    assert predict(m, {"x": x})["label"] == "abc"[int(np.argmax(votes))]
    # binary with Platt scaling: p(first) = 1 / (1 + exp(A f + B))
    b, bsvc = classifier("supportVectorClassifier", [3, 7])
    bsvc.kernel.linearKernel.SetInParent()
    for row in SV[:2]:
        bsvc.denseSupportVectors.vectors.add().values.extend(row)
    bsvc.numberOfSupportVectorsPerClass.extend([1, 1])
    bsvc.coefficients.add().alpha.extend([1.0, -0.5])
    bsvc.rho.append(0.25)
    bsvc.probA.append(-2.0)
    bsvc.probB.append(0.1)
    f = 1.0 * kv[0] - 0.5 * kv[1] - 0.25                # = -1.25
    p0 = 1 / (1 + math.exp(-2.0 * f + 0.1))
    out = predict(b, {"x": x})
    assert out["probs"] == pytest.approx({3: p0, 7: 1 - p0}) and out["label"] == (3 if p0 > 0.5 else 7)


def test_svm_classifier_multiclass_probabilities_sum_to_one():
    m, svc = classifier("supportVectorClassifier", ["a", "b", "c"])
    svc.kernel.rbfKernel.gamma = 0.5
    for row in SV:
        svc.denseSupportVectors.vectors.add().values.extend(row)
    svc.numberOfSupportVectorsPerClass.extend([1, 1, 1])
    for row in ([1.0, -1.0, 0.5], [0.5, 1.0, -1.0]):
        svc.coefficients.add().alpha.extend(row)
    svc.rho.extend([0.1, -0.2, 0.3])
    svc.probA.extend([-1.5, -2.0, -1.0])
    svc.probB.extend([0.0, 0.1, -0.1])
    out = predict(m, {"x": [0.2, 0.4]})
    assert sum(out["probs"].values()) == pytest.approx(1.0)
    assert out["label"] == max(out["probs"], key=out["probs"].get)


# --------------------------------------------------------------------------- feature engineering

def test_feature_vectorizer_scalars_arrays_and_sparse_dicts():
    m = model([("a", "double"), ("v", "array", [2]), ("d", "dict", None, "int64"), ("n", "int64")],
              [("out", "array", [7])])
    for name, dims in (("a", 1), ("v", 2), ("d", 3), ("n", 1)):
        col = m.featureVectorizer.inputList.add()
        col.inputColumn, col.inputDimensions = name, dims
    out = predict(m, {"a": 1.5, "v": np.array([2.0, 3.0]), "d": {2: 9.0, 0: 4.0}, "n": 7})["out"]
    np.testing.assert_array_equal(out, [1.5, 2.0, 3.0, 4.0, 0.0, 9.0, 7.0])
    with pytest.raises(ClassicModelError, match="keys must be integers in 0..2"):
        predict(m, {"a": 1.5, "v": np.array([2.0, 3.0]), "d": {5: 1.0}, "n": 7})


def test_scaler_scalar_and_array():
    m = model([("x", "array", [3])], [("y", "array", [3])])
    m.scaler.shiftValue.extend([1.0, 2.0, 3.0])
    m.scaler.scaleValue.append(2.0)
    np.testing.assert_allclose(predict(m, {"x": np.array([0.0, 1.0, -3.0])})["y"], [2.0, 6.0, 0.0])
    s = model([("x", "int64")], [("y", "double")])
    s.scaler.shiftValue.append(-1.0)
    assert predict(s, {"x": 4})["y"] == pytest.approx(3.0)


def test_one_hot_encoder_dense_sparse_and_unknown():
    m = model([("c", "string")], [("y", "array", [3])])
    m.oneHotEncoder.stringCategories.vector.extend(["red", "green", "blue"])
    np.testing.assert_array_equal(predict(m, {"c": "green"})["y"], [0, 1, 0])
    with pytest.raises(ClassicModelError, match=r"'pink' is not a known category \('red', 'green', 'blue'\)"):
        predict(m, {"c": "pink"})
    m.oneHotEncoder.handleUnknown = 1
    np.testing.assert_array_equal(predict(m, {"c": "pink"})["y"], [0, 0, 0])
    s = model([("c", "int64")], [("y", "dict", None, "int64")])
    s.oneHotEncoder.int64Categories.vector.extend([5, 7, 9])
    s.oneHotEncoder.outputSparse = True
    assert predict(s, {"c": 9})["y"] == {2: 1.0}


def test_imputer_scalars_arrays_and_absent_inputs():
    m = model([("x", "array", [3])], [("y", "array", [3])])
    m.imputer.imputedDoubleArray.vector.extend([10.0, 20.0, 30.0])
    m.imputer.replaceDoubleValue = float("nan")
    np.testing.assert_array_equal(predict(m, {"x": np.array([1.0, np.nan, np.nan])})["y"], [1, 20, 30])
    i = model([("x", "int64")], [("y", "int64")])
    i.description.input[0].type.isOptional = True
    i.imputer.imputedInt64Value = 42
    i.imputer.replaceInt64Value = -1
    assert predict(i, {"x": -1})["y"] == 42 and predict(i, {"x": 3})["y"] == 3
    assert predict(i, {})["y"] == 42
    s = model([("x", "string")], [("y", "string")])
    s.imputer.imputedStringValue = "unknown"
    s.imputer.replaceStringValue = ""
    assert predict(s, {"x": ""})["y"] == "unknown" and predict(s, {"x": "ok"})["y"] == "ok"


@pytest.mark.parametrize("norm,expected", [(0, [0.25, -1.0, 0.5]), (1, [1 / 7, -4 / 7, 2 / 7]),
                                            (2, [1 / math.sqrt(21), -4 / math.sqrt(21), 2 / math.sqrt(21)])])
def test_normalizer(norm, expected):
    m = model([("x", "array", [3])], [("y", "array", [3])])
    m.normalizer.normType = norm
    np.testing.assert_allclose(predict(m, {"x": np.array([1.0, -4.0, 2.0])})["y"], expected)
    np.testing.assert_array_equal(predict(m, {"x": np.zeros(3)})["y"], [0, 0, 0])


def test_array_feature_extractor_scalar_and_array_outputs():
    m = model([("x", "array", [4])], [("y", "array", [2])])
    m.arrayFeatureExtractor.extractIndex.extend([3, 1])
    np.testing.assert_array_equal(predict(m, {"x": np.arange(4.0)})["y"], [3.0, 1.0])
    s = model([("x", "array", [4])], [("y", "int64")])
    s.arrayFeatureExtractor.extractIndex.append(2)
    assert predict(s, {"x": np.array([0, 0, 7.0, 0])})["y"] == 7
    s.arrayFeatureExtractor.extractIndex[0] = 4
    with pytest.raises(ClassicModelError, match=r"index\(es\) \[4\] out of range"):
        predict(s, {"x": np.zeros(4)})


def test_dict_vectorizer_dense_and_sparse():
    m = model([("d", "dict")], [("y", "array", [4])])
    m.dictVectorizer.stringToIndex.vector.extend(["a", "c", "b", "z"])
    np.testing.assert_array_equal(predict(m, {"d": {"a": 4.0, "c": 8.0}})["y"], [4, 8, 0, 0])
    s = model([("d", "dict")], [("y", "dict", None, "int64")])
    s.dictVectorizer.stringToIndex.vector.extend(["a", "c", "b", "z"])
    assert predict(s, {"d": {"b": 2.0, "z": 1.0, "q": 5.0}})["y"] == {2: 2.0, 3: 1.0}


def test_categorical_mapping_both_ways_defaults_and_sequences():
    m = model([("s", "string")], [("i", "int64")])
    m.categoricalMapping.stringToInt64Map.map.update({"cat": 1, "dog": 2})
    assert predict(m, {"s": "dog"})["i"] == 2
    with pytest.raises(ClassicModelError, match="'cow' is not in the mapping and no ValueOnUnknown"):
        predict(m, {"s": "cow"})
    m.categoricalMapping.int64Value = -1
    assert predict(m, {"s": "cow"})["i"] == -1
    r = model([("i", "int64")], [("s", "string")])
    r.categoricalMapping.int64ToStringMap.map.update({1: "cat"})
    r.categoricalMapping.strValue = "?"
    assert predict(r, {"i": 1})["s"] == "cat" and predict(r, {"i": 5})["s"] == "?"
    q = model([("s", "seq_string")], [("i", "seq_int64")])
    q.categoricalMapping.stringToInt64Map.map.update({"cat": 1, "dog": 2})
    assert predict(q, {"s": ["dog", "cat"]})["i"] == [2, 1]
    assert random_inputs(q, seed=0)["s"][0] in ("cat", "dog")


def test_sklearn_style_pipeline_with_dictionaries_runs_on_random_inputs():
    """dictVectorizer (sparse dict) -> featureVectorizer -> glmRegressor, as the
    coremltools sklearn converter builds it; random inputs use the known keys."""
    pipe = model([("d", "dict")], [("y", "double")], pred="y")
    dv = pipe.pipelineRegressor.pipeline.models.add()
    dv.CopyFrom(model([("d", "dict")], [("sparse", "dict", None, "int64")]))
    dv.dictVectorizer.stringToIndex.vector.extend(["u", "v", "w"])
    fv = pipe.pipelineRegressor.pipeline.models.add()
    fv.CopyFrom(model([("sparse", "dict", None, "int64")], [("vec", "array", [3])]))
    col = fv.featureVectorizer.inputList.add()
    col.inputColumn, col.inputDimensions = "sparse", 3
    glm = pipe.pipelineRegressor.pipeline.models.add()
    glm.CopyFrom(model([("vec", "array", [3])], [("y", "double")], pred="y"))
    glm.glmRegressor.weights.add().value.extend([1.0, 10.0, 100.0])
    glm.glmRegressor.offset.append(0.5)
    assert predict(pipe, {"d": {"w": 1.0, "u": 2.0}})["y"] == pytest.approx(102.5)
    inputs = random_inputs(pipe, seed=4)
    assert set(inputs["d"]) <= {"u", "v", "w"} and inputs["d"]
    assert verify(pipe, pipe).ok


# --------------------------------------------------------------------------- corpus

CORPUS_CLASSIC = ["real/MarsHabitatPricer.mlmodel", "real/PlotCVPredict.mlmodel", "real/EOG_model.mlmodel",
                  "real/EOG_MyTabularClassifier.mlmodel", "real/improveai_dummy_v6.mlmodel",
                  "real/insurance_model.mlmodel", "generated/sklearn_scaler_logreg.mlmodel"]

PY_TYPES = {"doubleType": float, "int64Type": int, "stringType": str, "dictionaryType": dict,
            "multiArrayType": np.ndarray}


def _corpus(rel):
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"{rel} not in the corpus")
    return path


@pytest.mark.corpus
@pytest.mark.parametrize("rel", CORPUS_CLASSIC)
def test_corpus_classic_models_run_and_verify(rel):
    path = _corpus(rel)
    s = io.load_spec(path)
    for seed in range(3):
        out = predict(path, random_inputs(path, seed=seed))
        assert set(out) == {f.name for f in s.description.output}
        for f in s.description.output:
            assert isinstance(out[f.name], PY_TYPES[f.type.WhichOneof("Type")]), f.name
            if isinstance(out[f.name], float):
                assert math.isfinite(out[f.name])
        labels = sp.class_labels(s)
        if labels:
            probs = out[s.description.predictedProbabilitiesName]
            assert list(probs) == labels
            assert sum(probs.values()) == pytest.approx(1.0)    # softmax / logistic-normalised
            assert out[s.description.predictedFeatureName] == max(probs, key=probs.get)
    report = verify(path, path, samples=2)
    assert report.ok, report.summary()


@pytest.mark.corpus
def test_mars_habitat_pricer_is_the_linear_formula():
    path = _corpus("real/MarsHabitatPricer.mlmodel")
    glm = io.load_spec(path).pipelineRegressor.pipeline.models[1].glmRegressor
    w, b = list(glm.weights[0].value), glm.offset[0]
    price = predict(path, {"solarPanels": 1.0, "greenhouses": 2.0, "size": 750.0})["price"]
    assert price == pytest.approx(w[0] * 1 + w[1] * 2 + w[2] * 750 + b)
    with pytest.raises(NotFoundError, match="'size'"):
        predict(path, {"solarPanels": 1.0, "greenhouses": 2.0})


@pytest.mark.corpus
def test_sklearn_scaler_logreg_by_hand():
    path = _corpus("generated/sklearn_scaler_logreg.mlmodel")
    stages = io.load_spec(path).pipelineClassifier.pipeline.models
    scaler, glm = stages[1].scaler, stages[2].glmClassifier
    x = np.array([5.1, 3.5, 1.4, 0.2])
    z = np.array(scaler.scaleValue) * (x + np.array(scaler.shiftValue))
    s = np.array([list(r.value) for r in glm.weights]) @ z + np.array(glm.offset)
    p = 1 / (1 + np.exp(-s))
    p /= p.sum()
    out = predict(path, dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], x)))
    assert list(out["classProbability"].values()) == pytest.approx(list(p))


@pytest.mark.corpus
@pytest.mark.parametrize("rel,kind", [("generated/knn_updatable.mlmodel", "kNearestNeighborsClassifier"),
                                      ("real/SentimentClassifier_Diary.mlmodel", "textClassifier"),
                                      ("real/CreateML_ImageClassifier_Wataru.mlmodel", "visionFeaturePrint"),
                                      ("real/SoundClassifier.mlmodel", "audioFeaturePrint")])
def test_other_types_still_raise_a_clean_unsupported_error(rel, kind):
    path = _corpus(rel)
    assert kind not in RUNNERS
    inputs = random_inputs(path) if kind != "audioFeaturePrint" else {"audioSamples": np.zeros(15600)}
    with pytest.raises(UnsupportedError, match=f"type '{kind}', which the reference runtime does not run"):
        predict(path, inputs)


def test_classic_errors_are_specsurgery_errors():
    assert issubclass(ClassicModelError, SpecSurgeryError)


# --------------------------------------------------------------------------- sklearn cross-check

def _glm_spec(coef, intercept, labels, encoding):
    m, glm = classifier("glmClassifier", list(labels), inputs=[("x", "array", [coef.shape[1]])])
    glm.classEncoding = encoding
    for row, b in zip(coef, intercept):
        glm.weights.add().value.extend(row.tolist())
        glm.offset.append(float(b))
    return m


def _sk_tree_nodes(te, tree, tree_id, value_of):
    """Write one fitted sklearn tree as Core ML nodes (x <= threshold -> left)."""
    for node in range(tree.node_count):
        if tree.children_left[node] == -1:
            _leaf(te, tree_id, node, *value_of(tree.value[node][0]))
        else:
            _branch(te, tree_id, node, 0, int(tree.feature[node]), float(tree.threshold[node]),
                    int(tree.children_left[node]), int(tree.children_right[node]))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cross_check_with_sklearn():
    sk = pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC, SVR

    assert sk.__version__
    X, y = make_classification(n_samples=120, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=3, random_state=0)
    Xt = X[:15]
    # multinomial logistic regression == ReferenceClass encoding with class 0's row subtracted
    lr = LogisticRegression(max_iter=500).fit(X, y)
    m = _glm_spec(lr.coef_[1:] - lr.coef_[0], lr.intercept_[1:] - lr.intercept_[0], [0, 1, 2], 0)
    got = np.array([list(predict(m, {"x": x})["probs"].values()) for x in Xt])
    np.testing.assert_allclose(got, lr.predict_proba(Xt), atol=1e-9)
    # one-vs-rest
    ovr = OneVsRestClassifier(LogisticRegression(max_iter=500)).fit(X, y)
    est = ovr.estimators_
    m = _glm_spec(np.vstack([e.coef_ for e in est]), np.hstack([e.intercept_ for e in est]), [0, 1, 2], 1)
    got = np.array([list(predict(m, {"x": x})["probs"].values()) for x in Xt])
    np.testing.assert_allclose(got, ovr.predict_proba(Xt), atol=1e-9)
    # SVC with Platt probabilities (libsvm conventions: rho = -intercept, internal dual coefs)
    svc = SVC(kernel="rbf", gamma=0.3, probability=True, random_state=0).fit(X, y)
    m, msg = classifier("supportVectorClassifier", [0, 1, 2], inputs=[("x", "array", [4])])
    msg.kernel.rbfKernel.gamma = 0.3
    for v in svc.support_vectors_:
        msg.denseSupportVectors.vectors.add().values.extend(v.tolist())
    msg.numberOfSupportVectorsPerClass.extend(int(n) for n in svc.n_support_)
    for row in svc._dual_coef_:
        msg.coefficients.add().alpha.extend(row.tolist())
    msg.rho.extend((-svc._intercept_).tolist())
    msg.probA.extend(svc.probA_.tolist())
    msg.probB.extend(svc.probB_.tolist())
    got = np.array([list(predict(m, {"x": x})["probs"].values()) for x in Xt])
    np.testing.assert_allclose(got, svc.predict_proba(Xt), atol=1e-4)
    msg.ClearField("probA")
    msg.ClearField("probB")
    m.description.predictedProbabilitiesName = ""
    del m.description.output[1]
    assert [predict(m, {"x": x})["label"] for x in Xt] == svc.predict(Xt).tolist()
    # SVR, polynomial kernel
    svr = SVR(kernel="poly", degree=2, gamma=0.2, coef0=1.0).fit(X, X[:, 0] * 2 + X[:, 1])
    m = model([("x", "array", [4])], [("y", "double")], pred="y")
    m.supportVectorRegressor.kernel.polyKernel.degree = 2
    m.supportVectorRegressor.kernel.polyKernel.gamma = 0.2
    m.supportVectorRegressor.kernel.polyKernel.c = 1.0
    for v in svr.support_vectors_:
        m.supportVectorRegressor.denseSupportVectors.vectors.add().values.extend(v.tolist())
    m.supportVectorRegressor.coefficients.alpha.extend(svr._dual_coef_[0].tolist())
    m.supportVectorRegressor.rho = float(-svr._intercept_[0])
    np.testing.assert_allclose([predict(m, {"x": x})["y"] for x in Xt], svr.predict(Xt), rtol=1e-9)
    # binary gradient boosting: Regression_Logistic with the prior log-odds as base value
    yb = (y == 1).astype(int)
    gb = GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0).fit(X, yb)
    m, tec = classifier("treeEnsembleClassifier", [0, 1], inputs=[("x", "array", [4])])
    tec.postEvaluationTransform = 2
    te = tec.treeEnsemble
    te.numPredictionDimensions = 1
    p = yb.mean()
    te.basePredictionValue.append(float(np.log(p / (1 - p))))
    for t, est_ in enumerate(gb.estimators_[:, 0]):
        _sk_tree_nodes(te, est_.tree_, t, lambda v: [float(v[0]) * gb.learning_rate])
    got = np.array([predict(m, {"x": x})["probs"][1] for x in Xt])
    np.testing.assert_allclose(got, gb.predict_proba(Xt)[:, 1], atol=1e-9)
    # random forest regressor: mean of the trees
    rf = RandomForestRegressor(n_estimators=5, max_depth=3, random_state=0).fit(X, X[:, 2])
    m = model([("x", "array", [4])], [("y", "double")], pred="y")
    te = m.treeEnsembleRegressor.treeEnsemble
    te.numPredictionDimensions = 1
    for t, est_ in enumerate(rf.estimators_):
        _sk_tree_nodes(te, est_.tree_, t, lambda v: [float(v[0]) / 5])
    np.testing.assert_allclose([predict(m, {"x": x})["y"] for x in Xt], rf.predict(Xt), rtol=1e-9)
