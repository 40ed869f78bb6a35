"""The rules ported from Core ML's validator for the classic model types (trees,
kNN, GLM, vectorizer, scaler, one-hot, feature prints, text classifier): for
each rule one valid model built in code passes, and the same model broken in
one place fails with that rule id."""

from __future__ import annotations

import pytest

import nnbuild as b
from specsurgery._proto import Model_pb2
from specsurgery.check import check
from specsurgery.check.rules import RULES, explain

DOUBLE = 65600


def errors(spec):
    return {f.rule for f in check(spec) if f.severity == "error"}


def warnings(spec):
    return {f.rule for f in check(spec) if f.severity == "warning"}


def _scalar(desc_list, name, kind="doubleType"):
    f = desc_list.add()
    f.name = name
    getattr(f.type, kind).SetInParent()
    return f


def _dict_out(desc_list, name, key="stringKeyType"):
    f = desc_list.add()
    f.name = name
    getattr(f.type.dictionaryType, key).SetInParent()
    return f


# --------------------------------------------------------------------------- builders

def tree_regressor():
    s = Model_pb2.Model(specificationVersion=1)
    _scalar(s.description.input, "x")
    _scalar(s.description.output, "y")
    s.description.predictedFeatureName = "y"
    ens = s.treeEnsembleRegressor.treeEnsemble
    ens.numPredictionDimensions = 1
    root = ens.nodes.add(treeId=0, nodeId=0, nodeBehavior=0, branchFeatureIndex=0,
                         branchFeatureValue=0.5, trueChildNodeId=1, falseChildNodeId=2)
    assert root.nodeBehavior == 0
    for nid, v in ((1, 1.0), (2, -1.0)):
        leaf = ens.nodes.add(treeId=0, nodeId=nid, nodeBehavior=6)
        leaf.evaluationInfo.add(evaluationIndex=0, evaluationValue=v)
    return s


def tree_classifier():
    s = tree_regressor()
    ens = Model_pb2.Model()
    ens.CopyFrom(s)
    s.ClearField("treeEnsembleRegressor")
    s.treeEnsembleClassifier.treeEnsemble.CopyFrom(ens.treeEnsembleRegressor.treeEnsemble)
    s.treeEnsembleClassifier.int64ClassLabels.vector.extend([0, 1])
    del s.description.output[:]
    _scalar(s.description.output, "label", "int64Type")
    _dict_out(s.description.output, "probs", "int64KeyType")
    s.description.predictedFeatureName = "label"
    s.description.predictedProbabilitiesName = "probs"
    return s


def knn():
    s = Model_pb2.Model(specificationVersion=4)
    b.array_feature(s.description.input, "x", [2])
    _scalar(s.description.output, "label", "stringType")
    s.description.predictedFeatureName = "label"
    k = s.kNearestNeighborsClassifier
    k.numberOfNeighbors.defaultValue = 1
    k.numberOfNeighbors.range.minValue = 1
    k.numberOfNeighbors.range.maxValue = 3
    k.uniformWeighting.SetInParent()
    k.stringClassLabels.vector.extend(["a", "b"])
    idx = k.nearestNeighborsIndex
    idx.numberOfDimensions = 2
    idx.floatSamples.add().vector.extend([0.0, 1.0])
    idx.floatSamples.add().vector.extend([1.0, 0.0])
    idx.linearIndex.SetInParent()
    idx.squaredEuclideanDistance.SetInParent()
    return s


def glm_classifier():
    s = Model_pb2.Model(specificationVersion=1)
    b.array_feature(s.description.input, "x", [2], dtype=DOUBLE)
    _scalar(s.description.output, "label", "stringType")
    _dict_out(s.description.output, "probs")
    s.description.predictedFeatureName = "label"
    s.description.predictedProbabilitiesName = "probs"
    g = s.glmClassifier
    g.weights.add().value.extend([0.5, -0.5])
    g.offset.append(0.1)
    g.stringClassLabels.vector.extend(["no", "yes"])
    return s


