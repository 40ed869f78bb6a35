"""Rules of the remaining model types, one function per Core ML validator
(named in each docstring, in ``mlmodel/src/Validation``): imputer, dictionary
vectorizer, array feature extractor, normalizer, categorical mapping, custom
model, word tagger, gazetteer, word embedding, sound-analysis preprocessing,
class-confidence thresholding, item-similarity recommender, Bayesian probit
regressor and SVMs (non-maximum suppression: check/nms.py).  All findings use the rule
``model.params`` ("a parameter the model type's validator rejects") or the
shared interface rules."""

from __future__ import annotations

import math

from .features import TYPE_NAMES, check_feature_types
from .findings import Findings

RULE = "model.params"
NUMERIC = ("int64Type", "doubleType", "multiArrayType")
INT32, FLOAT32 = 131104, 65568


def _first(desc, role):
    feats = getattr(desc, role)
    return feats[0] if len(feats) else None


def _named(feats, name, allowed, role, kind, field, out: Findings) -> None:
    """validateDescriptionsContainFeatureWithNameAndType."""
    for f in feats:
        if f.name == name:
            t = f.type.WhichOneof("Type")
            if t is not None and t not in allowed:
                out.error(f"{role}:{name}", "interface.feature-type",
                          f"{role} '{name}' ({field}) is {TYPE_NAMES.get(t, t)}, but {kind} takes "
                          + " or ".join(TYPE_NAMES[a] for a in allowed))
            return
    out.error("description", RULE, f"{kind}.{field} names '{name}', which is not one of the model's "
              f"{role}s {[f.name for f in feats]}")


def check_imputer(spec, out: Findings) -> None:
    """ImputerValidator.cpp"""
    desc, imp = spec.description, spec.imputer
    types = NUMERIC + ("stringType", "dictionaryType")
    check_feature_types(desc.input, "input", types, "imputer", out, max_count=1)
    check_feature_types(desc.output, "output", types, "imputer", out, max_count=1)
    src, dst = _first(desc, "input"), _first(desc, "output")
    which = imp.WhichOneof("ImputedValue")
    if which is None:
        out.error("imputer", RULE, "no imputed value set; set imputedDoubleValue, imputedInt64Value, ...")
    if src is None or dst is None:
        return
    ts, td = src.type.WhichOneof("Type"), dst.type.WhichOneof("Type")
    if ts != td:
        out.error(f"output:{dst.name}", RULE, f"the imputer's output must have the input's type "
                  f"({TYPE_NAMES.get(ts, ts)}), not {TYPE_NAMES.get(td, td)}")
        return
    if ts == "multiArrayType":
        shape = list(src.type.multiArrayType.shape)
        if len(shape) != 1:
            out.error(f"input:{src.name}", RULE, f"the imputer takes a 1-d array, not shape {shape}")
            return
        if list(dst.type.multiArrayType.shape) != shape:
            out.error(f"output:{dst.name}", RULE, "the imputer's output shape differs from its input's")
            return
    fits = {"imputedDoubleValue": (("doubleType", "multiArrayType"), "replaceDoubleValue"),
            "imputedInt64Value": (("int64Type",), "replaceInt64Value"),
            "imputedDoubleArray": (("multiArrayType",), "replaceDoubleValue"),
            "imputedStringValue": (("stringType",), "replaceStringValue"),
            "imputedInt64Array": (("multiArrayType",), "replaceInt64Value"),
            "imputedStringDictionary": (("dictionaryType",), None),
            "imputedInt64Dictionary": (("dictionaryType",), None)}
    if which in fits:
        feature_types, replace = fits[which]
        rv = imp.WhichOneof("ReplaceValue")
        if ts not in feature_types:
            out.error("imputer", RULE, f"{which} does not fit input '{src.name}' of type "
                      f"{TYPE_NAMES.get(ts, ts)}")
        elif rv is not None and rv != replace:
            out.error("imputer", RULE, f"{rv} does not fit {which}; use {replace or 'no replace value'}")
        elif which in ("imputedDoubleArray", "imputedInt64Array") and \
                len(getattr(imp, which).vector) != src.type.multiArrayType.shape[0]:
            out.error("imputer", RULE, f"{which} has {len(getattr(imp, which).vector)} values but the "
                      f"input has {src.type.multiArrayType.shape[0]}")


