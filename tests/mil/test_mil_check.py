"""check_program: clean corpus and zoo packages, and one broken package per rule."""

import shutil

import pytest

import mil_models as M
from conftest import CORPUS
from specsurgery import io
from specsurgery.check import check
from specsurgery.check.mlprogram import check_program
from specsurgery.mil import program as P

CLASSIFIER = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"


def _errors(model):
    return [f for f in check(model) if f.severity == "error"]


@pytest.mark.corpus
@pytest.mark.parametrize("path", sorted((CORPUS / "generated").glob("*.mlpackage")), ids=lambda p: p.name)
def test_corpus_packages_pass(path):
    assert _errors(path) == []


@pytest.mark.parametrize("name", M.NAMES)
def test_converted_packages_pass(name):
    assert _errors(M.converted(name, "fp16")) == []


def _copy(tmp_path):
    dst = tmp_path / "c.mlpackage"
    shutil.copytree(CLASSIFIER, dst)
    return dst, dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


@pytest.mark.corpus
def test_weight_file_missing_names_the_file(tmp_path):
    dst, wfile = _copy(tmp_path)
    wfile.unlink()
    errs = _errors(dst)
    assert [f.rule for f in errs] == ["mlprogram.blob-file-missing"]
    assert str(wfile) in errs[0].message and "offset" in errs[0].message


@pytest.mark.corpus
def test_weight_file_too_short_names_file_offset_size(tmp_path):
    dst, wfile = _copy(tmp_path)
    wfile.write_bytes(wfile.read_bytes()[:5000])
    errs = _errors(dst)
    assert errs and all(f.rule.startswith("mlprogram.blob") for f in errs)
    short = [f for f in errs if "too short" in f.message and "(5000 bytes)" in f.message]
    assert short and "offset" in short[0].message and str(wfile) in short[0].message


@pytest.mark.corpus
def test_bad_offset_dtype_and_size(tmp_path):
    pkg = io.load(CLASSIFIER)
    spec = io.copy_spec(pkg.spec)
    refs = list(P.blob_refs(spec))
    refs[0][3].blobFileValue.offset += 64           # not a record
    refs[1][3].type.tensorType.dataType = P.MIL_pb2.FLOAT32   # fp16 blob typed fp32
    shape = refs[2][3].type.tensorType.dimensions[0]
    shape.constant.size += 1                         # more elements than the blob holds
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    rules = {f.rule for f in found if f.severity == "error"}
    assert {"mlprogram.blob-bad", "mlprogram.blob-dtype", "mlprogram.blob-size"} <= rules


@pytest.mark.corpus
def test_undefined_value_and_interface(tmp_path):
    pkg = io.load(CLASSIFIER)
    spec = io.copy_spec(pkg.spec)
    block = P.main_block(P.get_function(spec)[1])
    conv = next(op for op in block.operations if op.type == "conv")
    conv.inputs["x"].arguments[0].name = "nowhere"
    spec.description.input[0].type.imageType.width = 32
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    msgs = {f.rule: f.message for f in found if f.severity == "error"}
    assert "'nowhere' is used before it is defined" in msgs["mlprogram.undefined-value"]
    assert "shape [1, 3, 64, 32] in the description but [1, 3, 64, 64]" in msgs["mlprogram.interface-input"]


@pytest.mark.corpus
def test_opset_and_multifunction_versions():
    pkg = io.load(CLASSIFIER)
    spec = io.copy_spec(pkg.spec)
    fn = spec.mlProgram.functions["main"]
    spec.mlProgram.functions["second"].CopyFrom(fn)
    spec.description.defaultFunctionName = "main"
    for name in ("main", "second"):
        d = spec.description.functions.add()
        d.name = name
        d.input.extend(spec.description.input)
        d.output.extend(spec.description.output)
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    mf = [f for f in found if f.rule == "mlprogram.multifunction-version"]
    assert mf and "needs specificationVersion 9" in mf[0].message and "declares 6" in mf[0].message
    spec.specificationVersion = 9
    assert not [f for f in check_program(spec, io.MLPackage(spec, pkg.weights), "") if f.severity == "error"]
    spec.specificationVersion = 6
    spec.mlProgram.functions["second"].opset = "CoreML8"
    spec.mlProgram.functions["second"].block_specializations["CoreML8"].CopyFrom(
        spec.mlProgram.functions["second"].block_specializations["CoreML5"])
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    assert any(f.rule == "mlprogram.opset-version" and "opset CoreML8" in f.message for f in found)


@pytest.mark.corpus
def test_bad_identifier_and_duplicate():
    pkg = io.load(CLASSIFIER)
    spec = io.copy_spec(pkg.spec)
    block = P.main_block(P.get_function(spec)[1])
    relus = [op for op in block.operations if op.type == "relu"]
    relus[1].outputs[0].name = relus[0].outputs[0].name
    relus[2].outputs[0].name = "bad name"
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    rules = {f.rule for f in found}
    assert {"mlprogram.duplicate-value", "mlprogram.identifier"} <= rules


@pytest.mark.corpus
def test_unused_blob_is_an_info():
    pkg = io.load(CLASSIFIER)
    spec = io.copy_spec(pkg.spec)
    block = P.main_block(P.get_function(spec)[1])
    op = next(o for o in block.operations if o.type == "const"
              and o.attributes["val"].WhichOneof("value") == "blobFileValue")
    value = P.value_to_numpy(op.attributes["val"], pkg)
    op.attributes["val"].CopyFrom(P.numpy_to_value(value))
    found = check_program(spec, io.MLPackage(spec, pkg.weights), "")
    assert [f.rule for f in found] == ["mlprogram.blob-unused"] and found[0].severity == "info"
    from specsurgery.mil.blobs import repack

    slim = repack(io.MLPackage(spec, pkg.weights))
    assert check_program(slim.spec, slim, "") == []