def glm_regressor():
    s = Model_pb2.Model(specificationVersion=1)
    b.array_feature(s.description.input, "x", [2], dtype=DOUBLE)
    _scalar(s.description.output, "y")
    s.description.predictedFeatureName = "y"
    s.glmRegressor.weights.add().value.extend([0.5, -0.5])
    s.glmRegressor.offset.append(0.1)
    return s


def vectorizer():
    s = Model_pb2.Model(specificationVersion=1)
    _scalar(s.description.input, "a")
    b.array_feature(s.description.input, "b", [3], dtype=DOUBLE)
    b.array_feature(s.description.output, "v", [4], dtype=DOUBLE)
    s.featureVectorizer.inputList.add(inputColumn="a", inputDimensions=1)
    s.featureVectorizer.inputList.add(inputColumn="b", inputDimensions=3)
    return s


def scaler():
    s = Model_pb2.Model(specificationVersion=1)
    b.array_feature(s.description.input, "x", [3], dtype=DOUBLE)
    b.array_feature(s.description.output, "y", [3], dtype=DOUBLE)
    s.scaler.shiftValue.extend([0.0, 1.0, 2.0])
    s.scaler.scaleValue.append(2.0)
    return s


def one_hot():
    s = Model_pb2.Model(specificationVersion=1)
    _scalar(s.description.input, "c", "stringType")
    b.array_feature(s.description.output, "v", [2], dtype=DOUBLE)
    s.oneHotEncoder.stringCategories.vector.extend(["x", "y"])
    return s


def vision_print():
    s = Model_pb2.Model(specificationVersion=4)
    b.image_feature(s.description.input, "image", 299, 299)
    b.array_feature(s.description.output, "features", [2048], dtype=DOUBLE)
    s.visionFeaturePrint.scene.version = 1
    return s


def audio_print():
    s = Model_pb2.Model(specificationVersion=6)
    b.array_feature(s.description.input, "audio", [15600])
    b.array_feature(s.description.output, "features", [512])
    s.audioFeaturePrint.sound.version = 1
    return s


def text_classifier():
    s = Model_pb2.Model(specificationVersion=3)
    _scalar(s.description.input, "text", "stringType")
    _scalar(s.description.output, "label", "stringType")
    s.description.predictedFeatureName = "label"
    s.textClassifier.revision = 1
    s.textClassifier.stringClassLabels.vector.extend(["pos", "neg"])
    s.textClassifier.modelParameterData = b"\x01\x02"
    return s


def updatable_nn():
    """tiny_classifier made updatable: innerProduct fc2 -> softmax -> cross-entropy loss."""
    s = b.tiny_classifier()
    s.specificationVersion = 4
    s.isUpdatable = True
    nn = s.neuralNetworkClassifier
    for layer in nn.layers:
        if layer.WhichOneof("layer") == "innerProduct":
            layer.isUpdatable = True
            layer.innerProduct.weights.isUpdatable = True
            layer.innerProduct.bias.isUpdatable = True
    softmax = [l for l in nn.layers if l.WhichOneof("layer") == "softmax"][0]
    loss = nn.updateParams.lossLayers.add(name="loss")
    loss.categoricalCrossEntropyLossLayer.input = softmax.output[0]
    loss.categoricalCrossEntropyLossLayer.target = s.description.predictedFeatureName
    sgd = nn.updateParams.optimizer.sgdOptimizer
    sgd.learningRate.defaultValue = 0.01
    sgd.miniBatchSize.defaultValue = 8
    nn.updateParams.epochs.defaultValue = 2
    t = s.description.trainingInput.add()
    t.CopyFrom(s.description.input[0])
    t = s.description.trainingInput.add()
    t.CopyFrom([o for o in s.description.output if o.name == s.description.predictedFeatureName][0])
    return s


# --------------------------------------------------------------------------- mutators

def _ens(s):
    return (s.treeEnsembleClassifier if s.HasField("treeEnsembleClassifier") else s.treeEnsembleRegressor).treeEnsemble


def _node(s, nid):
    return [n for n in _ens(s).nodes if n.nodeId == nid][0]


