"""Weight compression: sizes at the ideal, storage read back as written (by
our own decoder and by the reference runtime), pipelines, skips and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import CORPUS
from nnbuild import add_inner_product, array_feature, tiny_conv, tiny_linked, tiny_nn, tiny_pipeline
from specsurgery import io as ssio
from specsurgery._proto import Model_pb2
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.ops.compress import compress, dequantize, linear_quantize, palettize, snr_db
from specsurgery.weights import storage_kind

RESNET = CORPUS / "generated" / "resnet_classifier_nn.mlmodel"
FLOAT_NN = ["generated/resnet_classifier_nn.mlmodel", "real/MNISTClassifier.mlmodel",
            "real/TinyDrawingEmbedding.mlmodel", "real/FastStyleTransferVanGoghStarryNight.mlmodel",
            "real/carn.mlmodel"]


def need(path):
    if not path.exists():
        pytest.skip(f"corpus file {path} not found")
    return path


def own_unpack(raw: bytes, nbits: int, count: int) -> np.ndarray:
    """MSB-first n-bit codes, decoded independently of specsurgery.weights."""
    bits = []
    for byte in raw:
        bits.extend((byte >> (7 - i)) & 1 for i in range(8))
    bits = np.array(bits[: count * nbits]).reshape(count, nbits)
    return bits @ (1 << np.arange(nbits - 1, -1, -1))


def conv_fields(spec):
    nn = spec.neuralNetworkClassifier if spec.WhichOneof("Type") == "neuralNetworkClassifier" else spec.neuralNetwork
    return {l.name: l.convolution for l in nn.layers if l.WhichOneof("layer") == "convolution"}


# --------------------------------------------------------------------------- sizes

IDEAL = {"fp16": 0.5, "linear": 0.25, "palettize": 0.125}


@pytest.mark.corpus
@pytest.mark.parametrize("rel", FLOAT_NN)
@pytest.mark.parametrize("mode", ["fp16", "linear", "palettize"])
def test_sizes_at_the_ideal(rel, mode, tmp_path):
    path = need(CORPUS / rel)
    out, report = compress(path, mode=mode, return_report=True)
    assert report.layers, report.summary()
    nbits = report.nbits
    table = sum(4 * (1 << nbits) for _ in report.layers) if mode == "palettize" else 0
    scales = sum(8 for _ in report.layers) if mode == "linear" else 0
    ideal = IDEAL[mode] * report.bytes_before + table + scales
    # the data is at the ideal (rounding to whole bytes only) ...
    assert report.bytes_after == pytest.approx(ideal, rel=0.001, abs=len(report.layers))
    # ... and with the tables within 2 % of the plain bit ratio
    assert report.ratio == pytest.approx(IDEAL[mode], rel=0.02 if mode != "palettize" else 0.08)
    assert report.bytes_after / report.bytes_before <= IDEAL[mode] * 1.02 + (table + scales) / report.bytes_before
    for row in report.layers:
        assert row.snr_db is not None and row.snr_db > (60 if mode == "fp16" else 20 if mode == "linear" else 12)
    ssio.save(out, tmp_path / "out.mlmodel", check=True)   # the validator accepts the storage


@pytest.mark.corpus
def test_resnet_lut4_table_overhead_and_spec_version(tmp_path):
    spec = ssio.load_spec(need(RESNET))
    out, rep = compress(spec, mode="palettize", nbits=4, return_report=True)
    assert spec.specificationVersion == 4 and out.specificationVersion == 4  # v3 needed, v4 kept
    assert rep.ratio == pytest.approx(0.125 + sum(64 for _ in rep.layers) / rep.bytes_before, rel=1e-3)
    assert {s.layer for s in rep.skipped} == {"input.3", "idt.1", "linear_0"}
    assert all("min_weights" in s.reason for s in rep.skipped)
    ssio.save(out, tmp_path / "r.mlmodel")
    assert ssio.file_size(tmp_path / "r.mlmodel") < 0.2 * ssio.file_size(RESNET)


@pytest.mark.corpus
def test_spec_version_raised():
    spec = ssio.load_spec(need(CORPUS / "real" / "TinyDrawingEmbedding.mlmodel"))
    assert spec.specificationVersion == 1
    assert compress(spec, mode="fp16").specificationVersion == 2
    assert compress(spec, mode="palettize", nbits=2).specificationVersion == 3
    assert compress(spec, mode="prune", sparsity=0.3).specificationVersion == 1


# --------------------------------------------------------------------------- storage as written

@pytest.mark.corpus
def test_lut_storage_decodes_independently():
    spec = ssio.load_spec(need(RESNET))
    out = compress(spec, mode="palettize", nbits=3)
    before, after = conv_fields(spec), conv_fields(out)
    conv = after["y"]
    q = conv.weights.quantization
    assert q.numberOfBits == 3 and len(q.lookupTableQuantization.floatValue) == 8
    n = len(before["y"].weights.floatValue)
    codes = own_unpack(conv.weights.rawValue, 3, n)
    assert len(conv.weights.rawValue) == math.ceil(3 * n / 8)
    values = np.asarray(q.lookupTableQuantization.floatValue, dtype=np.float32)[codes]
    original = np.asarray(before["y"].weights.floatValue, dtype=np.float32)
    # every weight sits on its nearest table entry
    table = np.asarray(q.lookupTableQuantization.floatValue)
    nearest = table[np.argmin(np.abs(original[:, None] - table[None, :]), axis=1)]
    assert np.mean(np.isclose(values, nearest)) > 0.999
    assert snr_db(original, values) > 12


@pytest.mark.corpus
def test_linear_per_channel_storage():
    spec = ssio.load_spec(need(RESNET))
    out = compress(spec, mode="linear", nbits=8, per_channel=True)
    before, after = conv_fields(spec)["y"], conv_fields(out)["y"]
    lin = after.weights.quantization.linearQuantization
    assert len(lin.scale) == after.outputChannels == len(lin.bias)
    codes = np.frombuffer(after.weights.rawValue, dtype=np.uint8).reshape(after.outputChannels, -1)
    values = codes * np.asarray(lin.scale, np.float32)[:, None] + np.asarray(lin.bias, np.float32)[:, None]
    original = np.asarray(before.weights.floatValue, np.float32).reshape(after.outputChannels, -1)
    step = np.asarray(lin.scale)[:, None]
    assert np.all(np.abs(values - original) <= 0.5 * step + 1e-7)
    assert after.bias.floatValue  # biases stay float32 beside quantized weights


def test_deconvolution_channels_on_axis_1():
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    array_feature(spec.description.input, "x", [4, 5, 5])
    array_feature(spec.description.output, "y", [6, 10, 10])
    layer = spec.neuralNetwork.layers.add()
    layer.name, conv = "up", layer.convolution
    layer.input.append("x")
    layer.output.append("y")
    conv.isDeconvolution = True
    conv.outputChannels, conv.kernelChannels, conv.nGroups = 6, 4, 1
    conv.kernelSize.extend([4, 4])
    conv.stride.extend([2, 2])
    conv.valid.SetInParent()
    conv.outputShape.extend([10, 10])
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 6, 4, 4)) * np.arange(1, 7)[None, :, None, None]).astype(np.float32)
    conv.weights.floatValue.extend(w.reshape(-1).tolist())
    out = compress(spec, mode="linear", per_channel=True, min_weights=0)
    lin = out.neuralNetwork.layers[0].convolution.weights.quantization.linearQuantization
    assert len(lin.scale) == 6
    # per-channel along axis 1: channel c's scale follows its own range
    ranges = w.max(axis=(0, 2, 3)) - w.min(axis=(0, 2, 3))
    assert np.allclose(np.asarray(lin.scale), ranges / 255, rtol=1e-5)
    ref = dequantize(out)
    got = np.asarray(ref.neuralNetwork.layers[0].convolution.weights.floatValue).reshape(w.shape)
    assert np.max(np.abs(got - w)) <= ranges.max() / 255
    _runtime_equal(out, ref)


def _runtime_equal(compressed, reference, seed=0):
    runtime = pytest.importorskip("specsurgery.runtime")
    inputs = runtime.random_inputs(compressed, seed=seed)
    a = runtime.predict(compressed, inputs)
    b = runtime.predict(reference, inputs)
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
        elif isinstance(a[k], dict):
            assert a[k].keys() == b[k].keys()
            assert all(abs(a[k][c] - b[k][c]) < 1e-6 for c in a[k])
        else:
            assert a[k] == b[k]
    return a


@pytest.mark.corpus
@pytest.mark.parametrize("kw", [dict(mode="fp16"), dict(mode="linear", per_channel=True),
                                dict(mode="palettize", nbits=4), dict(mode="palettize", nbits=2, sparsity=0.5)])
def test_runtime_reads_storage_as_written(kw):
    """The compressed model run through the runtime equals the original model
    with the dequantized float32 values written back."""
    spec = ssio.load_spec(need(RESNET))
    out = compress(spec, **kw)
    ref = dequantize(out)
    assert all(storage_kind(l.convolution.weights) == "float32" for l in ref.neuralNetworkClassifier.layers
               if l.WhichOneof("layer") == "convolution")
    _runtime_equal(out, ref)


@pytest.mark.corpus
def test_output_snr_reported():
    from specsurgery.ops.compress import verify_outputs

    spec = ssio.load_spec(need(RESNET))
    out, rep = compress(spec, mode="linear", return_report=True)
    snr = verify_outputs(spec, out, rep)
    assert set(snr) == {o.name for o in spec.description.output}
    numeric = [v for v in snr.values() if math.isfinite(v)]
    assert numeric and min(numeric) > 20
    assert "output" in rep.table()


# --------------------------------------------------------------------------- pruning

@pytest.mark.corpus
def test_prune_alone_and_with_palettization():
    spec = ssio.load_spec(need(RESNET))
    pruned, rep = compress(spec, mode="prune", sparsity=0.6, return_report=True)
    for row in rep.layers:
        assert row.sparsity == pytest.approx(0.6, abs=0.01)
    w = np.asarray(conv_fields(pruned)["y"].weights.floatValue)
    o = np.asarray(conv_fields(spec)["y"].weights.floatValue)
    kept = w != 0
    assert np.array_equal(w[kept], o[kept].astype(np.float32))
    assert np.abs(o[~kept]).max() <= np.abs(o[kept]).min()
    both, rep2 = compress(spec, mode="palettize", nbits=4, sparsity=0.6, return_report=True)
    d = dequantize(both)
    w2 = np.asarray(conv_fields(d)["y"].weights.floatValue)
    assert np.array_equal(w2 == 0, ~kept)  # zeros exact: table entry 0 is 0.0
    lin = compress(spec, mode="linear", sparsity=0.6)
    w3 = np.asarray(conv_fields(dequantize(lin))["y"].weights.floatValue)
    assert np.all(w3[~kept] == 0)


# --------------------------------------------------------------------------- pipelines

def _big_nn(name="fc", n_in=64, n_out=64, input_name="x", output_name="y"):
    spec = Model_pb2.Model()
    spec.specificationVersion = 1
    array_feature(spec.description.input, input_name, [n_in])
    array_feature(spec.description.output, output_name, [n_out])
    add_inner_product(spec.neuralNetwork, name, input_name, output_name, n_in, n_out, seed=3)
    return spec


def test_nested_pipeline_classifier_with_linked_stub(tmp_path):
    inner = tiny_pipeline([_big_nn("fc1", output_name="h"), _big_nn("fc2", input_name="h", output_name="y")],
                          names=("a", "b"))
    inner.specificationVersion = 1
    linked = tiny_linked(like=_big_nn(input_name="y", output_name="z"))
    outer = Model_pb2.Model()
    outer.specificationVersion = 4
    outer.description.input.extend(inner.description.input)
    outer.description.output.extend(linked.description.output)
    outer.pipelineRegressor.pipeline.models.add().CopyFrom(inner)
    outer.pipelineRegressor.pipeline.models.add().CopyFrom(linked)
    outer.pipelineRegressor.pipeline.names.extend(["inner", "stub"])
    outer.description.predictedFeatureName = "z"
    out, rep = compress(outer, mode="palettize", nbits=4, return_report=True)
    assert [r.name for r in rep.layers] == ["inner/a/fc1", "inner/b/fc2"]
    stages = out.pipelineRegressor.pipeline.models
    assert stages[0].specificationVersion == 3
    assert all(m.specificationVersion == 3 for m in stages[0].pipeline.models)
    assert out.specificationVersion == 4
    assert any("linkedModel" in n and "Backbone.mlmodelc" in n for n in rep.notes)
    assert storage_kind(stages[0].pipeline.models[0].neuralNetwork.layers[0].innerProduct.weights) == "lut4"
    assert outer.pipelineRegressor.pipeline.models[0].pipeline.models[0].neuralNetwork.layers[0] \
        .innerProduct.weights.floatValue  # input untouched
    ssio.save(out, tmp_path / "p.mlmodel")
    # select by stage path
    _, rep2 = compress(outer, mode="fp16", layers=["inner/b/*"], return_report=True)
    assert [r.name for r in rep2.layers] == ["inner/b/fc2"]


def test_only_linked_stub_says_compress_the_target():
    with pytest.raises(UnsupportedError, match="compress the model it was compiled from"):
        compress(tiny_linked(), mode="fp16")


# --------------------------------------------------------------------------- skips and errors

@pytest.mark.corpus
@pytest.mark.parametrize("variant, storage", [("fp16", "float16"), ("int8", "linear8"), ("lut4", "lut4")])
def test_already_quantized_corpus_variants(variant, storage):
    path = need(CORPUS / "generated" / f"resnet_classifier_nn_{variant}.mlmodel")
    with pytest.raises(SpecSurgeryError, match=f"already {storage}.*never quantize twice"):
        compress(path, mode="palettize", nbits=4)


@pytest.mark.corpus
def test_mixed_model_skips_quantized_layers_with_a_word():
    spec = ssio.load_spec(need(RESNET))
    part = compress(spec, mode="palettize", nbits=4, layers=["y*"])
    out, rep = compress(part, mode="fp16", return_report=True)
    skipped = {s.layer: s.reason for s in rep.skipped}
    assert skipped["y"].startswith("already lut4") and skipped["y.1"].startswith("already lut4")
    assert {r.layer for r in rep.layers} >= {"input.9", "input.37"}
    with pytest.raises(SpecSurgeryError, match="'y.3' is already lut4"):
        compress(part, mode="palettize", layers=["y.3"])


@pytest.mark.corpus
def test_updatable_layers_are_left_float():
    with pytest.raises(SpecSurgeryError, match="updatable layer"):
        compress(need(CORPUS / "real" / "newcoreml.mlmodel"), mode="fp16")


@pytest.mark.parametrize("kw, match", [
    (dict(mode="palettize", nbits=0), "outside 1..8"),
    (dict(mode="linear", nbits=9), "outside 1..8"),
    (dict(mode="prune", sparsity=1.0), r"outside \[0, 1\)"),
    (dict(mode="prune", sparsity=-0.1), r"outside \[0, 1\)"),
    (dict(mode="prune"), "needs sparsity"),
    (dict(mode="zip"), "unknown mode"),
    (dict(mode="palettize", granularity="per_grouped_channel"), "only for ML Programs"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(SpecSurgeryError, match=match):
        compress(tiny_conv(), min_weights=0, **kw)


@pytest.mark.corpus
def test_pattern_matching_nothing_lists_near_matches():
    with pytest.raises(NotFoundError, match=r"'inptu\.9' \(near: 'input\.9'.*'nope'"):
        compress(need(RESNET), mode="fp16", layers=["inptu.9", "y"], exclude=["nope"])


def test_small_model_says_lower_min_weights():
    with pytest.raises(SpecSurgeryError, match="lower min_weights"):
        compress(tiny_nn(), mode="fp16")
    out = compress(tiny_nn(), mode="fp16", min_weights=0)
    assert storage_kind(out.neuralNetwork.layers[0].innerProduct.weights) == "float16"
    assert storage_kind(out.neuralNetwork.layers[0].innerProduct.bias) == "float16"  # no fp16/fp32 mix


def test_input_untouched_unless_inplace():
    spec = tiny_conv(c_in=8, c_out=16)
    before = spec.SerializeToString()
    compress(spec, mode="palettize", nbits=2, min_weights=0)
    assert spec.SerializeToString() == before
    same = compress(spec, mode="palettize", nbits=2, min_weights=0, inplace=True)
    assert same is spec and storage_kind(spec.neuralNetwork.layers[0].convolution.weights) == "lut2"


def test_quantizer_helpers():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 50)).astype(np.float32)
    codes, scale, bias = linear_quantize(w, 4, axis=0)
    assert codes.max() <= 15 and scale.shape == (8,)
    table, codes = palettize(w, 1)
    assert table.size == 2 and set(np.unique(codes)) <= {0, 1}


# --------------------------------------------------------------------------- ML Program

def _program_ops(pkg):
    return [op for fn in pkg.spec.mlProgram.functions.values()
            for b in fn.block_specializations.values() for op in b.operations]


@pytest.mark.corpus
def test_mlprogram_palettize_writes_lut_ops(tmp_path):
    """Direct path: consts become iOS 16 constexpr_lut_to_dense ops whose blobs
    decode (LSB-first indices) to our k-means table; the program runs."""
    from specsurgery.mil import blobs as B
    from specsurgery.ops.compress.kmeans import lut_quantize

    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    pkg = ssio.load(path)
    out, rep = compress(pkg, mode="palettize", nbits=4, return_report=True)
    assert isinstance(out, ssio.MLPackage)
    assert len(rep.layers) == 7 and all(r.storage_after == "constexpr_lut_to_dense" for r in rep.layers)
    assert rep.ratio == pytest.approx(0.25, rel=0.03)        # fp16 -> 4-bit plus a 16-entry table
    assert all(r.snr_db > 15 for r in rep.layers)
    assert out.spec.specificationVersion == 7 and rep.versions[""] == (6, 7)
    assert all(fn.opset == "CoreML6" and list(fn.block_specializations) == ["CoreML6"]
               for fn in out.spec.mlProgram.functions.values())
    before = {op.outputs[0].name: op for op in _program_ops(pkg) if op.type == "const"}
    luts = [op for op in _program_ops(out) if op.type == "constexpr_lut_to_dense"]
    op = next(o for o in luts if o.outputs[0].name == rep.layers[-1].fields[0])
    wf = out.weight_file(op.attributes["indices"].blobFileValue.fileName)
    orig_val = before[op.outputs[0].name].attributes["val"].blobFileValue
    values = B.read_blob(pkg.weight_file(orig_val.fileName), orig_val.offset).astype(np.float32)
    table, codes = lut_quantize(values, 4)
    _, raw = B.raw_bytes(wf, op.attributes["indices"].blobFileValue.offset)
    assert np.array_equal(B.unpack_subbyte(np.asarray(raw), 4, values.size), codes)
    lut = B.read_blob(wf, op.attributes["lut"].blobFileValue.offset)
    assert np.array_equal(lut, table.astype(np.float16))
    ssio.save(out, tmp_path / "p.mlpackage")                 # check: blobs, types, offsets
    runtime = pytest.importorskip("specsurgery.runtime")
    x = runtime.random_inputs(pkg, seed=0)
    a, b = runtime.predict(pkg, x), runtime.predict(ssio.load(tmp_path / "p.mlpackage"), x)
    probs = [k for k in a if isinstance(a[k], dict)]
    for k in probs:
        assert max(abs(a[k][c] - b[k][c]) for c in a[k]) < 0.05


@pytest.mark.corpus
def test_mlprogram_linear_through_coremltools():
    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    out, rep = compress(path, mode="linear", per_channel=True, return_report=True)
    assert rep.layers and all(r.storage_after.startswith("constexpr_") for r in rep.layers)
    assert rep.ratio == pytest.approx(0.5, rel=0.05)         # fp16 -> int8 plus scales
    types = {op.type for op in _program_ops(out)}
    assert any(t.startswith("constexpr_") for t in types) and "const" in types


@pytest.mark.corpus
def test_mlprogram_stage_of_a_pipeline_package(tmp_path):
    from specsurgery.ops.pipeline import make_pipeline as pipeline_mlprogram

    pkg = ssio.load(need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage"))
    pipe = pipeline_mlprogram([pkg], names=["cls"])
    (key,) = pipe.weights
    out, rep = compress(pipe, mode="palettize", nbits=2, layers=["cls/y*"], return_report=True)
    assert [r.name for r in rep.layers] == ["cls/y_1_cast_fp16", "cls/y_3_cast_fp16", "cls/y_cast_fp16"]
    assert list(out.weights) == [key]                       # the stage keeps its own weight file
    assert out.weights[key].size < pipe.weights[key].size
    stage = out.spec.pipelineClassifier.pipeline.models[0]
    assert {v.blobFileValue.fileName for v in ssio.iter_blob_values(stage.mlProgram)} == {"@model_path/" + key}
    assert out.spec.specificationVersion >= stage.specificationVersion
    ssio.save(out, tmp_path / "p.mlpackage")                 # blob offsets and types check out
    assert pipe.spec.pipelineClassifier.pipeline.models[0].SerializeToString() != stage.SerializeToString()


@pytest.mark.corpus
def test_mlprogram_already_palettized_is_skipped():
    path = need(CORPUS / "generated" / "shared_backbone_classifier_palettized.mlpackage")
    with pytest.raises(SpecSurgeryError, match="already compressed"):
        compress(path, mode="palettize", nbits=4)


# --------------------------------------------------------------------------- CLI

@pytest.mark.corpus
def test_cli_report_json_and_verify(tmp_path, capsys):
    out = tmp_path / "r.mlmodel"
    assert main(["compress", str(need(RESNET)), "-o", str(out), "--palettize", "4", "--report", "--verify"]) == 0
    text = capsys.readouterr().out
    assert "SNR dB" in text and "skipped input.3" in text and "output classLabel" in text
    assert out.exists()
    assert main(["compress", str(RESNET), "-o", str(tmp_path / "s.mlmodel"), "--linear", "--per-channel",
                 "--exclude", "y*", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "linear" and data["nbits"] == 8
    assert all(not l["layer"].startswith("y") for l in data["layers"])
    assert main(["compress", str(RESNET), "-o", str(tmp_path / "x.mlmodel"), "--palettize", "9"]) == 1
    assert "outside 1..8" in capsys.readouterr().err
    assert main(["compress", str(RESNET), "-o", str(tmp_path / "x.mlmodel")]) == 1
    assert main(["compress", str(RESNET), "-o", str(tmp_path / "p.mlmodel"), "--prune", "0.5"]) == 0


@pytest.mark.corpus
def test_4bit_works_where_coremltools_kmeans_crashes():
    """coremltools 9.0's quantize_weights(model, 4, "kmeans") fails on protobuf 7
    (its table comes back with shape (16, 1)); our 4-bit path on the same
    protobuf writes a valid 16-entry table."""
    import google.protobuf

    spec = ssio.load_spec(need(RESNET))
    out = compress(spec, mode="palettize", nbits=4)
    table = conv_fields(out)["y"].weights.quantization.lookupTableQuantization.floatValue
    assert len(table) == 16
    pytest.importorskip("sklearn")
    from specsurgery._proto import coremltools

    ct = coremltools()
    from coremltools.models.neural_network import quantization_utils as qu

    if int(google.protobuf.__version__.split(".")[0]) < 6:
        pytest.skip("the crash needs protobuf 7's strict repeated-float fields")
    with pytest.raises(Exception, match="has type ndarray"):
        qu.quantize_weights(ct.models.MLModel(spec, skip_model_load=True), 4, "kmeans")


@pytest.mark.corpus
@pytest.mark.parametrize("kw", [dict(mode="linear"), dict(mode="linear", per_channel=True),
                                dict(mode="linear", sparsity=0.5), dict(mode="palettize", nbits=3),
                                dict(mode="palettize", nbits=2, sparsity=0.5)])
def test_reported_snr_is_that_of_the_stored_weights(kw):
    spec = ssio.load_spec(need(RESNET))
    out, rep = compress(spec, return_report=True, **kw)
    ref = conv_fields(dequantize(out))
    for row in rep.layers:
        original = np.asarray(conv_fields(spec)[row.layer].weights.floatValue)
        stored = np.asarray(ref[row.layer].weights.floatValue)
        assert row.snr_db == pytest.approx(snr_db(original, stored), abs=1e-3)


@pytest.mark.corpus
def test_three_bit_table_on_an_ios15_program_is_refused_up_front():
    # used to fail inside coremltools' pass with "lut should be a vector of size ... {2, 4, 16, 64, 256}"
    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    with pytest.raises(UnsupportedError, match=r"3-bit look-up tables need iOS 18.*use 1, 2, 4, 6, 8 bits"):
        compress(path, mode="palettize", nbits=3)


@pytest.mark.corpus
def test_coremltools_path_keeps_stderr_quiet(tmp_path, capfd):
    # coremltools used to print import notes and tqdm bars (a dozen lines) on stderr
    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    assert main(["compress", str(path), "--linear", "-o", str(tmp_path / "q.mlpackage")]) == 0
    captured = capfd.readouterr()
    assert "Running" not in captured.err and "Failed to load" not in captured.err, captured.err[:500]
    assert "wrote" in captured.out


# --------------------------------------------------------------------------- nested layers (issue 19)

def _loop_model():
    """x[64] -> loop (body: 'big' 64x64 innerProduct, 'small' 64x3) -> y[3]:
    a loop body that mixes a large and a small layer."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    array_feature(spec.description.input, "x", [64])
    array_feature(spec.description.output, "y", [3])
    nn = spec.neuralNetwork
    nn.arrayInputShapeMapping = 1
    loop = nn.layers.add()
    loop.name = "loop"
    loop.loop.maxLoopIterations = 1
    body = loop.loop.bodyNetwork
    add_inner_product(body, "big", "x", "h", 64, 64, seed=5)
    add_inner_product(body, "small", "h", "y", 64, 3, seed=7)
    return spec