def check_dict_vectorizer(spec, out: Findings) -> None:
    """DictVectorizerValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("dictionaryType",), "dictVectorizer", out, max_count=1)
    check_feature_types(desc.output, "output", ("dictionaryType",), "dictVectorizer", out, max_count=1)
    if spec.dictVectorizer.WhichOneof("Map") is None:
        out.error("dictVectorizer", RULE, "no map set; set stringToIndex or int64ToIndex")


def check_array_feature_extractor(spec, out: Findings) -> None:
    """ArrayFeatureExtractorValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("multiArrayType",), "arrayFeatureExtractor", out, max_count=1)
    check_feature_types(desc.output, "output", NUMERIC[1:] + ("int64Type",), "arrayFeatureExtractor", out,
                        max_count=1)
    dst = _first(desc, "output")
    if dst is not None and dst.type.WhichOneof("Type") == "doubleType" and \
            len(spec.arrayFeatureExtractor.extractIndex) != 1:
        out.error("arrayFeatureExtractor", RULE, "a Double output takes exactly one extractIndex")


def check_normalizer(spec, out: Findings) -> None:
    """NormalizerValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("multiArrayType",), "normalizer", out, max_count=1)
    check_feature_types(desc.output, "output", ("multiArrayType",), "normalizer", out, max_count=1)
    if spec.normalizer.normType not in (0, 1, 2):
        out.error("normalizer", RULE, f"normType {spec.normalizer.normType} is not LMax, L1 or L2")


def check_categorical_mapping(spec, out: Findings) -> None:
    """CategoricalMappingValidator.cpp"""
    desc, cm = spec.description, spec.categoricalMapping
    mapping = cm.WhichOneof("MappingType")
    unknown = cm.WhichOneof("ValueOnUnknown")
    if mapping is None:
        out.error("categoricalMapping", RULE, "no mapping set; set stringToInt64Map or int64ToStringMap")
        return
    if mapping == "stringToInt64Map":
        if unknown == "strValue":
            out.error("categoricalMapping", RULE, "valueOnUnknown is a string but the map produces Int64")
        src, dst = "stringType", "int64Type"
    else:
        if unknown == "int64Value":
            out.error("categoricalMapping", RULE, "valueOnUnknown is an Int64 but the map produces String")
        src, dst = "int64Type", "stringType"
    check_feature_types(desc.input, "input", (src, "sequenceType"), "categoricalMapping", out, max_count=1)
    check_feature_types(desc.output, "output", (dst, "sequenceType"), "categoricalMapping", out, max_count=1)
    i, o = _first(desc, "input"), _first(desc, "output")
    if i is not None and o is not None and i.type.WhichOneof("Type") == "sequenceType":
        if i.type.sequenceType.WhichOneof("Type") != src or o.type.WhichOneof("Type") != "sequenceType" \
                or o.type.sequenceType.WhichOneof("Type") != dst:
            out.error("categoricalMapping", RULE, f"a sequence mapping takes Sequence<{TYPE_NAMES[src]}> "
                      f"to Sequence<{TYPE_NAMES[dst]}>")


def check_custom_model(spec, out: Findings) -> None:
    """CustomModelValidator.cpp"""
    cm = spec.customModel
    if not cm.className:
        out.error("customModel", RULE, "className is empty; name the class that implements the model")
    for key, value in cm.parameters.items():
        if not key:
            out.error("customModel", RULE, "a parameter has an empty key")
        elif value.WhichOneof("value") is None:
            out.error("customModel", RULE, f"parameter '{key}' has no value set")


def check_word_tagger(spec, out: Findings) -> None:
    """WordTaggerValidator.cpp"""
    desc, wt = spec.description, spec.wordTagger
    names = {"tokensOutputFeatureName": "stringType", "tokenTagsOutputFeatureName": "stringType",
             "tokenLocationsOutputFeatureName": "int64Type", "tokenLengthsOutputFeatureName": "int64Type"}
    wanted = {getattr(wt, n): n for n in names if getattr(wt, n)}
    if len(desc.output) != len(wanted):
        out.error("description", RULE, f"the word tagger names {len(wanted)} outputs but the model "
                  f"declares {len(desc.output)}")
    for f in desc.output:
        if f.name not in wanted:
            out.error(f"output:{f.name}", RULE, f"output '{f.name}' is none of the word tagger's outputs")
        elif f.type.WhichOneof("Type") != "sequenceType" or \
                f.type.sequenceType.WhichOneof("Type") != names[wanted[f.name]]:
            out.error(f"output:{f.name}", "interface.feature-type", f"output '{f.name}' must be "
                      f"Sequence<{TYPE_NAMES[names[wanted[f.name]]]}>")
    if not wt.tokenTagsOutputFeatureName or wt.tokenTagsOutputFeatureName not in {f.name for f in desc.output}:
        out.error("wordTagger", RULE, "tokenTagsOutputFeatureName must name an output")
    check_feature_types(desc.input, "input", ("stringType",), "wordTagger", out, max_count=1)
    _text_model(wt, "wordTagger", out, labels="stringTags")


def _text_model(msg, kind, out: Findings, labels=None, min_revision=1) -> None:
    if msg.revision < min_revision:
        out.error(kind, RULE, f"revision {msg.revision} is not valid; it must be >= {min_revision}")
    if labels is not None and not len(getattr(msg, labels).vector):
        out.error(kind, RULE, f"{labels} is empty; give at least one")
    if not msg.modelParameterData:
        out.error(kind, RULE, "modelParameterData is empty; the model's trained data is missing")


def check_gazetteer(spec, out: Findings) -> None:
    """GazetteerValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("stringType",), "gazetteer", out, max_count=1)
    check_feature_types(desc.output, "output", ("stringType",), "gazetteer", out, max_count=1)
    _text_model(spec.gazetteer, "gazetteer", out, labels="stringClassLabels", min_revision=2)


