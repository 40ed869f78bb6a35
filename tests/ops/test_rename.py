"""rename_feature reaches every place a name is written; there and back is the identity."""

from __future__ import annotations

import pytest

import nnbuild as nb
import surgery_models as sm
from conftest import VALID_FILES, corpus_id
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError
from specsurgery.io import load_spec, save
from specsurgery.ops import link_stage, rename_feature
from specsurgery.ops.rename import names_in
from specsurgery.runtime import predict, random_inputs


def errors(model):
    return [f for f in check(model) if f.severity == "error"]


def test_classifier_fields_and_layers_follow():
    spec = nb.tiny_classifier()
    out = rename_feature(spec, "probs", "p")
    assert out.neuralNetworkClassifier.labelProbabilityLayerName == "p"
    assert list(out.neuralNetworkClassifier.layers[-1].output) == ["p"]
    out = rename_feature(out, "classLabel", "label")
    assert out.description.predictedFeatureName == "label"
    out = rename_feature(out, "classLabelProbs", "scores")
    assert out.description.predictedProbabilitiesName == "scores"
    assert not errors(out)
    assert spec.description.predictedFeatureName == "classLabel"     # input untouched


def test_preprocessing_feature_name_follows():
    spec = sm.skip_net(image=True)
    out = rename_feature(spec, "x", "picture")
    assert out.neuralNetwork.preprocessing[0].featureName == "picture"
    assert list(out.neuralNetwork.layers[0].input) == ["picture"]
    assert not errors(out)
    x = random_inputs(spec, seed=1)
    assert (predict(out, {"picture": x["x"]})["g"] == predict(spec, x)["g"]).all()


def test_nested_pipeline_internals_and_linked_stubs():
    pipe = nb.tiny_pipeline()
    linked = link_stage(pipe, "backbone")
    out = rename_feature(linked, "y", "features")
    stub, head = out.pipeline.models
    assert [f.name for f in stub.description.output] == ["features"]
    assert [f.name for f in head.description.input] == ["features"]
    assert list(head.neuralNetwork.layers[0].input) == ["features"]
    assert not errors(out)
    out2 = rename_feature(pipe, "y", "features")
    assert list(out2.pipeline.models[0].neuralNetwork.layers[-1].output) == ["features"]


def test_loss_layers_and_training_inputs_follow():
    spec = sm.updatable_net()
    out = rename_feature(spec, "label", "target")
    loss = out.neuralNetworkClassifier.updateParams.lossLayers[0].categoricalCrossEntropyLossLayer
    assert loss.target == "target"
    assert [f.name for f in out.description.trainingInput] == ["x", "target"]
    assert not errors(out)


def test_clash_and_unknown_name():
    with pytest.raises(SpecSurgeryError, match=r"'b' already names a value.*merge two values"):
        rename_feature(sm.skip_net(), "a", "b")
    with pytest.raises(NotFoundError, match=r"unknown feature or blob: 'gg' \(did you mean 'g'"):
        rename_feature(sm.skip_net(), "gg", "h")
    with pytest.raises(SpecSurgeryError, match="empty"):
        rename_feature(sm.skip_net(), "g", "")


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in VALID_FILES if p.suffix == ".mlmodel"], ids=corpus_id)
def test_corpus_rename_there_and_back_is_identity(path):
    spec = load_spec(path)
    names = sorted(names_in(spec))
    taken = set(names)
    for old in names[:3] + names[-2:]:
        new = old + "__renamed"
        assert new not in taken
        there = rename_feature(spec, old, new)
        assert old not in names_in(there)
        back = rename_feature(there, new, old)
        assert back == spec


def test_cli_rename(tmp_path, capsys):
    save(nb.tiny_classifier(), tmp_path / "c.mlmodel")
    assert main(["rename", str(tmp_path / "c.mlmodel"), "x=input", "classLabel=label",
                 "-o", str(tmp_path / "r.mlmodel")]) == 0
    out = load_spec(tmp_path / "r.mlmodel")
    assert out.description.input[0].name == "input" and out.description.predictedFeatureName == "label"
    assert main(["rename", str(tmp_path / "c.mlmodel"), "x", "-o", str(tmp_path / "r.mlmodel")]) == 1
    assert "not OLD=NEW" in capsys.readouterr().err


def test_a_list_of_renames_applies_in_order_after_checking_them_all():
    from specsurgery.ops.rename import rename_features

    spec = sm.skip_net()
    with pytest.raises(SpecSurgeryError, match=r"'b' \(for 'a'\) already names.*'c' \(for 'g'\) already names"):
        rename_features(spec, [("a", "b"), ("g", "c")])
    out = rename_features(spec, [("a", "a2"), ("a2", "a3")])
    assert "a3" in names_in(out) and "a" in names_in(spec)
