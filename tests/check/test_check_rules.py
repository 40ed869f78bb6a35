"""One broken spec per rule: each is built in code from tests/nnbuild.py,
broken in one place, and must be caught with its rule id."""

from __future__ import annotations

import numpy as np
import pytest

import nnbuild as b
from specsurgery.check import Finding, assert_valid, check
from specsurgery.errors import CheckError
from specsurgery.weights import pack_bits


def rules(spec, severity="error", search_path=None):
    return {f.rule for f in check(spec, search_path=search_path) if f.severity == severity}


# --------------------------------------------------------------------------- mutators

def _fc(spec):
    return spec.neuralNetwork.layers[0]


def _conv(spec):
    return spec.neuralNetwork.layers[0].convolution


def _set_raw(wp, nbits, count, table=None, scales=None):
    wp.Clear()
    wp.rawValue = pack_bits(np.zeros(count, dtype=np.uint8), nbits)
    wp.quantization.numberOfBits = nbits
    if table is not None:
        wp.quantization.lookupTableQuantization.floatValue.extend(table)
    if scales is not None:
        wp.quantization.linearQuantization.scale.extend(scales)


def version_missing(s):
    s.specificationVersion = 0


def version_too_new(s):
    s.specificationVersion = 11


def fp16_io_at_v4(s):
    s.description.input[0].type.multiArrayType.dataType = b.FeatureTypes_pb2.ArrayFeatureType.FLOAT16


def no_type(s):
    s.ClearField("neuralNetwork")


def feature_no_name(s):
    s.description.input[0].name = ""


def feature_no_type(s):
    s.description.output[0].type.Clear()


def optional_output(s):
    s.description.output[0].type.isOptional = True


def all_inputs_optional(s):
    s.description.input[0].type.isOptional = True


def duplicate_input(s):
    s.description.input.add().CopyFrom(s.description.input[0])


def negative_dim(s):
    s.description.input[0].type.multiArrayType.shape[0] = -4


def bad_dtype(s):
    s.description.input[0].type.multiArrayType.dataType = 7


def no_shape(s):
    s.description.input[0].type.multiArrayType.ClearField("shape")


def default_outside_range(s):
    arr = s.description.input[0].type.multiArrayType
    r = arr.shapeRange.sizeRanges.add()
    r.lowerBound, r.upperBound = 1, 0  # upperBound 0 is not "unbounded"


def default_not_enumerated(s):
    arr = s.description.input[0].type.multiArrayType
    arr.enumeratedShapes.shapes.add().shape.extend([8])


def default_value_wrong_dtype(s):
    s.specificationVersion = 5
    s.description.input[0].type.multiArrayType.doubleDefaultValue = 1.0


def no_outputs(s):
    s.description.ClearField("output")


def no_inputs(s):
    s.description.ClearField("input")


def undefined_blob(s):
    s.neuralNetwork.layers[1].input[0] = "hidden"  # typo of 'h'


def duplicate_output(s):
    b.add_relu(s.neuralNetwork, "relu2", "h", "y")


def output_not_produced(s):
    s.description.output[0].name = "result"


def not_topological(s):
    layers = list(s.neuralNetwork.layers)
    s.neuralNetwork.ClearField("layers")
    for layer in reversed(layers):
        s.neuralNetwork.layers.add().CopyFrom(layer)


def cycle(s):
    nn = s.neuralNetwork
    nn.layers[0].input.append("y")  # fc reads relu's output, relu reads fc's


def inner_product_two_inputs(s):
    _fc(s).input.append("x")


def no_layers(s):
    s.neuralNetwork.ClearField("layers")


def duplicate_layer_name(s):
    s.neuralNetwork.layers[1].name = "fc"


def legacy_rank(s):
    s.description.input[0].type.multiArrayType.shape[:] = [1, 4]


def weights_count(s):
    del _fc(s).innerProduct.weights.floatValue[-1]


def bias_count(s):
    _fc(s).innerProduct.bias.floatValue.append(1.0)


def multiple_storage(s):
    _fc(s).innerProduct.bias.float16Value = np.zeros(3, "<f2").tobytes()