def _set(path, value):
    """Set a field by dotted path; digits index repeated fields (lossLayers.0)."""
    def mutate(s):
        obj = s
        parts = path.split(".")
        for p in parts[:-1]:
            obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
        setattr(obj, parts[-1], value)
    return mutate


def _clear(path, field):
    def mutate(s):
        obj = s
        for p in path.split(".") if path else []:
            obj = getattr(obj, p)
        obj.ClearField(field)
    return mutate


def _append_input(kind="doubleType"):
    def mutate(s):
        _scalar(s.description.input, "extra", kind)
    return mutate


def _retype(role, index, kind):
    def mutate(s):
        f = getattr(s.description, role)[index]
        f.type.Clear()
        getattr(f.type, kind).SetInParent()
    return mutate


def _tree_dup(s):
    n = _ens(s).nodes.add()
    n.CopyFrom(_node(s, 2))


def _tree_shared(s):
    _node(s, 0).trueChildNodeId = 2


def _tree_two_roots(s):
    leaf = _ens(s).nodes.add(treeId=0, nodeId=7, nodeBehavior=6)
    leaf.evaluationInfo.add(evaluationIndex=0, evaluationValue=0.0)


def _tree_cycle(s):
    e = _ens(s)
    e.nodes.add(treeId=0, nodeId=8, nodeBehavior=0, trueChildNodeId=9, falseChildNodeId=10)
    e.nodes.add(treeId=0, nodeId=9, nodeBehavior=0, trueChildNodeId=8, falseChildNodeId=11)
    for nid in (10, 11):
        leaf = e.nodes.add(treeId=0, nodeId=nid, nodeBehavior=6)
        leaf.evaluationInfo.add(evaluationIndex=0, evaluationValue=0.0)


def _tree_leaf_dup(s):
    _node(s, 1).evaluationInfo.add(evaluationIndex=0, evaluationValue=3.0)


def _knn_sample_short(s):
    del s.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples[0].vector[-1]


def _knn_extra_label(s):
    s.kNearestNeighborsClassifier.stringClassLabels.vector.append("c")


def _knn_no_labels_no_default(s):
    k = s.kNearestNeighborsClassifier
    k.ClearField("stringClassLabels")
    del k.nearestNeighborsIndex.floatSamples[:]


def _knn_default_int(s):
    s.kNearestNeighborsClassifier.defaultInt64Label = 3


def _knn_set_without_default(s):
    k = s.kNearestNeighborsClassifier.numberOfNeighbors
    k.set.values.extend([2, 3])


def _glm_extra_weights(s):
    s.glmClassifier.weights.add().value.extend([1.0, 1.0])
    s.glmClassifier.offset.append(0.0)


def _glm_probit_multiclass(s):
    g = s.glmClassifier
    g.postEvaluationTransform = 1
    g.classEncoding = 1
    g.stringClassLabels.vector.append("maybe")
    for _ in range(2):
        g.weights.add().value.extend([1.0, 1.0])
        g.offset.append(0.0)


def _glm_ragged(s):
    s.glmRegressor.weights.add().value.extend([1.0])
    s.glmRegressor.offset.append(0.0)


def _scaler_2d(s):
    s.description.input[0].type.multiArrayType.shape.append(1)


def _scaler_values(s):
    s.scaler.scaleValue.append(1.0)


def _vision_objects_one_output(s):
    s.visionFeaturePrint.objects.version = 1
    s.visionFeaturePrint.objects.output.append("features")


def _text_no_labels(s):
    s.textClassifier.ClearField("stringClassLabels")


def _empty_loss_layers(s):
    del s.neuralNetworkClassifier.updateParams.lossLayers[:]