def check_word_embedding(spec, out: Findings) -> None:
    """WordEmbeddingValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("stringType",), "wordEmbedding", out, max_count=1)
    check_feature_types(desc.output, "output", ("multiArrayType",), "wordEmbedding", out, max_count=1)
    _text_model(spec.wordEmbedding, "wordEmbedding", out, min_revision=2)


def check_sound_preprocessing(spec, out: Findings) -> None:
    """SoundAnalysisPreprocessingValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", ("multiArrayType",), "soundAnalysisPreprocessing", out, max_count=1)
    check_feature_types(desc.output, "output", ("multiArrayType",), "soundAnalysisPreprocessing", out, max_count=1)
    if spec.soundAnalysisPreprocessing.WhichOneof("SoundAnalysisPreprocessingType") is None:
        out.error("soundAnalysisPreprocessing", RULE, "no preprocessing type set; set vggish")
        return
    i, o = _first(desc, "input"), _first(desc, "output")
    if i is not None and i.type.WhichOneof("Type") == "multiArrayType":
        a = i.type.multiArrayType
        if list(a.shape) != [15600] or a.dataType != FLOAT32:
            out.error(f"input:{i.name}", RULE, "vggish preprocessing takes MultiArray<FLOAT32>[15600]")
    if o is not None and o.type.WhichOneof("Type") == "multiArrayType":
        a = o.type.multiArrayType
        if list(a.shape) != [1, 96, 64] or a.dataType != FLOAT32:
            out.error(f"output:{o.name}", RULE, "vggish preprocessing produces MultiArray<FLOAT32>[1,96,64]")


def check_class_confidence_thresholding(spec, out: Findings) -> None:
    """ClassConfidenceThresholdingValidator.cpp"""
    curves = spec.classConfidenceThresholding.precisionRecallCurves
    if not len(curves):
        out.error("classConfidenceThresholding", RULE, "no precisionRecallCurves; give one per class")
    for i, c in enumerate(curves):
        for a, b in (("precisionValues", "precisionConfidenceThresholds"),
                     ("recallValues", "recallConfidenceThresholds")):
            va, vb = getattr(c, a).vector, getattr(c, b).vector
            if not len(va) or len(va) != len(vb):
                out.error(f"precisionRecallCurves[{i}]", RULE, f"{a} and {b} must be non-empty and of "
                          "one length")
            elif any(math.isinf(x) or math.isnan(x) or x < 0 for x in list(va) + list(vb)):
                out.error(f"precisionRecallCurves[{i}]", RULE, f"{a}/{b} hold a negative, inf or NaN value")


def check_item_similarity(spec, out: Findings) -> None:
    """ItemSimilarityRecommenderValidator.cpp / ItemSimilarityRecommenderCommon.cpp"""
    desc, isr = spec.description, spec.itemSimilarityRecommender
    kind = "itemSimilarityRecommender"
    item = isr.itemInputFeatureName or (desc.input[0].name if len(desc.input) == 1 else "")
    if not item:
        out.error(kind, RULE, "itemInputFeatureName is empty and the model has more than one input")
    else:
        _named(desc.input, item, ("dictionaryType", "sequenceType", "multiArrayType"), "input", kind,
               "itemInputFeatureName", out)
    if isr.numRecommendationsInputFeatureName:
        _named(desc.input, isr.numRecommendationsInputFeatureName, ("int64Type",), "input", kind,
               "numRecommendationsInputFeatureName", out)
    for field in ("itemExclusionInputFeatureName", "itemRestrictionInputFeatureName"):
        if getattr(isr, field):
            _named(desc.input, getattr(isr, field), ("sequenceType", "multiArrayType"), "input", kind,
                   field, out)
    named = False
    for field, t in (("recommendedItemScoreOutputFeatureName", "dictionaryType"),
                     ("recommendedItemListOutputFeatureName", "sequenceType")):
        if getattr(isr, field):
            named = True
            _named(desc.output, getattr(isr, field), (t,), "output", kind, field, out)
    if not named:
        out.error(kind, RULE, "no output named; set recommendedItemListOutputFeatureName or "
                  "recommendedItemScoreOutputFeatureName")
    ints, strs = len(isr.itemInt64Ids.vector), len(isr.itemStringIds.vector)
    if ints and strs:
        out.error(kind, RULE, "both itemInt64Ids and itemStringIds are set; use one")