def raw_without_quantization(s):
    wp = _conv(s).weights
    n = len(wp.floatValue)
    wp.Clear()
    wp.rawValue = b"\x00" * n


def raw_without_quantization_fc(s):
    wp = _fc(s).innerProduct.weights
    wp.Clear()
    wp.rawValue = b"\x00" * 12


def lut_size(s):
    _set_raw(_fc(s).innerProduct.weights, 4, 12, table=[0.0] * 15)


def raw_too_short(s):
    _set_raw(_fc(s).innerProduct.weights, 8, 11, table=[0.0] * 256)


def bad_bits(s):
    _set_raw(_fc(s).innerProduct.weights, 8, 12, table=[0.0] * 256)
    _fc(s).innerProduct.weights.quantization.numberOfBits = 9


def scale_size(s):
    _set_raw(_fc(s).innerProduct.weights, 8, 12, scales=[1.0, 1.0])


def precision_mix(s):
    wp = _fc(s).innerProduct.bias
    values = np.asarray(wp.floatValue, np.float32)
    wp.Clear()
    wp.float16Value = values.astype("<f2").tobytes()


def int8_without_dynamic(s):
    wp = _fc(s).innerProduct.weights
    wp.Clear()
    wp.int8RawValue = b"\x01" * 12
    wp.quantization.numberOfBits = 8
    wp.quantization.linearQuantization.scale.append(0.1)


def empty_weights(s):
    _conv(s).weights.Clear()


def empty_weights_fc(s):
    _fc(s).innerProduct.weights.Clear()


def conv_weights_count(s):
    _conv(s).outputChannels = 5


def conv_groups_count(s):
    _conv(s).nGroups = 3  # 4 output channels do not split into 3 groups


def conv_no_padding(s):
    _conv(s).ClearField("same")


def deconv_count(s):
    c = _conv(s)
    c.isDeconvolution = True
    c.kernelChannels = 4
    c.outputChannels = 6  # deconv: kC * outC/groups * kH * kW = 4*6*9 != 4*3*9


def no_labels(s):
    s.neuralNetworkClassifier.ClearField("stringClassLabels")


def predicted_type(s):
    s.description.output[1].type.Clear()
    s.description.output[1].type.int64Type.SetInParent()


def probabilities_key(s):
    s.description.output[0].type.dictionaryType.int64KeyType.SetInParent()


def predicted_not_output(s):
    s.description.predictedFeatureName = "label"


def label_probability_layer(s):
    s.neuralNetworkClassifier.labelProbabilityLayerName = "probabilities"


def regressor_type(s):
    s.description.output[0].type.Clear()
    s.description.output[0].type.stringType.SetInParent()


def pipeline_input_missing(s):
    s.pipeline.models[1].description.input[0].name = "features"


def pipeline_type_mismatch(s):
    s.pipeline.models[1].description.input[0].type.multiArrayType.shape[:] = [5]


def pipeline_names_count(s):
    s.pipeline.names.append("extra")


def pipeline_names_duplicate(s):
    s.pipeline.names[1] = "backbone"


def pipeline_updatable(s):
    s.pipeline.models[0].isUpdatable = True


def pipeline_output_missing(s):
    s.description.output[0].name = "score"


def pipeline_output_mismatch(s):
    s.description.output[0].type.multiArrayType.shape[:] = [7]


def pipeline_empty(s):
    s.pipeline.ClearField("models")
    s.pipeline.ClearField("names")


def preprocessing_not_image(s):
    pre = s.neuralNetwork.preprocessing.add()
    pre.featureName = "input"
    pre.scaler.channelScale = 1 / 255


def mean_image_size(s):
    pre = s.neuralNetwork.preprocessing.add()
    pre.featureName = "input"
    pre.meanImage.meanImage.extend([0.5] * 10)


def image_bad_colorspace(s):
    s.description.input[0].type.imageType.colorSpace = 0


def image_bad_size(s):
    s.description.input[0].type.imageType.width = 0


def linked_file_name_empty(s):
    s.linkedModel.linkedModelFile.linkedModelFileName.defaultValue = ""


def linked_no_link_type(s):
    s.linkedModel.Clear()
    s.linkedModel.SetInParent()