CASES = [
    # (id, builder, mutator, rule)
    ("tree-no-dimensions", tree_regressor, _set("treeEnsembleRegressor.treeEnsemble.numPredictionDimensions", 0),
     "tree.no-dimensions"),
    ("tree-duplicate-node", tree_regressor, _tree_dup, "tree.duplicate-node"),
    ("tree-bad-behavior", tree_regressor, lambda s: setattr(_node(s, 0), "nodeBehavior", 9),
     "tree.bad-node-behavior"),
    ("tree-leaf-no-values", tree_regressor, lambda s: _node(s, 1).ClearField("evaluationInfo"),
     "tree.leaf-no-values"),
    ("tree-leaf-dimension", tree_regressor, lambda s: setattr(_node(s, 1).evaluationInfo[0], "evaluationIndex", 1),
     "tree.leaf-dimension"),
    ("tree-leaf-duplicate-dimension", tree_regressor, _tree_leaf_dup, "tree.leaf-duplicate-dimension"),
    ("tree-missing-child", tree_regressor, lambda s: setattr(_node(s, 0), "falseChildNodeId", 5),
     "tree.missing-child"),
    ("tree-self-child", tree_regressor, lambda s: setattr(_node(s, 0), "trueChildNodeId", 0), "tree.self-child"),
    ("tree-shared-child", tree_regressor, _tree_shared, "tree.shared-child"),
    ("tree-multiple-roots", tree_regressor, _tree_two_roots, "tree.multiple-roots"),
    ("tree-unreachable", tree_regressor, _tree_cycle, "tree.unreachable"),
    ("tree-base-prediction", tree_regressor, lambda s: _ens(s).basePredictionValue.extend([0.0, 1.0]),
     "tree.base-prediction-size"),
    ("tree-classes", tree_classifier, lambda s: s.treeEnsembleClassifier.int64ClassLabels.vector.append(2),
     "tree.classes-dimensions"),
    ("knn-neighbors", knn, _set("kNearestNeighborsClassifier.numberOfNeighbors.defaultValue", 0), "knn.neighbors"),
    ("knn-neighbors-range", knn, _set("kNearestNeighborsClassifier.numberOfNeighbors.defaultValue", 4),
     "knn.neighbors"),
    ("knn-neighbors-set", knn, _knn_set_without_default, "knn.neighbors"),
    ("knn-no-weighting", knn, _clear("kNearestNeighborsClassifier", "uniformWeighting"), "knn.no-weighting"),
    ("knn-default-label-type", knn, _knn_default_int, "knn.default-label-type"),
    ("knn-no-default-label", knn, _knn_no_labels_no_default, "knn.no-default-label"),
    ("knn-samples-labels", knn, _knn_extra_label, "knn.samples-labels"),
    ("knn-sample-dimensions", knn, _knn_sample_short, "knn.sample-dimensions"),
    ("knn-no-index", knn, _clear("kNearestNeighborsClassifier.nearestNeighborsIndex", "linearIndex"), "knn.no-index"),
    ("knn-leaf-size", knn, lambda s: s.kNearestNeighborsClassifier.nearestNeighborsIndex.singleKdTreeIndex.SetInParent(),
     "knn.leaf-size"),
    ("knn-no-distance", knn, _clear("kNearestNeighborsClassifier.nearestNeighborsIndex", "squaredEuclideanDistance"),
     "knn.no-distance"),
    ("knn-predicted-type", knn, _retype("output", 0, "int64Type"), "classifier.predicted-type"),
    ("knn-no-predicted", knn, lambda s: setattr(s.description, "predictedFeatureName", ""),
     "classifier.no-predicted-feature"),
    ("glm-bad-transform", glm_classifier, _set("glmClassifier.postEvaluationTransform", 5), "glm.bad-transform"),
    ("glm-bad-encoding", glm_classifier, _set("glmClassifier.classEncoding", 7), "glm.bad-encoding"),
    ("glm-no-weights", glm_classifier, _clear("glmClassifier", "weights"), "glm.no-weights"),
    ("glm-weights-offsets", glm_classifier, _clear("glmClassifier", "offset"), "glm.weights-offsets"),
    ("glm-weights-classes", glm_classifier, _glm_extra_weights, "glm.weights-classes"),
    ("glm-probit", glm_classifier, _glm_probit_multiclass, "glm.probit-multiclass"),
    ("glm-empty-weights", glm_classifier, lambda s: s.glmClassifier.weights[0].ClearField("value"),
     "glm.weights-length"),
    ("glm-input-type", glm_classifier, _append_input("stringType"), "interface.feature-type"),
    ("glm-no-labels", glm_classifier, _clear("glmClassifier", "stringClassLabels"), "classifier.no-labels"),
    ("glmr-output-type", glm_regressor, _retype("output", 0, "int64Type"), "interface.feature-type"),
    ("glmr-ragged", glm_regressor, _glm_ragged, "glm.weights-length"),
    ("glmr-offsets", glm_regressor, _clear("glmRegressor", "offset"), "glm.weights-offsets"),
    ("glmr-no-predicted", glm_regressor, lambda s: setattr(s.description, "predictedFeatureName", ""),
     "regressor.no-predicted-feature"),
    ("vectorizer-dimensions", vectorizer, lambda s: setattr(s.featureVectorizer.inputList[0], "inputDimensions", 0),
     "vectorizer.dimensions"),
    ("vectorizer-input-type", vectorizer, _retype("input", 0, "stringType"), "interface.feature-type"),
    ("vectorizer-two-outputs", vectorizer, lambda s: b.array_feature(s.description.output, "w", [1], dtype=DOUBLE),
     "interface.too-many-features"),
    ("scaler-shape", scaler, _scaler_2d, "scaler.shape"),
    ("scaler-values", scaler, _scaler_values, "scaler.values"),
    ("scaler-io-types", scaler, _retype("output", 0, "doubleType"), "scaler.io-types"),
    ("scaler-two-inputs", scaler, _append_input(), "interface.too-many-features"),
    ("onehot-no-categories", one_hot, _clear("oneHotEncoder", "stringCategories"), "onehot.no-categories"),
    ("onehot-sparse-output", one_hot, _set("oneHotEncoder.outputSparse", True), "interface.feature-type"),
    ("vision-no-type", vision_print, _clear("visionFeaturePrint", "scene"), "vision.no-type"),
    ("vision-bad-version", vision_print, _set("visionFeaturePrint.scene.version", 0), "vision.bad-version"),
    ("vision-objects-outputs", vision_print, _vision_objects_one_output, "vision.objects-outputs"),
    ("vision-input-type", vision_print, _retype("input", 0, "doubleType"), "interface.feature-type"),
    ("audio-no-type", audio_print, _clear("audioFeaturePrint", "sound"), "audio.no-type"),
    ("audio-bad-version", audio_print, _set("audioFeaturePrint.sound.version", 0), "audio.bad-version"),
    ("text-revision", text_classifier, _set("textClassifier.revision", 0), "text.revision"),
    ("text-no-labels", text_classifier, _text_no_labels, "text.no-labels"),
    ("text-no-data", text_classifier, _set("textClassifier.modelParameterData", b""), "text.no-data"),
    ("text-output-type", text_classifier, _retype("output", 0, "int64Type"), "interface.feature-type"),
    ("updatable-empty-loss-layers", updatable_nn, _empty_loss_layers, "nn.update-loss"),
]


