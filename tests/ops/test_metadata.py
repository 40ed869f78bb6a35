"""set_metadata and ``specsurgery set``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnbuild import tiny_classifier, tiny_head, tiny_linked, tiny_nn, tiny_pipeline
from specsurgery import io
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.ops.metadata import read_labels, set_metadata
from specsurgery.runtime import predict


def test_description_fields_and_user_metadata_show_in_inspect(tmp_path, capsys):
    src = io.save(tiny_classifier(), tmp_path / "c.mlmodel")
    out = tmp_path / "o.mlmodel"
    assert main(["set", str(src), "-o", str(out), "--author", "Ann", "--license", "MIT",
                 "--description", "tiny", "--version-string", "1.2", "--meta", "team=vision",
                 "--meta", "k=v=w", "--feature-description", "x=the features"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    md = json.loads(capsys.readouterr().out)["metadata"]
    assert md["author"] == "Ann" and md["license"] == "MIT" and md["shortDescription"] == "tiny"
    assert md["versionString"] == "1.2"
    assert md["userDefined"] == {"team": "vision", "k": "v=w"}
    assert io.load(out).description.input[0].shortDescription == "the features"
    assert io.load(src).description.metadata.author == ""       # the input is untouched


def test_meta_key_with_empty_value_removes_it():
    spec = set_metadata(tiny_nn(), meta={"a": "1", "b": "2"})
    spec = set_metadata(spec, meta={"a": None})
    assert dict(spec.description.metadata.userDefined) == {"b": "2"}


def test_labels_keep_their_count_and_reach_the_prediction():
    spec = set_metadata(tiny_classifier(), labels=["ant", "bee", "cow"])
    assert read_labels(spec) == ["ant", "bee", "cow"]
    out = predict(spec, {"x": np.ones(4, np.float32)})
    assert out["classLabel"] in {"ant", "bee", "cow"}
    assert set(out["classLabelProbs"]) == {"ant", "bee", "cow"}
    with pytest.raises(SpecSurgeryError, match="2 label\\(s\\) given but the classifier has 3 classes"):
        set_metadata(tiny_classifier(), labels=["a", "b"])
    with pytest.raises(SpecSurgeryError, match="duplicate label"):
        set_metadata(tiny_classifier(), labels=["a", "a", "b"])


def test_int64_labels_and_pipeline_classifier():
    spec = set_metadata(tiny_classifier(labels=(1, 2, 3)), labels=["7", "8", "9"])
    assert read_labels(spec) == [7, 8, 9]
    with pytest.raises(SpecSurgeryError, match="integer"):
        set_metadata(tiny_classifier(labels=(1, 2, 3)), labels=["a", "b", "c"])
    pipe = tiny_pipeline(stages=[tiny_nn(n_in=4, n_hidden=4), tiny_classifier()], names=("bb", "cls"))
    pipe.description.input[0].name = "x"
    assert read_labels(set_metadata(pipe, labels=["p", "q", "r"])) == ["p", "q", "r"]


def test_labels_on_a_model_that_is_no_classifier_are_refused():
    with pytest.raises(UnsupportedError, match="not a classifier"):
        set_metadata(tiny_nn(), labels=["a"])


def test_unknown_feature_descriptions_are_all_named():
    with pytest.raises(NotFoundError, match="'nope'.*'zzz'|'zzz'.*'nope'"):
        set_metadata(tiny_nn(), feature_descriptions={"nope": "a", "zzz": "b", "x": "ok"})


def test_spec_version_min_and_floor():
    spec = tiny_nn(version=7)
    assert set_metadata(spec, spec_version="min").specificationVersion == 1
    assert set_metadata(spec, spec_version=3).specificationVersion == 3
    pipe = tiny_pipeline()
    lowered = set_metadata(pipe, spec_version="min")
    assert all(m.specificationVersion <= lowered.specificationVersion for m in lowered.pipeline.models)
    linked = tiny_pipeline(stages=[tiny_linked(), tiny_head()])
    with pytest.raises(SpecSurgeryError, match="below what the model needs \\(4: requires v4 because linkedModel"):
        set_metadata(linked, spec_version=3)
    with pytest.raises(SpecSurgeryError, match="1..10"):
        set_metadata(tiny_nn(), spec_version=99)


def test_inplace_and_copy():
    spec = tiny_nn()
    out = set_metadata(spec, author="a")
    assert out is not spec and spec.description.metadata.author == ""
    assert set_metadata(spec, author="b", inplace=True) is spec and spec.description.metadata.author == "b"


def test_cli_needs_something_to_set_and_labels_from_a_file(tmp_path, capsys):
    src = io.save(tiny_classifier(), tmp_path / "c.mlmodel")
    assert main(["set", str(src), "-o", str(tmp_path / "o.mlmodel")]) == 1
    assert "nothing to set" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("x1\nx2\n\nx3\n")
    assert main(["set", str(src), "-o", str(tmp_path / "o.mlmodel"), "--labels", str(labels)]) == 0
    assert read_labels(io.load(tmp_path / "o.mlmodel")) == ["x1", "x2", "x3"]
    assert main(["set", str(src), "-o", str(tmp_path / "o.mlmodel"), "--meta", "novalue"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_ml_program_classifier_labels_and_metadata(tmp_path):
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    pkg = from_torch(net, torch.rand(1, 4), backend="mlprogram", class_labels=["a", "b", "c"])
    edited = set_metadata(pkg, labels=["x", "y", "z"], author="Ann", meta={"k": "v"})
    assert read_labels(edited) == ["x", "y", "z"] and read_labels(pkg) == ["a", "b", "c"]
    path = io.save(edited, tmp_path / "m.mlpackage")
    again = io.load(path)
    assert again.spec.description.metadata.author == "Ann"
    out = predict(again, {next(iter(f.name for f in again.spec.description.input)): np.ones((1, 4), np.float32)})
    label_name = again.spec.description.predictedFeatureName
    assert out[label_name] in {"x", "y", "z"}