def check_bayesian_probit(spec, out: Findings) -> None:
    """BayesianProbitRegressionValidator.cpp"""
    for f in spec.description.input:
        t = f.type.WhichOneof("Type")
        if t != "multiArrayType" or f.type.multiArrayType.dataType != INT32 or \
                not 1 <= len(f.type.multiArrayType.shape) <= 2:
            out.error(f"input:{f.name}", "interface.feature-type",
                      f"input '{f.name}' must be a MultiArray<INT32> of rank 1 or 2")


def _kernel(kernel, out: Findings) -> None:
    which = kernel.WhichOneof("kernel")
    if which is None:
        out.error("kernel", RULE, "no kernel set; set linearKernel, rbfKernel, polyKernel or sigmoidKernel")
    elif which != "linearKernel" and getattr(kernel, which).gamma < 0:
        out.error("kernel", RULE, f"{which}.gamma must be >= 0")
    elif which == "polyKernel" and kernel.polyKernel.degree < 0:
        out.error("kernel", RULE, "polyKernel.degree must be >= 0")


def _support_vectors(msg) -> int | None:
    which = msg.WhichOneof("supportVectors")
    if which is None:
        return None
    return len(getattr(msg, which).vectors)


def check_svm_classifier(spec, out: Findings) -> None:
    """SVMValidator.cpp (classifier; labels via the classifier rules)"""
    check_feature_types(spec.description.input, "input", NUMERIC, "supportVectorClassifier", out)
    svm = spec.supportVectorClassifier
    _kernel(svm.kernel, out)
    which = svm.WhichOneof("ClassLabels")
    if which is None:
        return  # classifier.no-labels
    k = len(getattr(svm, which).vector)
    if len(svm.coefficients) != k - 1:
        out.error("coefficients", RULE, f"{len(svm.coefficients)} coefficient arrays; {k} classes need {k - 1}")
    total = _support_vectors(svm)
    if total is None:
        out.error("supportVectors", RULE, "no support vectors; set sparseSupportVectors or denseSupportVectors")
        return
    if len(svm.numberOfSupportVectorsPerClass) != k:
        out.error("numberOfSupportVectorsPerClass", RULE, f"needs one count per class ({k})")
    elif sum(svm.numberOfSupportVectorsPerClass) != total:
        out.error("numberOfSupportVectorsPerClass", RULE, f"counts sum to "
                  f"{sum(svm.numberOfSupportVectorsPerClass)}, not the {total} support vectors")
    if any(len(c.alpha) != total for c in list(svm.coefficients)[:max(0, k - 1)]):
        out.error("coefficients", RULE, f"every coefficient array needs {total} alphas (one per support vector)")
    if len(svm.probA) or len(svm.probB):
        if len(svm.probA) != len(svm.probB) or len(svm.probA) != k * (k - 1) // 2:
            out.error("probA", RULE, f"probA and probB need {k * (k - 1) // 2} values each (one per class pair)")


def check_svm_regressor(spec, out: Findings) -> None:
    """SVMValidator.cpp (regressor)"""
    check_feature_types(spec.description.input, "input", NUMERIC, "supportVectorRegressor", out)
    svm = spec.supportVectorRegressor
    _kernel(svm.kernel, out)
    total = _support_vectors(svm)
    if total is None:
        out.error("supportVectors", RULE, "no support vectors; set sparseSupportVectors or denseSupportVectors")
    elif len(svm.coefficients.alpha) != total:
        out.error("coefficients", RULE, f"{len(svm.coefficients.alpha)} coefficients for {total} support vectors")


CHECKERS = {
    "imputer": check_imputer, "dictVectorizer": check_dict_vectorizer,
    "arrayFeatureExtractor": check_array_feature_extractor, "normalizer": check_normalizer,
    "categoricalMapping": check_categorical_mapping, "customModel": check_custom_model,
    "wordTagger": check_word_tagger, "gazetteer": check_gazetteer, "wordEmbedding": check_word_embedding,
    "soundAnalysisPreprocessing": check_sound_preprocessing,
    "classConfidenceThresholding": check_class_confidence_thresholding,
    "itemSimilarityRecommender": check_item_similarity, "bayesianProbitRegressor": check_bayesian_probit,
    "supportVectorClassifier": check_svm_classifier,
    "supportVectorRegressor": check_svm_regressor,
}
