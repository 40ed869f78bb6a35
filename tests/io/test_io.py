"""load/save: round trips over the corpus, atomic writes, clean errors for bad files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import CORPUS, INVALID_FILES, VALID_FILES, corpus_id
from specsurgery import io
from specsurgery._proto import Model_pb2
from specsurgery.errors import LoadError, SaveError, SpecSurgeryError

# Files whose bytes differ from protobuf's deterministic serialization of the
# parsed message (the message is still identical).  Measured: Create ML writes
# map entries (Metadata.userDefined) in another order than protobuf's sorted
# deterministic form.
BYTES_DIFFER = {
    "real/EOG_MyTabularClassifier.mlmodel",
    "real/EOG_model.mlmodel",
    "real/SoundClassifier.mlmodel",
}


@pytest.mark.corpus
@pytest.mark.parametrize("path", VALID_FILES, ids=corpus_id)
def test_corpus_round_trip_same_message(path, tmp_path):
    model = io.load(path)
    spec = io.load_spec(model)
    out = tmp_path / ("copy" + (".mlpackage" if path.is_dir() else ".mlmodel"))
    io.save(model, out, check=False)
    again = io.load_spec(out)
    assert again == spec
    if path.is_file():
        original = path.read_bytes()
        same_bytes = out.read_bytes() == original
        assert same_bytes == (corpus_id(path) not in BYTES_DIFFER), corpus_id(path)
        if not same_bytes:
            # same message, only the order of map entries differs
            reparsed = Model_pb2.Model.FromString(original)
            assert reparsed == again
            assert len(original) == len(out.read_bytes())


@pytest.mark.corpus
@pytest.mark.parametrize("path", INVALID_FILES, ids=corpus_id)
def test_invalid_corpus_files_rejected(path):
    with pytest.raises(LoadError, match=str(path.name)):
        io.load(path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mlmodel"
    p.write_bytes(b"")
    with pytest.raises(LoadError, match="empty"):
        io.load(p)


@pytest.mark.corpus
def test_truncated_file(tmp_path):
    src = CORPUS / "generated" / "resnet_classifier_nn.mlmodel"
    p = tmp_path / "cut.mlmodel"
    p.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(LoadError, match="cut.mlmodel"):
        io.load(p)


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.mlmodel"
    p.write_bytes(b"\x00\x00\x00\x00")
    with pytest.raises(LoadError, match="junk.mlmodel"):
        io.load(p)


def test_missing_file_suggests_neighbours(tmp_path):
    (tmp_path / "Backbone.mlmodel").write_bytes(b"x")
    with pytest.raises(LoadError, match="did you mean Backbone.mlmodel"):
        io.load(tmp_path / "Backbone.mlmode")


def test_plain_folder_is_not_a_package(tmp_path):
    (tmp_path / "thing").mkdir()
    with pytest.raises(LoadError, match="Manifest.json"):
        io.load(tmp_path / "thing")


def test_compiled_model_is_rejected(tmp_path):
    compiled = tmp_path / "Backbone.mlmodelc"
    compiled.mkdir()
    (compiled / "coremldata.bin").write_bytes(b"\x01")
    with pytest.raises(LoadError, match="compiled model"):
        io.load(compiled)


def test_unknown_object():
    with pytest.raises(LoadError, match="cannot load a model from int"):
        io.load(42)


def test_errors_are_value_errors():
    assert issubclass(LoadError, SpecSurgeryError)
    assert issubclass(SpecSurgeryError, ValueError)


@pytest.mark.corpus
def test_package_root_comes_from_manifest(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    pkg_dir = tmp_path / "moved.mlpackage"
    shutil.copytree(src, pkg_dir)
    manifest = json.loads((pkg_dir / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    old = pkg_dir / "Data" / root["path"]
    new_rel = "com.apple.CoreML/renamed.mlmodel"
    os.replace(old, pkg_dir / "Data" / new_rel)
    root["path"] = new_rel
    (pkg_dir / "Manifest.json").write_text(json.dumps(manifest))
    pkg = io.load(pkg_dir)
    assert isinstance(pkg, io.MLPackage)
    assert pkg.spec.WhichOneof("Type") == "mlProgram"
    assert "weights/weight.bin" in pkg.weights


@pytest.mark.corpus
def test_package_with_missing_weights_still_loads(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    pkg_dir = tmp_path / "broken.mlpackage"
    shutil.copytree(src, pkg_dir)
    weight = next(pkg_dir.rglob("weight.bin"))
    weight.unlink()
    pkg = io.load(pkg_dir)
    wf = pkg.weight_file("@model_path/weights/weight.bin")
    assert wf.missing and wf.size == 0
    with pytest.raises(LoadError, match="missing"):
        wf.data


@pytest.mark.corpus
def test_package_weights_are_lazy_memmaps():
    pkg = io.load(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")
    wf = pkg.weight_file("@model_path/weights/weight.bin")
    assert wf._data is None
    data = wf.data
    assert data.dtype.name == "uint8" and data.size == wf.size
    assert int.from_bytes(bytes(data[4:8]), "little") == 2  # blob storage v2 header


@pytest.mark.corpus
def test_package_round_trip_keeps_weights(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_segmenter.mlpackage"
    pkg = io.load(src)
    out = io.save(pkg, tmp_path / "copy.mlpackage", check=False)
    again = io.load(out)
    assert again.spec == pkg.spec
    a = pkg.weight_file("@model_path/weights/weight.bin").data
    b = again.weight_file("@model_path/weights/weight.bin").data
    assert bytes(a) == bytes(b)
    manifest = json.loads((out / "Manifest.json").read_text())
    assert manifest["fileFormatVersion"] == "1.0.0"


@pytest.mark.corpus
def test_mlprogram_refuses_mlmodel_extension(tmp_path):
    pkg = io.load(CORPUS / "generated" / "shared_backbone_segmenter.mlpackage")
    with pytest.raises(SaveError, match="Save it as .mlpackage"):
        io.save(pkg, tmp_path / "x.mlmodel", check=False)
    assert not (tmp_path / "x.mlmodel").exists()


@pytest.mark.corpus
def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    spec = io.load_spec(CORPUS / "real" / "s4tf_model.mlmodel")
    target = tmp_path / "model.mlmodel"
    target.write_bytes(b"previous")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(SaveError, match="cannot write: disk full"):   # one line in the CLI, no traceback
        io.save(spec, target, check=False)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.mlmodel"]


@pytest.mark.corpus
def test_pbtxt_round_trip(tmp_path):
    spec = io.load_spec(CORPUS / "real" / "MarsHabitatPricer.mlmodel")
    out = io.save(spec, tmp_path / "m.pbtxt", check=False)
    assert "pipelineRegressor" in out.read_text()
    assert io.load_spec(out) == spec


@pytest.mark.corpus
def test_bad_extension(tmp_path):
    spec = io.load_spec(CORPUS / "real" / "s4tf_model.mlmodel")
    with pytest.raises(SaveError, match="unknown extension '.onnx'"):
        io.save(spec, tmp_path / "m.onnx", check=False)


@pytest.mark.corpus
def test_load_bytes_and_spec_identity():
    raw = (CORPUS / "real" / "s4tf_model.mlmodel").read_bytes()
    spec = io.load(raw)
    assert isinstance(spec, Model_pb2.Model)
    assert io.load(spec) is spec


@pytest.mark.corpus
def test_file_size_of_package():
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    assert io.file_size(src) == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())


def test_save_into_a_file_or_onto_a_folder_is_a_save_error(tmp_path):
    # used to escape as FileExistsError / IsADirectoryError (a traceback-class error in the CLI)
    from nnbuild import tiny_nn

    from specsurgery.errors import SaveError
    from specsurgery.io import save

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.mlmodel").mkdir()
    for target, why in [("afile/m.mlmodel", "afile is a file, not a folder"),
                        ("afile/m.mlpackage", "afile is a file, not a folder"),
                        ("afile/deeper/m.mlmodel", "afile is a file, not a folder"),
                        ("adir.mlmodel", "an existing folder is in the way")]:
        with pytest.raises(SaveError, match=why):
            save(tiny_nn(), tmp_path / target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.mlmodel", "afile"]   # no temp files left
