"""make_pipeline: interface computation, kinds, names, versions, mismatches, collisions."""

from __future__ import annotations

import pytest

import nnbuild as nb
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import SpecSurgeryError
from specsurgery.io import load_spec, save
from specsurgery.ops import make_pipeline
from specsurgery.ops._nn import SurgeryNote


def errors(model):
    return [f for f in check(model) if f.severity == "error"]


def test_interface_is_computed():
    pipe = make_pipeline([nb.tiny_nn(), nb.tiny_head()])
    assert S.model_type(pipe) == "pipeline"
    assert [f.name for f in pipe.description.input] == ["x"]
    assert [f.name for f in pipe.description.output] == ["z"]
    assert S.stage_names(pipe.pipeline) == ["model0", "model1"]
    assert not errors(pipe)


def test_unconsumed_earlier_outputs_stay_outputs():
    a = nb.tiny_nn()
    b = nb.tiny_nn(input_name="x", output_name="y2", seed=3)  # reads x, not y
    pipe = make_pipeline([a, b], names=["a", "b"])
    assert [f.name for f in pipe.description.output] == ["y", "y2"]
    assert list(pipe.pipeline.names) == ["a", "b"]
    assert not errors(pipe)


def test_classifier_and_regressor_kinds():
    clf = make_pipeline([nb.tiny_nn(n_hidden=4, output_name="x2"), _rename_input(nb.tiny_classifier(), "x2")])
    assert S.model_type(clf) == "pipelineClassifier"
    assert clf.description.predictedFeatureName == "classLabel"
    assert clf.description.predictedProbabilitiesName == "classLabelProbs"
    assert not errors(clf)
    reg = make_pipeline([nb.tiny_nn(n_hidden=4, output_name="x2"), _rename_input(nb.tiny_regressor(), "x2")])
    assert S.model_type(reg) == "pipelineRegressor"
    assert reg.description.predictedFeatureName == "value"
    plain = make_pipeline([nb.tiny_nn(n_hidden=4, output_name="x2"), _rename_input(nb.tiny_regressor(), "x2")],
                          kind="pipeline")
    assert S.model_type(plain) == "pipeline"
    with pytest.raises(SpecSurgeryError, match="needs a predicted feature"):
        make_pipeline([nb.tiny_nn(), nb.tiny_head()], kind="classifier")
    with pytest.raises(SpecSurgeryError, match="unknown kind 'tree'"):
        make_pipeline([nb.tiny_nn()], kind="tree")


def _rename_input(spec, new):
    from specsurgery.ops import rename_feature

    return rename_feature(spec, spec.description.input[0].name, new)


def test_spec_version_is_max_of_stages():
    pipe = make_pipeline([nb.tiny_nn(version=1), nb.tiny_head(version=5)])
    assert pipe.specificationVersion == 5
    assert [m.specificationVersion for m in pipe.pipeline.models] == [1, 5]


def test_names_must_be_unique_and_match():
    with pytest.raises(SpecSurgeryError, match="unique.*'a'"):
        make_pipeline([nb.tiny_nn(), nb.tiny_head()], names=["a", "a"])
    with pytest.raises(SpecSurgeryError, match="1 names for 2 stages"):
        make_pipeline([nb.tiny_nn(), nb.tiny_head()], names=["a"])
    with pytest.raises(SpecSurgeryError, match="at least one stage"):
        make_pipeline([])


def test_dtype_mismatch_is_reported_with_fix_then_coerced():
    head = nb.tiny_head()
    head.description.input[0].type.multiArrayType.dataType = nb.DOUBLE
    with pytest.raises(SpecSurgeryError, match=r"reads 'y' as MultiArray<DOUBLE>.*FLOAT32.*dtype differs.*"
                                               r"declare stage 1 'model1''s input 'y' as FLOAT32.*coerce=True"):
        make_pipeline([nb.tiny_nn(), head])
    with pytest.warns(SurgeryNote, match="declared input 'y' as FLOAT32"):
        pipe = make_pipeline([nb.tiny_nn(), head], coerce=True)
    assert pipe.pipeline.models[1].description.input[0].type.multiArrayType.dataType == nb.FLOAT32
    assert head.description.input[0].type.multiArrayType.dataType == nb.DOUBLE  # input untouched
    assert not errors(pipe)


def test_shape_and_kind_mismatches_are_not_coerced():
    head = nb.tiny_head(n_in=5)
    with pytest.raises(SpecSurgeryError, match=r"shape differs \(\[3\] vs \[5\]\).*shape \[3\]"):
        make_pipeline([nb.tiny_nn(), head], coerce=True)
    img_head = nb.tiny_head()
    img_head.description.input[0].type.Clear()
    img_head.description.input[0].type.imageType.width = 8
    img_head.description.input[0].type.imageType.height = 8
    img_head.description.input[0].type.imageType.colorSpace = 20
    with pytest.raises(SpecSurgeryError, match="never converts between"):
        make_pipeline([nb.tiny_nn(), img_head], coerce=True)