def linked_updatable(s):
    s.isUpdatable = True


def linked_optional_input(s):
    s.description.input[0].type.isOptional = True


def linked_low_version(s):
    s.specificationVersion = 3


def updatable_no_loss(s):
    s.isUpdatable = True
    _fc(s).isUpdatable = True
    _fc(s).innerProduct.weights.isUpdatable = True
    _fc(s).innerProduct.bias.isUpdatable = True


def updatable_wrong_layer(s):
    updatable_no_loss(s)
    s.neuralNetwork.layers[1].isUpdatable = True


def state_bad_dtype(s):
    s.specificationVersion = 9
    st = s.description.state.add()
    st.name = "cache"
    st.type.stateType.arrayType.shape.append(4)
    st.type.stateType.arrayType.dataType = b.FLOAT32


def multifunction_on_nn(s):
    s.specificationVersion = 9
    s.description.defaultFunctionName = "main"


def optional_on_glm(s):
    s.Clear()
    s.specificationVersion = 1
    f = s.description.input.add()
    f.name = "x"
    f.type.doubleType.SetInParent()
    f.type.isOptional = True
    o = s.description.output.add()
    o.name = "y"
    o.type.doubleType.SetInParent()
    s.glmRegressor.weights.add().value.append(1.0)
    s.description.predictedFeatureName = "y"


def metadata_nul(s):
    s.description.metadata.userDefined["com.example.key"] = "bad\x00value"