@pytest.mark.parametrize("build", sorted({c[1] for c in CASES}, key=lambda f: f.__name__))
def test_builders_are_valid(build):
    assert errors(build()) == set()


@pytest.mark.parametrize("case_id,build,mutate,rule", CASES, ids=[c[0] for c in CASES])
def test_rule_catches_broken_spec(case_id, build, mutate, rule):
    spec = build()
    assert rule not in errors(spec)
    mutate(spec)
    found = errors(spec)
    assert rule in found, f"{case_id}: expected {rule}, got {sorted(found)}"
    [f] = [f for f in check(spec) if f.rule == rule][:1]
    assert f.message and rule in RULES


def test_every_ported_rule_has_a_case_and_an_apple_file():
    ported = {r for r in RULES if r.split(".")[0] in ("tree", "knn", "glm", "vectorizer", "scaler",
                                                      "onehot", "vision", "audio", "text")}
    covered = {c[3] for c in CASES}
    assert ported - {"tree.interface"} <= covered
    for rid in ported - {"tree.interface"}:
        assert not RULES[rid].ours_only and RULES[rid].source.startswith("mlmodel/src/")


def test_tree_interface_is_a_warning_only():
    """Core ML's tree validator never looks at the interface: a wrong predicted
    name is a warning, not an error."""
    s = tree_classifier()
    s.description.predictedFeatureName = "nope"
    assert "tree.interface" in warnings(s)
    assert errors(s) == set()


