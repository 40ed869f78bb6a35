"""Dedupe across .mlpackage models: linked backbone pipelines and one multifunction package."""

import shutil

import numpy as np
import pytest

import mil_models as M
from conftest import CORPUS
from specsurgery import io
from specsurgery.check import check
from specsurgery.errors import UnsupportedError
from specsurgery.ops.dedupe import dedupe, dedupe_files
from specsurgery.runtime import predict, verify

CORPUS_PAIR = [CORPUS / "generated" / "shared_backbone_classifier.mlpackage",
               CORPUS / "generated" / "shared_backbone_segmenter.mlpackage"]


def _copies(tmp_path, paths):
    src = tmp_path / "in"
    src.mkdir()
    out = []
    for p in paths:
        shutil.copytree(p, src / p.name)
        out.append(src / p.name)
    return out


def _check_outputs(report, out_dir, inputs):
    assert report["totals"]["saving_share_of_best"] >= 0.99, report["table"]
    for p in inputs:
        target = out_dir / p.name
        assert [f for f in check(target, search_path=str(out_dir)) if f.severity == "error"] == []
        rep = verify(p, target, search_path=str(out_dir), samples=2)
        assert rep.ok, rep.summary()


@pytest.mark.corpus
def test_corpus_shared_backbone_pair(tmp_path):
    inputs = _copies(tmp_path, CORPUS_PAIR)
    out = tmp_path / "out"
    report = dedupe_files(inputs, out)
    assert (out / "Backbone.mlpackage").is_dir()
    _check_outputs(report, out, inputs)
    linked = io.load(out / CORPUS_PAIR[0].name)
    stub = linked.spec.pipelineClassifier.pipeline.models[0]
    assert stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue == "Backbone.mlmodelc"
    assert linked.spec.specificationVersion >= 6


def test_family_of_four_models(tmp_path):
    inputs = _copies(tmp_path, [M.family_converted(n) for n in M.FAMILY])
    out = tmp_path / "out"
    report = dedupe_files(inputs, out)
    assert report["backbones"][0]["members"] == [p.stem for p in inputs]
    _check_outputs(report, out, inputs)
    shared = report["backbones"][0]["shared_bytes"]
    assert report["totals"]["saving"] >= 0.99 * 3 * shared   # the backbone's weights are stored once, not 4 times


def test_multifunction_package_shares_weights(tmp_path):
    inputs = [M.family_converted(n) for n in M.FAMILY[:3]]
    result = dedupe(inputs, multifunction=True)
    mf = result.multifunction
    assert mf.spec.specificationVersion == 9
    assert sorted(mf.spec.mlProgram.functions) == sorted(p.stem for p in inputs)
    assert mf.spec.description.defaultFunctionName == inputs[0].stem
    sizes = result.plan.options
    assert sizes["multifunction_bytes"] < result.plan.total_before
    assert "linked_bytes" in sizes
    io.save(mf, tmp_path / "Models.mlpackage")
    assert [f for f in check(tmp_path / "Models.mlpackage") if f.severity == "error"] == []
    img = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    for p in inputs:
        a = predict(tmp_path / "Models.mlpackage", {"image": img}, function=p.stem)
        b = predict(p, {"image": img})
        np.testing.assert_array_equal(a["out"], b["out"])
    # a multifunction target below spec 9 is refused by check
    spec = io.copy_spec(mf.spec)
    spec.specificationVersion = 8
    bad = [f for f in check(io.MLPackage(spec, mf.weights)) if f.severity == "error"]
    assert any("9" in f.message for f in bad)


def test_other_preprocessing_is_not_merged(tmp_path):
    a = M.family_converted("Classifier")
    b = M.family_converted("Regressor", scale=1 / 128.0)
    result = dedupe([a, b], build=False)
    assert not result.plan.shares_anything


def test_partly_shared_backbone_picks_the_deeper_group(tmp_path):
    """Three models share the whole backbone, a fourth (fine-tuned last stage)
    only its first layers: the deep group of three saves more and wins."""
    names = ["Classifier", "Regressor", "Segmenter", "Tuned"]
    inputs = _copies(tmp_path, [M.family_converted(n) for n in names])
    result = dedupe(inputs)
    group = result.plan.groups[0]
    assert sorted(group.members) == sorted(p.stem for p in inputs[:3])
    tuned = next(m for m in result.plan.models if m.name == inputs[3].stem)
    assert tuned.backbone is None and tuned.reason
    alt = [c for c in result.plan.alternatives if len(c.members) == 4]
    assert alt and alt[0].saving < group.saving