CASES = [
    # (id, builder, mutator, rule)
    ("version-missing", b.tiny_nn, version_missing, "version.missing"),
    ("version-too-new", b.tiny_nn, version_too_new, "version.too-new"),
    ("version-below-minimum", b.tiny_nn, fp16_io_at_v4, "version.below-minimum"),
    ("no-type", b.tiny_nn, no_type, "model.no-type"),
    ("feature-no-name", b.tiny_nn, feature_no_name, "feature.no-name"),
    ("feature-no-type", b.tiny_nn, feature_no_type, "feature.no-type"),
    ("optional-output", b.tiny_nn, optional_output, "feature.optional-output"),
    ("all-inputs-optional", b.tiny_nn, all_inputs_optional, "feature.all-inputs-optional"),
    ("optional-on-glm", b.tiny_nn, optional_on_glm, "feature.optional-input"),
    ("negative-dim", b.tiny_nn, negative_dim, "array.negative-dim"),
    ("bad-dtype", b.tiny_nn, bad_dtype, "array.bad-dtype"),
    ("no-shape", b.tiny_nn, no_shape, "array.no-shape"),
    ("default-outside-range", b.tiny_nn, default_outside_range, "array.default-outside-range"),
    ("default-not-enumerated", b.tiny_nn, default_not_enumerated, "array.default-not-enumerated"),
    ("default-value-type", b.tiny_nn, default_value_wrong_dtype, "array.default-value-type"),
    ("no-outputs", b.tiny_nn, no_outputs, "interface.no-outputs"),
    ("no-inputs", b.tiny_nn, no_inputs, "interface.no-inputs"),
    ("undefined-blob", b.tiny_nn, undefined_blob, "nn.undefined-blob"),
    ("duplicate-output", b.tiny_nn, duplicate_output, "nn.duplicate-output"),
    ("output-not-produced", b.tiny_nn, output_not_produced, "nn.output-not-produced"),
    ("not-topological", b.tiny_nn, not_topological, "nn.not-topological"),
    ("cycle", b.tiny_nn, cycle, "nn.cycle"),
    ("no-layers", b.tiny_nn, no_layers, "nn.no-layers"),
    ("layer-arity", b.tiny_nn, inner_product_two_inputs, "nn.layer-arity"),
    ("legacy-rank", b.tiny_nn, legacy_rank, "nn.legacy-rank"),
    ("weights-count", b.tiny_nn, weights_count, "weights.count-mismatch"),
    ("bias-count", b.tiny_nn, bias_count, "weights.count-mismatch"),
    ("multiple-storage", b.tiny_nn, multiple_storage, "weights.multiple-storage"),
    ("raw-without-quantization", b.tiny_conv, raw_without_quantization, "weights.raw-without-quantization"),
    ("lut-size", b.tiny_nn, lut_size, "weights.lut-size"),
    ("raw-too-short", b.tiny_nn, raw_too_short, "weights.count-mismatch"),
    ("bad-bits", b.tiny_nn, bad_bits, "weights.bad-bits"),
    ("scale-size", b.tiny_nn, scale_size, "weights.scale-size"),
    ("precision-mix", b.tiny_nn, precision_mix, "weights.precision-mix"),
    ("int8-not-allowed", b.tiny_nn, int8_without_dynamic, "weights.int8-not-allowed"),
    ("empty-weights", b.tiny_conv, empty_weights, "weights.empty"),
    ("conv-count", b.tiny_conv, conv_weights_count, "weights.count-mismatch"),
    ("conv-no-padding", b.tiny_conv, conv_no_padding, "nn.conv-no-padding"),
    ("deconv-count", b.tiny_conv, deconv_count, "weights.count-mismatch"),
    ("no-labels", b.tiny_classifier, no_labels, "classifier.no-labels"),
    ("predicted-type", b.tiny_classifier, predicted_type, "classifier.predicted-type"),
    ("predicted-not-output", b.tiny_classifier, predicted_not_output, "classifier.predicted-not-output"),
    ("label-probability-layer", b.tiny_classifier, label_probability_layer, "nn.label-probability-layer"),
    ("regressor-type", b.tiny_regressor, regressor_type, "regressor.predicted-type"),
    ("pipeline-input-missing", b.tiny_pipeline, pipeline_input_missing, "pipeline.input-missing"),
    ("pipeline-type-mismatch", b.tiny_pipeline, pipeline_type_mismatch, "pipeline.type-mismatch"),
    ("pipeline-names-count", b.tiny_pipeline, pipeline_names_count, "pipeline.names-count"),
    ("pipeline-names-duplicate", b.tiny_pipeline, pipeline_names_duplicate, "pipeline.names-duplicate"),
    ("pipeline-updatable", b.tiny_pipeline, pipeline_updatable, "pipeline.updatable"),
    ("pipeline-output-missing", b.tiny_pipeline, pipeline_output_missing, "pipeline.output-missing"),
    ("pipeline-output-mismatch", b.tiny_pipeline, pipeline_output_mismatch, "pipeline.output-type-mismatch"),
    ("pipeline-empty", b.tiny_pipeline, pipeline_empty, "pipeline.empty"),
    ("preprocessing-not-image", b.tiny_conv, preprocessing_not_image, "preprocessing.not-image-input"),
    ("image-bad-colorspace", lambda: b.tiny_conv(image=True), image_bad_colorspace, "image.bad-colorspace"),
    ("image-bad-size", lambda: b.tiny_conv(image=True), image_bad_size, "image.bad-size"),
    ("linked-file-name-empty", b.tiny_linked, linked_file_name_empty, "linked.file-name-empty"),
    ("linked-no-link-type", b.tiny_linked, linked_no_link_type, "linked.no-link-type"),
    ("linked-updatable", b.tiny_linked, linked_updatable, "linked.updatable"),
    ("linked-optional-input", b.tiny_linked, linked_optional_input, "linked.optional-input"),
    ("linked-version", b.tiny_linked, linked_low_version, "version.below-minimum"),
    ("updatable-no-loss", b.tiny_nn, updatable_no_loss, "nn.update-loss"),
    ("updatable-layer-kind", b.tiny_nn, updatable_wrong_layer, "nn.updatable-layer-kind"),
    ("state-dtype", b.tiny_nn, state_bad_dtype, "state.bad-dtype"),
    ("multifunction-on-nn", b.tiny_nn, multifunction_on_nn, "multifunction.wrong-type"),
]