def test_probabilities_key_mismatch_is_a_warning():
    s = glm_classifier()
    s.description.output[1].type.dictionaryType.int64KeyType.SetInParent()
    assert "classifier.probabilities-key" in warnings(s)
    assert errors(s) == set()


def test_tree_messages_name_the_node():
    s = tree_regressor()
    _node(s, 0).falseChildNodeId = 5
    [f] = [f for f in check(s) if f.rule == "tree.missing-child"]
    assert "treeId 0, nodeId 0" in f.message and "5" in f.message


def test_empty_loss_layers_do_not_crash_and_name_the_fix():
    s = updatable_nn()
    _empty_loss_layers(s)
    [f] = [f for f in check(s) if f.rule == "nn.update-loss"]
    assert "exactly one loss layer" in f.message


def test_explain_names_the_apple_file():
    assert "TreeEnsembleCommon.cpp" in explain("tree.missing-child")
    assert "ours only" in explain("feature.duplicate-name")
    assert "mlprogram.opset" in explain("mlprogram.opset")
    assert "NonMaximumSuppressionValidator.cpp" in explain("nms.unused-input")


# --------------------------------------------------------------------------- other model types (check/others.py)

def _io(s, ins, outs):
    for name, kind in ins:
        if kind == "array":
            b.array_feature(s.description.input, name, [3], dtype=DOUBLE)
        else:
            _scalar(s.description.input, name, kind)
    for name, kind in outs:
        if kind == "array":
            b.array_feature(s.description.output, name, [3], dtype=DOUBLE)
        elif kind == "dict":
            _dict_out(s.description.output, name)
        else:
            _scalar(s.description.output, name, kind)
    return s


def imputer():
    s = _io(Model_pb2.Model(specificationVersion=1), [("x", "doubleType")], [("y", "doubleType")])
    s.imputer.imputedDoubleValue = 0.0
    return s


def dict_vectorizer():
    s = Model_pb2.Model(specificationVersion=1)
    f = s.description.input.add(name="d")
    f.type.dictionaryType.stringKeyType.SetInParent()
    _dict_out(s.description.output, "v")
    s.dictVectorizer.stringToIndex.vector.extend(["a", "b"])
    return s


def array_extractor():
    s = _io(Model_pb2.Model(specificationVersion=1), [("x", "array")], [("y", "doubleType")])
    s.arrayFeatureExtractor.extractIndex.append(0)
    return s


def normalizer():
    s = _io(Model_pb2.Model(specificationVersion=1), [("x", "array")], [("y", "array")])
    s.normalizer.normType = 2
    return s


def categorical():
    s = _io(Model_pb2.Model(specificationVersion=1), [("c", "stringType")], [("i", "int64Type")])
    s.categoricalMapping.stringToInt64Map.map["a"] = 1
    return s


def custom_model():
    s = _io(Model_pb2.Model(specificationVersion=3), [("x", "array")], [("y", "array")])
    s.customModel.className = "MyModel"
    return s


def gazetteer():
    s = _io(Model_pb2.Model(specificationVersion=3), [("t", "stringType")], [("l", "stringType")])
    g = s.gazetteer
    g.revision = 2
    g.stringClassLabels.vector.append("city")
    g.modelParameterData = b"\x01"
    return s


def svm_regressor():
    s = _io(Model_pb2.Model(specificationVersion=1), [("x", "array")], [("y", "doubleType")])
    s.description.predictedFeatureName = "y"
    svm = s.supportVectorRegressor
    svm.kernel.linearKernel.SetInParent()
    svm.denseSupportVectors.vectors.add().values.extend([1.0, 0.0, 0.0])
    svm.coefficients.alpha.append(0.5)
    return s