@pytest.mark.corpus
def test_output_that_is_a_file_or_under_one_is_a_save_error(tmp_path):
    # used to escape as FileExistsError (after the whole analysis)
    from specsurgery.errors import SaveError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(SaveError, match="exists and is not a folder"):
        dedupe_files(CORPUS_PAIR, tmp_path / "afile")
    with pytest.raises(SaveError, match="afile is a file, not a folder"):
        dedupe_files(CORPUS_PAIR, tmp_path / "afile" / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


# --------------------------------------------------------------------------- options (issue 14)


def test_build_false_builds_nothing_and_progress_is_called():
    # dedupe([...mlpackage...], build=False) used to build the packages anyway (the option was
    # not passed on to the ML Program dedupe), and progress was never called
    inputs = [M.family_converted(n) for n in M.FAMILY[:2]]
    seen = []
    result = dedupe(inputs, build=False, progress=seen.append)
    assert result.plan.shares_anything
    assert result.backbones == {} and result.models == {} and result.multifunction is None
    assert "multifunction_bytes" not in result.plan.options
    assert not any(m.measured for m in result.plan.models)
    assert seen == [f"read {p.stem}" for p in inputs]
    seen.clear()
    result = dedupe(inputs, progress=seen.append)
    assert result.backbones and all(m.measured for m in result.plan.models)
    assert seen == [f"read {p.stem}" for p in inputs] + [f"rewrite {p.stem}" for p in inputs]


def test_dry_run_and_progress_through_dedupe_files(tmp_path):
    inputs = [M.family_converted(n) for n in M.FAMILY[:2]]
    seen = []
    report = dedupe_files(inputs, tmp_path / "out", dry_run=True, progress=seen.append)
    assert report["dry_run"] and report["shares_anything"] and report["written"] == []
    assert not (tmp_path / "out").exists()
    assert seen == [f"read {p.stem}" for p in inputs]


def test_allow_fp16_match_is_refused_by_name():
    from specsurgery.errors import UnsupportedError

    inputs = [M.family_converted(n) for n in M.FAMILY[:2]]
    with pytest.raises(UnsupportedError, match=r"allow_fp16_match .*ML Program"):
        dedupe(inputs, allow_fp16_match=True)


def test_plan_dedupe_plans_ml_programs_with_the_one_planner():
    from specsurgery.ops.dedupe import plan_dedupe

    inputs = [M.family_converted(n) for n in M.FAMILY[:3]]
    plan = plan_dedupe(inputs, min_share=0.0)
    (group,) = plan.groups
    assert group.members == [p.stem for p in inputs] and plan.options["format"] == "mlpackage"
    assert "ops" in group.why and group.outputs
    assert all(m.bytes_after < m.bytes_before for m in plan.models)   # estimates: nothing built


def test_members_that_name_the_cut_value_differently(tmp_path):
    # value names never enter an id: the member's head input is renamed to the backbone's output
    from specsurgery.ops import rename_feature
    from specsurgery.ops.dedupe import plan_dedupe

    a, b = M.family_converted("Classifier"), M.family_converted("Regressor")
    (cut,) = plan_dedupe([a, b]).groups[0].outputs
    renamed = tmp_path / "in" / b.name
    io.save(rename_feature(b, cut, "my_cut"), renamed)
    out = tmp_path / "out"
    report = dedupe_files([a, renamed], out)
    (group,) = report["backbones"]
    assert group["cuts"][b.stem] == {"my_cut": cut} and group["outputs"] == [cut]
    _check_outputs(report, out, [a, renamed])


def test_cli_refuses_allow_fp16_match_on_ml_programs_by_name(tmp_path, capsys):
    from specsurgery.cli import main

    inputs = [str(M.family_converted(n)) for n in M.FAMILY[:2]]
    assert main(["dedupe", *inputs, "-o", str(tmp_path / "out"), "--allow-fp16-match"]) == 1
    err = capsys.readouterr().err
    assert "--allow-fp16-match" in err and "ML Program" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- detectors ([mlProgram, nms] pipelines)

@pytest.fixture(scope="module")
def classifier_and_detector():
    """An ML Program classifier and an ML Program detector pipeline ([mlProgram, nms])
    that share one body (tests/detector_models.py)."""
    from detector_models import classifier_and_detector as build

    return build("mlprogram")


@pytest.mark.parametrize("detector_first", [False, True])
def test_classifier_and_detector_share_a_backbone(classifier_and_detector, tmp_path, detector_first):
    clf, det = classifier_and_detector
    src = tmp_path / "in"
    src.mkdir()
    originals = {"Classifier": clf, "Detector": det}
    order = ["Detector", "Classifier"] if detector_first else ["Classifier", "Detector"]
    paths = [io.save(originals[n], src / f"{n}.mlpackage") for n in order]
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    assert [g["members"] for g in report["backbones"]] == [order]
    new_det, new_clf = io.load(out / "Detector.mlpackage"), io.load(out / "Classifier.mlpackage")
    stages = new_det.spec.pipeline
    assert [m.WhichOneof("Type") for m in stages.models] == ["linkedModel", "mlProgram", "nonMaximumSuppression"]
    assert list(stages.names) == ["backbone", "head", "nms"]
    assert stages.models[2] == det.spec.pipeline.models[1]
    assert [m.WhichOneof("Type") for m in new_clf.spec.pipelineClassifier.pipeline.models] == ["linkedModel",
                                                                                             "mlProgram"]
    for name, new in (("Detector", new_det), ("Classifier", new_clf)):
        for field in ("input", "output"):
            assert list(getattr(new.spec.description, field)) == \
                list(getattr(originals[name].spec.description, field))
        assert new.spec.description.metadata == originals[name].spec.description.metadata
        target = out / f"{name}.mlpackage"
        assert [f for f in check(target, search_path=str(out)) if f.severity == "error"] == []
        rep = verify(originals[name], target, search_path=str(out), samples=2)
        assert rep.ok, rep.summary()
    # the detector keeps only its head's weights; the backbone's are stored once
    assert new_det.weight_bytes < det.weight_bytes
    assert report["totals"]["after"] < report["totals"]["before"]


def test_detector_pipelines_refuse_multifunction_by_name(classifier_and_detector):
    clf, det = classifier_and_detector
    with pytest.raises(UnsupportedError, match=r"option multifunction \(--multifunction\) is not supported for det"):
        dedupe({"clf": clf, "det": det}, multifunction=True)
