"""rename_feature reaches every place a name is written; there and back is the identity."""

from __future__ import annotations

import pytest

import nnbuild as nb
import surgery_models as sm
from conftest import VALID_FILES, corpus_id
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import UnsupportedError, NotFoundError, SpecSurgeryError
from specsurgery.io import load_spec, save
from specsurgery.ops import link_stage, rename_feature
from specsurgery.ops.rename import linked_uses, names_in
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
    # the stub's target would keep 'y': renaming the stub alone breaks the link (issue 17)
    with pytest.raises(UnsupportedError, match=r"'y' is a feature of the linked stage 'backbone'.*"
                                               r"--search-path.*Backbone.mlmodel"):
        rename_feature(linked, "y", "features")
    out = rename_feature(linked, "y", "features", linked="stubs")
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
        # a linked stub's features live in its target too: the round trip is of the stubs alone
        mode = "stubs" if linked_uses(spec, old) else "refuse"
        there = rename_feature(spec, old, new, linked=mode)
        assert old not in names_in(there)
        back = rename_feature(there, new, old, linked=mode)
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


def _linked_bundle(folder):
    """folder/Backbone.mlmodel (tiny_nn x -> y) and folder/App.mlmodel [linked backbone, head]."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = nb.tiny_nn()
    save(backbone, folder / "Backbone.mlmodel")
    pipe = link_stage(nb.tiny_pipeline(stages=[backbone, nb.tiny_head()]), "backbone")
    save(pipe, folder / "App.mlmodel", search_path=str(folder))
    return folder / "App.mlmodel"


def test_cli_rename_across_a_linked_backbone_renames_the_target_too(tmp_path, capsys):
    import numpy as np

    from specsurgery.check import check
    from specsurgery.runtime import predict

    app = _linked_bundle(tmp_path / "bundle")
    out_dir = tmp_path / "out"
    assert main(["rename", str(app), "x=image", "y=features", "-o", str(out_dir / "App.mlmodel")]) == 0
    printed = capsys.readouterr().out
    assert "Backbone.mlmodel" in printed and "needs the same renames" in printed
    assert sorted(p.name for p in out_dir.iterdir()) == ["App.mlmodel", "Backbone.mlmodel"]
    backbone = load_spec(out_dir / "Backbone.mlmodel")
    assert [f.name for f in backbone.description.input] == ["image"]
    assert [f.name for f in backbone.description.output] == ["features"]
    assert not [f for f in check(out_dir / "App.mlmodel", search_path=str(out_dir)) if f.severity == "error"]
    x = np.linspace(-1, 1, 4).astype(np.float32)
    got = predict(out_dir / "App.mlmodel", {"image": x})
    want = predict(app, {"x": x})
    np.testing.assert_allclose(got["z"], want["z"])
    assert load_spec(tmp_path / "bundle" / "Backbone.mlmodel").description.input[0].name == "x"


def test_cli_rename_linked_without_the_target_names_the_file(tmp_path, capsys):
    app = _linked_bundle(tmp_path / "bundle")
    (tmp_path / "bundle" / "Backbone.mlmodel").unlink()
    assert main(["rename", str(app), "x=image", "-o", str(tmp_path / "o" / "App.mlmodel")]) == 1
    err = capsys.readouterr().err
    assert "Backbone.mlmodelc: not found" in err and "--search-path" in err
    # a rename that does not touch the stub needs no target
    assert main(["rename", str(app), "z=score", "-o", str(tmp_path / "o" / "App.mlmodel")]) == 0


def test_cli_rename_linked_refuses_to_overwrite_the_target(tmp_path, capsys):
    app = _linked_bundle(tmp_path / "bundle")
    assert main(["rename", str(app), "x=image", "-o", str(tmp_path / "bundle" / "App2.mlmodel")]) == 1
    assert "which are inputs" in capsys.readouterr().err


def test_rename_linked_in_python():
    from specsurgery.ops.rename import rename_linked

    backbone = nb.tiny_nn()
    pipe = link_stage(nb.tiny_pipeline(stages=[backbone, nb.tiny_head()]), "backbone")
    out, targets = rename_linked(pipe, [("x", "a"), ("a", "b")], {"Backbone.mlmodelc": backbone})
    assert [f.name for f in out.description.input] == ["b"]
    assert [f.name for f in targets["Backbone.mlmodelc"].description.input] == ["b"]
    with pytest.raises(NotFoundError, match="no target given for 'Backbone.mlmodelc'"):
        rename_linked(pipe, [("x", "a")], {})
