"""Bundle dedupe: matching, grouping, cuts, rewritten pipelines, files and CLI.

Small networks are built in code (image 3x8x8 -> a convolutional trunk -> one
of several heads); weights come from seeded generators so "the same backbone"
means byte-identical weights, as in models fine-tuned from one checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsurgery import io
from specsurgery._proto import FeatureTypes_pb2, Model_pb2
from specsurgery.cli import main
from specsurgery.errors import SpecSurgeryError
from specsurgery.ops.dedupe import dedupe, dedupe_files, plan_dedupe
from specsurgery.spec import model_type

from conftest import CORPUS

FT = FeatureTypes_pb2

# --------------------------------------------------------------------------- tiny builder


class Net:
    """A neuralNetwork(-Classifier/-Regressor) spec under construction."""

    def __init__(self, kind="neuralNetwork", *, scale=1 / 255.0, bias=(-0.5, -0.4, -0.3), size=8,
                 version=4, input_name="image", name_prefix=""):
        self.spec = Model_pb2.Model()
        self.spec.specificationVersion = version
        self.kind = kind
        self.nn = getattr(self.spec, kind)
        self.nn.arrayInputShapeMapping = 1
        self.nn.imageInputShapeMapping = 1
        self.p = name_prefix
        inp = self.spec.description.input.add()
        inp.name = input_name
        inp.shortDescription = "a photo"
        inp.type.imageType.width = size
        inp.type.imageType.height = size
        inp.type.imageType.colorSpace = FT.ImageFeatureType.RGB
        pre = self.nn.preprocessing.add()
        pre.featureName = input_name
        pre.scaler.channelScale = scale
        pre.scaler.redBias, pre.scaler.greenBias, pre.scaler.blueBias = bias
        meta = self.spec.description.metadata
        meta.author = "tests"
        meta.license = "CC0"
        meta.shortDescription = f"a {kind}"
        meta.userDefined["origin"] = "test_dedupe"
        self.last = input_name

    def _layer(self, name, inputs, output):
        layer = self.nn.layers.add()
        layer.name = self.p + name
        layer.input.extend(inputs)
        layer.output.append(self.p + output)
        self.last = self.p + output
        return layer

    def conv(self, name, cin, cout, seed, k=3, src=None):
        rng = np.random.default_rng(seed)
        layer = self._layer(name, [src or self.last], name + "_out")
        c = layer.convolution
        c.outputChannels, c.kernelChannels, c.nGroups = cout, cin, 1
        c.kernelSize.extend([k, k])
        c.stride.extend([1, 1])
        c.dilationFactor.extend([1, 1])
        c.same.asymmetryMode = 0
        c.hasBias = True
        c.weights.floatValue.extend(rng.normal(0, 0.3, cout * cin * k * k).astype(np.float32).tolist())
        c.bias.floatValue.extend(rng.normal(0, 0.1, cout).astype(np.float32).tolist())
        return self

    def relu(self, name, src=None):
        self._layer(name, [src or self.last], name + "_out").activation.ReLU.SetInParent()
        return self

    def add(self, name, a, b):
        self._layer(name, [a, b], name + "_out").add.SetInParent()
        return self

    def gap(self, name, channels):
        pool = self._layer(name, [self.last], name + "_out").pooling
        pool.type = pool.AVERAGE
        pool.globalPooling = True
        pool.valid.paddingAmounts.borderAmounts.add()
        pool.valid.paddingAmounts.borderAmounts.add()
        self._layer(name + "_flat", [self.last], name + "_flat_out").reshapeStatic.targetShape.extend([1, channels])
        return self

    def dense(self, name, cin, cout, seed, out=None):
        rng = np.random.default_rng(seed)
        layer = self._layer(name, [self.last], out or name + "_out")
        if out:
            layer.output[0] = out
            self.last = out
        ip = layer.innerProduct
        ip.inputChannels, ip.outputChannels, ip.hasBias = cin, cout, True
        ip.weights.floatValue.extend(rng.normal(0, 0.3, cin * cout).astype(np.float32).tolist())
        ip.bias.floatValue.extend(rng.normal(0, 0.1, cout).astype(np.float32).tolist())
        return self

    def output(self, blob, name=None):
        name = name or blob
        if name != blob:
            layer = self._layer("rename_" + name, [blob], name)
            layer.output[0] = name
            layer.activation.linear.alpha = 1.0
        out = self.spec.description.output.add()
        out.name = name
        out.shortDescription = f"the {name}"
        out.type.multiArrayType.dataType = FT.ArrayFeatureType.FLOAT32
        return self

    def classify(self, labels, prob="probs", label="classLabel"):
        sm = self._layer("softmax", [self.last], prob)
        sm.output[0] = prob
        sm.softmaxND.axis = -1
        self.nn.stringClassLabels.vector.extend(labels)
        self.nn.labelProbabilityLayerName = prob
        d = self.spec.description
        o = d.output.add()
        o.name = prob
        o.type.dictionaryType.stringKeyType.SetInParent()
        o = d.output.add()
        o.name = label
        o.type.stringType.SetInParent()
        d.predictedFeatureName, d.predictedProbabilitiesName = label, prob
        return self

    def regress(self, name="box"):
        self.output(self.last, name)
        self.spec.description.predictedFeatureName = name
        return self


def trunk(net: Net, *, seeds=(1, 2, 3), stage2_seed=4, width=8):
    """conv-relu, a residual block, and a last stage (the part fine-tuning changes)."""
    net.conv("stem", 3, width, seeds[0]).relu("stem_relu")
    skip = net.last
    net.conv("block_a", width, width, seeds[1]).relu("block_a_relu").conv("block_b", width, width, seeds[2])
    net.add("block_add", net.last, skip).relu("block_relu")
    net.conv("stage2", width, 2 * width, stage2_seed).relu("stage2_relu")
    return net


def classifier(**kw):
    net = trunk(Net("neuralNetworkClassifier", **{k: v for k, v in kw.items() if k in ("scale", "bias", "version", "name_prefix")}),
                **{k: v for k, v in kw.items() if k in ("seeds", "stage2_seed")})
    return net.gap("pool", 16).dense("fc", 16, 3, 10).classify(["cat", "dog", "eel"]).spec


def regressor(**kw):
    net = trunk(Net("neuralNetworkRegressor", **{k: v for k, v in kw.items() if k in ("scale", "bias", "version", "name_prefix")}),
                **{k: v for k, v in kw.items() if k in ("seeds", "stage2_seed")})
    return net.gap("pool", 16).dense("fc", 16, 4, 11).regress("box").spec


def segmenter(**kw):
    net = trunk(Net("neuralNetwork", **{k: v for k, v in kw.items() if k in ("scale", "bias", "version", "name_prefix")}),
                **{k: v for k, v in kw.items() if k in ("seeds", "stage2_seed")})
    net.conv("seg", 16, 3, 12, k=1)
    return net.output(net.last, "mask").spec


def embedder(**kw):
    net = trunk(Net("neuralNetwork", **{k: v for k, v in kw.items() if k in ("scale", "bias", "version", "name_prefix")}),
                **{k: v for k, v in kw.items() if k in ("seeds", "stage2_seed")})
    net.gap("pool", 16).dense("embed", 16, 8, 13)
    return net.output(net.last, "embedding").spec


def save_all(tmp_path, models: dict) -> list[Path]:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    paths = []
    for name, spec in models.items():
        path = src / f"{name}.mlmodel"
        io.save(spec, path, check=False)
        paths.append(path)
    return paths


def verify_all(out_dir: Path, originals: dict, names=None):
    from specsurgery.runtime import verify

    for name in names or originals:
        new = io.load(out_dir / f"{name}.mlmodel")
        report = verify(originals[name], new, search_path=str(out_dir), rtol=1e-5, atol=1e-5)
        assert report.ok, (name, report.summary())


def check_all(out_dir: Path):
    from specsurgery.check import check

    for path in sorted(out_dir.glob("*.mlmodel")):
        errors = [f for f in check(path, search_path=str(out_dir)) if f.severity == "error"]
        assert not errors, (path.name, errors)


# --------------------------------------------------------------------------- planning


def test_three_heads_share_the_trunk():
    plan = plan_dedupe({"clf": classifier(), "reg": regressor(), "seg": segmenter()})
    assert [g.members for g in plan.groups] == [["clf", "reg", "seg"]]
    group = plan.groups[0]
    assert group.name == "Backbone"
    # the whole trunk (4 convolutions) is shared; the cut is the trunk's last blob
    assert group.shared_layers == 9
    assert group.outputs == ["stage2_relu_out"]
    assert all(m.backbone == "Backbone" for m in plan.models)
    conv_bytes = 4 * ((8 * 3 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + (16 * 8 * 9 + 16))
    assert group.shared_bytes == conv_bytes
    assert "cut at stage2_relu_out" in group.why


def test_each_weight_is_hashed_once():
    models = {"clf": classifier(), "reg": regressor(), "seg": segmenter()}
    plan = plan_dedupe(models)
    stats = plan.stats
    assert stats.bytes_hashed == stats.weight_bytes_total == plan.total_weight_bytes
    from specsurgery.weights import layer_weights

    count = sum(len(layer_weights(l)) for s in models.values() for l in getattr(s, model_type(s)).layers)
    assert stats.weights_hashed == count


def test_names_do_not_matter_only_computation():
    # same weights, every layer and blob renamed: still one backbone
    plan = plan_dedupe({"a": classifier(), "b": regressor(name_prefix="other/")})
    assert len(plan.groups) == 1
    group = plan.groups[0]
    # the weightless pooling and flatten are the same computation too
    assert group.cuts["a"] == {"pool_flat_out": "pool_flat_out"}
    assert group.cuts["b"] == {"other/pool_flat_out": "pool_flat_out"}


def test_fine_tuned_last_stage_cuts_before_it():
    plan = plan_dedupe({"base": classifier(), "tuned": regressor(stage2_seed=99)})
    group = plan.groups[0]
    # the residual block is shared, stage2 (fine-tuned) is not
    assert group.outputs == ["block_relu_out"]
    assert group.shared_layers == 7
    assert "cut at block_relu_out" in group.why


def test_three_models_where_only_two_share():
    plan = plan_dedupe({"a": classifier(), "b": segmenter(), "c": embedder(seeds=(7, 8, 9), stage2_seed=10)})
    assert [g.members for g in plan.groups] == [["a", "b"]]
    c = next(m for m in plan.models if m.name == "c")
    assert c.backbone is None
    assert "architecture of a" in c.reason and "other weight values: nothing to share" in c.reason


def test_prefixes_of_different_depths_pick_the_best_grouping():
    # a, b share the whole trunk; c shares only the stem. (3-1) x stem < (2-1) x trunk
    models = {"a": classifier(), "b": regressor(), "c": segmenter(seeds=(1, 20, 21), stage2_seed=22)}
    plan = plan_dedupe(models, min_share=0.0)
    assert [g.members for g in plan.groups] == [["a", "b"]]
    assert "rather than {a, b, c}" in plan.groups[0].why
    c = next(m for m in plan.models if m.name == "c")
    assert "chosen grouping saves more" in c.reason
    assert plan.alternatives and set(plan.alternatives[0].members) == {"a", "b", "c"}


def test_shallower_backbone_for_all_wins_when_it_saves_more():
    # c shares the stem and the residual block (not stage2): 2 x block > 1 x whole trunk
    models = {"a": classifier(), "b": regressor(), "c": segmenter(stage2_seed=99)}
    plan = plan_dedupe(models)
    (group,) = plan.groups
    assert group.members == ["a", "b", "c"] and group.outputs == ["block_relu_out"]
    assert "rather than {a, b} sharing a deeper backbone" in group.why


def test_two_backbones_when_two_families():
    models = {"a": classifier(), "b": regressor(),
              "c": segmenter(seeds=(30, 31, 32), stage2_seed=33), "d": embedder(seeds=(30, 31, 32), stage2_seed=33)}
    plan = plan_dedupe(models, backbone_name="Trunk")
    assert sorted(g.name for g in plan.groups) == ["Trunk", "Trunk2"]
    assert sorted(sorted(g.members) for g in plan.groups) == [["a", "b"], ["c", "d"]]


def test_different_preprocessing_is_not_merged():
    plan = plan_dedupe({"a": classifier(), "b": regressor(scale=1 / 127.5),
                        "c": segmenter(bias=(-1.0, -1.0, -1.0))})
    assert not plan.shares_anything
    for m in plan.models:
        assert m.backbone is None
        assert "different input or preprocessing" in m.reason


def test_min_share_keeps_a_model_out():
    # b's own head is huge: the shared trunk is a small share of its weights
    net = trunk(Net("neuralNetwork"))
    net.gap("pool", 16).dense("big", 16, 2000, 5)
    big = net.output(net.last, "out").spec
    plan = plan_dedupe({"a": classifier(), "b": big}, min_share=0.5)
    assert not plan.shares_anything
    b = next(m for m in plan.models if m.name == "b")
    assert "--min-share is 50%" in b.reason
    assert plan_dedupe({"a": classifier(), "b": big}, min_share=0.01).shares_anything


def test_fp16_copies_match_only_when_asked():
    from specsurgery.weights import set_float16, iter_weight_params

    half = regressor()
    for layer in half.neuralNetworkRegressor.layers:
        kind = layer.WhichOneof("layer")
        for _, wp in iter_weight_params(getattr(layer, kind)):
            values = np.asarray(wp.floatValue, dtype=np.float32)
            set_float16(wp, values)
    full = classifier()
    # make the fp32 copy exactly representable in fp16 so the rounding matches
    for layer in full.neuralNetworkClassifier.layers:
        kind = layer.WhichOneof("layer")
        for _, wp in iter_weight_params(getattr(layer, kind)):
            values = np.asarray(wp.floatValue, dtype=np.float32).astype(np.float16).astype(np.float32)
            del wp.floatValue[:]
            wp.floatValue.extend(values.tolist())
    plain = plan_dedupe({"full": full, "half": half})
    assert not plain.shares_anything
    assert "--allow-fp16-match" in plain.models[0].reason
    plan = plan_dedupe({"full": full, "half": half}, allow_fp16_match=True)
    assert plan.shares_anything and plan.notes
    # the backbone keeps the smaller (fp16) copy; the saving is then the whole fp32 copy
    group = plan.groups[0]
    assert group.reference == "half"
    assert plan.models[0].shared_bytes == 2 * group.shared_bytes
    assert group.shared_bytes < group.saving < plan.models[0].shared_bytes   # minus the linking overhead


def test_output_blob_produced_by_shared_layer_stays_in_head():
    # 'feat' outputs the trunk's last blob itself; the classifier builds on it
    net = trunk(Net("neuralNetwork"))
    feat = net.output(net.last).spec
    plan = plan_dedupe({"feat": feat, "clf": classifier()})
    group = plan.groups[0]
    assert group.outputs == ["stage2_out"]       # the last ReLU stays in each head
    assert "stay in the heads" in group.why


def test_bad_arguments():
    with pytest.raises(SpecSurgeryError, match="2 or more models"):
        plan_dedupe([classifier()])
    with pytest.raises(SpecSurgeryError, match="min_share"):
        plan_dedupe([classifier(), regressor()], min_share=1.5)
    with pytest.raises(SpecSurgeryError, match="clashes"):
        plan_dedupe({"Backbone": classifier(), "b": regressor()})
    with pytest.raises(SpecSurgeryError, match="same name"):
        dedupe_files(["x/a.mlmodel", "y/a.mlmodel"], "out")


def test_best_possible_is_distinct_weights_stored_once():
    plan = plan_dedupe({"clf": classifier(), "reg": regressor(), "seg": segmenter()})
    conv_bytes = plan.groups[0].shared_bytes
    assert plan.total_weight_bytes - plan.distinct_weight_bytes == 2 * conv_bytes
    assert plan.best_possible == plan.total_before - 2 * conv_bytes


# --------------------------------------------------------------------------- outputs (needs surgery + runtime)


def _require_surgery():
    pytest.importorskip("specsurgery.ops.link")
    pytest.importorskip("specsurgery.ops.rename")
    pytest.importorskip("specsurgery.runtime.verify" if False else "specsurgery.runtime")


def test_rewritten_models_verify_through_the_linked_backbone(tmp_path):
    _require_surgery()
    originals = {"clf": classifier(), "reg": regressor(name_prefix="r/"), "seg": segmenter(version=5),
                 "emb": embedder()}
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["Backbone.mlmodel", "clf.mlmodel", "reg.mlmodel", "seg.mlmodel", "emb.mlmodel",
                            "dedupe-report.json"])
    check_all(out)
    verify_all(out, originals)
    for name, orig in originals.items():
        new = io.load_spec(out / f"{name}.mlmodel")
        assert model_type(new) == {"neuralNetworkClassifier": "pipelineClassifier",
                                   "neuralNetworkRegressor": "pipelineRegressor"}.get(model_type(orig), "pipeline")
        assert new.description.input == orig.description.input
        assert new.description.output == orig.description.output
        assert new.description.metadata == orig.description.metadata
        stub = new.WhichOneof("Type") and (getattr(new, model_type(new)).pipeline.models[0]
                                          if model_type(new) != "pipeline" else new.pipeline.models[0])
        link = stub.linkedModel.linkedModelFile
        assert link.linkedModelFileName.defaultValue == "Backbone.mlmodelc"
        assert link.linkedModelSearchPath.defaultValue == ".:$BUNDLE_MAIN"
        assert stub.specificationVersion >= 4
    saved = json.loads((out / "dedupe-report.json").read_text())
    assert saved["totals"]["after"] < saved["totals"]["before"]
    assert saved["totals"]["saving_share_of_best"] > 0.9


def test_fine_tuned_and_odd_one_out_end_to_end(tmp_path):
    # base and tuned share all but the last stage; other shares nothing and is copied unchanged
    _require_surgery()
    originals = {"base": classifier(), "tuned": segmenter(stage2_seed=99),
                 "other": embedder(seeds=(7, 8, 9), stage2_seed=10)}
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    (group,) = report["backbones"]
    assert group["members"] == ["base", "tuned"] and group["outputs"] == ["block_relu_out"]
    other = next(m for m in report["models"] if m["name"] == "other")
    assert other["backbone"] is None and "nothing to share" in other["reason"]
    assert (out / "other.mlmodel").read_bytes() == paths[2].read_bytes()
    check_all(out)
    verify_all(out, originals, ["base", "tuned"])


def test_cut_over_several_blobs_and_name_clash(tmp_path):
    # the head reads two trunk blobs (a skip across the cut), and one model uses the
    # reference's cut-blob name for one of its own head blobs
    _require_surgery()
    a = trunk(Net("neuralNetwork"))
    a.add("mix", "stage2_relu_out", "stage2_relu_out").conv("head_a", 16, 2, 40, k=1)
    a = a.output(a.last, "out_a").spec
    b = trunk(Net("neuralNetwork", name_prefix="b_"))
    b.conv("head_b", 16, 8, 41, k=1, src="b_stage2_relu_out")
    b.add("skip", b.last, "b_block_relu_out")    # reads a blob from before the cut too
    b.nn.layers[-1].output[0] = "stage2_relu_out"  # clash: a's cut-blob name, another blob here
    b.last = "stage2_relu_out"
    b = b.output("stage2_relu_out", "out_b").spec
    originals = {"a": a, "b": b}
    plan = plan_dedupe(originals)
    group = plan.groups[0]
    assert len(group.outputs) == 2 and "Backbone_stage2_relu_out" in group.outputs
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    dedupe_files(paths, out)
    check_all(out)
    verify_all(out, originals)


def test_nothing_shared_writes_nothing(tmp_path):
    paths = save_all(tmp_path, {"a": classifier(), "b": segmenter(seeds=(5, 6, 7), stage2_seed=8)})
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    assert not report["shares_anything"] and report["written"] == []
    assert not out.exists()


def test_dry_run_writes_nothing(tmp_path):
    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    out = tmp_path / "out"
    report = dedupe_files(paths, out, dry_run=True)
    assert report["shares_anything"] and report["dry_run"] and not out.exists()
    assert "Backbone" in report["table"]


def test_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    _require_surgery()
    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    from specsurgery.ops import dedupe as mod

    real_save = io.save
    calls = []

    def failing_save(model, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise SpecSurgeryError("disk full")
        return real_save(model, path, **kw)

    monkeypatch.setattr(mod.io, "save", failing_save)
    with pytest.raises(SpecSurgeryError, match="disk full"):
        dedupe_files(paths, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# --------------------------------------------------------------------------- corpus


CORPUS_SHARED = [CORPUS / "generated" / f"shared_backbone_{k}.mlmodel" for k in ("classifier", "regressor", "segmenter")]


@pytest.fixture(scope="module")
def corpus_shared():
    if not all(p.is_file() for p in CORPUS_SHARED):
        pytest.skip("corpus shared_backbone_* models not found")
    return CORPUS_SHARED


@pytest.mark.corpus
def test_corpus_shared_backbone_plan(corpus_shared):
    plan = plan_dedupe(corpus_shared)
    assert len(plan.groups) == 1 and len(plan.groups[0].members) == 3
    versions = {io.load_spec(p).specificationVersion for p in corpus_shared}
    assert len(versions) == 2                    # the segmenter is spec 5, the others 4
    assert plan.saving_share > 0.99


@pytest.mark.corpus
def test_corpus_shared_backbone_dedupe(corpus_shared, tmp_path):
    _require_surgery()
    out = tmp_path / "bundle"
    report = dedupe_files(corpus_shared, out)
    assert report["totals"]["saving_share_of_best"] >= 0.99
    check_all(out)
    originals = {p.stem: io.load_spec(p) for p in corpus_shared}
    verify_all(out, originals)
    reg = io.load_spec(out / "shared_backbone_regressor.mlmodel")
    assert model_type(reg) == "pipelineRegressor"
    seg = io.load_spec(out / "shared_backbone_segmenter.mlmodel")
    assert seg.specificationVersion >= 5


# --------------------------------------------------------------------------- CLI


def test_cli_dedupe(tmp_path, capsys):
    _require_surgery()
    from specsurgery.cli import main

    paths = save_all(tmp_path, {"clf": classifier(), "reg": regressor()})
    out = tmp_path / "out"
    assert main(["dedupe", *map(str, paths), "-o", str(out), "--backbone-name", "Shared"]) == 0
    text = capsys.readouterr().out
    assert "Shared.mlmodel" in text and "best possible" in text
    assert (out / "Shared.mlmodel").is_file() and (out / "clf.mlmodel").is_file()
    assert main(["dedupe", *map(str, paths), "-o", str(tmp_path / "o2"), "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and data["backbones"][0]["members"] == ["clf", "reg"]
    assert not (tmp_path / "o2").exists()


def test_cli_nothing_shared_exit_0(tmp_path, capsys):
    from specsurgery.cli import main

    paths = save_all(tmp_path, {"a": classifier(), "b": segmenter(seeds=(5, 6, 7), stage2_seed=8)})
    assert main(["dedupe", *map(str, paths), "-o", str(tmp_path / "out")]) == 0
    assert "share nothing" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_greedy_grouping_beyond_the_exact_limit(monkeypatch):
    from specsurgery.ops.dedupe import plan as mod

    models = {"a": classifier(), "b": regressor(), "c": segmenter(seeds=(30, 31, 32), stage2_seed=33),
              "d": embedder(seeds=(30, 31, 32), stage2_seed=33), "e": segmenter(seeds=(50, 51, 52))}
    exact = plan_dedupe(models)
    monkeypatch.setattr(mod, "EXACT_LIMIT", 2)
    greedy = plan_dedupe(models)
    assert sorted(sorted(g.members) for g in greedy.groups) == sorted(sorted(g.members) for g in exact.groups) \
        == [["a", "b"], ["c", "d"]]


def test_head_that_also_reads_the_image(tmp_path):
    # a head layer reads the (preprocessed) image input besides the cut blob
    _require_surgery()
    a = trunk(Net("neuralNetwork"))
    cut = a.last
    a.conv("from_image", 3, 16, 60, k=1, src="image").add("mix", a.last, cut)
    a = a.output(a.last, "out").spec
    originals = {"a": a, "b": segmenter()}
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    assert report["backbones"][0]["members"] == ["a", "b"]
    check_all(out)
    verify_all(out, originals)


def test_library_returns_specs_and_writes_nothing(tmp_path):
    _require_surgery()
    result = dedupe({"clf": classifier(), "reg": regressor()}, backbone_name="Trunk",
                    search_path="$BUNDLE_IDENTIFIER(com.example.models)")
    assert set(result.backbones) == {"Trunk"} and set(result.models) == {"clf", "reg"}
    backbone = result.backbones["Trunk"]
    assert model_type(backbone) == "neuralNetwork"
    assert [f.name for f in backbone.description.output] == ["pool_flat_out"]
    pipe = result.models["clf"].pipelineClassifier.pipeline
    assert list(pipe.names) == ["Trunk", "head"]
    link = pipe.models[0].linkedModel.linkedModelFile
    assert link.linkedModelFileName.defaultValue == "Trunk.mlmodelc"
    assert link.linkedModelSearchPath.defaultValue == "$BUNDLE_IDENTIFIER(com.example.models)"
    assert result.plan.models[0].measured and result.plan.saving > 0
    assert list(tmp_path.iterdir()) == []


def test_pbtxt_inputs_keep_their_format(tmp_path):
    _require_surgery()
    src = tmp_path / "in"
    src.mkdir()
    io.save(classifier(), src / "clf.pbtxt", check=False)
    io.save(regressor(), src / "reg.pbtxt", check=False)
    out = tmp_path / "out"
    dedupe_files([src / "clf.pbtxt", src / "reg.pbtxt"], out)
    assert sorted(p.name for p in out.iterdir()) == ["Backbone.mlmodel", "clf.pbtxt", "dedupe-report.json",
                                                      "reg.pbtxt"]
    assert model_type(io.load_spec(out / "clf.pbtxt")) == "pipelineClassifier"


def test_ml_programs_are_not_mixed_with_neural_networks(tmp_path):
    from specsurgery.errors import UnsupportedError

    nn = save_all(tmp_path, {"a": classifier()})[0]
    pkg = tmp_path / "b.mlpackage"
    with pytest.raises(UnsupportedError, match="cannot share a backbone.*b.mlpackage"):
        dedupe_files([nn, pkg], tmp_path / "out")


def test_output_folder_must_not_hold_the_inputs(tmp_path):
    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    with pytest.raises(SpecSurgeryError, match="holds the input"):
        dedupe_files(paths, paths[0].parent)


def test_backbone_asks_for_no_newer_os_than_its_oldest_member():
    _require_surgery()
    result = dedupe({"seg": segmenter(version=5), "clf": classifier(version=4)})
    assert result.backbones["Backbone"].specificationVersion == 4
    assert result.models["seg"].specificationVersion == 5
    assert result.models["clf"].specificationVersion == 4


def test_ml_programs_go_to_the_ml_program_dedupe(corpus, tmp_path, capsys):
    from specsurgery.cli import main

    pkgs = [corpus / "generated" / f"shared_backbone_{k}.mlpackage" for k in ("classifier", "segmenter")]
    if not all(p.is_dir() for p in pkgs):
        pytest.skip("corpus ML Program packages not found")
    pytest.importorskip("specsurgery.ops.dedupe.mlprogram")
    assert main(["dedupe", *map(str, pkgs), "-o", str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backbones"][0]["file"] == "Backbone.mlpackage"
    assert sorted(data["backbones"][0]["members"]) == ["shared_backbone_classifier", "shared_backbone_segmenter"]
    assert not (tmp_path / "out").exists()


def test_multifunction_is_for_ml_programs_only(tmp_path):
    from specsurgery.errors import UnsupportedError

    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    with pytest.raises(UnsupportedError, match="multifunction"):
        dedupe_files(paths, tmp_path / "out", multifunction=True)


def test_sharing_that_costs_more_than_it_saves_is_refused(tmp_path):
    # a 16-byte shared stem: the pipelines and stubs would outweigh it
    def tiny(seed):
        net = Net("neuralNetwork")
        net.conv("stem", 3, 1, 1, k=1).conv("head", 1, 4, seed, k=3)
        return net.output(net.last, "y").spec

    plan = plan_dedupe({"a": tiny(2), "b": tiny(3)}, min_share=0.0)
    assert not plan.shares_anything
    assert all("linking would cost" in m.reason for m in plan.models)
    assert any("linking would cost" in c.rejected for c in plan.alternatives)
    paths = save_all(tmp_path, {"a": tiny(2), "b": tiny(3)})
    assert dedupe_files(paths, tmp_path / "out", min_share=0.0)["written"] == []


def test_a_group_that_cannot_be_built_is_dropped_and_explained(monkeypatch):
    _require_surgery()
    from specsurgery.ops.dedupe import nn as mod

    def refuse(group, member, *args):
        raise SpecSurgeryError("cannot type the cut blob(s) 'x'")

    monkeypatch.setattr(mod, "_build_member", refuse)
    result = dedupe({"a": classifier(), "b": regressor()})
    assert not result.plan.shares_anything and not result.backbones
    assert all("could not be built" in m.reason and "cannot type" in m.reason for m in result.plan.models)
    assert result.plan.notes


@pytest.mark.parametrize("arch", ["unet", "transformer", "dict_outputs"])
def test_zoo_model_and_its_fine_tuned_copy(arch, tmp_path):
    # a converter's real output; the copy's middle weighted layer is "fine-tuned", so the cut
    # falls in the middle of the graph, across skip connections where the architecture has them
    _require_surgery()
    zoo = pytest.importorskip("zoo")
    from specsurgery.spec import nn_of
    from specsurgery.weights import layer_weights

    original = io.load_spec(zoo.converted(arch))
    tuned = io.copy_spec(original)
    weighted = [l for l in nn_of(tuned).layers if any(len(wp.floatValue) for _, wp in layer_weights(l))]
    layer = weighted[len(weighted) // 2]
    wp = next(wp for _, wp in layer_weights(layer) if len(wp.floatValue))
    values = np.asarray(wp.floatValue, dtype=np.float32) * 1.01 + 0.001
    del wp.floatValue[:]
    wp.floatValue.extend(values.tolist())
    originals = {"original": original, "tuned": tuned}
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    report = dedupe_files(paths, out, min_share=0.05)
    (group,) = report["backbones"]
    assert group["members"] == ["original", "tuned"]
    check_all(out)
    verify_all(out, originals)


def test_feature_extractor_model_beside_a_classifier_end_to_end(tmp_path):
    # 'feat' outputs the trunk's last blob: that layer stays in its head (an identity-free cut)
    _require_surgery()
    net = trunk(Net("neuralNetwork"))
    originals = {"feat": net.output(net.last).spec, "clf": classifier()}
    paths = save_all(tmp_path, originals)
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    assert report["backbones"][0]["outputs"] == ["stage2_out"]
    check_all(out)
    verify_all(out, originals)


def test_compiled_folder_is_refused_as_compiled_not_routed_to_ml_programs(tmp_path, capsys):
    # a .mlmodelc folder beside an .mlmodel used to be called an ML Program
    from nnbuild import tiny_nn

    from specsurgery.io import save

    save(tiny_nn(), tmp_path / "a.mlmodel")
    (tmp_path / "b.mlmodelc").mkdir()
    assert main(["dedupe", str(tmp_path / "a.mlmodel"), str(tmp_path / "b.mlmodelc"),
                 "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "a compiled model (.mlmodelc) cannot be read" in err and "ML Program" not in err


def test_output_under_a_file_is_a_save_error(tmp_path):
    # used to escape as FileExistsError
    from specsurgery.errors import SaveError

    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SaveError, match="afile is a file, not a folder"):
        dedupe_files(paths, tmp_path / "afile" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in"]


def test_every_option_reaches_the_backend_or_is_refused_by_name(tmp_path):
    # one public signature for both backends: an option a backend cannot honour is an error
    # naming the option and the backend, never dropped
    from specsurgery.errors import UnsupportedError

    models = {"a": classifier(), "b": regressor()}
    with pytest.raises(UnsupportedError, match=r"multifunction .*neuralNetwork"):
        dedupe(models, multifunction=True)
    with pytest.raises(UnsupportedError, match=r"multifunction .*neuralNetwork"):
        plan_dedupe(models, multifunction=True)
    seen = []
    result = dedupe(models, build=False, progress=seen.append)
    assert result.plan.shares_anything and result.backbones == {} and result.models == {}
    assert seen == ["read a", "read b"]


def test_files_of_a_group_that_cannot_be_built_are_not_written(tmp_path, monkeypatch):
    # the second pass builds and saves one model at a time: a group undone there leaves no file
    _require_surgery()
    from specsurgery.ops.dedupe import nn as mod

    def refuse(group, member, *args):
        raise SpecSurgeryError("cannot type the cut blob(s) 'x'")

    monkeypatch.setattr(mod, "_build_member", refuse)
    paths = save_all(tmp_path, {"a": classifier(), "b": regressor()})
    report = dedupe_files(paths, tmp_path / "out")
    assert not report["shares_anything"] and report["written"] == []
    assert all("could not be built" in m["reason"] for m in report["models"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_one_group_undone_while_writing_keeps_the_other(tmp_path, monkeypatch):
    _require_surgery()
    from specsurgery.ops.dedupe import nn as mod

    real = mod._build_member

    def refuse_second(group, member, *args):
        if group.name == "Trunk2":
            raise SpecSurgeryError("cannot type the cut blob(s) 'x'")
        return real(group, member, *args)

    monkeypatch.setattr(mod, "_build_member", refuse_second)
    models = {"a": classifier(), "b": regressor(),
              "c": segmenter(seeds=(30, 31, 32), stage2_seed=33), "d": embedder(seeds=(30, 31, 32), stage2_seed=33)}
    paths = save_all(tmp_path, models)
    kept = next(g.members for g in plan_dedupe(models, backbone_name="Trunk").groups if g.name == "Trunk")
    out = tmp_path / "out"
    report = dedupe_files(paths, out, backbone_name="Trunk")
    assert [(g["name"], g["members"]) for g in report["backbones"]] == [("Trunk", kept)]
    assert sorted(p.name for p in out.iterdir()) == ["Trunk.mlmodel", "a.mlmodel", "b.mlmodel", "c.mlmodel",
                                                      "d.mlmodel", "dedupe-report.json"]
    for name in set(models) - set(kept):    # unchanged, byte for byte
        assert (out / f"{name}.mlmodel").read_bytes() == (tmp_path / "in" / f"{name}.mlmodel").read_bytes()
    verify_all(out, models, names=[kept[0]])


# --------------------------------------------------------------------------- detectors (pipelines whose first stage is a network)

from detector_models import classifier_and_detector  # noqa: E402


def _stage_types(model):
    from specsurgery.spec import pipeline_of

    spec = getattr(model, "spec", model)
    return [m.WhichOneof("Type") for m in pipeline_of(spec).models]


def _same_interface(a, b):
    a, b = getattr(a, "spec", a), getattr(b, "spec", b)
    for field in ("input", "output"):
        assert list(getattr(a.description, field)) == list(getattr(b.description, field))
    assert a.description.metadata == b.description.metadata


@pytest.mark.parametrize("detector_first", [False, True])
def test_classifier_and_detector_share_a_backbone(tmp_path, detector_first):
    from specsurgery.check import check
    from specsurgery.runtime import verify

    clf, det = classifier_and_detector()
    src = tmp_path / "in"
    src.mkdir()
    originals = {"Classifier": clf, "Detector": det}
    order = ["Detector", "Classifier"] if detector_first else ["Classifier", "Detector"]
    paths = [io.save(originals[n], src / f"{n}.mlmodel") for n in order]
    out = tmp_path / "out"
    report = dedupe_files(paths, out)
    assert [g["members"] for g in report["backbones"]] == [order]
    assert sorted(p.name for p in out.iterdir()) == ["Backbone.mlmodel", "Classifier.mlmodel", "Detector.mlmodel",
                                                      "dedupe-report.json"]
    new_det, new_clf = io.load(out / "Detector.mlmodel"), io.load(out / "Classifier.mlmodel")
    assert model_type(new_det) == "pipeline" and model_type(new_clf) == "pipelineClassifier"
    assert _stage_types(new_det) == ["linkedModel", "neuralNetwork", "nonMaximumSuppression"]
    assert list(new_det.pipeline.names) == ["Backbone", "head", "nms"]
    assert new_det.pipeline.models[2] == det.pipeline.models[1]      # NMS: labels, thresholds unchanged
    assert _stage_types(new_clf) == ["linkedModel", "neuralNetworkClassifier"]
    for name, new in (("Detector", new_det), ("Classifier", new_clf)):
        _same_interface(originals[name], new)
        assert [f for f in check(out / f"{name}.mlmodel", search_path=str(out)) if f.severity == "error"] == []
        r = verify(originals[name], out / f"{name}.mlmodel", search_path=str(out), samples=2)
        assert r.ok, r.summary()
    before = sum(p.stat().st_size for p in paths)
    after = sum((out / n).stat().st_size for n in ("Backbone.mlmodel", "Classifier.mlmodel", "Detector.mlmodel"))
    assert after < before and report["totals"]["after"] == after
    det_row = next(m for m in report["models"] if m["name"] == "Detector")
    assert det_row["kind"] == "pipeline" and det_row["backbone"] == "Backbone"


def test_a_pipeline_whose_first_stage_is_no_network_is_left_unchanged(tmp_path):
    clf, det = classifier_and_detector()
    result = dedupe({"clf": clf, "det": det})
    deduped = result.models["det"]            # [linked backbone, head, nms]: its first stage is a stub
    plan = plan_dedupe({"clf": clf, "again": deduped})
    row = next(m for m in plan.models if m.name == "again")
    assert row.backbone is None
    assert "whose first stage is a linkedModel" in row.reason and "pipelines whose first stage is one" in row.reason


def test_cli_dedupe_of_a_classifier_and_a_detector(tmp_path, capsys):
    from specsurgery.spec import pipeline_of

    clf, det = classifier_and_detector()
    src = tmp_path / "in"
    src.mkdir()
    paths = [str(io.save(clf, src / "Classifier.mlmodel")), str(io.save(det, src / "Detector.mlmodel"))]
    assert main(["dedupe", *paths, "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert "Backbone.mlmodelc" in capsys.readouterr().out
    new = io.load_spec(tmp_path / "out" / "Detector.mlmodel")
    assert list(pipeline_of(new).names) == ["Backbone", "head", "nms"]
