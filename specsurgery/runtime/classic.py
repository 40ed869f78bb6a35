"""Classic (non-neural-network) Core ML model types for the reference runtime.

Linear models, tree ensembles, support vector machines and the sklearn-style
feature-engineering transforms that Create ML and the coremltools converters put
in pipelines.  Every type has one function ``run(spec, inputs, where) -> outputs``
registered in :data:`RUNNERS`; ``engine._run`` looks the model type up there.

Conventions (Core ML computes these models in double precision, so does this):

* A model that takes "vectorizable" inputs (GLM, trees, SVM) reads all its
  inputs in description order and concatenates them: a Double or Int64 is one
  value, a multiarray contributes its elements in C order.  A missing optional
  input contributes NaN (a tree sends it down its "missing value" branch).
* Regressors return the prediction under ``predictedFeatureName`` (a float for
  a Double output, an array for a multiarray output).
* Classifiers return the label (``str`` or ``int``) under
  ``predictedFeatureName`` and ``{label: probability}`` under
  ``predictedProbabilitiesName``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .. import spec as _spec
from .._proto import FeatureTypes_pb2
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from .nms import run_nms

_ARRAY_DTYPES = {
    FeatureTypes_pb2.ArrayFeatureType.DOUBLE: np.float64,
    FeatureTypes_pb2.ArrayFeatureType.FLOAT32: np.float32,
    FeatureTypes_pb2.ArrayFeatureType.INT32: np.int32,
}


class ClassicModelError(SpecSurgeryError):
    """A classic model whose parameters or inputs cannot be evaluated."""


# --------------------------------------------------------------------------- helpers

def _label(where: str, kind: str) -> str:
    return f"{kind} {where.rstrip('/') or '(top)'}"


def _sigmoid(x):
    x = np.asarray(x, np.float64)
    # the two branches avoid overflow in exp for large |x|
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def _probit(x):
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _scalar(value, name, who):
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "US" or arr.size != 1:
        raise ClassicModelError(f"{who}: input {name!r} must be a single number, got {value!r:.80}")
    return arr.reshape(-1)[0].item()


def _vectorize(spec, inputs: Mapping, who: str) -> np.ndarray:
    """All inputs in description order as one float64 vector (Double/Int64/multiarray)."""
    parts = []
    for f in spec.description.input:
        kind = f.type.WhichOneof("Type")
        value = inputs.get(f.name)
        if kind in ("doubleType", "int64Type"):
            parts.append(np.array([np.nan if value is None else float(_scalar(value, f.name, who))]))
        elif kind == "multiArrayType":
            if value is None:
                shape = _spec.feature_shape(f.type) or [1]
                parts.append(np.full(int(np.prod(shape)), np.nan))
            else:
                arr = np.asarray(value)
                if arr.dtype == object or arr.dtype.kind in "US":
                    raise ClassicModelError(f"{who}: input {f.name!r} must be a numeric array")
                parts.append(arr.astype(np.float64).reshape(-1))
        else:
            raise ClassicModelError(f"{who}: input {f.name!r} is {_spec.describe_type(f.type)}; this model "
                                    "type takes Double, Int64 or multiarray inputs only")
    return np.concatenate(parts) if parts else np.zeros(0)


def to_feature(value, ft, name: str, who: str):
    """A computed value in the Python form of feature type ``ft``."""
    kind = ft.WhichOneof("Type")
    if kind == "doubleType":
        arr = np.asarray(value, np.float64).reshape(-1)
        if arr.size != 1:
            raise ClassicModelError(f"{who}: output {name!r} is a Double but the model computes "
                                    f"{arr.size} values; declare it as a multiarray of {arr.size}")
        return float(arr[0])
    if kind == "int64Type":
        arr = np.asarray(value).reshape(-1)
        if arr.size != 1:
            raise ClassicModelError(f"{who}: output {name!r} is an Int64 but the model computes "
                                    f"{arr.size} values")
        return int(np.rint(float(arr[0])))
    if kind == "multiArrayType":
        arr = np.asarray(value, np.float64)
        shape = _spec.feature_shape(ft)
        if shape and not _spec.is_flexible(ft) and arr.size == int(np.prod(shape)):
            arr = arr.reshape(shape)
        else:
            arr = arr.reshape(-1)
        dtype = _ARRAY_DTYPES.get(ft.multiArrayType.dataType, np.float64)
        return np.rint(arr).astype(dtype) if dtype is np.int32 else arr.astype(dtype)
    if kind == "dictionaryType":
        if not isinstance(value, dict):
            raise ClassicModelError(f"{who}: output {name!r} is a dictionary but the model computes "
                                    f"{type(value).__name__}")
        return dict(value)
    if kind == "stringType":
        return str(value)
    return value


def _prediction_output(spec, value, who: str) -> dict:
    """Regressors and transforms: the one computed value under the predicted (or only) output."""
    desc = spec.description
    outs = list(desc.output)
    target = desc.predictedFeatureName or (outs[0].name if outs else "")
    result = {}
    for f in outs:
        if f.name != target:
            raise NotFoundError(f"{who}: output {f.name!r} is not computed by this model type; it computes "
                                f"one value (under {target!r})")
        result[f.name] = to_feature(value, f.type, f.name, who)
    if not result:
        raise ClassicModelError(f"{who}: the model declares no output")
    return result


def _classifier_output(spec, labels, probs, label, who: str) -> dict:
    desc = spec.description
    pred, prob_name = desc.predictedFeatureName, desc.predictedProbabilitiesName
    result = {}
    for f in desc.output:
        kind = f.type.WhichOneof("Type")
        if f.name == pred or (not pred and kind in ("stringType", "int64Type")):
            result[f.name] = int(label) if kind == "int64Type" else (
                str(label) if kind == "stringType" else label)
        elif f.name == prob_name or (not prob_name and kind == "dictionaryType"):
            if probs is None:
                raise ClassicModelError(f"{who}: output {f.name!r} asks for class probabilities, which this "
                                        "model cannot compute (an SVM needs probA and probB)")
            if kind == "multiArrayType":
                result[f.name] = to_feature(probs, f.type, f.name, who)
            else:
                result[f.name] = {lab: float(p) for lab, p in zip(labels, probs)}
        else:
            raise NotFoundError(f"{who}: output {f.name!r} is neither the predicted label "
                                f"({pred!r}) nor the probabilities ({prob_name!r})")
    return result


def _class_labels(msg, who: str, default_count: int = 0) -> list:
    which = msg.WhichOneof("ClassLabels")
    if which:
        return list(getattr(msg, which).vector)
    if default_count:
        return list(range(default_count))
    raise ClassicModelError(f"{who}: no class labels (set stringClassLabels or int64ClassLabels)")


def _single_input(spec, inputs: Mapping, who: str):
    if len(spec.description.input) != 1:
        raise ClassicModelError(f"{who}: takes exactly one input, the description has "
                                f"{len(spec.description.input)}")
    f = spec.description.input[0]
    return f, inputs.get(f.name)


def _matrix(rows, who: str, what: str) -> np.ndarray:
    data = [list(r.value) for r in rows]
    if data and len({len(r) for r in data}) != 1:
        raise ClassicModelError(f"{who}: the {what} rows have different lengths "
                                f"({sorted({len(r) for r in data})})")
    return np.array(data, np.float64).reshape(len(data), len(data[0]) if data else 0)


def _check_width(W: np.ndarray, x: np.ndarray, who: str):
    if W.shape[1] != x.size:
        raise ClassicModelError(f"{who}: the weights take {W.shape[1]} input values, the inputs give "
                                f"{x.size}")


# --------------------------------------------------------------------------- GLM

GLM_REG_TRANSFORMS = {0: lambda y: y, 1: _sigmoid, 2: _probit}     # NoTransform, Logit, Probit


def run_glm_regressor(spec, inputs, where):
    who = _label(where, "glmRegressor")
    m = spec.glmRegressor
    W = _matrix(m.weights, who, "weights")
    b = np.array(m.offset, np.float64)
    if W.shape[0] == 0 or b.size != W.shape[0]:
        raise ClassicModelError(f"{who}: {W.shape[0]} weight rows and {b.size} offsets; they must be "
                                "equal and non-zero")
    x = _vectorize(spec, inputs, who)
    _check_width(W, x, who)
    transform = GLM_REG_TRANSFORMS.get(m.postEvaluationTransform)
    if transform is None:
        raise ClassicModelError(f"{who}: unknown postEvaluationTransform {m.postEvaluationTransform}")
    return _prediction_output(spec, transform(W @ x + b), who)


def glm_class_probabilities(m, x: np.ndarray, n_classes: int, who: str) -> np.ndarray:
    """Class probabilities of a GLMClassifier for the input vector ``x``.

    * Binary (one weight row, 2 classes, either encoding): the row scores the
      second class: p1 = link(s), p0 = 1 - p1 (link: logistic or probit).
    * ReferenceClass, K classes, K-1 rows: the first class is the reference
      with score 0; p = softmax([0, s_1, ..., s_{K-1}]) (Logit only).
    * OneVsRest, K classes, K rows: p_k = sigmoid(s_k), normalised to sum 1
      (as sklearn's one-vs-rest logistic regression does).
    """
    W = _matrix(m.weights, who, "weights")
    b = np.array(m.offset, np.float64)
    if W.shape[0] == 0 or b.size != W.shape[0]:
        raise ClassicModelError(f"{who}: {W.shape[0]} weight rows and {b.size} offsets; they must be "
                                "equal and non-zero")
    _check_width(W, x, who)
    s = W @ x + b
    probit = m.postEvaluationTransform == 1
    if m.postEvaluationTransform not in (0, 1):
        raise ClassicModelError(f"{who}: unknown postEvaluationTransform {m.postEvaluationTransform}")
    if m.classEncoding not in (0, 1):
        raise ClassicModelError(f"{who}: unknown classEncoding {m.classEncoding}")
    rows = W.shape[0]
    if n_classes == 2 and rows == 1:
        p1 = float((_probit if probit else _sigmoid)(s)[0])
        return np.array([1.0 - p1, p1])
    if probit:
        raise ClassicModelError(f"{who}: the Probit transform works for two classes only "
                                f"({n_classes} labels)")
    if m.classEncoding == 0:                       # ReferenceClass
        if rows != n_classes - 1:
            raise ClassicModelError(f"{who}: ReferenceClass encoding needs {n_classes - 1} weight rows "
                                    f"for {n_classes} classes, found {rows}")
        return _softmax(np.concatenate([[0.0], s]))
    if rows != n_classes:                          # OneVsRest
        raise ClassicModelError(f"{who}: OneVsRest encoding needs one weight row per class "
                                f"({n_classes}), found {rows}")
    p = _sigmoid(s)
    return p / p.sum()


def run_glm_classifier(spec, inputs, where):
    who = _label(where, "glmClassifier")
    m = spec.glmClassifier
    labels = _class_labels(m, who)
    x = _vectorize(spec, inputs, who)
    probs = glm_class_probabilities(m, x, len(labels), who)
    return _classifier_output(spec, labels, probs, labels[int(np.argmax(probs))], who)


# --------------------------------------------------------------------------- tree ensembles

LEAF = 6
# TreeNodeBehavior -> comparison "feature value <op> branchFeatureValue" that selects the true child
BRANCHES: dict[int, Callable[[float, float], bool]] = {
    0: lambda v, t: v <= t,        # BranchOnValueLessThanEqual
    1: lambda v, t: v < t,         # BranchOnValueLessThan
    2: lambda v, t: v >= t,        # BranchOnValueGreaterThanEqual
    3: lambda v, t: v > t,         # BranchOnValueGreaterThan
    4: lambda v, t: v == t,        # BranchOnValueEqual
    5: lambda v, t: v != t,        # BranchOnValueNotEqual
}


def _softmax_zero_reference(s):
    """Class 0 is the reference class with score 0 (binary: p1 = sigmoid(s))."""
    if s.size == 1:
        return _sigmoid(s)
    return _softmax(np.concatenate([[0.0], s[1:]]))


TREE_TRANSFORMS = {
    0: lambda s: s,                     # NoTransform
    1: _softmax,                        # Classification_SoftMax
    2: _sigmoid,                        # Regression_Logistic (element-wise)
    3: _softmax_zero_reference,         # Classification_SoftMaxWithZeroClassReference
}


def tree_scores(te, x: np.ndarray, who: str) -> np.ndarray:
    """Sum of the leaf values every tree reaches, added to basePredictionValue."""
    dims = int(te.numPredictionDimensions)
    if dims == 0:
        raise ClassicModelError(f"{who}: numPredictionDimensions is 0")
    base = np.array(te.basePredictionValue, np.float64)
    if base.size == 0:
        base = np.zeros(dims)
    elif base.size != dims:
        raise ClassicModelError(f"{who}: {base.size} basePredictionValue(s) for numPredictionDimensions "
                                f"{dims}")
    nodes, children = {}, set()
    for n in te.nodes:
        key = (n.treeId, n.nodeId)
        if key in nodes:
            raise ClassicModelError(f"{who}: node (tree {n.treeId}, node {n.nodeId}) is declared twice")
        nodes[key] = n
        if n.nodeBehavior != LEAF:
            children.add((n.treeId, n.trueChildNodeId))
            children.add((n.treeId, n.falseChildNodeId))
    dangling = sorted(children - set(nodes))
    if dangling:
        raise ClassicModelError(f"{who}: node(s) " + ", ".join(f"(tree {t}, node {n})" for t, n in dangling)
                                + " are referenced but not declared")
    roots = sorted(k for k in nodes if k not in children)
    trees = {k[0] for k in nodes}
    if {k[0] for k in roots} != trees or len(roots) != len(trees):
        bad = sorted(t for t in trees if sum(1 for r in roots if r[0] == t) != 1)
        raise ClassicModelError(f"{who}: tree(s) {bad} do not have exactly one root node")
    scores = base.copy()
    for root in roots:
        node, steps = nodes[root], 0
        while node.nodeBehavior != LEAF:
            cmp = BRANCHES.get(node.nodeBehavior)
            if cmp is None:
                raise ClassicModelError(f"{who}: node (tree {node.treeId}, node {node.nodeId}) has unknown "
                                        f"behaviour {node.nodeBehavior}")
            idx = int(node.branchFeatureIndex)
            if idx >= x.size:
                raise ClassicModelError(f"{who}: node (tree {node.treeId}, node {node.nodeId}) reads feature "
                                        f"{idx}, the inputs give {x.size} values")
            v = x[idx]
            go_true = bool(node.missingValueTracksTrueChild) if math.isnan(v) else cmp(v, node.branchFeatureValue)
            child = (node.treeId, node.trueChildNodeId if go_true else node.falseChildNodeId)
            if child not in nodes:
                raise ClassicModelError(f"{who}: node (tree {child[0]}, node {child[1]}) is referenced but "
                                        "not declared")
            node = nodes[child]
            steps += 1
            if steps > len(nodes):
                raise ClassicModelError(f"{who}: tree {root[0]} has a cycle")
        for ev in node.evaluationInfo:
            if ev.evaluationIndex >= dims:
                raise ClassicModelError(f"{who}: leaf (tree {node.treeId}, node {node.nodeId}) adds to "
                                        f"dimension {ev.evaluationIndex} of {dims}")
            scores[ev.evaluationIndex] += ev.evaluationValue
    return scores


def _tree_transform(msg, who):
    t = TREE_TRANSFORMS.get(msg.postEvaluationTransform)
    if t is None:
        raise ClassicModelError(f"{who}: unknown postEvaluationTransform {msg.postEvaluationTransform}")
    return t


def run_tree_regressor(spec, inputs, where):
    who = _label(where, "treeEnsembleRegressor")
    m = spec.treeEnsembleRegressor
    x = _vectorize(spec, inputs, who)
    return _prediction_output(spec, _tree_transform(m, who)(tree_scores(m.treeEnsemble, x, who)), who)


def run_tree_classifier(spec, inputs, where):
    """Binary mode (one dimension, two classes): the transformed score is the
    probability of the second class, which wins when it is >= 0.5.  Otherwise one
    dimension per class and the label is the most probable class."""
    who = _label(where, "treeEnsembleClassifier")
    m = spec.treeEnsembleClassifier
    dims = int(m.treeEnsemble.numPredictionDimensions)
    labels = _class_labels(m, who, default_count=2 if dims == 1 else dims)
    x = _vectorize(spec, inputs, who)
    values = _tree_transform(m, who)(tree_scores(m.treeEnsemble, x, who))
    if dims == 1 and len(labels) == 2:
        p1 = float(values[0])
        probs = np.array([1.0 - p1, p1])
        return _classifier_output(spec, labels, probs, labels[1 if p1 >= 0.5 else 0], who)
    if dims != len(labels):
        raise ClassicModelError(f"{who}: numPredictionDimensions {dims} does not match the {len(labels)} "
                                "class labels")
    return _classifier_output(spec, labels, values, labels[int(np.argmax(values))], who)


# --------------------------------------------------------------------------- support vector machines

def _support_vectors(msg, width: int, who: str) -> np.ndarray:
    which = msg.WhichOneof("supportVectors")
    if which == "denseSupportVectors":
        rows = [list(v.values) for v in msg.denseSupportVectors.vectors]
        for i, r in enumerate(rows):
            if len(r) != width:
                raise ClassicModelError(f"{who}: support vector {i} has {len(r)} values, the inputs give "
                                        f"{width}")
        return np.array(rows, np.float64).reshape(len(rows), width)
    if which == "sparseSupportVectors":
        vecs = msg.sparseSupportVectors.vectors
        sv = np.zeros((len(vecs), width))
        for i, v in enumerate(vecs):
            for node in v.nodes:          # 1-based indexes (libsvm); beyond the input the value is 0
                if 1 <= node.index <= width:
                    sv[i, node.index - 1] = node.value
                elif node.index < 1:
                    raise ClassicModelError(f"{who}: sparse support vector {i} has index {node.index}; "
                                            "indexes are 1-based")
        return sv
    raise ClassicModelError(f"{who}: no support vectors (set dense or sparse support vectors)")


def _kernel_values(kernel, sv: np.ndarray, x: np.ndarray, who: str) -> np.ndarray:
    kind = kernel.WhichOneof("kernel")
    if kind == "linearKernel":
        return sv @ x
    if kind == "rbfKernel":
        d = sv - x
        return np.exp(-kernel.rbfKernel.gamma * np.einsum("ij,ij->i", d, d))
    if kind == "polyKernel":
        k = kernel.polyKernel
        return (k.gamma * (sv @ x) + k.c) ** int(k.degree)
    if kind == "sigmoidKernel":
        k = kernel.sigmoidKernel
        return np.tanh(k.gamma * (sv @ x) + k.c)
    raise ClassicModelError(f"{who}: no kernel set (linear, rbf, poly or sigmoid)")


def run_svm_regressor(spec, inputs, where):
    """f(x) = sum_i alpha_i K(sv_i, x) - rho (libsvm's convention)."""
    who = _label(where, "supportVectorRegressor")
    m = spec.supportVectorRegressor
    x = _vectorize(spec, inputs, who)
    sv = _support_vectors(m, x.size, who)
    alpha = np.array(m.coefficients.alpha, np.float64)
    if alpha.size != sv.shape[0]:
        raise ClassicModelError(f"{who}: {alpha.size} coefficients for {sv.shape[0]} support vectors")
    return _prediction_output(spec, float(alpha @ _kernel_values(m.kernel, sv, x, who) - m.rho), who)


def _pairwise_coupling(r: np.ndarray) -> np.ndarray:
    """Class probabilities from pairwise ones (Wu, Lin & Weng 2004, method 2, as libsvm).

    ``r[i, j]`` estimates P(class i | class i or j).  Solves
    min_p sum_{i<j} (r_ji p_i - r_ij p_j)^2 subject to sum p = 1 by the
    fixed-point iteration the paper gives."""
    k = r.shape[0]
    Q = -(r.T * r)                                 # Q[t, j] = -r[j, t] r[t, j]
    np.fill_diagonal(Q, 0.0)
    np.fill_diagonal(Q, (r.T ** 2).sum(axis=1) - np.diag(r) ** 2)
    p = np.full(k, 1.0 / k)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        Qp = Q @ p
        pQp = float(p @ Qp)
        if np.max(np.abs(Qp - pQp)) < eps:
            break
        for t in range(k):
            diff = (-Qp[t] + pQp) / Q[t, t]
            p[t] += diff
            pQp = (pQp + diff * (diff * Q[t, t] + 2 * Qp[t])) / (1 + diff) ** 2
            Qp = (Qp + diff * Q[t]) / (1 + diff)
            p /= 1 + diff
    return p


def run_svm_classifier(spec, inputs, where):
    """libsvm one-vs-one: for classes i < j the decision value is
    sum over class-i vectors of coef[j-1] K + sum over class-j vectors of coef[i] K - rho;
    positive votes for i.  With probA/probB the pairwise Platt estimates are
    coupled into class probabilities and the label is the most probable class
    (libsvm's svm_predict_probability); without them the label wins most votes."""
    who = _label(where, "supportVectorClassifier")
    m = spec.supportVectorClassifier
    labels = _class_labels(m, who)
    k = len(labels)
    x = _vectorize(spec, inputs, who)
    sv = _support_vectors(m, x.size, who)
    counts = [int(c) for c in m.numberOfSupportVectorsPerClass]
    if len(counts) != k or sum(counts) != sv.shape[0]:
        raise ClassicModelError(f"{who}: numberOfSupportVectorsPerClass {counts} does not fit {k} classes "
                                f"and {sv.shape[0]} support vectors")
    coef = np.array([list(c.alpha) for c in m.coefficients], np.float64)
    if coef.shape != (k - 1, sv.shape[0]):
        raise ClassicModelError(f"{who}: coefficients must be {k - 1} rows of {sv.shape[0]}, found "
                                f"{coef.shape}")
    pairs = k * (k - 1) // 2
    rho = np.array(m.rho, np.float64)
    if rho.size != pairs:
        raise ClassicModelError(f"{who}: {rho.size} rho values for {pairs} class pairs")
    kv = _kernel_values(m.kernel, sv, x, who)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    votes = np.zeros(k, int)
    dec = np.zeros(pairs)
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            dec[p] = coef[j - 1, si] @ kv[si] + coef[i, sj] @ kv[sj] - rho[p]
            votes[i if dec[p] > 0 else j] += 1
            p += 1
    probs = None
    if len(m.probA) or len(m.probB):
        A, B = np.array(m.probA, np.float64), np.array(m.probB, np.float64)
        if A.size != pairs or B.size != pairs:
            raise ClassicModelError(f"{who}: probA/probB need {pairs} values each, found {A.size}/{B.size}")
        min_prob = 1e-7
        pw = np.clip(_sigmoid(-(dec * A + B)), min_prob, 1 - min_prob)   # 1 / (1 + exp(A f + B))
        r = np.zeros((k, k))
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                r[i, j], r[j, i] = pw[p], 1 - pw[p]
                p += 1
        probs = np.array([r[0, 1], r[1, 0]]) if k == 2 else _pairwise_coupling(r)
        label = labels[int(np.argmax(probs))]
    else:
        label = labels[int(np.argmax(votes))]
    return _classifier_output(spec, labels, probs, label, who)


# --------------------------------------------------------------------------- feature engineering

def run_feature_vectorizer(spec, inputs, where):
    """Concatenate the listed inputs: a scalar is one value, a multiarray its
    elements, an Int64-keyed dictionary a dense vector of ``inputDimensions``
    (key = position, missing keys 0)."""
    who = _label(where, "featureVectorizer")
    m = spec.featureVectorizer
    described = {f.name: f for f in spec.description.input}
    parts = []
    for col in m.inputList:
        dims = int(col.inputDimensions)
        if col.inputColumn not in inputs or inputs[col.inputColumn] is None:
            raise NotFoundError(missing_message("input", [col.inputColumn], list(inputs), who))
        value = inputs[col.inputColumn]
        if isinstance(value, dict):
            vec = np.zeros(dims)
            for key, v in value.items():
                if not isinstance(key, (int, np.integer)) or not 0 <= int(key) < dims:
                    raise ClassicModelError(f"{who}: dictionary {col.inputColumn!r} has key {key!r}; keys must "
                                            f"be integers in 0..{dims - 1}")
                vec[int(key)] = float(v)
        else:
            arr = np.asarray(value)
            if arr.dtype == object or arr.dtype.kind in "US":
                raise ClassicModelError(f"{who}: input {col.inputColumn!r} is not numeric")
            vec = arr.astype(np.float64).reshape(-1)
            if vec.size != dims:
                ft = described.get(col.inputColumn)
                raise ClassicModelError(f"{who}: input {col.inputColumn!r} "
                                        f"({_spec.describe_type(ft.type) if ft else 'given'}) has {vec.size} "
                                        f"value(s), inputDimensions says {dims}")
        parts.append(vec)
    return _prediction_output(spec, np.concatenate(parts) if parts else np.zeros(0), who)


def run_scaler(spec, inputs, where):
    """f(x) = scaleValue * (x + shiftValue); empty lists mean scale 1 / shift 0."""
    who = _label(where, "scaler")
    f, value = _single_input(spec, inputs, who)
    x = np.asarray(value, np.float64)
    shift = np.array(spec.scaler.shiftValue, np.float64) if len(spec.scaler.shiftValue) else np.zeros(1)
    scale = np.array(spec.scaler.scaleValue, np.float64) if len(spec.scaler.scaleValue) else np.ones(1)
    flat = x.reshape(-1)
    for name, vals in (("shiftValue", shift), ("scaleValue", scale)):
        if vals.size not in (1, flat.size):
            raise ClassicModelError(f"{who}: {vals.size} {name}s for an input of {flat.size} value(s)")
    y = (scale * (flat + shift)).reshape(x.shape)
    out = spec.description.output[0] if len(spec.description.output) else None
    if out is not None and out.type.WhichOneof("Type") == "int64Type" and y.size == 1 \
            and float(y.reshape(-1)[0]) != round(float(y.reshape(-1)[0])):
        raise ClassicModelError(f"{who}: the result {float(y.reshape(-1)[0])} is not an integer but the "
                                f"output {out.name!r} is Int64")
    return _prediction_output(spec, y, who)


def _categories(msg, field_pairs):
    which = msg.WhichOneof(field_pairs)
    return which, (list(getattr(msg, which).vector) if which else [])


def _category_key(value, ft_kind):
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return int(_scalar(value, "value", "category"))


def run_one_hot_encoder(spec, inputs, where):
    """One 1.0 at the position of the input in the category list; all zeros for
    an unknown value under IgnoreUnknown.  outputSparse gives {position: 1.0}."""
    who = _label(where, "oneHotEncoder")
    m = spec.oneHotEncoder
    f, value = _single_input(spec, inputs, who)
    which, cats = _categories(m, "CategoryType")
    if not which:
        raise ClassicModelError(f"{who}: no categories (set stringCategories or int64Categories)")
    key = _category_key(value, f.type.WhichOneof("Type"))
    try:
        pos = cats.index(key)
    except ValueError:
        if m.handleUnknown != 1:
            shown = ", ".join(map(repr, cats[:10])) + (" ..." if len(cats) > 10 else "")
            raise ClassicModelError(f"{who}: {key!r} is not a known category ({shown}); set handleUnknown "
                                    "to IgnoreUnknown to encode it as all zeros") from None
        pos = None
    if m.outputSparse:
        return _prediction_output(spec, {} if pos is None else {pos: 1.0}, who)
    vec = np.zeros(len(cats))
    if pos is not None:
        vec[pos] = 1.0
    return _prediction_output(spec, vec, who)


def _is_missing(v, replace) -> bool:
    if replace is None or (isinstance(replace, float) and math.isnan(replace)):
        return isinstance(v, (float, np.floating)) and math.isnan(v)
    return v == replace


def run_imputer(spec, inputs, where):
    """Replace missing values: an absent optional input, or a value equal to the
    replace value (NaN when none is set) -- element-wise for arrays."""
    who = _label(where, "imputer")
    m = spec.imputer
    f, value = _single_input(spec, inputs, who)
    which = m.WhichOneof("ImputedValue")
    if which is None:
        raise ClassicModelError(f"{who}: no imputed value set")
    rv = m.WhichOneof("ReplaceValue")
    replace = getattr(m, rv) if rv else None
    imputed = getattr(m, which)
    if which in ("imputedDoubleArray", "imputedInt64Array"):
        imputed = np.array(imputed.vector, np.float64)
    elif which in ("imputedStringDictionary", "imputedInt64Dictionary"):
        imputed = dict(imputed.map)
    if value is None:
        return _prediction_output(spec, imputed, who)
    if isinstance(value, dict) or isinstance(value, str):
        return _prediction_output(spec, imputed if _is_missing(value, replace) else value, who)
    arr = np.asarray(value, np.float64)
    if arr.size == 1 and arr.ndim == 0:
        v = float(arr)
        if not _is_missing(v, replace):
            return _prediction_output(spec, v, who)
        return _prediction_output(spec, imputed, who)
    flat = arr.reshape(-1).copy()
    fill = np.broadcast_to(np.asarray(imputed, np.float64).reshape(-1), flat.shape) \
        if np.asarray(imputed).size in (1, flat.size) else None
    if fill is None:
        raise ClassicModelError(f"{who}: {np.asarray(imputed).size} imputed values for an array of "
                                f"{flat.size}")
    mask = np.isnan(flat) if replace is None or (isinstance(replace, float) and math.isnan(replace)) \
        else flat == replace
    flat[mask] = fill[mask]
    return _prediction_output(spec, flat.reshape(arr.shape), who)


NORMS = {
    0: lambda x: np.max(np.abs(x)) if x.size else 0.0,    # LMax (sklearn's 'max': largest |x|)
    1: lambda x: np.sum(np.abs(x)),                         # L1
    2: lambda x: np.sqrt(np.sum(x * x)),                    # L2
}


def run_normalizer(spec, inputs, where):
    """x / norm(x); a zero norm leaves x unchanged (as sklearn does)."""
    who = _label(where, "normalizer")
    f, value = _single_input(spec, inputs, who)
    x = np.asarray(value, np.float64)
    norm = NORMS.get(spec.normalizer.normType)
    if norm is None:
        raise ClassicModelError(f"{who}: unknown normType {spec.normalizer.normType}")
    z = float(norm(x.reshape(-1)))
    return _prediction_output(spec, x / z if z != 0 else x, who)


def run_array_feature_extractor(spec, inputs, where):
    """The elements at ``extractIndex`` (zero-based) of the flattened input."""
    who = _label(where, "arrayFeatureExtractor")
    f, value = _single_input(spec, inputs, who)
    x = np.asarray(value, np.float64).reshape(-1)
    idx = [int(i) for i in spec.arrayFeatureExtractor.extractIndex]
    bad = [i for i in idx if i >= x.size]
    if bad:
        raise ClassicModelError(f"{who}: index(es) {bad} out of range for an input of {x.size} values")
    return _prediction_output(spec, x[idx], who)


def _mapping(spec, inputs, where, kind, oneof, missing):
    """(label, the ``kind`` message, its one input feature, the input value, the set
    member of ``oneof``) of a one-input mapping model; ``missing`` when none is set."""
    who = _label(where, kind)
    m = getattr(spec, kind)
    f, value = _single_input(spec, inputs, who)
    which = m.WhichOneof(oneof)
    if not which:
        raise ClassicModelError(f"{who}: {missing}")
    return who, m, f, value, which


def run_dict_vectorizer(spec, inputs, where):
    """{key: value} -> values at the positions of their keys in the index
    mapping (other positions 0; keys outside the mapping are ignored).  A
    dictionary output (what coremltools writes) holds the sparse {position: value}."""
    who, m, f, value, which = _mapping(spec, inputs, where, "dictVectorizer", "Map",
                                       "no index mapping (stringToIndex or int64ToIndex)")
    if not isinstance(value, dict):
        raise ClassicModelError(f"{who}: input {f.name!r} must be a dictionary, got {type(value).__name__}")
    keys = list(getattr(m, which).vector)
    pos = {k: i for i, k in enumerate(keys)}
    sparse = {pos[k]: float(v) for k, v in value.items() if k in pos}
    out = spec.description.output[0] if len(spec.description.output) else None
    if out is not None and out.type.WhichOneof("Type") == "dictionaryType":
        return _prediction_output(spec, dict(sorted(sparse.items())), who)
    vec = np.zeros(len(keys))
    for i, v in sparse.items():
        vec[i] = v
    return _prediction_output(spec, vec, who)


def run_categorical_mapping(spec, inputs, where):
    """String -> Int64 or Int64 -> String through the map; an unknown value gives
    ValueOnUnknown or an error when none is set.  Sequences map element-wise."""
    who, m, f, value, which = _mapping(spec, inputs, where, "categoricalMapping", "MappingType",
                                       "no mapping set")
    table = dict(getattr(m, which).map)
    default_kind = m.WhichOneof("ValueOnUnknown")
    default = getattr(m, default_kind) if default_kind else None

    def one(v):
        key = _category_key(v, None)
        if key in table:
            return table[key]
        if default is None:
            raise ClassicModelError(f"{who}: {key!r} is not in the mapping and no ValueOnUnknown is set")
        return default

    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim > 0):
        result = [one(v) for v in value]
        return {o.name: result for o in spec.description.output}
    return _prediction_output(spec, one(value), who)


# --------------------------------------------------------------------------- dispatch

RUNNERS: dict[str, Callable] = {
    "glmRegressor": run_glm_regressor,
    "glmClassifier": run_glm_classifier,
    "treeEnsembleRegressor": run_tree_regressor,
    "treeEnsembleClassifier": run_tree_classifier,
    "supportVectorRegressor": run_svm_regressor,
    "supportVectorClassifier": run_svm_classifier,
    "featureVectorizer": run_feature_vectorizer,
    "scaler": run_scaler,
    "oneHotEncoder": run_one_hot_encoder,
    "imputer": run_imputer,
    "normalizer": run_normalizer,
    "arrayFeatureExtractor": run_array_feature_extractor,
    "dictVectorizer": run_dict_vectorizer,
    "categoricalMapping": run_categorical_mapping,
    "nonMaximumSuppression": run_nms,          # runtime/nms.py
}

# model types whose inputs may be absent (the imputer fills them in)
_MAY_MISS = {"imputer", "nonMaximumSuppression"}   # NMS: threshold inputs fall back to its parameters


def supported_types() -> list[str]:
    return list(RUNNERS)


def run_classic(spec, inputs: Mapping, where: str = "") -> dict:
    """Run one classic model (not a pipeline) on ``inputs`` -> {output name: value}."""
    kind = _spec.model_type(spec)
    runner = RUNNERS.get(kind)
    if runner is None:
        raise UnsupportedError(f"model {where.rstrip('/') or '(top)'} has type {kind!r}, which the "
                               "reference runtime does not run")
    missing = [f.name for f in spec.description.input
               if (f.name not in inputs or inputs[f.name] is None) and not f.type.isOptional
               and kind not in _MAY_MISS]
    if missing:
        raise NotFoundError(missing_message("input", missing, list(inputs), _label(where, kind)))
    return runner(spec, inputs, where)


def input_vocabulary(spec) -> dict:
    """{input name: known keys} for inputs that a classic stage looks up by value
    (one-hot categories, categorical mapping keys, dictionary vectorizer keys),
    so random inputs can draw values the model knows."""
    vocab: dict = {}
    for info in _spec.iter_models(spec):
        m = info.model
        kind = _spec.model_type(m)
        keys = None
        if kind == "oneHotEncoder":
            which = m.oneHotEncoder.WhichOneof("CategoryType")
            keys = list(getattr(m.oneHotEncoder, which).vector) if which else None
        elif kind == "categoricalMapping":
            which = m.categoricalMapping.WhichOneof("MappingType")
            keys = sorted(getattr(m.categoricalMapping, which).map) if which else None
        elif kind == "dictVectorizer":
            which = m.dictVectorizer.WhichOneof("Map")
            keys = list(getattr(m.dictVectorizer, which).vector) if which else None
        if keys and len(m.description.input):
            vocab.setdefault(m.description.input[0].name, keys)
    return vocab