def test_fp16_on_a_loop_body_reports_each_nested_layer_and_passes_check(tmp_path):
    from specsurgery.check import check
    from specsurgery.ops.compress import verify_outputs

    spec = _loop_model()
    out, rep = compress(spec, mode="fp16", return_report=True)
    assert [(r.layer, r.parent) for r in rep.layers] == [("big", "loop 'loop' body")]
    assert [(s.layer, s.parent) for s in rep.skipped] == [("small", "loop 'loop' body")]
    assert "min_weights" in rep.skipped[0].reason
    text = rep.summary() + "\n" + rep.table()
    assert "does not know" not in text                      # the old, wrong skip of the loop itself
    assert "small (in loop 'loop' body): 195 weights < min_weights 2048" in text
    assert any("loop 'loop' body: each nested layer compressed on its own" in n and "1 compressed, 1 skipped (small)"
               in n for n in rep.notes)
    body = out.neuralNetwork.layers[0].loop.bodyNetwork.layers
    assert storage_kind(body[0].innerProduct.weights) == storage_kind(body[0].innerProduct.bias) == "float16"
    assert storage_kind(body[1].innerProduct.weights) == "float32"
    assert not [f for f in check(out) if f.severity == "error"], check(out)
    ssio.save(out, tmp_path / "loop16.mlmodel")            # save checks too
    assert rep.to_json()["layers"][0]["parent"] == "loop 'loop' body"
    assert min(verify_outputs(spec, out).values()) > 40