def test_unspecified_output_shape_is_filled_by_coerce():
    first = nb.tiny_nn()
    del first.description.output[0].type.multiArrayType.shape[:]
    with pytest.raises(SpecSurgeryError, match="rank differs"):
        make_pipeline([first, nb.tiny_head()])
    with pytest.warns(SurgeryNote, match="consumer's shape"):
        pipe = make_pipeline([first, nb.tiny_head()], coerce=True)
    assert list(pipe.pipeline.models[0].description.output[0].type.multiArrayType.shape) == [3]


def test_every_problem_is_listed():
    head = nb.tiny_head(n_in=5)
    head.description.input[0].type.multiArrayType.dataType = nb.DOUBLE
    # stage 1 reads y with the wrong dtype and stage 2's z collides with stage 1's
    with pytest.raises(SpecSurgeryError, match=r"2 interface problems: .*dtype differs.* \| .*'z' collides"
                                               r".*prefixes=\[None, None, 'model2_'\]"):
        make_pipeline([nb.tiny_nn(), head, nb.tiny_nn(input_name="x", output_name="z")])


def test_collision_needs_an_explicit_prefix():
    a, b = nb.tiny_nn(), nb.tiny_nn(seed=5)
    with pytest.raises(SpecSurgeryError, match="output 'y' collides with stage 0 'model0'"):
        make_pipeline([a, b])
    pipe = make_pipeline([a, b], prefixes=[None, "second_"])
    assert [f.name for f in pipe.description.output] == ["y", "second_y"]
    # the stage's internals follow the rename
    assert list(pipe.pipeline.models[1].neuralNetwork.layers[-1].output) == ["second_y"]
    assert not errors(pipe)


def test_interface_adoption_and_mismatch():
    nn = nb.tiny_nn()
    nn.description.output[0].shortDescription = "features"
    nn.description.metadata.author = "me"
    pipe = make_pipeline([nb.tiny_nn(output_name="y"), ], interface=nn)
    assert pipe.description.output[0].shortDescription == "features"
    assert pipe.description.metadata.author == "me"
    other = nb.tiny_nn(output_name="w")
    with pytest.raises(SpecSurgeryError, match="output 'w' is produced by no stage"):
        make_pipeline([nb.tiny_nn()], interface=other)


def test_mlprogram_stage_dispatches_or_says_not_supported(corpus):
    pkg = corpus / "generated/shared_backbone_classifier.mlpackage"
    try:
        make_pipeline([pkg])
    except SpecSurgeryError as exc:
        assert "mlProgram" in str(exc) or "ML Program" in str(exc)


def test_cli_pipeline(tmp_path, capsys):
    a, b = tmp_path / "a.mlmodel", tmp_path / "b.mlmodel"
    save(nb.tiny_nn(), a)
    head = nb.tiny_head()
    head.description.input[0].type.multiArrayType.dataType = nb.DOUBLE
    save(head, b)
    out = tmp_path / "p.mlmodel"
    assert main(["pipeline", str(a), str(b), "-o", str(out)]) == 1
    assert "coerce" in capsys.readouterr().err
    assert main(["pipeline", str(a), str(b), "-o", str(out), "--names", "feat,head", "--coerce"]) == 0
    captured = capsys.readouterr()
    assert "note:" in captured.err and "pipeline of 2 stages" in captured.out
    assert S.stage_names(load_spec(out).pipeline) == ["feat", "head"]


def test_cli_prefixes(tmp_path):
    save(nb.tiny_nn(), tmp_path / "a.mlmodel")
    save(nb.tiny_nn(seed=4), tmp_path / "b.mlmodel")
    out = tmp_path / "p.mlmodel"
    assert main(["pipeline", str(tmp_path / "a.mlmodel"), str(tmp_path / "b.mlmodel"), "-o", str(out)]) == 1
    assert main(["pipeline", str(tmp_path / "a.mlmodel"), str(tmp_path / "b.mlmodel"), "-o", str(out),
                 "--prefixes", ",b_"]) == 0
    assert [f.name for f in load_spec(out).description.output] == ["y", "b_y"]


def test_collision_message_gives_the_command_line_flag(tmp_path, capsys):
    from nnbuild import tiny_nn

    from specsurgery.cli import main
    from specsurgery.io import save

    a = tmp_path / "a.mlmodel"
    save(tiny_nn(), a)
    assert main(["pipeline", str(a), str(a), "-o", str(tmp_path / "p.mlmodel")]) == 1
    assert "on the command line --prefixes ,model1_)" in capsys.readouterr().err
    assert main(["pipeline", str(a), str(a), "--prefixes", ",model1_", "-o", str(tmp_path / "p.mlmodel")]) == 0
