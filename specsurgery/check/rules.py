"""The rule table: what every rule id checks, its severity, and where it comes
from — the Core ML validator source file it mirrors (apple/coremltools,
``mlmodel/src``, tag 9.0) or "ours only" with the reason.

``specsurgery check --explain RULE`` prints an entry; docs/check.md carries the
same table (tests/check/test_check_docs.py keeps the two and the code in step).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecSurgeryError

V = "mlmodel/src/Validation/"
NNV = V + "NeuralNetwork/NeuralNetworkValidator.cpp"
NNL = V + "NeuralNetwork/NeuralNetworkLayerValidator.cpp"
UPD = V + "NeuralNetwork/UpdatableNeuralNetworkValidator.cpp"
IFACE = V + "InterfaceValidators.cpp"
VHPP = V + "Validators.hpp"
UTILS = V + "ValidatorUtils-inl.hpp"
QUANT = V + "QuantizationValidationUtils.cpp"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str   # error | warning | info (the usual one; a few rules have two)
    what: str       # what the rule checks
    source: str     # Apple's file (+ function) or "ours only: why"

    @property
    def ours_only(self) -> bool:
        return self.source.startswith("ours only")

    def explain(self) -> str:
        where = self.source if self.ours_only else f"Core ML's validator, {self.source}"
        return f"{self.id} ({self.severity}): {self.what}\n  from: {where}"


def _r(rid, sev, what, source):
    return rid, Rule(rid, sev, what, source)


_MODEL = "mlmodel/src/Model.cpp (validateGeneric)"
_MIL_OURS = ("ours only: Core ML's open validator returns before an mlProgram body (Model.cpp); "
             "the closed MIL compiler rejects such programs (see docs/mlprogram.md)")

RULES: dict[str, Rule] = dict([
    # versions and model
    _r("version.missing", "error", "specificationVersion is 0", _MODEL),
    _r("version.too-new", "error", "specificationVersion above the newest (10)", _MODEL),
    _r("version.below-minimum", "error",
       "a feature the validator rejects below its version (isUpdatable v4, FLOAT16/INT8 arrays, "
       "sequences, state, empty inputs, multifunction, default values; linkedModel, mlProgram)",
       _MODEL + "; " + IFACE + "; linkedModel/mlProgram below v4/v6: ours only, the open validator "
       "accepts them but Model.proto gives them iOS 13/iOS 15 and Core ML errors on a model "
       "that declares a version older than its features (Apple forum thread 664678)"),
    _r("version.below-recommended", "warning",
       "a feature Core ML only interprets from a newer version (flexible shapes, FP16/quantized "
       "weights, new layers)",
       "ours only: Utils.cpp computes these minimums but no validator rejects them, so a warning"),
    _r("version.outer-below-stage", "warning", "pipeline declares less than its stages need",
       "ours only: PipelineValidator.cpp validates each stage with its own version; a warning"),
    _r("model.no-type", "error", "the Type oneof is unset (or unknown)", "mlmodel/src/Model.cpp (validate)"),
    _r("model.updatable-type", "error", "isUpdatable on a type that cannot be updated",
       IFACE + " (validateCanModelBeUpdatable)"),
    # interface
    _r("interface.no-inputs", "error", "no inputs (allowed for NN/pipeline/mlProgram from v9)",
       VHPP + " (validateFeatureDescriptions)"),
    _r("interface.no-outputs", "error", "no outputs", VHPP + " (validateFeatureDescriptions)"),
    _r("interface.feature-type", "error",
       "an input/output type the model type does not take (GLM, vectorizer, scaler, one-hot, "
       "feature prints, text classifier)",
       UTILS + " (validateSchemaTypes), called by each type's validator"),
    _r("interface.too-many-features", "error", "more inputs/outputs than the model type takes",
       UTILS + " (validateDescriptionsContainFeatureWithTypes)"),
    _r("feature.no-name", "error", "a feature without a name", IFACE + " (validateFeatureDescription)"),
    _r("feature.no-type", "error", "a feature without a type", IFACE + " (validateFeatureDescription)"),
    _r("feature.duplicate-name", "warning", "the same input (or output) name twice",
       "ours only: the validator does not compare names; Core ML's model description keys "
       "features by name, so one of the two is unreachable (a warning)"),
    _r("feature.optional-output", "error", "an optional output", IFACE + " (validateOptionalOutputs)"),
    _r("feature.optional-input", "error", "optional input on a type that forbids it",
       IFACE + " (validateOptionalGeneric)"),
    _r("feature.all-inputs-optional", "error", "NN/mlProgram with every input optional",
       IFACE + " (validateOptionalNN)"),
    _r("array.bad-dtype", "error", "multiarray dataType unset or unknown", IFACE),
    _r("array.no-shape", "error", "multiarray input without shape or flexibility", IFACE),
    _r("array.negative-dim", "error", "a negative dimension", IFACE),
    _r("array.bad-enumerated-shapes", "error", "empty enumeration or an empty shape in it", IFACE),
    _r("array.default-not-enumerated", "error", "default shape not among the enumerated shapes", IFACE),
    _r("array.bad-range", "error", "a size range with lower > upper", IFACE + " (validateSizeRange)"),
    _r("array.default-outside-range", "error", "default shape outside the ranges or of another rank", IFACE),
    _r("array.default-value-type", "error", "default value kind does not fit the dtype", IFACE),
    _r("array.default-value-model", "error", "default value on a type other than NN/mlProgram",
       IFACE + " (validateDefaultOptionalValues)"),
    _r("image.bad-colorspace", "error", "colorSpace unset or unknown", IFACE),
    _r("image.bad-size", "error", "width or height not positive", IFACE),
    _r("image.bad-enumerated-sizes", "error", "empty enumeratedSizes", IFACE),
    _r("image.default-not-enumerated", "error", "default size not among the enumerated sizes", IFACE),
    _r("image.bad-range", "error", "size range with lower > upper", IFACE + " (validateSizeRange)"),
    _r("image.default-outside-range", "error", "default size outside the range", IFACE),
    _r("dictionary.no-key-type", "error", "dictionary without key type", IFACE),
    _r("sequence.no-element-type", "error", "sequence without element type", IFACE),
    _r("state.not-state-type", "error", "a description.state entry that is not a State", IFACE),
    _r("state.no-array", "error", "state without its multiarray", IFACE),
    _r("state.optional", "error", "optional state", IFACE),
    _r("state.bad-shape", "error", "state without a fixed non-negative shape", IFACE),
    _r("state.bad-dtype", "error", "state dtype not FLOAT16 (or INT8)", IFACE),
    _r("multifunction.wrong-type", "error", "functions on a non-mlProgram",
       IFACE + " (validateMultiFunctionDescription)"),
    _r("multifunction.version", "error", "multifunction below v9", IFACE),
    _r("multifunction.top-level", "error", "multifunction model also fills top-level features",
       IFACE + " (validateModelLevelFeatureDescriptionsAreEmpty)"),
    _r("multifunction.bad-default", "error", "defaultFunctionName not among the functions", IFACE),
    _r("multifunction.unknown-function", "error", "described function missing from mlProgram.functions",
       _MIL_OURS),
    _r("metadata.not-utf8", "warning", "userDefined key/value with a NUL character",
       "ours only: Core ML's validator does not read metadata; a warning, as tools that read "
       "it as C strings cut the text at the NUL"),
    _r("metadata.empty-key", "warning", "userDefined with an empty key", "ours only: harmless, a warning"),
    # classifiers and regressors
    _r("classifier.no-labels", "error", "NN, GLM or SVM classifier without class labels",
       VHPP + " (validateClassifierInterface)"),
    _r("classifier.no-predicted-feature", "error", "classifier without predictedFeatureName",
       IFACE + " (validateClassifierFeatureDescriptions)"),
    _r("classifier.predicted-not-output", "error", "predictedFeatureName is not an output",
       UTILS + " (validateDescriptionsContainFeatureWithNameAndType)"),
    _r("classifier.predicted-type", "error", "predicted label not String/Int64 like the labels",
       UTILS + " (validateDescriptionsContainFeatureWithNameAndType)"),
    _r("classifier.probabilities-not-output", "error", "predictedProbabilitiesName is not an output",
       IFACE + " (validateClassifierFeatureDescriptions)"),
    _r("classifier.probabilities-type", "error", "probabilities neither Dictionary nor MultiArray",
       IFACE + " (validateClassifierFeatureDescriptions)"),
    _r("classifier.probabilities-multiarray", "warning", "probabilities as MultiArray",
       "ours only: the validator accepts it (marked 'TODO ARRAY TYPE IS INVALID' in "
       "InterfaceValidators.cpp), a warning"),
    _r("classifier.probabilities-key", "warning", "probabilities Dictionary keyed by the other label kind",
       "ours only: the validator does not look at the key type; the dictionary Core ML returns is "
       "keyed by the labels, so the description misleads (a warning)"),
    _r("regressor.no-predicted-feature", "error", "NN/GLM/SVM regressor without predictedFeatureName",
       IFACE + " (validateRegressorInterface)"),
    _r("regressor.predicted-not-output", "error", "predictedFeatureName is not an output",
       IFACE + " (validateRegressorInterface)"),
    _r("regressor.predicted-type", "error", "regressor predicts neither Double nor MultiArray",
       IFACE + " (validateRegressorInterface)"),
    # tree ensembles
    _r("tree.no-dimensions", "error", "numPredictionDimensions is 0", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.duplicate-node", "error", "a (treeId, nodeId) pair twice", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.bad-node-behavior", "error", "nodeBehavior neither a branch mode nor LeafNode",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.leaf-no-values", "error", "leaf without evaluationInfo", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.leaf-dimension", "error", "leaf value for a dimension >= numPredictionDimensions",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.leaf-duplicate-dimension", "error", "leaf with two values for one dimension",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.missing-child", "error", "a branch names a child its tree does not declare",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.self-child", "error", "a node is its own child", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.shared-child", "error", "a node with two parents", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.multiple-roots", "error", "a tree with more than one root", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.unreachable", "error", "nodes no root reaches", "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.base-prediction-size", "error", "basePredictionValue neither empty nor one per dimension",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.classes-dimensions", "error", "class label count does not fit numPredictionDimensions",
       "mlmodel/src/TreeEnsembleCommon.cpp"),
    _r("tree.interface", "warning",
       "tree-ensemble predicted feature / probabilities names and types (as for other classifiers)",
       "ours only: TreeEnsembleValidator.cpp checks the trees, never the interface; a warning"),
    # kNN
    _r("knn.neighbors", "error", "numberOfNeighbors default not positive or outside its allowed values",
       V + "ParameterValidator.cpp (validateInt64Parameter)"),
    _r("knn.no-weighting", "error", "no weighting scheme", V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.default-label-type", "error", "default label of the other kind than the labels",
       V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.no-default-label", "error", "neither labels nor a default label",
       V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.samples-labels", "error", "data point count differs from label count",
       V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.sample-dimensions", "error", "a data point not numberOfDimensions long",
       V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.no-index", "error", "no index type (linear or kd-tree)", V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.leaf-size", "error", "kd-tree leafSize not positive", V + "KNearestNeighborsClassifierValidator.cpp"),
    _r("knn.no-distance", "error", "no distance function", V + "KNearestNeighborsClassifierValidator.cpp"),
    # GLM
    _r("glm.bad-transform", "error", "GLM classifier postEvaluationTransform not Logit/Probit",
       V + "LinearModelValidator.cpp"),
    _r("glm.bad-encoding", "error", "classEncoding not ReferenceClass/OneVsRest", V + "LinearModelValidator.cpp"),
    _r("glm.no-weights", "error", "GLM classifier without weights", V + "LinearModelValidator.cpp"),
    _r("glm.weights-offsets", "error", "weight arrays and offsets differ in number", V + "LinearModelValidator.cpp"),
    _r("glm.weights-classes", "error", "weight array count does not fit the classes and encoding",
       V + "LinearModelValidator.cpp"),
    _r("glm.probit-multiclass", "error", "Probit with more than two classes", V + "LinearModelValidator.cpp"),
    _r("glm.weights-length", "error", "weight arrays empty or of different lengths", V + "LinearModelValidator.cpp"),
    # other classic types
    _r("vectorizer.dimensions", "error", "a feature vectorizer column with inputDimensions 0",
       V + "FeatureVectorizerValidator.cpp"),
    _r("scaler.io-types", "error", "scaler output type does not follow the input", V + "ScalarValidator.cpp"),
    _r("scaler.shape", "error", "scaler array not 1-d or output shape differs", V + "ScalarValidator.cpp"),
    _r("scaler.values", "error", "shift/scale values neither 0, 1 nor one per value", V + "ScalarValidator.cpp"),
    _r("onehot.no-categories", "error", "one-hot encoder without categories", V + "OneHotEncoderValidator.cpp"),
    _r("vision.no-type", "error", "Vision feature print type unset", V + "VisionFeaturePrintValidator.cpp"),
    _r("vision.bad-version", "error", "scene/objects version invalid", V + "VisionFeaturePrintValidator.cpp"),
    _r("vision.objects-outputs", "error", "objects print not naming exactly the two outputs",
       V + "VisionFeaturePrintValidator.cpp"),
    _r("audio.no-type", "error", "audio feature print type unset", V + "AudioFeaturePrintValidator.cpp"),
    _r("audio.bad-version", "error", "sound version SOUND_VERSION_INVALID", V + "AudioFeaturePrintValidator.cpp"),
    _r("text.revision", "error", "text classifier revision 0", V + "TextClassifierValidator.cpp"),
    _r("text.no-labels", "error", "text classifier without labels", V + "TextClassifierValidator.cpp"),
    _r("text.no-data", "error", "text classifier without modelParameterData", V + "TextClassifierValidator.cpp"),
    _r("model.params", "error", "a parameter or feature the validator of a less common model type "
       "rejects (imputer, dictVectorizer, arrayFeatureExtractor, normalizer, categoricalMapping, "
       "customModel, wordTagger, gazetteer, wordEmbedding, soundAnalysisPreprocessing, "
       "classConfidenceThresholding, itemSimilarityRecommender, SVMs); the "
       "message names the field", V + "<Type>Validator.cpp of the model type (e.g. ImputerValidator.cpp, "
       "SVMValidator.cpp; the item-similarity rules in mlmodel/src/ItemSimilarityRecommenderCommon.cpp)"),
    # pipelines and linked models
    _r("pipeline.empty", "error", "pipeline without stages", V + "PipelineValidator.cpp"),
    _r("pipeline.input-missing", "error", "stage input neither a pipeline input nor an earlier output",
       V + "PipelineValidator.cpp"),
    _r("pipeline.type-mismatch", "error", "stage input not isEquivalent to its source",
       V + "PipelineValidator.cpp; mlmodel/src/Comparison.cpp (isEquivalent)"),
    _r("pipeline.output-missing", "error", "pipeline output produced by nothing", V + "PipelineValidator.cpp"),
    _r("pipeline.output-type-mismatch", "error", "pipeline output type differs from its producer",
       V + "PipelineValidator.cpp"),
    _r("pipeline.names-count", "error", "names given but not one per stage", V + "PipelineValidator.cpp"),
    _r("pipeline.names-duplicate", "error", "duplicate stage names", V + "PipelineValidator.cpp"),
    _r("pipeline.updatable", "error", "updatable flags of the stages wrong", V + "PipelineValidator.cpp"),
    _r("pipeline.predicted-not-output", "warning", "pipeline classifier predicted names not outputs",
       "ours only: PipelineValidator.cpp does not check them; a warning"),
    _r("linked.updatable", "error", "updatable linkedModel", V + "LinkedModelValidator.cpp"),
    _r("linked.optional-input", "error", "optional input on a linked stub", IFACE + " (validateOptionalGeneric)"),
    _r("linked.no-link-type", "error", "LinkType unset", V + "LinkedModelValidator.cpp"),
    _r("linked.file-name-empty", "error", "empty linkedModelFileName", V + "LinkedModelValidator.cpp"),
    _r("linked.not-compiled-name", "warning", "file name not ending in .mlmodelc",
       "ours only: Core ML loads compiled models only; a warning"),
    _r("linked.empty-search-entry", "warning", "empty search path entry", "ours only: a stray ':'; a warning"),
    _r("linked.bad-bundle-identifier", "warning", "$BUNDLE_IDENTIFIER( not closed", "ours only: a warning"),
    _r("linked.not-found", "error", "with --search-path: target not found",
       "ours only: asked for with --search-path; Core ML fails to load a linked model whose target is missing"),
    _r("linked.interface-mismatch", "error", "stub and target interfaces differ (the target found on --search-path, or beside the model by default)",
       "ours only: asked for with --search-path; the runtime feeds the stub's features to the target"),
    _r("linked.target-invalid", "error", "with --search-path: the target fails check",
       "ours only: asked for with --search-path"),
    _r("linked.target-not-a-model", "error", "with --search-path: the target file is no model",
       "ours only: asked for with --search-path"),
    _r("linked.leaves-bundle", "warning", "search path entry outside the model's folder",
       "ours only: a device's sandbox holds nothing outside the bundle; a warning"),
    _r("linked.target-unreadable", "info", "only the compiled target was found", "ours only: cannot read .mlmodelc"),
    _r("linked.target-not-checked", "warning", "without --search-path: the target is not beside the model (its own search path from the model's folder), so its interface was not compared",
       "ours only: a warning; pass --search-path to check the link"),
    _r("package.manifest-version", "error", "Manifest fileFormatVersion malformed or too new",
       "ours only: the package reader is not in the open validator; Core ML refuses unknown "
       "package versions ('unsupported model package version')"),
    _r("package.manifest-entry", "error", "manifest item incomplete or its path missing",
       "ours only: Core ML cannot find the root model of such a package"),
    _r("package.no-weights-item", "warning", "weights used but not listed in the manifest",
       "ours only: Xcode keeps listed items only; a warning"),
    # neural networks (check/nn.py)
    _r("nn.no-layers", "error", "neural network without layers", NNV + " (validateNeuralNetworkTopLevel)"),
    _r("nn.bad-input-type", "error", "NN input not Image/MultiArray/State", NNV + " (validateInputOutputTypes)"),
    _r("nn.bad-output-type", "error", "plain NN output not Image/MultiArray", NNV + " (validateInputOutputTypes)"),
    _r("nn.layer-no-name", "warning", "layer without a name",
       "ours only: Core ML's validator accepts an unnamed layer; a warning, because tools and "
       "error messages cannot point at it"),
    _r("nn.layer-no-type", "error", "layer without a layer kind", NNL),
    _r("nn.duplicate-layer-name", "warning", "two layers with the same name",
       "ours only: accepted by the validator (except updatable models); a warning"),
    _r("nn.layer-arity", "error", "a layer with too many or too few inputs/outputs", NNL + " (validateInputCount)"),
    _r("nn.undefined-blob", "error", "a layer consumes blobs nothing produces", NNV),
    _r("nn.not-topological", "error", "a layer consumes a later layer's blob", NNV),
    _r("nn.cycle", "error", "layers that depend on each other", NNV),
    _r("nn.duplicate-output", "error", "a blob produced twice", NNV),
    _r("nn.output-not-produced", "error", "an interface output no layer produces (a warning on a "
       "neural-network regressor, whose validator does not check its outputs)", NNV),
    _r("nn.unused-input", "warning", "an input no layer consumes", "ours only: harmless, a warning"),
    _r("nn.label-probability-layer", "error", "labelProbabilityLayerName not a produced blob", NNV),
    _r("nn.shape-mapping", "error", "new layers or RANK4 images with the legacy RANK5 array mapping", NNV),
    _r("nn.legacy-rank", "error", "multiarray input not rank 1/3 under RANK5 mapping", NNV),
    _r("nn.tensor-hint", "error", "inputTensor/outputTensor count or rank inconsistent", NNV),
    _r("nn.conv-no-padding", "error", "conv layer without padding type", NNL),
    _r("nn.conv-dynamic-bias", "warning", "conv layer with dynamic weights and a static bias",
       "ours only: NeuralNetworkLayerValidator.cpp has this check but returns before it when the "
       "conv layer has two inputs, so Core ML accepts it; a warning (the bias is likely ignored)"),
    _r("nn.conv-channels", "error", "conv layer kernelChannels x nGroups != its input's channels",
       "ours only: the open validator checks channels only in its legacy shape pass "
       "(NeuralNetworkShapes.cpp, reported as 'potentially invalid'), but Core ML's compiler "
       "rejects a layer whose channel parameter disagrees with its input blob (coremltools#157, "
       "#389: 'compiler error: ... must be equal to the parameter inputChannels')"),
    _r("nn.conv-groups", "warning", "outputChannels not divisible by nGroups",
       "ours only: NeuralNetworkLayerValidator.cpp does not check it (a deconvolution's weight "
       "count uses outputChannels / nGroups); a warning, the grouping is likely wrong"),
    _r("nn.scale-shape", "error", "scale layer shapes not rank 1 or 3", NNL),
    _r("nn.custom-no-class", "error", "custom layer without className", NNL),
    _r("nn.updatable-no-layer", "error", "updatable model without updatable layer", UPD),
    _r("nn.updatable-layer-kind", "error", "updatable layer of a kind that cannot be trained", UPD),
    _r("nn.updatable-behind-non-backprop", "error", "a non-backpropagable layer between updatable layer and loss", UPD),
    _r("nn.updatable-layer-in-static-model", "warning", "updatable layer in a static model",
       "ours only: ignored by Core ML; a warning"),
    _r("nn.update-loss", "error",
       "not exactly one loss layer, unknown kind, name clash, or input not produced (an empty "
       "lossLayers list crashes Core ML's validator: losslayers(0) in validateTrainingInputs)", UPD),
    _r("nn.update-optimizer", "error", "no optimizer or missing SGD/Adam parameters", UPD),
    _r("nn.update-epochs", "error", "no epochs", UPD),
    _r("nn.training-input", "error", "training inputs missing or not covering input and target",
       UPD + " (validateTrainingInputs)"),
    _r("nn.activation-type", "error", "activation layer without nonlinearity, or a recurrent "
       "activation Core ML does not take", V + "NeuralNetwork/NeuralNetworkValidatorUtils.hpp "
       "(validateActivationParams, validateRecurrentActivationParams)"),
    _r("nn.input-rank", "error", "N-d interpretation: multiarray input without default shape, shape "
       "range of another rank, or a model input/output of a rank the layer reading/writing it "
       "does not take", NNV + " (validateNdMultiArrayInputType); " + V
       + "NeuralNetwork/NeuralNetworkValidatorUtils.hpp (validateRankCount)"),
    _r("nn.layer-param", "error", "layer parameters the layer validator rejects that check/nn.py "
       "does not cover: required lists left empty (target/output shapes, axes, slice ids and "
       "masks), 3-d sizes not positive, permute axis not 4 values, reshape targetShape not 3/4 "
       "values, reorganizeData blockSize < 2, slice stride < 1, pooling/padding type unset, "
       "padding/crop/constantPad amounts, "
       "upsample scaling factors, empty loop body or if-branch, loopBreak/Continue outside a loop",
       NNL),
    _r("array.empty-enumeration", "error", "a multiarray with an empty enumeratedShapes list where "
       "Core ML compares types (pipeline stage features, training inputs): its isEquivalent reads "
       "the first shape and aborts, at any specification version",
       "mlmodel/src/Comparison.cpp (rankOf in compareArrayTypes); PipelineValidator.cpp, " + UPD),
    _r("nn.update-parameter", "error", "update parameter (epochs, miniBatchSize, learningRate, "
       "beta1/2, eps, seed) default outside its allowed values", V + "ParameterValidator.cpp"),
    _r("nn.update-names", "error", "updatable network with duplicate layer names",
       UPD + " (validateLayerAndLossLayerNamesCollisions)"),
    _r("nn.update-loss-io", "error", "cross-entropy loss input not a softmax output, or a loss "
       "target produced inside the network", UPD + " (validateLossLayer)"),
    _r("nn.training-input-match", "error", "training inputs compared by name and type: fewer than "
       "two, none equal to a prediction input, or none giving the loss/classifier target",
       UPD + " (validateTrainingInputs)"),
    _r("weights.multiple-storage", "error", "more than one weight storage filled", NNL + "; " + UTILS),
    _r("weights.raw-without-quantization", "error", "raw codes without quantization (a warning "
       "where an empty field is accepted: inner-product and batched-matmul weights, PReLU/softplus alpha)",
       UTILS + " (valueType: raw bytes without quantization read as EMPTY); " + NNL),
    _r("weights.no-quantization-kind", "error", "quantization without linear or LUT", QUANT),
    _r("weights.empty", "error", "a required weight is empty (error where Core ML's validator "
       "rejects it; a warning for inner-product and batched-matmul weights and PReLU/softplus alpha, whose "
       "validators skip empty fields)",
       NNL + " (validateGeneralWeightParams 'has empty', conv layers 'has not specified "
       "weights'); the warning cases are ours only"),
    _r("weights.count-mismatch", "error", "weight count differs from what the layer needs", NNL),
    _r("weights.bad-bits", "error", "numberOfBits outside 1..8", QUANT),
    _r("weights.scale-size", "error", "linear scale/bias tables of the wrong length", QUANT),
    _r("weights.lut-size", "error", "LUT length != 2^bits", QUANT),
    _r("weights.precision-mix", "error", "FP16 and FP32 mixed within a layer", NNL),
    _r("weights.int8-not-allowed", "error", "int8 weights outside int8-dynamic layers",
       "ours only: the validator size-checks only float and uint storage, so it accepts them, but "
       "NeuralNetwork.proto documents int8RawValue as the 'field to be used if "
       "int8DynamicQuantize is set in the parent layer'"),
    _r("weights.int8-dynamic", "error", "int8DynamicQuantize requirements", UTILS + " (validateInt8Requirements)"),
    _r("weights.updatable", "error", "weights of an updatable layer not updatable or quantized", UPD),
    _r("preprocessing.not-image-input", "error", "preprocessing featureName is not an image input",
       "ours only: the validator skips preprocessing, but Xcode's compile step fails on a "
       "featureName that names no image input (coremltools#163, onnx-coreml#410: "
       "'Command CoreMLModelCompile failed')"),
    _r("preprocessing.mean-image-size", "warning", "meanImage size != C*H*W",
       "ours only: the validator skips preprocessing and no failure is documented; a warning, "
       "as the mean is subtracted per pixel"),
    _r("preprocessing.duplicate", "warning", "two preprocessing entries for one input", "ours only: a warning"),
    _r("mlprogram.*", "error", "ML Program bodies: functions, values, opsets, interface, blob files",
       _MIL_OURS),
    _r("mlprogram.checker-crashed", "error", "the ML Program checker raised", "ours only: a bug to report"),
])


def all_rules() -> dict[str, Rule]:
    """:data:`RULES` plus the object-detector rules of check/nms.py (documented in
    their own section of docs/check.md)."""
    from .nms import RULES as NMS_RULES

    merged = dict(RULES)
    merged.update({rid: Rule(rid, *entry) for rid, entry in NMS_RULES.items()})
    return merged


def explain(rule_id: str) -> str:
    """The table entry of ``rule_id`` as text; ``mlprogram.X`` falls back to ``mlprogram.*``."""
    rules = all_rules()
    rule = rules.get(rule_id)
    if rule is None and rule_id.startswith("mlprogram."):
        rule = RULES["mlprogram.*"]
        return rule.explain().replace("mlprogram.*", rule_id, 1) + "\n  (rule ids: docs/mlprogram.md)"
    if rule is None:
        from ..errors import near_matches

        close = near_matches(rule_id, list(rules), n=3)
        raise SpecSurgeryError(f"unknown rule '{rule_id}'"
                               + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else "")
                               + "; `specsurgery check --explain all` lists every rule")
    return rule.explain()


def markdown_table() -> str:
    """The docs/check.md rule table."""
    rows = ["| rule id | severity | what it checks | Apple's file, or ours only and why |",
            "|---|---|---|---|"]
    for rule in RULES.values():
        src = rule.source if rule.ours_only else f"`{rule.source}`"
        rows.append(f"| `{rule.id}` | {rule.severity} | {rule.what} | {src} |")
    return "\n".join(rows)