def test_cli_counts_nested_layers_for_progress():
    from specsurgery.ops.compress import count_weighted_layers, iter_layers

    spec = _loop_model()
    assert count_weighted_layers(spec) == 2                  # big and small; the loop holds none itself
    assert [(l.name, p) for l, p in iter_layers(spec.neuralNetwork)] == [
        ("loop", ""), ("big", "loop 'loop' body"), ("small", "loop 'loop' body")]


# --------------------------------------------------------------------------- hostile weights (issue 19)

def _ip(values, n_in=8, n_out=8):
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    array_feature(spec.description.input, "x", [n_in])
    array_feature(spec.description.output, "y", [n_out])
    layer = add_inner_product(spec.neuralNetwork, "fc", "x", "y", n_in, n_out)
    layer.innerProduct.weights.Clear()
    layer.innerProduct.weights.floatValue.extend(values)
    return spec


MODES_KW = [dict(mode="fp16"), dict(mode="linear"), dict(mode="linear", per_channel=True),
            dict(mode="palettize", nbits=3), dict(mode="prune", sparsity=0.5),
            dict(mode="palettize", nbits=4, sparsity=0.5)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kw", MODES_KW)
def test_non_finite_weights_are_one_error_naming_the_layer(bad, kw):
    spec = _ip(list(np.linspace(-1, 1, 63)) + [bad])
    for report in (False, True):    # the SNR used to hit 'math domain error'
        with pytest.raises(SpecSurgeryError, match=r"layer 'fc' \(innerProduct\): field 'weights' holds 1 NaN "
                                                   r"or infinite value.*--exclude 'fc'"):
            compress(spec, min_weights=0, return_report=report, **kw)


@pytest.mark.parametrize("kw", MODES_KW)
def test_extreme_but_finite_weights_never_fault(kw, recwarn):
    for values in ([3e38, -3e38] * 32, [1e5] + [0.5] * 63, [1e-40] * 64, [0.0] * 64):
        try:
            out, rep = compress(_ip(values), min_weights=0, return_report=True, **kw)
        except SpecSurgeryError as exc:
            assert "\n" not in str(exc)
            continue
        for row in rep.layers:
            assert row.snr_db is None or not math.isnan(row.snr_db)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_fp16_overflow_skips_the_layer_with_the_range():
    with pytest.raises(SpecSurgeryError, match=r"values reach 1e\+05, beyond float16's range \(\+-65504\); "
                                               "left float32"):
        compress(_ip([1e5] + [0.5] * 63), mode="fp16", min_weights=0)


def test_declared_shape_far_beyond_the_data_is_skipped_before_decoding():
    spec = _ip(list(np.linspace(-1, 1, 64)))
    ip = spec.neuralNetwork.layers[0].innerProduct
    ip.inputChannels = ip.outputChannels = 2 ** 40
    with pytest.raises(SpecSurgeryError, match=r"weights holds 64 values, the layer's parameters call for "
                                               r"1208925819614629174706176"):
        compress(spec, mode="linear", min_weights=0)


@pytest.mark.parametrize("nbits", [0, 3, 9, 100])
def test_odd_number_of_bits_is_skipped_as_already_quantized(nbits):
    spec = _ip(list(np.linspace(-1, 1, 64)))
    wp = spec.neuralNetwork.layers[0].innerProduct.weights
    wp.Clear()
    wp.rawValue = b"\x12" * 24
    wp.quantization.numberOfBits = nbits
    wp.quantization.linearQuantization.scale.append(1.0)
    with pytest.raises(SpecSurgeryError, match=f"already linear{nbits}"):
        compress(spec, mode="fp16", min_weights=0)


def test_two_storages_in_one_weight_are_named_invalid():
    spec = _ip(list(np.linspace(-1, 1, 64)))
    spec.neuralNetwork.layers[0].innerProduct.weights.float16Value = b"\x00\x3c" * 64
    with pytest.raises(SpecSurgeryError, match="weight storage is invalid"):
        compress(spec, mode="fp16", min_weights=0)


# --------------------------------------------------------------------------- options refused by name

@pytest.mark.parametrize("kw, match", [
    (dict(mode="palettize", per_channel=True), r"per_channel \(--per-channel\) applies to mode 'linear' only"),
    (dict(mode="palettize", group_size=16), r"group_size \(--grouped-channels\) applies with granularity="),
    (dict(mode="linear", granularity="per_grouped_channel"), "applies to mode 'palettize' only"),
])
def test_options_a_mode_cannot_use_are_refused_by_name(kw, match):
    with pytest.raises(SpecSurgeryError, match=match):
        compress(tiny_conv(), min_weights=0, **kw)


@pytest.mark.corpus
def test_mlprogram_refuses_what_it_cannot_honour_by_option_and_backend():
    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    with pytest.raises(UnsupportedError, match=r"sparsity \(--prune\) with mode 'palettize'.*ML Program"):
        compress(path, mode="palettize", nbits=4, sparsity=0.5)
    with pytest.raises(UnsupportedError, match="per-grouped-channel tables need iOS 18"):
        compress(path, mode="palettize", granularity="per_grouped_channel", group_size=8)


@pytest.mark.corpus
def test_mlprogram_honours_progress_and_inplace():
    pkg = ssio.load(need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage"))
    seen = []
    out, rep = compress(pkg, mode="palettize", nbits=4, progress=seen.append, return_report=True)
    assert seen == [r.name for r in rep.layers] and seen
    assert out is not pkg and not any(op.type == "constexpr_lut_to_dense" for op in _program_ops(pkg))
    same = compress(pkg, mode="palettize", nbits=4, inplace=True)
    assert same is pkg and any(op.type == "constexpr_lut_to_dense" for op in _program_ops(pkg))


def test_cli_fp16_on_a_loop_model_then_check(tmp_path, capsys):
    src, out = tmp_path / "loop.mlmodel", tmp_path / "loop16.mlmodel"
    ssio.save(_loop_model(), src)
    assert main(["compress", str(src), "--fp16", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "small (in loop 'loop' body)" in text and "1 compressed, 1 skipped" in text
    assert main(["check", str(out)]) == 0


def test_weights_over_the_memory_budget_are_refused_naming_the_layer(tmp_path, capsys):
    from specsurgery import budget

    spec = _big_nn("fc", 64, 64)                             # 4096 float32 weights: 16 KiB decoded
    with budget.limited("8K"), pytest.raises(budget.BudgetError, match=r"layer 'fc' \(innerProduct\) field "
                                                                      r"'weights': shape \[64, 64\]"):
        compress(spec, mode="palettize")
    assert compress(spec, mode="palettize").neuralNetwork.layers[0].innerProduct.weights.rawValue
    src = tmp_path / "fc.mlmodel"
    ssio.save(spec, src)
    assert main(["compress", str(src), "--fp16", "--max-memory", "8K", "-o", str(tmp_path / "o.mlmodel")]) == 1
    err = capsys.readouterr().err
    assert "over the memory budget" in err and "'fc'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.mlmodel").exists()


@pytest.mark.corpus
def test_progress_total_counts_ml_program_weights():
    from specsurgery.ops.compress import count_weighted_layers

    path = need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    seen = []
    compress(path, mode="palettize", nbits=4, progress=seen.append)
    assert 0 < len(seen) <= count_weighted_layers(path)


@pytest.mark.corpus
@pytest.mark.parametrize("kw", [dict(mode="palettize", nbits=4), dict(mode="linear")])
def test_mlprogram_weight_with_nan_is_one_error_naming_it(kw):
    from specsurgery.mil import blobs as B

    pkg = ssio.load(need(CORPUS / "generated" / "shared_backbone_classifier.mlpackage"))
    (key,) = pkg.weights
    data = np.array(pkg.weights[key].data)                  # a writable copy
    const = next(op for op in _program_ops(pkg) if op.type == "const" and "val" in op.attributes
                 and op.attributes["val"].WhichOneof("value") == "blobFileValue"
                 and op.outputs[0].type.tensorType.rank > 1)
    rec = B.read_record(pkg.weights[key], const.attributes["val"].blobFileValue.offset)
    data[rec.data_offset:rec.data_offset + 2] = np.frombuffer(np.float16("nan").tobytes(), np.uint8)
    pkg.weights[key] = ssio.WeightFile(None, data)
    name = const.outputs[0].name
    with pytest.raises(SpecSurgeryError, match=rf"weight '{name}' \(read by '.*'\): .*holds 1 NaN.*--exclude"):
        compress(pkg, min_weights=0, **kw)      # direct path, and before coremltools sees it


def test_fp16_covers_a_weight_the_parameters_do_not_call_for():
    """A bias stored although hasBias is false: left float32 beside float16
    weights it would make the layer mix precisions, which Core ML refuses."""
    from specsurgery.check import check

    spec = _big_nn("fc", 64, 64)
    spec.neuralNetwork.layers[0].innerProduct.hasBias = False
    out, rep = compress(spec, mode="fp16", return_report=True)
    assert rep.layers[0].fields == ["weights", "bias"]
    ip = out.neuralNetwork.layers[0].innerProduct
    assert storage_kind(ip.weights) == storage_kind(ip.bias) == "float16"
    assert not [f for f in check(out) if f.rule == "weights.precision-mix"]


def test_decode_refuses_a_linear_quantization_without_scales():
    from specsurgery.errors import SpecSurgeryError
    from specsurgery.weights import WeightParams, decode

    wp = WeightParams()
    wp.rawValue = bytes(8)
    wp.quantization.numberOfBits = 8
    wp.quantization.linearQuantization.SetInParent()
    with pytest.raises(SpecSurgeryError, match="without a scale"):
        decode(wp, shape=(2, 4), where="layer 'c' weights")
