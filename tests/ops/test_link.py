"""link_stage / make_linked_stub / unlink: stubs mirror the stage, versions are
raised with a note, nested paths, round trips through the runtime."""

from __future__ import annotations

import pytest

import nnbuild as nb
from conftest import CORPUS
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.io import save
from specsurgery.ops import link_stage, make_linked_stub, make_pipeline, unlink
from specsurgery.ops._nn import SurgeryNote
from specsurgery.runtime import verify


def errors(model, **kw):
    return [f for f in check(model, **kw) if f.severity == "error"]


def test_stub_mirrors_the_stage_and_keeps_the_name():
    pipe = nb.tiny_pipeline()
    out = link_stage(pipe, "backbone")
    stub = out.pipeline.models[0]
    assert S.model_type(stub) == "linkedModel"
    assert stub.description == pipe.pipeline.models[0].description
    lf = stub.linkedModel.linkedModelFile
    assert lf.linkedModelFileName.defaultValue == "Backbone.mlmodelc"
    assert lf.linkedModelSearchPath.defaultValue == ".:$BUNDLE_MAIN"
    assert S.stage_names(out.pipeline) == ["backbone", "head"]
    assert stub.specificationVersion == 4
    assert S.model_type(pipe.pipeline.models[0]) == "neuralNetwork"   # input untouched
    assert not errors(out)


def test_stage_by_index_and_unknown_stage():
    out = link_stage(nb.tiny_pipeline(), 1, file_name="Head.mlmodelc")
    assert S.model_type(out.pipeline.models[1]) == "linkedModel"
    with pytest.raises(NotFoundError, match=r"unknown stage: 'bakbone' \(did you mean 'backbone'"):
        link_stage(nb.tiny_pipeline(), "bakbone")
    with pytest.raises(NotFoundError, match="stage index 5 out of range"):
        link_stage(nb.tiny_pipeline(), 5)
    with pytest.raises(UnsupportedError, match="not a pipeline.*make_linked_stub"):
        link_stage(nb.tiny_nn(), "backbone")


def test_low_spec_version_is_raised_and_reported():
    pipe = nb.tiny_pipeline(stages=[nb.tiny_nn(version=1), nb.tiny_head(version=1)], version=1)
    with pytest.warns(SurgeryNote) as record:
        out = link_stage(pipe, "backbone")
    messages = [str(r.message) for r in record]
    assert any("stage 'backbone' from 1 to 4" in m for m in messages)
    assert any("the pipeline from 1 to 4" in m for m in messages)
    assert out.specificationVersion == 4 and out.pipeline.models[0].specificationVersion == 4
    assert out.pipeline.models[1].specificationVersion == 1
    assert not errors(out)


def test_nested_stage_path_raises_every_enclosing_version():
    inner = nb.tiny_pipeline(stages=[nb.tiny_nn(version=1), nb.tiny_head(version=1)], version=1)
    outer = make_pipeline([inner], names=["inner"])
    assert outer.specificationVersion == 1
    with pytest.warns(SurgeryNote):
        out = link_stage(outer, "inner/backbone", file_name="Feat.mlmodelc")
    nested = out.pipeline.models[0]
    assert S.model_type(nested.pipeline.models[0]) == "linkedModel"
    assert out.specificationVersion == 4 and nested.specificationVersion == 4
    assert not errors(out)


def test_make_linked_stub_standalone_and_from_description():
    clf = nb.tiny_classifier()
    stub = make_linked_stub(clf, file_name="Clf.mlmodelc", search_path="$BUNDLE_MAIN")
    assert stub.description == clf.description and not errors(stub)
    stub2 = make_linked_stub(clf.description, file_name="Clf.mlmodelc")
    assert stub2.description == clf.description
    with pytest.warns(SurgeryNote, match="does not end in .mlmodelc"):
        make_linked_stub(clf, file_name="Clf.mlmodel")
    with pytest.raises(SpecSurgeryError, match="file_name is empty"):
        make_linked_stub(clf, file_name="")
    opt = nb.tiny_nn()
    opt.description.input[0].type.isOptional = True
    with pytest.raises(UnsupportedError, match="optional input.*'x'"):
        make_linked_stub(opt)


def test_already_linked_stage():
    out = link_stage(nb.tiny_pipeline(), "backbone")
    with pytest.raises(SpecSurgeryError, match="already a linked model"):
        link_stage(out, "backbone")


def test_unlink_of_link_is_the_original_computation(tmp_path):
    pipe = nb.tiny_pipeline()
    save(pipe.pipeline.models[0], tmp_path / "Backbone.mlmodel")
    linked = link_stage(pipe, "backbone")
    save(linked, tmp_path / "linked.mlmodel", search_path=str(tmp_path))
    back = unlink(tmp_path / "linked.mlmodel")
    assert back.pipeline.models[0] == pipe.pipeline.models[0]
    assert verify(pipe, back).ok
    assert verify(pipe, tmp_path / "linked.mlmodel", search_path=str(tmp_path)).ok


def test_unlink_lists_every_place_tried(tmp_path):
    linked = link_stage(nb.tiny_pipeline(), "backbone")
    save(linked, tmp_path / "linked.mlmodel")
    with pytest.raises(NotFoundError, match=r"cannot find 'Backbone.mlmodelc'.*tried: .*Backbone.mlmodelc"
                                            r".*Backbone.mlmodel.*Backbone.mlpackage"):
        unlink(tmp_path / "linked.mlmodel", search_path=str(tmp_path / "nowhere"))
    with pytest.raises(NotFoundError, match="no linkedModel stages"):
        unlink(nb.tiny_pipeline())


