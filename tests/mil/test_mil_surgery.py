"""split / pipeline / link on ML Programs: H3's zoo at 3 cut points each, check and verify."""

import numpy as np
import pytest

import mil_models as M
import zoo
from conftest import CORPUS
from specsurgery import io
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.ops.cuts import suggest_cuts
from specsurgery.ops.cuts.mlprogram import cut_frontier
from specsurgery.ops.link import link_stage, unlink
from specsurgery.ops._nn import SurgeryNote
from specsurgery.ops.split import split_at, split_pipeline
from specsurgery.mil import program as P
from specsurgery.runtime import predict, random_inputs, verify


def _three_cuts(cuts):
    real = [c for c in cuts if c.layers_before > 1]
    if len(real) < 3:
        real = cuts
    if len(real) < 3:
        return real
    return [real[0], real[len(real) // 2], real[-1]]


def _cut_points(path):
    """Early, middle and late cuts: single-value cuts where the program has
    three, else the frontiers (several values) at 1/4, 1/2 and 3/4 of the ops."""
    cuts = _three_cuts(suggest_cuts(path))
    if len(cuts) == 3:
        return [[c.blob] for c in cuts]
    return [cut_frontier(path, f) for f in (0.25, 0.5, 0.75)]


def _errors(model, search_path=None):
    return [str(f) for f in check(model, search_path=search_path) if f.severity == "error"]


@pytest.mark.parametrize("name", list(zoo.ARCHS))
def test_zoo_split_pipeline_link_verify(tmp_path, name):
    path = M.zoo_converted(name, "fp16")
    cuts = _cut_points(path)
    assert len(cuts) == 3
    original = io.load(path)
    for k, cut in enumerate(cuts):
        out = tmp_path / f"cut{k}"
        backbone, head = split_at(original, cut)
        pipe = split_pipeline(original, backbone, head)
        linked = link_stage(pipe, "backbone", file_name="Backbone.mlmodelc")
        # each package holds exactly the weights it reads
        assert not ({"weights/0-weight.bin"} & set(linked.weights))
        for model, fname in [(backbone, "Backbone.mlpackage"), (head, "Head.mlpackage"),
                             (pipe, "Model.mlpackage"), (linked, "Linked.mlpackage")]:
            io.save(model, out / fname, search_path=str(out))
            assert _errors(out / fname, search_path=str(out)) == []
        for candidate in ("Model.mlpackage", "Linked.mlpackage"):
            report = verify(path, out / candidate, search_path=str(out), samples=2)
            assert report.ok, report.summary()


def test_split_weights_are_exact_and_not_duplicated():
    path = M.converted("unet", "fp32")
    pkg = io.load(path)
    cut = _three_cuts(suggest_cuts(path))[1]
    backbone, head = split_at(pkg, [cut.blob])
    from specsurgery.mil import blobs as B

    def data_bytes(p):
        return sum(r.size for w in p.weights.values() for r in B.iter_records(w))

    assert data_bytes(backbone) + data_bytes(head) == data_bytes(pkg)
    assert data_bytes(backbone) > 0 and data_bytes(head) > 0


def test_multi_value_cut_across_a_skip_connection(tmp_path):
    path = M.converted("unet", "fp32")
    pkg = io.load(path)
    block = P.main_block(P.get_function(pkg.spec)[1])
    concat = next(op for op in block.operations if op.type == "concat")
    names = [b.name for b in concat.inputs["values"].arguments]
    with pytest.raises(SpecSurgeryError, match="does not separate the program"):
        split_at(pkg, [names[0]])
    backbone, head = split_at(pkg, names)
    pipe = split_pipeline(pkg, backbone, head)
    io.save(pipe, tmp_path / "p.mlpackage")
    assert verify(path, tmp_path / "p.mlpackage", samples=1).ok


@pytest.mark.corpus
def test_classifier_head_keeps_classifier_semantics(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    cuts = suggest_cuts(src)
    backbone, head = split_at(src, [cuts[len(cuts) // 2].blob])
    assert not backbone.spec.description.predictedFeatureName
    assert head.spec.description.predictedFeatureName == "classLabel"
    pipe = split_pipeline(src, backbone, head)
    assert pipe.spec.WhichOneof("Type") == "pipelineClassifier"
    io.save(pipe, tmp_path / "p.mlpackage")
    assert verify(src, tmp_path / "p.mlpackage").ok


def test_bad_cuts():
    pkg = io.load(M.converted("resnet", "fp32"))
    with pytest.raises(NotFoundError, match=r"'input_1[35]x'.*did you mean"):
        split_at(pkg, ["input_13x", "input_15x"])
    with pytest.raises(SpecSurgeryError, match="is a function input"):
        split_at(pkg, ["x"])
    with pytest.raises(SpecSurgeryError, match="leaves the head empty"):
        split_at(pkg, ["out"])


def _linked_segmenter(tmp_path):
    """The corpus segmenter split in the middle, its backbone linked: writes
    SegBackbone.mlpackage and Seg.mlpackage into tmp_path; returns the source."""
    src = CORPUS / "generated" / "shared_backbone_segmenter.mlpackage"
    cut = _three_cuts(suggest_cuts(src))[1]
    backbone, head = split_at(src, [cut.blob])
    pipe = split_pipeline(src, backbone, head)
    linked = link_stage(pipe, "backbone", file_name="SegBackbone.mlmodelc", search_path=".")
    io.save(backbone, tmp_path / "SegBackbone.mlpackage")
    io.save(linked, tmp_path / "Seg.mlpackage", search_path=str(tmp_path))
    return src


@pytest.mark.corpus
def test_link_then_unlink_round_trip(tmp_path):
    src = _linked_segmenter(tmp_path)
    inlined = unlink(tmp_path / "Seg.mlpackage")
    assert sorted(inlined.weights) == ["weights/0-weight.bin", "weights/1-weight.bin"]
    io.save(inlined, tmp_path / "Inlined.mlpackage")
    assert verify(src, tmp_path / "Inlined.mlpackage", samples=1).ok
    with pytest.raises(NotFoundError, match="SegBackbone.mlmodelc"):
        unlink(tmp_path / "Seg.mlpackage", search_path=str(tmp_path / "nowhere"))


@pytest.mark.corpus
def test_public_unlink_dispatches_to_ml_program_targets(tmp_path):
    src = _linked_segmenter(tmp_path)
    inlined = unlink(tmp_path / "Seg.mlpackage")
    assert isinstance(inlined, io.MLPackage) and len(inlined.weights) == 2
    io.save(inlined, tmp_path / "Inlined.mlpackage")
    assert verify(src, tmp_path / "Inlined.mlpackage", samples=1).ok


# --------------------------------------------------------------------------- every option of split_at, link_stage,
# unlink and suggest_cuts is honoured for ML Programs or refused by name (they used to be dropped silently)

CLASSIFIER = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
CLASSIFIER_CUT = "input_31_cast_fp16"


def _same(a, b) -> bool:
    return a.spec == b.spec and sorted(a.weights) == sorted(b.weights) and all(
        np.array_equal(a.weights[k].data, b.weights[k].data) for k in a.weights)


@pytest.mark.corpus
def test_split_at_refuses_freeze_backbone_by_name():
    with pytest.raises(UnsupportedError, match=r"split_at: option 'freeze_backbone' .*not supported for ML "
                                               r"Programs"):
        split_at(CLASSIFIER, CLASSIFIER_CUT, freeze_backbone=True)


@pytest.mark.corpus
def test_split_at_drop_updatable_on_a_program():
    plain = split_at(CLASSIFIER, CLASSIFIER_CUT)
    # a program that is not updatable: nothing to drop, the same halves
    assert all(_same(a, b) for a, b in zip(plain, split_at(CLASSIFIER, CLASSIFIER_CUT, drop_updatable=True)))
    marked = io.load(CLASSIFIER).copy()
    marked.spec.isUpdatable = True
    with pytest.raises(UnsupportedError, match=r"marked updatable.*drop_updatable=True"):
        split_at(marked, CLASSIFIER_CUT)
    with pytest.warns(SurgeryNote, match="dropped the updatable mark"):
        backbone, head = split_at(marked, CLASSIFIER_CUT, drop_updatable=True)
    assert not backbone.spec.isUpdatable and not head.spec.isUpdatable
    assert marked.spec.isUpdatable      # the input is not edited


@pytest.mark.corpus
def test_split_at_shapes_on_a_program():
    backbone, _ = split_at(CLASSIFIER, CLASSIFIER_CUT)
    declared = list(backbone.spec.description.output[0].type.multiArrayType.shape)
    # the declared shape is accepted as is; another one names the option and the program's type
    same, _ = split_at(CLASSIFIER, CLASSIFIER_CUT, shapes={CLASSIFIER_CUT: declared})
    assert same.spec == backbone.spec
    with pytest.raises(SpecSurgeryError, match=rf"shapes gives cut value '{CLASSIFIER_CUT}'.*declares it"):
        split_at(CLASSIFIER, CLASSIFIER_CUT, shapes={CLASSIFIER_CUT: declared[:-1] + [declared[-1] + 1]})
    with pytest.raises(NotFoundError, match=r"shapes names 'nope', which the cut does not cross"):
        split_at(CLASSIFIER, CLASSIFIER_CUT, shapes={"nope": [1]})
    # a dim the program leaves unknown: shapes gives the cut feature's default shape, the range stays
    flexible = io.load(CLASSIFIER).copy()
    block = P.main_block(P.get_function(flexible.spec)[1])
    out = next(o for op in block.operations for o in op.outputs if o.name == CLASSIFIER_CUT)
    out.type.tensorType.dimensions[-1].unknown.variadic = False
    wanted = declared[:-1] + [7]
    backbone, head = split_at(flexible, CLASSIFIER_CUT, shapes={CLASSIFIER_CUT: wanted})
    for feature in (backbone.spec.description.output[0],
                    next(f for f in head.spec.description.input if f.name == CLASSIFIER_CUT)):
        array = feature.type.multiArrayType
        assert list(array.shape) == wanted
        assert (array.shapeRange.sizeRanges[-1].lowerBound, array.shapeRange.sizeRanges[-1].upperBound) == (1, -1)


@pytest.mark.corpus
def test_split_at_inplace_turns_the_given_package_into_the_head():
    backbone, head = split_at(CLASSIFIER, CLASSIFIER_CUT)
    pkg = io.load(CLASSIFIER)
    before = pkg.copy()
    untouched = split_at(pkg, CLASSIFIER_CUT)[1]
    assert untouched is not pkg and _same(pkg, before)
    backbone2, head2 = split_at(pkg, CLASSIFIER_CUT, inplace=True)
    assert head2 is pkg and _same(pkg, head) and _same(backbone2, backbone)


@pytest.mark.corpus
def test_link_stage_and_unlink_inplace_edit_the_given_package(tmp_path):
    src = _linked_segmenter(tmp_path)
    backbone, head = split_at(src, _three_cuts(suggest_cuts(src))[1].blob)
    pipe = split_pipeline(src, backbone, head)
    copy = link_stage(pipe, "backbone", file_name="SegBackbone.mlmodelc", search_path=".")
    assert S.model_type(pipe.spec.pipeline.models[0]) == "mlProgram"      # not edited
    same = link_stage(pipe, "backbone", file_name="SegBackbone.mlmodelc", search_path=".", inplace=True)
    assert same is pipe and _same(pipe, copy)
    linked = io.load(tmp_path / "Seg.mlpackage")
    inlined = unlink(linked, inplace=True)
    assert inlined is linked and sorted(linked.weights) == ["weights/0-weight.bin", "weights/1-weight.bin"]
    io.save(linked, tmp_path / "Inlined.mlpackage")
    assert verify(src, tmp_path / "Inlined.mlpackage", samples=1).ok


@pytest.mark.corpus
def test_link_stage_of_a_lone_program_is_refused_like_a_network():
    with pytest.raises(UnsupportedError, match="not a pipeline.*make_linked_stub"):
        link_stage(CLASSIFIER, "backbone")


def test_suggest_cuts_honours_max_blobs_on_a_program(tmp_path):
    path = M.converted("unet", "fp32")
    singles = suggest_cuts(path)
    cuts = suggest_cuts(path, max_blobs=2)
    assert cuts[:len(singles)] == singles and len(cuts) > len(singles)
    multi = cuts[len(singles)]
    assert len(multi.blobs) == 2 and len(multi.shapes) == 2 and multi.blob == ",".join(multi.blobs)
    backbone, head = split_at(path, multi.blobs)
    io.save(split_pipeline(path, backbone, head), tmp_path / "p.mlpackage")
    assert verify(path, tmp_path / "p.mlpackage", samples=1).ok


@pytest.mark.corpus
def test_make_pipeline_prefixes_rename_program_stages_too(tmp_path):
    from specsurgery.ops import make_pipeline

    backbone, _ = split_at(CLASSIFIER, CLASSIFIER_CUT)
    with pytest.raises(SpecSurgeryError, match="collides"):
        make_pipeline([backbone, backbone])
    pipe = make_pipeline([backbone, backbone], prefixes=[None, "second_"])
    assert [f.name for f in pipe.spec.description.output] == [CLASSIFIER_CUT, "second_" + CLASSIFIER_CUT]
    second = pipe.spec.pipeline.models[1]
    assert [f.name for f in second.description.output] == ["second_" + CLASSIFIER_CUT]
    assert list(P.main_block(P.get_function(second)[1]).outputs) == ["second_" + CLASSIFIER_CUT]
    assert [f.name for f in backbone.spec.description.output] == [CLASSIFIER_CUT]     # not edited
    io.save(pipe, tmp_path / "p.mlpackage")
    assert _errors(tmp_path / "p.mlpackage") == []
    got = predict(tmp_path / "p.mlpackage", random_inputs(CLASSIFIER))
    assert np.array_equal(got[CLASSIFIER_CUT], got["second_" + CLASSIFIER_CUT])