#: Findings that Core ML's own validator accepts (checked against it with
#: tools/check_diff.py): warnings that give the reason, never errors.
WARNING_CASES = [
    ("duplicate-input", b.tiny_nn, duplicate_input, "feature.duplicate-name"),
    ("probabilities-key", b.tiny_classifier, probabilities_key, "classifier.probabilities-key"),
    ("empty-weights-inner-product", b.tiny_nn, empty_weights_fc, "weights.empty"),
    ("raw-without-quantization-inner-product", b.tiny_nn, raw_without_quantization_fc,
     "weights.raw-without-quantization"),
    ("metadata-nul", b.tiny_nn, metadata_nul, "metadata.not-utf8"),
    ("conv-groups", b.tiny_conv, conv_groups_count, "nn.conv-groups"),
    ("mean-image-size", lambda: b.tiny_conv(image=True), mean_image_size, "preprocessing.mean-image-size"),
]


@pytest.mark.parametrize("case_id,build,mutate,rule", WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_rule_warns_where_core_ml_accepts(case_id, build, mutate, rule):
    spec = build()
    mutate(spec)
    assert rule in rules(spec, "warning"), f"{case_id}: expected a {rule} warning"
    assert rule not in rules(spec)
    [f] = [f for f in check(spec) if f.rule == rule][:1]
    assert "Core ML" in f.message


def test_enough_broken_specs():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("build", sorted({c[1] for c in CASES}, key=repr)
                         + [lambda: b.tiny_conv(image=True), lambda: b.tiny_conv(c_in=4, groups=2)])
def test_builders_are_valid(build):
    assert [f for f in check(build()) if f.severity == "error"] == []


@pytest.mark.parametrize("case_id,build,mutate,rule", CASES, ids=[c[0] for c in CASES])
def test_rule_catches_broken_spec(case_id, build, mutate, rule):
    spec = build()
    assert rule not in rules(spec)
    mutate(spec)
    found = rules(spec)
    assert rule in found, f"{case_id}: expected {rule}, got {sorted(found)}"
    with pytest.raises(CheckError) as info:
        assert_valid(spec)
    assert rule in {f.rule for f in info.value.findings}
    assert all(isinstance(f, Finding) and f.severity == "error" for f in info.value.findings)


def test_undefined_blob_names_layer_and_every_missing_blob():
    spec = b.tiny_nn()
    layer = spec.neuralNetwork.layers[1]
    layer.input[0] = "hidden"
    layer.input.append("mask")
    [f] = [f for f in check(spec) if f.rule == "nn.undefined-blob"]
    assert "relu" in f.message and "'hidden'" in f.message and "'mask'" in f.message
    assert f.path == "layer:relu"


def test_copy_layer_may_reproduce_a_blob():
    spec = b.tiny_nn()
    copy = spec.neuralNetwork.layers.add()
    copy.name = "copy"
    copy.input.append("h")
    copy.output.append("y")
    copy.copy.SetInParent()
    assert "nn.duplicate-output" not in rules(spec)


def test_pipeline_mismatch_reports_stage_index_name_and_diff():
    spec = b.tiny_pipeline()
    pipeline_type_mismatch(spec)
    [f] = [f for f in check(spec) if f.rule == "pipeline.type-mismatch"]
    assert "stage 1 'head'" in f.message and "shape (3) (provided) vs (5) (expected)" in f.message
    assert f.path == "stage:head/input:y"


def test_pipeline_image_vs_multiarray_is_a_mismatch():
    spec = b.tiny_pipeline([b.tiny_conv(), b.tiny_conv(image=True)], names=("a", "b"))
    spec.pipeline.models[1].description.input[0].name = "out"
    found = [f for f in check(spec) if f.rule == "pipeline.type-mismatch"]
    assert found and "kind" in found[0].message


def test_pipeline_float32_vs_double_is_a_mismatch():
    spec = b.tiny_pipeline()
    spec.pipeline.models[1].description.input[0].type.multiArrayType.dataType = b.DOUBLE
    [f] = [f for f in check(spec) if f.rule == "pipeline.type-mismatch"]
    assert "dtype FLOAT32 (provided) vs DOUBLE (expected)" in f.message


def test_flexibility_is_ignored_below_v3():
    spec = b.tiny_nn(version=1)
    arr = spec.description.input[0].type.multiArrayType
    arr.ClearField("shape")
    arr.enumeratedShapes.shapes.add().shape.append(4)
    assert "array.no-shape" in rules(spec)
    spec.specificationVersion = 3
    assert "array.no-shape" not in rules(spec)


def test_updatable_below_v4_is_an_error():
    spec = b.tiny_nn(version=1)
    spec.isUpdatable = True
    assert "version.below-minimum" in rules(spec)


def test_nested_stage_errors_carry_the_stage_path():
    spec = b.tiny_pipeline()
    spec.pipeline.models[0].neuralNetwork.layers[1].input[0] = "nope"
    [f] = [f for f in check(spec) if f.rule == "nn.undefined-blob"]
    assert f.path == "backbone/layer:relu"


def test_nested_pipeline_checked_recursively():
    inner = b.tiny_pipeline()
    outer = b.tiny_pipeline([inner], names=("inner",))
    outer.pipeline.models[0].pipeline.models[1].neuralNetwork.layers[0].innerProduct.weights.floatValue.append(0)
    [f] = [f for f in check(outer) if f.rule == "weights.count-mismatch"]
    assert f.path.startswith("inner/head/")


def test_outer_version_below_stage_is_a_warning():
    spec = b.tiny_pipeline([b.tiny_linked(), b.tiny_head()], version=4)
    spec.specificationVersion = 1
    assert "version.outer-below-stage" in rules(spec, "warning")
    assert "version.below-minimum" not in rules(spec)


def test_quantized_weights_below_v3_are_only_a_warning():
    spec = b.tiny_nn(version=1)
    _set_raw(_fc(spec).innerProduct.weights, 8, 12, table=[0.0] * 256)
    assert "version.below-recommended" in rules(spec, "warning")
    assert not rules(spec)


def test_valid_quantized_storages_pass():
    for table, scales in (([0.0] * 16, None), (None, [0.5]), (None, [0.5, 0.25, 1.0])):
        spec = b.tiny_nn()
        _set_raw(_fc(spec).innerProduct.weights, 4, 12, table=table, scales=scales)
        assert not rules(spec), (table, scales)


def test_all_findings_not_just_the_first():
    spec = b.tiny_nn()
    weights_count(spec)
    output_not_produced(spec)
    negative_dim(spec)
    found = rules(spec)
    assert {"weights.count-mismatch", "nn.output-not-produced", "array.negative-dim"} <= found


def test_assert_valid_message_lists_every_error_on_one_line():
    spec = b.tiny_nn()
    weights_count(spec)
    output_not_produced(spec)
    with pytest.raises(CheckError, match=r"^out\.mlmodel: 2 check errors: [^\n]*; ") as info:
        assert_valid(spec, where="out.mlmodel")
    assert "[weights.count-mismatch]" in str(info.value) and "[nn.output-not-produced]" in str(info.value)


def test_finding_json_and_str():
    f = Finding("error", "head/layer:fc", "nn.undefined-blob", "layer 'fc' consumes 'q'")
    assert f.to_json() == {"severity": "error", "path": "head/layer:fc", "rule": "nn.undefined-blob",
                           "message": "layer 'fc' consumes 'q'"}
    assert str(f) == "head/layer:fc: error: layer 'fc' consumes 'q' [nn.undefined-blob]"


def test_duplicate_stage_names_get_distinct_paths():
    spec = b.tiny_pipeline()
    spec.pipeline.names[1] = "backbone"
    spec.pipeline.models[1].neuralNetwork.layers[0].input[0] = "nope"
    paths = {f.path for f in check(spec) if f.rule == "nn.undefined-blob"}
    assert paths == {"backbone#1/layer:head_fc"}


def test_duplicate_layer_name_is_a_warning():
    spec = b.tiny_nn()
    duplicate_layer_name(spec)
    assert "nn.duplicate-layer-name" in rules(spec, "warning")
    assert not rules(spec)


def test_arity_of_concat_and_load_constant():
    spec = b.tiny_nn()
    spec.neuralNetwork.arrayInputShapeMapping = 1
    layer = spec.neuralNetwork.layers.add()
    layer.name = "cat"
    layer.input.append("y")
    layer.output.append("c")
    layer.concat.SetInParent()
    [f] = [f for f in check(spec) if f.rule == "nn.layer-arity"]
    assert "concat layer 'cat' has 1 inputs but takes at least 2" in f.message
    layer.input.append("h")
    assert "nn.layer-arity" not in rules(spec)