def test_unlink_rejects_a_target_with_another_interface(tmp_path):
    linked = link_stage(nb.tiny_pipeline(), "backbone")
    save(nb.tiny_nn(n_hidden=5), tmp_path / "Backbone.mlmodel")
    with pytest.raises(SpecSurgeryError, match=r"does not match its stub.*output 'y'"):
        unlink(linked, base_dir=tmp_path)


def test_unlink_with_bundle(tmp_path):
    bundle = tmp_path / "App.app"
    bundle.mkdir()
    save(nb.tiny_nn(), bundle / "Backbone.mlmodel")
    linked = link_stage(nb.tiny_pipeline(), "backbone", search_path="$BUNDLE_MAIN")
    back = unlink(linked, bundle=bundle)
    assert S.model_type(back.pipeline.models[0]) == "neuralNetwork"


@pytest.mark.corpus
def test_corpus_linked_pipeline_without_its_target_lists_the_search(tmp_path):
    src = CORPUS / "generated/linked_backbone_pipeline.mlmodel"   # ships without Backbone
    with pytest.raises(NotFoundError, match=r"stage 'backbone'.*Backbone.mlmodelc.*tried: .*shared/corpus"):
        unlink(src)


def test_cli_link_and_unlink(tmp_path, capsys):
    pipe = nb.tiny_pipeline(stages=[nb.tiny_nn(version=1), nb.tiny_head(version=1)], version=1)
    save(pipe, tmp_path / "p.mlmodel")
    save(pipe.pipeline.models[0], tmp_path / "Feat.mlmodel")
    assert main(["link", str(tmp_path / "p.mlmodel"), "--stage", "backbone", "--file", "Feat.mlmodelc",
                 "-o", str(tmp_path / "l.mlmodel")]) == 0
    captured = capsys.readouterr()
    assert "note: raised the spec version" in captured.err
    assert main(["unlink", str(tmp_path / "l.mlmodel"), "-o", str(tmp_path / "u.mlmodel")]) == 0
    assert verify(pipe, tmp_path / "u.mlmodel").ok
    assert main(["link", str(tmp_path / "p.mlmodel"), "--stage", "nope", "--file", "F.mlmodelc",
                 "-o", str(tmp_path / "x.mlmodel")]) == 1
    assert "unknown stage: 'nope'" in capsys.readouterr().err


def test_cli_standalone_stub(tmp_path, capsys):
    save(nb.tiny_classifier(version=1), tmp_path / "c.mlmodel")
    assert main(["link", str(tmp_path / "c.mlmodel"), "--standalone", "--file", "C.mlmodelc",
                 "-o", str(tmp_path / "stub.mlmodel")]) == 0
    from specsurgery.io import load_spec

    stub = load_spec(tmp_path / "stub.mlmodel")
    assert S.model_type(stub) == "linkedModel" and stub.specificationVersion == 4
    assert main(["link", str(tmp_path / "c.mlmodel"), "--file", "C.mlmodelc", "-o", str(tmp_path / "x.mlmodel")]) == 1
    assert "--stage" in capsys.readouterr().err


def test_relink_edits_a_stub_in_one_step(tmp_path, capsys):
    from nnbuild import tiny_pipeline

    from specsurgery.cli import main
    from specsurgery.errors import SpecSurgeryError, UnsupportedError
    from specsurgery.io import load_spec, save
    from specsurgery.ops.link import link_stage, relink

    pipe = link_stage(tiny_pipeline(), "backbone")
    out = relink(pipe, "backbone", file_name="Shared.mlmodelc", search_path="$BUNDLE_MAIN")
    lf = out.pipeline.models[0].linkedModel.linkedModelFile
    assert (lf.linkedModelFileName.defaultValue, lf.linkedModelSearchPath.defaultValue) == \
        ("Shared.mlmodelc", "$BUNDLE_MAIN")
    before = pipe.pipeline.models[0].linkedModel.linkedModelFile.linkedModelFileName.defaultValue
    assert before == "Backbone.mlmodelc"                      # the input is untouched
    only_path = relink(pipe, "backbone", search_path=".")
    assert only_path.pipeline.models[0].linkedModel.linkedModelFile.linkedModelFileName.defaultValue \
        == "Backbone.mlmodelc"
    with pytest.raises(UnsupportedError, match="stage 'head' is a neuralNetwork, not a linked stub"):
        relink(pipe, "head", file_name="X.mlmodelc")
    with pytest.raises(SpecSurgeryError, match="nothing to change"):
        relink(pipe, "backbone")
    with pytest.raises(SpecSurgeryError, match="plain name"):
        relink(pipe, "backbone", file_name="a/B.mlmodelc")
    stub = relink(pipe.pipeline.models[0], file_name="Other.mlmodelc")
    assert stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue == "Other.mlmodelc"
    src = save(pipe, tmp_path / "p.mlmodel")
    assert main(["relink", str(src), "backbone", "--file", "Shared.mlmodelc", "-o",
                 str(tmp_path / "o.mlmodel")]) == 0
    assert "now links file Shared.mlmodelc" in capsys.readouterr().out
    got = load_spec(tmp_path / "o.mlmodel").pipeline.models[0].linkedModel.linkedModelFile
    assert got.linkedModelFileName.defaultValue == "Shared.mlmodelc"
    assert got.linkedModelSearchPath.defaultValue == ".:$BUNDLE_MAIN"
    assert main(["relink", str(src), "nope", "--file", "S.mlmodelc", "-o", str(tmp_path / "o2.mlmodel")]) == 1
    assert "nope" in capsys.readouterr().err