OTHER_CASES = [
    ("imputer-no-value", imputer, lambda s: s.imputer.ClearField("imputedDoubleValue")),
    ("imputer-types", imputer, _retype("output", 0, "int64Type")),
    ("dictvectorizer-no-map", dict_vectorizer, lambda s: s.dictVectorizer.ClearField("stringToIndex")),
    ("extractor-indices", array_extractor, lambda s: s.arrayFeatureExtractor.extractIndex.append(1)),
    ("normalizer-norm", normalizer, _set("normalizer.normType", 7)),
    ("categorical-no-map", categorical, lambda s: s.categoricalMapping.ClearField("stringToInt64Map")),
    ("custom-no-class", custom_model, _set("customModel.className", "")),
    ("gazetteer-revision", gazetteer, _set("gazetteer.revision", 1)),
    ("svm-coefficients", svm_regressor, lambda s: s.supportVectorRegressor.coefficients.alpha.append(1.0)),
    ("svm-no-kernel", svm_regressor, lambda s: s.supportVectorRegressor.kernel.ClearField("linearKernel")),
]


@pytest.mark.parametrize("case_id,build,mutate", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_model_types(case_id, build, mutate):
    spec = build()
    assert errors(spec) == set()
    mutate(spec)
    found = errors(spec)
    assert found & {"model.params", "interface.feature-type"}, f"{case_id}: got {sorted(found)}"
    assert RULES["model.params"].source.startswith("mlmodel/src/Validation/")


# --------------------------------------------------------------------------- NN rules (check/nn_extra.py, updatable.py)

def nd_nn():
    """tiny_nn with EXACT_ARRAY_MAPPING (the N-d interpretation)."""
    s = b.tiny_nn()
    s.neuralNetwork.arrayInputShapeMapping = 1
    return s


def _add_layer(kind, setup=None, inp="y", out="z"):
    def mutate(s):
        nn = s.neuralNetwork
        layer = nn.layers.add(name="extra")
        layer.input.append(inp)
        layer.output.append(out)
        getattr(layer, kind).SetInParent()
        if setup:
            setup(getattr(layer, kind))
        s.description.output[0].name = out
    return mutate


def _embedding_reads_input(s):
    layer = s.neuralNetwork.layers[0]
    layer.ClearField("innerProduct")
    layer.embedding.inputDim, layer.embedding.outputChannels = 5, 3
    layer.embedding.weights.floatValue.extend([0.0] * 15)


def _tensor_hint(s):
    layer = s.neuralNetwork.layers[0]
    layer.inputTensor.add(rank=2)
    layer.outputTensor.add(rank=1)


def _int8_inner_product(s):
    ip = s.neuralNetwork.layers[0].innerProduct
    ip.int8DynamicQuantize = True
    ip.weights.Clear()
    ip.weights.int8RawValue = bytes(12)
    ip.weights.quantization.numberOfBits = 8
    ip.weights.quantization.linearQuantization.scale.append(0.1)


def _empty_embedding_weights(s):
    layer = s.neuralNetwork.layers[0]
    layer.ClearField("innerProduct")
    layer.embedding.SetInParent()   # inputDim 0: no weight is expected, Core ML still wants one


def _updatable_regressor():
    s = b.tiny_regressor()
    s.isUpdatable = True
    nn = s.neuralNetworkRegressor
    fc = nn.layers[0]
    fc.isUpdatable = True
    fc.innerProduct.weights.isUpdatable = True
    fc.innerProduct.bias.isUpdatable = True
    loss = nn.updateParams.lossLayers.add(name="loss")
    loss.meanSquaredErrorLossLayer.input = "value"
    loss.meanSquaredErrorLossLayer.target = "value_true"
    sgd = nn.updateParams.optimizer.sgdOptimizer
    sgd.learningRate.defaultValue = 0.01
    sgd.miniBatchSize.defaultValue = 4
    sgd.miniBatchSize.set.values.extend([4, 8])
    nn.updateParams.epochs.defaultValue = 2
    s.description.trainingInput.add().CopyFrom(s.description.input[0])
    t = s.description.trainingInput.add()
    t.CopyFrom(s.description.output[0])
    t.name = "value_true"
    return s


def _dup_layer_name(s):
    nn = s.neuralNetworkRegressor
    layer = nn.layers.add(name="fc")
    layer.input.append("value")
    layer.output.append("value2")
    layer.activation.ReLU.SetInParent()


def _training_input_shape(s):
    s.description.trainingInput[0].type.multiArrayType.shape[0] = 5


def _loss_target_inside(s):
    s.neuralNetworkRegressor.updateParams.lossLayers[0].meanSquaredErrorLossLayer.target = "value"


def _empty_enumeration_training(s):
    s.description.trainingInput[0].type.multiArrayType.enumeratedShapes.SetInParent()


def _empty_enumeration_pipeline(s):
    s.pipeline.models[1].description.input[0].type.multiArrayType.enumeratedShapes.SetInParent()


def _updatable_weights_cleared(s):
    s.neuralNetworkRegressor.layers[0].innerProduct.weights.Clear()


def _pipeline_v1():
    s = b.tiny_pipeline()
    return s


NN_CASES = [
    ("activation-type", b.tiny_nn, lambda s: s.neuralNetwork.layers[1].activation.ClearField("ReLU"),
     "nn.activation-type"),
    ("input-rank-embedding", nd_nn, _embedding_reads_input, "nn.input-rank"),
    ("input-rank-no-shape", nd_nn, lambda s: (s.description.input[0].type.multiArrayType.ClearField("shape"),
                                              s.description.input[0].type.multiArrayType.shapeRange.sizeRanges.add(
                                                  lowerBound=1, upperBound=8)), "nn.input-rank"),
    ("tensor-hint-model-rank", nd_nn, _tensor_hint, "nn.tensor-hint"),
    ("shape-mapping-int8", lambda: b.tiny_nn(version=5), _int8_inner_product, "nn.shape-mapping"),
    ("layer-param-pooling", nd_nn, _add_layer("pooling"), "nn.layer-param"),
    ("layer-param-reorganize", nd_nn, _add_layer("reorganizeData"), "nn.layer-param"),
    ("layer-param-loop-break", nd_nn, _add_layer("loopBreak"), "nn.layer-param"),
    ("layer-param-reshape-static", nd_nn, _add_layer("reshapeStatic"), "nn.layer-param"),
    ("empty-embedding-weights", nd_nn, _empty_embedding_weights, "weights.empty"),
    ("update-parameter", _updatable_regressor,
     _set("neuralNetworkRegressor.updateParams.optimizer.sgdOptimizer.miniBatchSize.defaultValue", 5),
     "nn.update-parameter"),
    ("update-epochs-positive", _updatable_regressor,
     _set("neuralNetworkRegressor.updateParams.epochs.defaultValue", 0), "nn.update-parameter"),
    ("update-names", _updatable_regressor, _dup_layer_name, "nn.update-names"),
    ("update-loss-target-inside", _updatable_regressor, _loss_target_inside, "nn.update-loss-io"),
    ("update-loss-no-input", _updatable_regressor,
     _set("neuralNetworkRegressor.updateParams.lossLayers.0.meanSquaredErrorLossLayer.input", ""),
     "nn.update-loss-io"),
    ("training-input-type", _updatable_regressor, _training_input_shape, "nn.training-input-match"),
    ("updatable-weights-cleared", _updatable_regressor, _updatable_weights_cleared, "weights.updatable"),
    ("empty-enumeration-training", _updatable_regressor, _empty_enumeration_training, "array.empty-enumeration"),
    ("empty-enumeration-pipeline", _pipeline_v1, _empty_enumeration_pipeline, "array.empty-enumeration"),
]


@pytest.mark.parametrize("build", sorted({c[1] for c in NN_CASES}, key=lambda f: f.__name__))
def test_nn_builders_are_valid(build):
    assert errors(build()) == set()


@pytest.mark.parametrize("case_id,build,mutate,rule", NN_CASES, ids=[c[0] for c in NN_CASES])
def test_nn_rule_catches_broken_spec(case_id, build, mutate, rule):
    spec = build()
    mutate(spec)
    found = errors(spec)
    assert rule in found, f"{case_id}: expected {rule}, got {sorted(found)}"
    assert rule in RULES
