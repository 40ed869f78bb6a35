"""Rules of the small classic model types: feature vectorizer, scaler, one-hot
encoder, Vision and audio feature prints, text classifier.  Each function
mirrors one of Core ML's validators (named in its docstring); the tree, kNN and
GLM rules have their own modules (trees, knn, glm)."""

from __future__ import annotations

from .features import check_feature_types
from .findings import Findings

NUMERIC = ("int64Type", "doubleType", "multiArrayType")


def check_feature_vectorizer(spec, out: Findings) -> None:
    """FeatureVectorizerValidator.cpp"""
    desc = spec.description
    check_feature_types(desc.input, "input", NUMERIC + ("dictionaryType",), "featureVectorizer", out)
    check_feature_types(desc.output, "output", ("multiArrayType",), "featureVectorizer", out, max_count=1)
    for i, col in enumerate(spec.featureVectorizer.inputList):
        if col.inputDimensions <= 0:
            out.error(f"inputList[{i}]", "vectorizer.dimensions",
                      f"input column '{col.inputColumn}' has inputDimensions 0; give the number of "
                      "values it contributes (1 for a scalar)")


def check_scaler(spec, out: Findings) -> None:
    """ScalarValidator.cpp (the scaler)"""
    desc = spec.description
    check_feature_types(desc.input, "input", NUMERIC, "scaler", out, max_count=1)
    check_feature_types(desc.output, "output", NUMERIC, "scaler", out, max_count=1)
    if not len(desc.input) or not len(desc.output):
        return
    src, dst = desc.input[0].type, desc.output[0].type
    ts, td = src.WhichOneof("Type"), dst.WhichOneof("Type")
    if ts not in NUMERIC or td not in NUMERIC:
        return
    if ts == "int64Type":
        if td not in ("int64Type", "doubleType"):
            out.error(f"output:{desc.output[0].name}", "scaler.io-types",
                      "an Int64 input scales to an Int64 or Double output; change the output type")
    elif td != ts:
        out.error(f"output:{desc.output[0].name}", "scaler.io-types",
                  f"the scaler's output must have the input's type ({ts[:-4]}), not {td[:-4]}")
    sc = spec.scaler
    if ts == "multiArrayType":
        shape = list(src.multiArrayType.shape)
        if len(shape) != 1:
            out.error(f"input:{desc.input[0].name}", "scaler.shape",
                      f"the scaler takes a 1-d array, but input '{desc.input[0].name}' has shape "
                      f"{shape}; flatten it")
            return
        if td == "multiArrayType" and list(dst.multiArrayType.shape) != shape:
            out.error(f"output:{desc.output[0].name}", "scaler.shape",
                      f"output shape {list(dst.multiArrayType.shape)} differs from input shape {shape}")
        n = shape[0]
        for field in ("shiftValue", "scaleValue"):
            k = len(getattr(sc, field))
            if k not in (0, 1, n):
                out.error(field, "scaler.values",
                          f"{field} has {k} values; give none, one, or one per input value ({n})")
    else:
        for field in ("shiftValue", "scaleValue"):
            k = len(getattr(sc, field))
            if k > 1:
                out.error(field, "scaler.values",
                          f"{field} has {k} values but the input is a scalar; give none or one")


def check_one_hot(spec, out: Findings) -> None:
    """OneHotEncoderValidator.cpp"""
    desc = spec.description
    enc = spec.oneHotEncoder
    check_feature_types(desc.input, "input", ("int64Type", "stringType"), "oneHotEncoder", out, max_count=1)
    want = "dictionaryType" if enc.outputSparse else "multiArrayType"
    check_feature_types(desc.output, "output", (want,), "oneHotEncoder"
                        + (" (outputSparse)" if enc.outputSparse else ""), out, max_count=1)
    if enc.WhichOneof("CategoryType") is None:
        out.error("oneHotEncoder", "onehot.no-categories",
                  "no categories set; set stringCategories or int64Categories")


def check_vision_feature_print(spec, out: Findings) -> None:
    """VisionFeaturePrintValidator.cpp"""
    desc = spec.description
    vfp = spec.visionFeaturePrint
    check_feature_types(desc.input, "input", ("imageType",), "visionFeaturePrint", out, max_count=1)
    which = vfp.WhichOneof("VisionFeaturePrintType")
    if which is None:
        out.error("visionFeaturePrint", "vision.no-type",
                  "no feature print type set; set scene or objects")
    elif which == "scene":
        if vfp.scene.version not in (1, 2):
            out.error("visionFeaturePrint.scene", "vision.bad-version",
                      f"scene version {vfp.scene.version} is not valid; use SCENE_VERSION_1 or _2")
        else:
            check_feature_types(desc.output, "output", ("multiArrayType",), "visionFeaturePrint", out,
                                max_count=1)
    else:
        obj = vfp.objects
        if obj.version != 1:
            out.error("visionFeaturePrint.objects", "vision.bad-version",
                      f"objects version {obj.version} is not valid; use OBJECTS_VERSION_1")
        else:
            if len(obj.output) != 2:
                out.error("visionFeaturePrint.objects", "vision.objects-outputs",
                          f"objects names {len(obj.output)} outputs; it produces exactly two")
            check_feature_types(desc.output, "output", ("multiArrayType",), "visionFeaturePrint", out,
                                max_count=2)
        names = set(obj.output)
        for f in desc.output:
            if f.name not in names:
                out.error(f"output:{f.name}", "vision.objects-outputs",
                          f"output '{f.name}' is not one of the objects print's outputs "
                          f"{sorted(names)}; rename it or list it in objects.output")


def check_audio_feature_print(spec, out: Findings) -> None:
    """AudioFeaturePrintValidator.cpp"""
    desc = spec.description
    afp = spec.audioFeaturePrint
    check_feature_types(desc.input, "input", ("multiArrayType",), "audioFeaturePrint", out, max_count=1)
    if afp.WhichOneof("AudioFeaturePrintType") is None:
        out.error("audioFeaturePrint", "audio.no-type", "no feature print type set; set sound")
    elif afp.sound.version == 0:
        out.error("audioFeaturePrint.sound", "audio.bad-version",
                  "sound version is SOUND_VERSION_INVALID (0); use SOUND_VERSION_1")
    elif afp.sound.version == 1:
        check_feature_types(desc.output, "output", ("multiArrayType",), "audioFeaturePrint", out,
                            max_count=1)


def check_text_classifier(spec, out: Findings) -> None:
    """TextClassifierValidator.cpp"""
    desc = spec.description
    tc = spec.textClassifier
    check_feature_types(desc.input, "input", ("stringType",), "textClassifier", out, max_count=1)
    check_feature_types(desc.output, "output", ("stringType",), "textClassifier", out, max_count=1)
    if tc.revision == 0:
        out.error("textClassifier", "text.revision", "revision is 0 (not set); it must be >= 1")
    if tc.WhichOneof("ClassLabels") is None or not len(tc.stringClassLabels.vector):
        out.error("textClassifier", "text.no-labels",
                  "no class labels; set stringClassLabels with at least one label")
    if not tc.modelParameterData:
        out.error("textClassifier", "text.no-data",
                  "modelParameterData is empty; the text classifier's trained data is missing")


CHECKERS = {
    "featureVectorizer": check_feature_vectorizer,
    "scaler": check_scaler,
    "oneHotEncoder": check_one_hot,
    "visionFeaturePrint": check_vision_feature_print,
    "audioFeaturePrint": check_audio_feature_print,
    "textClassifier": check_text_classifier,
}
