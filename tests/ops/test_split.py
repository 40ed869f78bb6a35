"""split_at / split_model: every NN in the corpus and the torch zoo, split at
early, middle and late cut points, checks and verifies (embedded and linked
backbone); plus the shape-mapping, flexibility, classifier and bad-input cases."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import surgery_models as sm
from conftest import CORPUS, MANIFEST, corpus_id
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.io import load_spec, save
from specsurgery.ops import split_at, suggest_cuts
from specsurgery.ops._nn import SurgeryNote
from specsurgery.ops.split import split_model, split_pipeline
from specsurgery.runtime import predict, random_inputs, verify
from specsurgery.weights import layer_weights, weight_nbytes

NN_CORPUS = [CORPUS / row["file"] for row in MANIFEST
             if row["model_type"] in S.NN_TYPES and not row["file"].startswith("invalid/")]

# corpus models that cannot take the standard test, and what they get instead
ONE_LAYER = {"real/Image2Image.mlmodel", "real/s4tf_model.mlmodel", "real/keras_model_personalization.mlmodel"}
CUSTOM_LAYERS = {"real/FastStyleTransferVanGoghStarryNight.mlmodel"}   # runtime cannot run 'custom'
SEQUENCE_INPUT = {"real/TestGloVe_model.mlmodel"}                       # runtime cannot run it either
HUGE = {"real/carn.mlmodel"}                                            # 3x1000x1000: tested shrunk
UPDATABLE = {"real/newcoreml.mlmodel"}


def errors(model):
    return [f for f in check(model) if f.severity == "error"]


def three_cuts(model) -> list[str]:
    """Early, middle and last articulation blob (the last one sits before the head); networks
    with fewer single-blob cuts (residual blocks) add cuts over two blobs, "a,b"."""
    cuts = [c.blob for c in suggest_cuts(model)]
    if len(cuts) < 3:
        found = suggest_cuts(model, max_blobs=2)
        cuts = [c.blob for c in sorted(found, key=lambda c: c.layers_before)]
    assert len(cuts) >= 3, cuts
    picks = [cuts[0], cuts[len(cuts) // 2], cuts[-1]]
    assert len(set(picks)) == 3
    return picks


def split_and_verify(model, blob, tmp_path, *, samples=2, **kw):
    """Embedded and linked pipelines both verify against the original."""
    for link in (False, True):
        out = tmp_path / f"{'linked' if link else 'embedded'}_{abs(hash(blob))}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SurgeryNote)
            paths = split_model(model, blob, out, name="M", link=link, **kw)
        for p in paths.values():
            assert p.exists()
            assert not errors(p), (p, errors(p))
        pipe = load_spec(paths["pipeline"])
        stage0 = S.pipeline_of(pipe).models[0]
        if link:
            assert S.model_type(stage0) == "linkedModel"
            assert stage0.linkedModel.linkedModelFile.linkedModelFileName.defaultValue == "MBackbone.mlmodelc"
            assert stage0.linkedModel.linkedModelFile.linkedModelSearchPath.defaultValue == ".:$BUNDLE_MAIN"
            assert pipe.specificationVersion >= 4
        else:
            assert S.model_type(stage0) == "neuralNetwork"
        report = verify(model, paths["pipeline"], search_path=str(out), samples=samples)
        assert report.ok, report.summary()


# --------------------------------------------------------------------------- corpus

@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in NN_CORPUS
                                  if corpus_id(p) not in ONE_LAYER | CUSTOM_LAYERS | SEQUENCE_INPUT | HUGE],
                         ids=corpus_id)
def test_corpus_split_verifies(path, tmp_path):
    # newcoreml's own update parameters are invalid (no loss layer): split it as a prediction model
    kw = {"drop_updatable": True} if corpus_id(path) in UPDATABLE else {}
    for blob in three_cuts(path):
        split_and_verify(path, blob, tmp_path, samples=1, **kw)


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in NN_CORPUS if corpus_id(p) in ONE_LAYER], ids=corpus_id)
def test_corpus_one_layer_models_have_no_cut(path):
    assert suggest_cuts(path) == []
    out = load_spec(path).description.output[0].name
    with pytest.raises(SpecSurgeryError, match="leaves the head without layers"):
        split_at(path, S.nn_of(load_spec(path)).layers[0].output[0] if out else out)


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in NN_CORPUS if corpus_id(p) in CUSTOM_LAYERS], ids=corpus_id)
def test_corpus_custom_layers_split_before_them_and_need_shapes_after(path, tmp_path):
    cuts = [c for c in suggest_cuts(path) if c.shape is not None]
    assert len(cuts) >= 3
    for c in (cuts[0], cuts[len(cuts) // 2], cuts[-1]):
        paths = split_model(path, c.blob, tmp_path / c.blob, name="Style", link=True)
        assert all(not errors(p) for p in paths.values())
        bb = load_spec(paths["backbone"])
        assert list(bb.description.output[0].type.multiArrayType.shape) == c.shape
    with pytest.raises(SpecSurgeryError, match=r"custom.*shapes=\{blob: \[dims\]\}"):
        split_at(path, "add_8_output")
    # with the shape given, the cut after a custom layer works
    backbone, head = split_at(path, "add_8_output", shapes={"add_8_output": [64, 88, 88]})
    assert not errors(backbone) and not errors(head)


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in NN_CORPUS if corpus_id(p) in SEQUENCE_INPUT], ids=corpus_id)
def test_corpus_sequence_model_reports_untypable_cut(path):
    # a Keras-1 sequence model: its spec declares input [1] but dense_1 expects 4 time steps, so
    # the reference runtime cannot run it and shape inference cannot type blobs after the time fold
    with pytest.raises(SpecSurgeryError, match="inputChannels is 400"):
        predict(path, random_inputs(load_spec(path)))
    with pytest.raises(SpecSurgeryError, match=r"cannot type the cut blob.*'dense_1_output'.*shapes="):
        split_at(path, "dense_1_output")


def shrunk_carn(n=8):
    """carn with a n x n input: same layers and weights, reshape targets rescaled."""
    spec = load_spec(CORPUS / "real/carn.mlmodel")
    inp = spec.description.input[0].type.multiArrayType
    inp.shape[1] = inp.shape[2] = n
    out = spec.description.output[0].type.multiArrayType
    out.shape[1] = out.shape[2] = 2 * n
    scale = {1000: n, 1000000: n * n, 64000: 64 * n, 2000: 2 * n}
    for layer in spec.neuralNetwork.layers:
        if layer.WhichOneof("layer") == "reshape":
            shape = layer.reshape.targetShape
            for i, d in enumerate(shape):
                shape[i] = scale.get(d, d)
    return spec


@pytest.mark.corpus
def test_corpus_carn_shrunk_split_verifies(tmp_path):
    spec = shrunk_carn()
    assert not errors(spec)
    src = tmp_path / "carn8.mlmodel"
    save(spec, src)
    for blob in three_cuts(src):
        split_and_verify(src, blob, tmp_path, samples=1)


@pytest.mark.corpus
def test_corpus_carn_full_size_late_cut_asks_for_shapes():
    with pytest.raises(SpecSurgeryError, match=r"would hold about \d+ GiB; pass their shapes"):
        split_at(CORPUS / "real/carn.mlmodel", "161")


def test_updatable_model_keeps_training_on_the_head():
    spec = sm.updatable_net()
    assert not errors(spec), errors(spec)
    backbone, head = split_at(spec, "b")
    assert not backbone.isUpdatable and head.isUpdatable
    assert [f.name for f in head.description.trainingInput] == ["b", "label"]
    pipe = split_pipeline(spec, backbone, head)
    assert pipe.isUpdatable and not errors(pipe), errors(pipe)
    with pytest.raises(UnsupportedError, match="updatable layer.*'c3'.*freeze_backbone=True"):
        split_at(spec, "f")
    with pytest.warns(SurgeryNote, match="froze updatable layer.*'c3'"):
        backbone, head = split_at(spec, "f", freeze_backbone=True)
    assert not head.isUpdatable and not backbone.isUpdatable
    pipe = split_pipeline(spec, backbone, head)
    assert not pipe.isUpdatable and not errors(pipe)


@pytest.mark.corpus
def test_updatable_model_with_broken_update_params_can_drop_training():
    path = CORPUS / "real/newcoreml.mlmodel"     # isUpdatable without a loss layer
    with pytest.warns(SurgeryNote, match="dropped on-device training"):
        backbone, head = split_at(path, "flatten_1_output", drop_updatable=True)
    assert not backbone.isUpdatable and not head.isUpdatable
    assert not errors(backbone) and not errors(head)


# --------------------------------------------------------------------------- torch zoo

ZOO_ARCHS = ["resnet", "mobilenetv2", "unet", "transformer", "lstm_text", "dict_outputs",
             "image_classifier", "flexible", "layer_mix"]


@pytest.mark.parametrize("arch", ZOO_ARCHS)
def test_zoo_split_verifies(arch, tmp_path):
    zoo = pytest.importorskip("zoo")
    try:
        path = zoo.converted(arch)
    except Exception as exc:  # a conversion the zoo cannot do on this torch/coremltools
        pytest.skip(f"zoo cannot convert {arch}: {exc}")
    for blob in three_cuts(path):
        split_and_verify(path, blob, tmp_path, samples=1)


# --------------------------------------------------------------------------- semantics

def test_classifier_semantics_stay_on_the_head(tmp_path):
    spec = sm.skip_net(image=True, classifier=True)
    spec.description.metadata.author = "someone"
    spec.description.metadata.license = "MIT"
    backbone, head = split_at(spec, "e")
    assert S.model_type(backbone) == "neuralNetwork"          # coremltools #601
    assert S.model_type(head) == "neuralNetworkClassifier"
    assert list(head.neuralNetworkClassifier.stringClassLabels.vector) == ["a", "b", "c", "d"]
    assert head.description.predictedFeatureName == "label"
    assert head.description.predictedProbabilitiesName == "labelProbs"
    assert head.neuralNetworkClassifier.labelProbabilityLayerName == "probs"
    for half in (backbone, head):
        assert half.description.metadata.author == "someone"
        assert half.description.metadata.license == "MIT"
    # image input and its preprocessing stay with the backbone
    assert backbone.description.input[0].type.WhichOneof("Type") == "imageType"
    assert len(backbone.neuralNetwork.preprocessing) == 1
    assert len(head.neuralNetworkClassifier.preprocessing) == 0
    pipe = split_pipeline(spec, backbone, head)
    assert S.model_type(pipe) == "pipelineClassifier"
    assert pipe.description == spec.description
    assert verify(spec, pipe).ok


def test_no_weight_is_duplicated():
    spec = sm.skip_net()
    backbone, head = split_at(spec, "b,c")

    def wbytes(m):
        return sum(weight_nbytes(wp) for l in S.nn_of(m).layers for _, wp in layer_weights(l))

    assert wbytes(backbone) + wbytes(head) == wbytes(spec)
    names = [l.name for l in backbone.neuralNetwork.layers] + [l.name for l in S.nn_of(head).layers]
    assert sorted(names) == sorted(l.name for l in spec.neuralNetwork.layers)


def test_multi_blob_cut_across_a_skip_connection():
    spec = sm.skip_net()
    backbone, head = split_at(spec, ["b", "c"])
    assert [f.name for f in backbone.description.output] == ["b", "c"]
    assert [f.name for f in head.description.input] == ["b", "c"]
    assert [l.name for l in head.neuralNetwork.layers] == ["add", "r2", "c3", "gp"]
    pipe = split_pipeline(spec, backbone, head)
    assert not errors(pipe)
    assert verify(spec, pipe).ok


@pytest.mark.parametrize("legacy", [True, False], ids=["rank5", "exact"])
def test_shape_mappings_are_consistent_in_both_halves(legacy):
    spec = sm.skip_net(legacy=legacy)
    backbone, head = split_at(spec, "b")
    declared = [4, 8, 8] if legacy else [1, 4, 8, 8]
    assert list(backbone.description.output[0].type.multiArrayType.shape) == declared
    assert list(head.description.input[0].type.multiArrayType.shape) == declared
    for half in (backbone, head):
        assert S.nn_of(half).arrayInputShapeMapping == (0 if legacy else 1)
    # through the runtime: the backbone's output has the declared shape, and
    # feeding it to the head gives the original's output
    x = random_inputs(spec, seed=3)
    mid = predict(backbone, x)["b"]
    assert list(mid.shape) == declared
    np.testing.assert_allclose(predict(head, {"b": mid})["g"], predict(spec, x)["g"], rtol=1e-5, atol=1e-6)


def test_rank4_images_with_rank5_arrays_switch_the_head_to_exact_rank():
    spec = sm.skip_net(image=True)
    spec.neuralNetwork.arrayInputShapeMapping = 0       # images RANK4, arrays legacy
    assert not errors(spec)
    backbone, head = split_at(spec, "b")
    assert S.nn_of(head).arrayInputShapeMapping == 1
    assert list(head.description.input[0].type.multiArrayType.shape) == [1, 4, 8, 8]
    assert not errors(head)
    assert verify(spec, split_pipeline(spec, backbone, head)).ok


def test_flexible_enumerated_input_maps_to_enumerated_cut():
    spec = sm.skip_net(flexible="enum")
    backbone, head = split_at(spec, "b")
    arr = backbone.description.output[0].type.multiArrayType
    assert [list(s.shape) for s in arr.enumeratedShapes.shapes] == [[1, 4, 8, 8], [1, 4, 12, 12]]
    assert head.description.input[0].type == backbone.description.output[0].type
    pipe = split_pipeline(spec, backbone, head)
    assert not errors(pipe) and not errors(backbone) and not errors(head)
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)}
    np.testing.assert_allclose(predict(pipe, x)["g"], predict(spec, x)["g"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image", [False, True], ids=["array", "image"])
def test_flexible_range_input_maps_to_range_cut(image):
    spec = sm.skip_net(flexible="range", image=image)
    backbone, head = split_at(spec, "e")
    arr = head.description.input[0].type.multiArrayType
    ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
    assert ranges == [(1, 1), (4, 4), (8, 16), (8, 16)]
    pipe = split_pipeline(spec, backbone, head)
    assert not errors(pipe)
    assert verify(spec, pipe).ok


def test_spec_versions_of_both_halves_and_the_link_raise(tmp_path):
    newer = sm.skip_net(legacy=True, version=5)       # needs only v1
    backbone, head = split_at(newer, "e")
    assert backbone.specificationVersion == 1 and head.specificationVersion == 1
    assert split_pipeline(newer, backbone, head).specificationVersion == 5
    flexible = sm.skip_net(flexible="enum")           # flexible shapes need v3 on both sides
    assert [m.specificationVersion for m in split_at(flexible, "b")] == [4, 4]   # exact mapping: v4
    spec = sm.skip_net(legacy=True, version=1)
    backbone, head = split_at(spec, "e")
    assert backbone.specificationVersion == 1 and head.specificationVersion == 1
    with pytest.warns(SurgeryNote, match="raised the spec version.*from 1 to 4"):
        paths = split_model(spec, "e", tmp_path, name="Net", link=True)
    pipe = load_spec(paths["pipeline"])
    assert pipe.specificationVersion == 4
    assert pipe.pipeline.models[0].specificationVersion == 4
    assert load_spec(paths["backbone"]).specificationVersion == 1


# --------------------------------------------------------------------------- bad input

def test_unknown_blob_lists_near_matches():
    with pytest.raises(NotFoundError, match=r"unknown blobs: 'bb' \(did you mean 'b'.*'zzz_q'"):
        split_at(sm.skip_net(), "bb,zzz_q")


def test_cut_that_does_not_separate_names_the_bypass():
    with pytest.raises(SpecSurgeryError,
                       match=r"does not separate the graph: layer 'add' after the cut reads 'b'.*"
                             r"path x -> \[c1\] -> a -> \[r1\] -> b -> \[add\] -> d.*--at c,b"):
        split_at(sm.skip_net(), "c")


def test_cut_at_an_input_or_the_last_blob():
    with pytest.raises(SpecSurgeryError, match="'x' is a model input"):
        split_at(sm.skip_net(), "x")
    with pytest.raises(SpecSurgeryError, match="leaves the head without layers"):
        split_at(sm.skip_net(), "g")


@pytest.mark.corpus
def test_inplace_turns_the_given_spec_into_the_head():
    spec = sm.skip_net()
    before = spec.SerializeToString(deterministic=True)
    backbone, head = split_at(spec, "e")
    assert spec.SerializeToString(deterministic=True) == before      # not edited without inplace
    backbone2, head2 = split_at(spec, "e", inplace=True)
    assert head2 is spec and spec == head and backbone2 == backbone


def test_shapes_for_a_blob_the_cut_does_not_cross_is_an_error():
    with pytest.raises(NotFoundError, match=r"shapes names 'a', which the cut does not cross.*'e'"):
        split_at(sm.skip_net(), "e", shapes={"a": [1, 2, 3]})


@pytest.mark.corpus
def test_mlprogram_split_model_writes_packages(tmp_path):
    pkg = CORPUS / "generated/shared_backbone_classifier.mlpackage"
    paths = split_model(pkg, "input_31_cast_fp16", tmp_path, name="P")
    assert paths["pipeline"].suffix == ".mlpackage"
    assert verify(pkg, paths["pipeline"], search_path=str(tmp_path), samples=1).ok


@pytest.mark.corpus
def test_cli_split_of_a_program_refuses_freeze_backbone_by_name(tmp_path, capsys):
    pkg = CORPUS / "generated/shared_backbone_classifier.mlpackage"
    out = tmp_path / "out"
    assert main(["split", str(pkg), "--at", "input_31_cast_fp16", "-o", str(out), "--freeze-backbone"]) == 1
    assert "option 'freeze_backbone' (--freeze-backbone) is not supported for ML Programs" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.corpus
def test_not_a_neural_network():
    with pytest.raises(UnsupportedError, match="has no neural-network layers"):
        split_at(CORPUS / "generated/sklearn_scaler_logreg.mlmodel", "x")


# --------------------------------------------------------------------------- CLI

def test_cli_split_linked(tmp_path, capsys):
    src = tmp_path / "Skip.mlmodel"
    save(sm.skip_net(image=True, classifier=True), src)
    out = tmp_path / "out"
    assert main(["split", str(src), "--at", "e", "-o", str(out), "--link"]) == 0
    printed = capsys.readouterr().out
    for name in ("SkipBackbone.mlmodel", "SkipHead.mlmodel", "Skip.mlmodel"):
        assert (out / name).exists() and name in printed
    stub = load_spec(out / "Skip.mlmodel").pipelineClassifier.pipeline.models[0]
    assert stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue == "SkipBackbone.mlmodelc"
    assert verify(src, out / "Skip.mlmodel", search_path=str(out)).ok
    assert main(["split", str(src), "--at", "c", "-o", str(out)]) == 1
    assert "does not separate" in capsys.readouterr().err


def test_cut_blob_that_is_also_an_output():
    spec = sm.skip_net()
    extra = spec.description.output.add()
    extra.name = "e"
    extra.type.multiArrayType.dataType = extra.type.multiArrayType.FLOAT32   # shape left open
    backbone, head = split_at(spec, "e")
    assert [f.name for f in backbone.description.output] == ["e"]
    assert [f.name for f in head.description.output] == ["g"]
    pipe = split_pipeline(spec, backbone, head)
    assert [f.name for f in pipe.description.output] == ["g", "e"]
    # Core ML needs the pipeline output typed like the stage that makes it, so the open shape is filled
    assert list(pipe.description.output[1].type.multiArrayType.shape) == [1, 4, 8, 8]
    assert not errors(pipe)
    report = verify(spec, pipe)
    assert all(o.ok for o in report.outputs) and {o.name for o in report.outputs} == {"g", "e"}
    assert report.interface == ["output 'e': MultiArray<FLOAT32>[] vs MultiArray<FLOAT32>[1,4,8,8]"]


def test_cut_blob_not_on_the_way_to_an_output():
    spec = sm.skip_net()
    side = spec.neuralNetwork.layers.add()       # a dead branch: nobody reads "side"
    side.name, side.input[:], side.output[:] = "dead", ["b"], ["side"]
    side.activation.ReLU.SetInParent()
    with pytest.raises(SpecSurgeryError, match="'side' are not used after the cut"):
        split_at(spec, "side")


def _miswired(kind: str):
    """tiny_nn (x -fc-> h -relu-> y) with a cycle, an undefined blob or layers out of order."""
    from nnbuild import tiny_nn

    spec = tiny_nn()
    nn = spec.neuralNetwork
    if kind == "cycle":
        nn.layers[0].input[0] = "y"           # fc reads what relu writes from fc's output
    elif kind == "undefined":
        nn.layers[1].input[0] = "ghost"
    else:                                     # relu listed before fc
        relu = type(nn.layers[1])()
        relu.CopyFrom(nn.layers[1])
        del nn.layers[1]
        nn.layers.insert(0, relu)
    return spec


@pytest.mark.parametrize("kind, match", [
    ("cycle", r"has a cycle: relu -\[y\]-> fc -\[h\]-> relu"),
    ("undefined", r"split: layer 'relu' reads 'ghost', which no model input or layer produces"),
    ("order", r"split: layer 'relu' reads 'h' before the layer that writes it"),
])
def test_miswired_network_names_the_real_culprit(kind, match):
    # used to say "'y' is read but never produced" for a cycle
    with pytest.raises(SpecSurgeryError, match=match):
        split_at(_miswired(kind), "h")


def test_split_model_never_overwrites_its_input(tmp_path):
    from nnbuild import tiny_nn

    src = tmp_path / "m.mlmodel"
    save(tiny_nn(), src)
    before = src.read_bytes()
    with pytest.raises(SpecSurgeryError, match="would overwrite the input model"):
        split_model(src, "h", tmp_path)            # the pipeline would be tmp_path/m.mlmodel
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.mlmodel"]


def test_split_model_is_all_or_nothing(tmp_path, monkeypatch):
    from nnbuild import tiny_nn

    import specsurgery.io as io_mod

    real_save = io_mod.save

    def failing_save(model, path, **kw):
        if Path(path).name == "m.mlmodel":
            raise SpecSurgeryError("pipeline refused")
        return real_save(model, path, **kw)

    monkeypatch.setattr(io_mod, "save", failing_save)
    with pytest.raises(SpecSurgeryError, match="pipeline refused"):
        split_model(tiny_nn(), "h", tmp_path / "out", name="m")
    assert list((tmp_path / "out").iterdir()) == []     # backbone and head removed again


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_split_model_base_name_is_a_plain_stem(name, tmp_path):
    # "" used to write a hidden ".mlmodel", "a/b" a sub-folder
    from nnbuild import tiny_nn

    with pytest.raises(SpecSurgeryError, match="must be a plain file stem"):
        split_model(tiny_nn(), "h", tmp_path / "out", name=name)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- a stage of a pipeline (detectors)

DET_LABELS = ["cat", "dog", "bird"]


def raw_detector(n=12):
    """A raw NN detector built in code: features [n, 6] -> shared trunk 'h' [n, 8] -> class
    confidences [n, 3] and boxes [n, 4] (EXACT array mapping, as Turi Create writes it)."""
    from specsurgery._proto import Model_pb2

    m = Model_pb2.Model()
    m.specificationVersion = 4
    nn = m.neuralNetwork
    nn.arrayInputShapeMapping = 1
    f = m.description.input.add(name="features")
    f.type.multiArrayType.dataType = f.type.multiArrayType.FLOAT32
    f.type.multiArrayType.shape.extend([n, 6])
    rng = np.random.default_rng(0)

    def matmul(name, inp, k_in, k_out):
        bm = nn.layers.add(name=name, input=[inp], output=[name]).batchedMatmul
        bm.weightMatrixFirstDimension, bm.weightMatrixSecondDimension = k_in, k_out
        bm.weights.floatValue.extend(rng.standard_normal(k_in * k_out).tolist())

    matmul("trunk", "features", 6, 8)
    nn.layers.add(name="relu", input=["trunk"], output=["h"]).activation.ReLU.SetInParent()
    matmul("logits", "h", 8, 3)
    matmul("box_raw", "h", 8, 4)
    nn.layers.add(name="softmax", input=["logits"], output=["scores"]).softmaxND.axis = -1
    nn.layers.add(name="sigmoid", input=["box_raw"], output=["boxes"]).activation.sigmoid.SetInParent()
    for name, k in (("scores", 3), ("boxes", 4)):
        o = m.description.output.add(name=name)
        o.type.multiArrayType.dataType = o.type.multiArrayType.DOUBLE
        o.type.multiArrayType.shape.extend([n, k])
    return m


def nn_detector():
    from specsurgery.ops.nms import add_nms

    return add_nms(raw_detector(), confidence="scores", coordinates="boxes", labels=DET_LABELS)


def assert_same_interface(a, b):
    a, b = getattr(a, "spec", a), getattr(b, "spec", b)
    assert list(a.description.input) == list(b.description.input)
    assert list(a.description.output) == list(b.description.output)
    assert a.description.metadata == b.description.metadata
    assert S.model_type(a) == S.model_type(b)


@pytest.mark.parametrize("link", [False, True])
def test_split_the_first_stage_of_a_detector(tmp_path, link):
    det = nn_detector()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SurgeryNote)
        paths = split_model(det, "h", tmp_path, name="D", stage="detector", link=link)
    pipe = load_spec(paths["pipeline"])
    stages = S.pipeline_of(pipe)
    assert list(stages.names) == ["detector_backbone", "detector_head", "nms"]
    assert [m.WhichOneof("Type") for m in stages.models] == [
        "linkedModel" if link else "neuralNetwork", "neuralNetwork", "nonMaximumSuppression"]
    assert stages.models[2] == det.pipeline.models[1]          # the NMS stage, labels and thresholds unchanged
    assert_same_interface(det, pipe)
    assert [f.name for f in load_spec(paths["backbone"]).description.output] == ["h"]
    assert [f.name for f in load_spec(paths["head"]).description.output] == ["scores", "boxes"]
    assert not errors(paths["backbone"]) and not errors(paths["head"])
    assert [f for f in check(paths["pipeline"], search_path=str(tmp_path)) if f.severity == "error"] == []
    report = verify(det, paths["pipeline"], search_path=str(tmp_path), samples=3)
    assert report.ok, report.summary()


def test_split_at_a_stage_gives_the_stage_halves_and_the_pipeline():
    from specsurgery.ops.split import split_stage_pipeline

    det = nn_detector()
    backbone, head = split_at(det, "h", stage="detector")
    assert [f.name for f in backbone.description.input] == ["features"]
    pipe = split_stage_pipeline(det, 0, backbone, head)   # a stage index works too
    assert list(pipe.pipeline.names) == ["detector_backbone", "detector_head", "nms"]
    assert not errors(pipe)
    assert verify(det, pipe, samples=2).ok
    assert det.pipeline.names[0] == "detector"             # the input is not edited


def test_split_of_a_pipeline_names_the_stage_option_and_refuses_what_cannot_be_cut(tmp_path, capsys):
    det = nn_detector()
    with pytest.raises(UnsupportedError, match=r"has no neural-network layers.*--stage detector"):
        split_at(det, "h")
    with pytest.raises(UnsupportedError, match=r"stage 'nms' is a nonMaximumSuppression.*--stage detector"):
        split_at(det, "h", stage="nms")
    with pytest.raises(NotFoundError, match="detectr"):
        split_at(det, "h", stage="detectr")
    with pytest.raises(UnsupportedError, match="option 'stage' .* needs a pipeline"):
        split_at(raw_detector(), "h", stage="detector")
    with pytest.raises(UnsupportedError, match="option 'inplace' is not supported with 'stage'"):
        split_at(det, "h", stage="detector", inplace=True)
    with pytest.raises(NotFoundError, match="ghost"):
        split_at(det, "ghost", stage="detector")
    src = save(det, tmp_path / "Det.mlmodel")
    assert main(["split", str(src), "--at", "h", "-o", str(tmp_path / "o"), "--stage", "nms"]) == 1
    assert "--stage detector" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_cut_blob_named_like_a_pipeline_feature_is_refused(tmp_path):
    spec = nn_detector()
    # a stage whose cut blob is called like the pipeline's output 'confidence'
    for layer in spec.pipeline.models[0].neuralNetwork.layers:
        layer.output[:] = ["confidence" if o == "h" else o for o in layer.output]
        layer.input[:] = ["confidence" if i == "h" else i for i in layer.input]
    with pytest.raises(SpecSurgeryError, match="'confidence' of stage 'detector' have the name of a feature"):
        split_model(spec, "confidence", tmp_path / "out", name="D", stage="detector")
    assert not (tmp_path / "out").exists()


def test_cli_split_stage(tmp_path, capsys):
    src = save(nn_detector(), tmp_path / "Det.mlmodel")
    out = tmp_path / "out"
    assert main(["split", str(src), "--at", "h", "--stage", "detector", "-o", str(out), "--link"]) == 0
    printed = capsys.readouterr().out
    for name in ("DetBackbone.mlmodel", "DetHead.mlmodel", "Det.mlmodel"):
        assert (out / name).exists() and name in printed
    stub = load_spec(out / "Det.mlmodel").pipeline.models[0]
    assert stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue == "DetBackbone.mlmodelc"
    assert main(["check", str(out / "Det.mlmodel")]) == 0
    assert verify(src, out / "Det.mlmodel", search_path=str(out)).ok
