"""Rendering: deterministic DOT, SVG with one node per layer/input/output, clusters, cut, collapse."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import CORPUS, VALID_FILES, corpus_id
from specsurgery._proto import Model_pb2
from specsurgery.errors import NotFoundError, SpecSurgeryError
from specsurgery.graph import build_graph
from specsurgery.io import serialize
from specsurgery.render import render, to_dot
from synthetic_nets import NetBuilder, residual_network, synthetic_network

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot not installed")
SVG = "{http://www.w3.org/2000/svg}"


def svg_node_list(path: Path) -> list:
    """Titles (node ids) of every node group in an SVG written by Graphviz."""
    root = ET.parse(path).getroot()
    return [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.get("class") == "node"]


def svg_node_titles(path: Path) -> set:
    return set(svg_node_list(path))


def expected_nodes(model) -> set:
    """Ids that must be drawn: every layer, every weight-carrying or compute op, top inputs/outputs."""
    gi = build_graph(model)
    out = set()
    for n, d in gi.g.nodes(data=True):
        t = d["type"]
        if t in ("layer", "linked", "model", "classifier", "preprocess"):
            out.add(n)
        elif t in ("input", "output") and d["path"] == "":
            out.add(n)
        elif t == "op" and d["kind"] != "const":
            out.add(n)
    return out


def backbone_pipeline(tmp_path: Path) -> Path:
    """pipeline [linked 'backbone' -> Backbone.mlmodelc, NN 'head'] plus Backbone.mlmodel beside it."""
    bb = NetBuilder({"x": [1, 2, 4, 4]}, {"feat": [1, 2, 4, 4]})
    bb.conv("conv", "x", "c", 2, 2)
    bb.relu("relu", "c", "feat")
    (tmp_path / "Backbone.mlmodel").write_bytes(serialize(bb.spec))
    head = NetBuilder({"feat": [1, 2, 4, 4]}, {"y": [1, 2, 4, 4]})
    head.relu("head_relu", "feat", "y")
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.description.input.add().CopyFrom(bb.spec.description.input[0])
    spec.description.output.add().CopyFrom(head.spec.description.output[0])
    stub = spec.pipeline.models.add()
    stub.specificationVersion = 4
    stub.description.CopyFrom(bb.spec.description)
    stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue = "Backbone.mlmodelc"
    stub.linkedModel.linkedModelFile.linkedModelSearchPath.defaultValue = ".:$BUNDLE_MAIN"
    spec.pipeline.models.add().CopyFrom(head.spec)
    spec.pipeline.names.extend(["backbone", "head"])
    path = tmp_path / "App.mlmodel"
    path.write_bytes(serialize(spec))
    return path


@pytest.mark.corpus
@pytest.mark.parametrize("path", VALID_FILES, ids=corpus_id)
def test_every_corpus_file_renders_dot_deterministically(path):
    text = to_dot(path)
    assert text.startswith("digraph model {") and text.rstrip().endswith("}")
    assert to_dot(path) == text
    for node in expected_nodes(path):
        assert f'"{node}" [' in text, node


@pytest.mark.corpus
@needs_dot
@pytest.mark.parametrize("path", VALID_FILES, ids=corpus_id)
def test_every_corpus_file_renders_svg(path, tmp_path):
    out = render(path, tmp_path / "g.svg")
    nodes = svg_node_list(out)
    missing = expected_nodes(path) - set(nodes)
    assert not missing
    # exactly one node per layer, input and output
    assert len(nodes) == len(set(nodes))
    gi = build_graph(path)
    for kind in ("layer", "input", "output"):
        want = [n for n, d in gi.g.nodes(data=True) if d["type"] == kind and (kind == "layer" or d["path"] == "")]
        assert sorted(n for n in nodes if n.startswith(kind + ":")) == sorted(want)


def test_same_spec_same_text_and_copy():
    spec = residual_network(blocks=2, classes=3, image=True)
    again = Model_pb2.Model()
    again.ParseFromString(serialize(spec))
    assert to_dot(spec) == to_dot(again)
    assert to_dot(spec, rankdir="LR") != to_dot(spec)


def test_labels_carry_params_weights_and_shapes():
    text = to_dot(residual_network(blocks=1, channels=8, size=16, classes=3, image=True))
    assert "stem_conv\\nconvolution k3x3 3->8ch\\nW [8,3,3,3] 896 B float32" in text
    assert 'fillcolor="#cfe2f3"' in text                  # Layer category colour
    assert "invhouse" in text and "house" in text          # inputs and outputs drawn apart
    assert "rank=source" in text and "rank=sink" in text


def test_pipeline_clusters_and_linked_stub(tmp_path):
    app = backbone_pipeline(tmp_path)
    text = to_dot(app)
    assert 'label="backbone: linkedModel v4"' in text and 'label="head: neuralNetwork v4"' in text
    assert "Backbone.mlmodelc\\nsearch path: .:$BUNDLE_MAIN\\n(resolved: Backbone.mlmodel)" in text
    assert '"linked:backbone" -> "layer:head/head_relu"' in text


def test_expand_linked_draws_the_target(tmp_path):
    app = backbone_pipeline(tmp_path)
    text = to_dot(app, expand_linked=True)
    assert '"linked:backbone>layer:conv"' in text and '"linked:backbone"' not in text
    assert "backbone: linkedModel -> Backbone.mlmodelc" in text
    assert '"input:x" -> "linked:backbone>layer:conv"' in text
    assert '"linked:backbone>layer:relu" -> "layer:head/head_relu"' in text
    # a search path that finds nothing leaves the stub as a node
    (tmp_path / "elsewhere").mkdir()
    text = to_dot(app, expand_linked=True, search_path=str(tmp_path / "elsewhere"))
    assert '"linked:backbone"' in text and "(unresolved)" in text


def test_cut_preview_colours_both_sides():
    spec = residual_network(blocks=2, classes=3)
    text = to_dot(spec, cut="x1")
    assert "backbone: 9 layers" in text and "head: 11 layers" in text
    assert "cut: x1" in text
    with pytest.raises(NotFoundError, match=r"'x9'.*did you mean"):
        to_dot(spec, cut="x9")
    # every unknown cut is named at once, with the known blobs when nothing is near
    with pytest.raises(NotFoundError, match=r"unknown blobs: 'zzz'; 'x9'.*known: "):
        to_dot(spec, cut=["zzz", "x9"])
    with pytest.raises(SpecSurgeryError, match="un-cut path"):
        to_dot(spec, cut="block1_r1")   # inside a residual block: the skip bypasses it


def test_collapse_blocks_folds_repeated_bottlenecks():
    spec = residual_network(blocks=4, classes=3)
    text = to_dot(spec, collapse="blocks")
    assert text.count('"group:') >= 1
    assert "4x block (7 layers each)" in text
    assert '"layer:block2_conv1"' not in text and '"layer:stem_conv"' in text


def test_collapse_depth_folds_stages(tmp_path):
    app = backbone_pipeline(tmp_path)
    text = to_dot(app, collapse=1)
    assert '"collapsed:head"' in text and '"layer:head/head_relu"' not in text
    whole = to_dot(app, collapse=0)
    assert '"collapsed:"' in whole and "linked:" not in whole.replace('"collapsed:"', "")


def test_highlight_layer_and_blob_and_unknown():
    spec = residual_network(blocks=1)
    text = to_dot(spec, highlight=["block0_conv1", "block0_r1"])
    assert text.count('color="#d62728"') >= 2
    with pytest.raises(NotFoundError, match=r"'blok0_conv1'.*did you mean"):
        to_dot(spec, highlight="blok0_conv1")


def test_bad_options():
    spec = residual_network(blocks=1)
    with pytest.raises(SpecSurgeryError, match="rankdir"):
        to_dot(spec, rankdir="XY")
    with pytest.raises(SpecSurgeryError, match="collapse"):
        to_dot(spec, collapse="everything")
    program = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    if program.exists():
        with pytest.raises(SpecSurgeryError, match="cut preview needs a neural network; .*mlProgram"):
            to_dot(program, cut="x")
    with pytest.raises(SpecSurgeryError, match="unknown output format"):
        render(spec, "/tmp/never-written.jpeg")


def test_missing_dot_binary_message(tmp_path, monkeypatch):
    import specsurgery.render as r

    monkeypatch.setattr(r.shutil, "which", lambda name: None)
    with pytest.raises(SpecSurgeryError, match=r"apt-get install -y graphviz"):
        render(residual_network(blocks=1), tmp_path / "g.svg")
    out = render(residual_network(blocks=1), tmp_path / "g.dot")   # .dot needs no binary
    assert out.read_text().startswith("digraph")


@pytest.mark.corpus
@needs_dot
def test_missing_weight_file_still_renders(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    if not src.exists():
        pytest.skip("corpus package missing")
    pkg = tmp_path / "m.mlpackage"
    shutil.copytree(src, pkg)
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    text = to_dot(pkg)
    assert "weights MISSING: weight.bin" in text and "missing weight files" in text
    titles = svg_node_titles(render(pkg, tmp_path / "m.svg"))
    assert expected_nodes(pkg) <= titles


@needs_dot
def test_big_graph_svg_has_every_layer(tmp_path):
    spec = synthetic_network(300)
    titles = svg_node_titles(render(spec, tmp_path / "big.svg"))
    assert {f"layer:{l.name}" for l in spec.neuralNetwork.layers} <= titles


@needs_dot
@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_png_and_pdf(tmp_path, fmt):
    out = render(residual_network(blocks=1), tmp_path / f"g.{fmt}")
    head = out.read_bytes()[:5]
    assert head == (b"\x89PNG\r" if fmt == "png" else b"%PDF-")


def test_layered_layout_pins_positions_and_routes_skips():
    spec = residual_network(blocks=2, classes=3)
    text = to_dot(spec, layout="layered")
    assert text.startswith("// specsurgery: layered layout")
    assert text.count('!"') >= len(spec.neuralNetworkClassifier.layers)   # every node pinned
    # the skip connection x0 -> block0_add bends around the chain
    skip = next(l for l in text.splitlines() if '"layer:stem_relu" -> "layer:block0_add"' in l)
    assert skip.count(",") > 8
    big = to_dot(synthetic_network(700), shapes=False)      # auto: layered above 400 nodes
    assert big.startswith("// specsurgery: layered layout")
    assert not to_dot(synthetic_network(60)).startswith("//")
    with pytest.raises(SpecSurgeryError, match="layout"):
        to_dot(spec, layout="circo")


@needs_dot
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_layered_svg_has_every_layer(tmp_path, rankdir):
    spec = synthetic_network(90)
    titles = svg_node_titles(render(spec, tmp_path / "l.svg", layout="layered", rankdir=rankdir))
    assert {f"layer:{l.name}" for l in spec.neuralNetwork.layers} <= titles


def _odd_specs():
    cases = {}
    cases["no model type"] = Model_pb2.Model()
    s = Model_pb2.Model()
    s.specificationVersion = 4
    s.neuralNetwork.SetInParent()
    cases["network without layers"] = s
    s = Model_pb2.Model()
    s.specificationVersion = 4
    s.pipeline.SetInParent()
    cases["pipeline without stages"] = s
    s = residual_network(1)
    s.neuralNetwork.layers[1].name = s.neuralNetwork.layers[0].name
    cases["duplicate layer names"] = s
    s = residual_network(1)
    s.neuralNetwork.layers[2].input[0] = "ghost"
    cases["undefined blob"] = s
    s = residual_network(1)
    s.neuralNetwork.layers[0].input[0] = "x1"
    cases["cycle"] = s
    s = residual_network(1)
    s.neuralNetwork.layers.add().name = "empty"
    cases["layer without kind"] = s
    s = Model_pb2.Model()
    s.specificationVersion = 6
    s.mlProgram.SetInParent()
    cases["empty program"] = s
    s = residual_network(1, classes=2)
    s.neuralNetworkClassifier.labelProbabilityLayerName = "nope"
    cases["bad labelProbabilityLayerName"] = s
    s = Model_pb2.Model()
    s.specificationVersion = 4
    s.pipeline.models.add().linkedModel.SetInParent()
    cases["stub without link"] = s
    return cases


@pytest.mark.parametrize("name", sorted(_odd_specs()))
def test_odd_specs_inspect_tree_and_render(name):
    """Broken or unusual specs still inspect, tree and draw (check is what reports them)."""
    from specsurgery.summary import format_summary, summarize, tree_text

    spec = _odd_specs()[name]
    assert format_summary(summarize(spec, layers=True))
    assert tree_text(spec)
    for kw in ({}, {"layout": "layered"}, {"collapse": 0}):
        assert to_dot(spec, **kw).startswith(("digraph", "//"))
    try:
        to_dot(spec, collapse="blocks")
    except SpecSurgeryError as exc:   # the only acceptable failure: a named cycle
        assert name == "cycle" and "cycle" in str(exc)


@needs_dot
def test_names_with_quotes_and_brackets(tmp_path):
    b = NetBuilder({'in "x"': [1, 2, 4, 4]}, {"<y>": [1, 2, 4, 4]})
    b.relu('<lambda> "q" {}', 'in "x"', "<y>")
    titles = svg_node_titles(render(b.spec, tmp_path / "w.svg"))
    assert {'input:in "x"', 'layer:<lambda> "q" {}', "output:<y>"} <= titles
