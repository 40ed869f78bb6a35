"""extract: the sub-network between blobs, typed by shape inference."""

from __future__ import annotations

import numpy as np
import pytest

import surgery_models as sm
from conftest import CORPUS
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.io import load_spec, save
from specsurgery.ops import extract, split_at
from specsurgery.runtime import predict, random_inputs


def errors(model):
    return [f for f in check(model) if f.severity == "error"]


def test_middle_section_matches_the_original_blobs():
    spec = sm.skip_net()
    mid = extract(spec, "b", "e")
    assert [l.name for l in mid.neuralNetwork.layers] == ["c2", "add", "r2"]
    assert [S.describe_type(f.type) for f in mid.description.input] == ["MultiArray<FLOAT32>[1,4,8,8]"]
    assert [S.describe_type(f.type) for f in mid.description.output] == ["MultiArray<FLOAT32>[1,4,8,8]"]
    assert not errors(mid)
    # run the pieces: original prefix -> extracted middle == original blob e
    x = random_inputs(spec, seed=2)
    b = predict(extract(spec, "x", "b"), x)["b"]
    e_ref = predict(extract(spec, "x", "e"), x)["e"]
    np.testing.assert_allclose(predict(mid, {"b": b})["e"], e_ref, rtol=1e-5, atol=1e-6)


def test_keeps_image_input_preprocessing_and_classifier_semantics():
    spec = sm.skip_net(image=True, classifier=True)
    whole = extract(spec, "x", ["label", "labelProbs"])
    assert S.model_type(whole) == "neuralNetworkClassifier"
    assert whole.description.predictedFeatureName == "label"
    assert len(whole.neuralNetworkClassifier.preprocessing) == 1
    assert not errors(whole)
    x = random_inputs(spec, seed=0)
    assert predict(whole, x)["label"] == predict(spec, x)["label"]
    feats = extract(spec, "x", "g")
    assert S.model_type(feats) == "neuralNetwork"


def test_multi_input_extract_equals_split_head():
    spec = sm.skip_net()
    head = extract(spec, "b,c", "g")
    _, split_head = split_at(spec, "b,c")
    assert head.neuralNetwork.layers == split_head.neuralNetwork.layers
    assert head.description.input == split_head.description.input


def test_missing_input_names_the_path():
    with pytest.raises(SpecSurgeryError, match=r"also depend on 'x', which is not among the inputs 'c' "
                                               r"\(path: x -> \[c1\] -> a -> \[r1\] -> b -> \[add\] -> d "
                                               r"-> \[r2\] -> e\); add it to --inputs"):
        extract(sm.skip_net(), "c", "e")


def test_unknown_blobs_are_all_listed():
    with pytest.raises(NotFoundError, match=r"unknown blobs: 'q1'.*'ee' \(did you mean 'e'"):
        extract(sm.skip_net(), "q1", "ee")


@pytest.mark.corpus
def test_passthrough_and_mlprogram_and_legacy():
    with pytest.raises(SpecSurgeryError, match="both an input and an output"):
        extract(sm.skip_net(), "b", "b")
    program = CORPUS / "generated/shared_backbone_classifier.mlpackage"
    # ML Programs have their extract part now (tests/mil/test_mil_extract.py); an option the
    # backend cannot honour is refused by name, and unknown values are listed
    with pytest.raises(UnsupportedError, match="option shapes is not supported by the ML Program backend"):
        extract(program, "image", "x", shapes={"x": [1, 2]})
    with pytest.raises(NotFoundError, match=r"unknown value in the ML Program: 'x'"):
        extract(program, "image", "x")
    legacy = extract(sm.skip_net(legacy=True), "b", "f")
    assert list(legacy.description.input[0].type.multiArrayType.shape) == [4, 8, 8]
    assert legacy.neuralNetwork.arrayInputShapeMapping == 0
    assert not errors(legacy)


def test_cli_extract(tmp_path, capsys):
    save(sm.skip_net(), tmp_path / "s.mlmodel")
    assert main(["extract", str(tmp_path / "s.mlmodel"), "--inputs", "b", "--outputs", "e",
                 "-o", str(tmp_path / "e.mlmodel")]) == 0
    assert "3 layers" in capsys.readouterr().out
    assert len(load_spec(tmp_path / "e.mlmodel").neuralNetwork.layers) == 3


def test_cycle_is_reported_as_a_cycle():
    # used to say "outputs 'y' also depend on 'y', which is not among the inputs"
    from nnbuild import tiny_nn

    spec = tiny_nn()
    spec.neuralNetwork.layers[0].input[0] = "y"
    with pytest.raises(SpecSurgeryError, match=r"has a cycle: relu -\[y\]-> fc"):
        extract(spec, ["x"], ["y"])
