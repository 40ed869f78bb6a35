"""CLI: inspect (text and --json, --layers), tree and render over the corpus and built specs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import CORPUS, INVALID_FILES, VALID_FILES, corpus_id
from specsurgery.cli import main
from specsurgery.io import serialize
from synthetic_nets import residual_network


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.corpus
@pytest.mark.parametrize("path", VALID_FILES, ids=corpus_id)
def test_inspect_every_corpus_file(path, capsys):
    code, out, err = run_cli(capsys, "inspect", path)
    assert code == 0, err
    assert "type:" in out and "spec version:" in out
    code, out, err = run_cli(capsys, "inspect", "--json", path)
    assert code == 0, err
    data = json.loads(out)
    assert data["spec_version"]["declared"] >= 1 and data["model_type"]
    assert data["inputs"] and data["outputs"]
    code, out, err = run_cli(capsys, "tree", path)
    assert code == 0 and out.splitlines()[0].startswith(str(path))


@pytest.mark.corpus
@pytest.mark.parametrize("path", INVALID_FILES, ids=corpus_id)
def test_inspect_invalid_file_one_line(path, capsys):
    code, out, err = run_cli(capsys, "inspect", path)
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(path) in err


def test_inspect_json_fields(tmp_path, capsys):
    model = tmp_path / "r.mlmodel"
    spec = residual_network(blocks=2, classes=3, image=True)
    spec.description.metadata.userDefined["team"] = "specsurgery"
    model.write_bytes(serialize(spec))
    code, out, _ = run_cli(capsys, "inspect", "--json", "--layers", model)
    data = json.loads(out)
    assert data["layers"]["count"] == len(spec.neuralNetworkClassifier.layers)
    assert data["layers"]["by_kind"]["convolution"] == 5
    assert data["metadata"]["userDefined"] == {"team": "specsurgery"}
    assert data["weight_bytes"] == {"float32": data["weight_bytes_total"]}
    assert data["class_labels"]["count"] == 3
    assert data["spec_version"]["minimum"] >= 4
    rows = {r["name"]: r for r in data["layer_list"]}
    assert rows["stem_conv"]["params"]["kernel"] == "3x3"
    assert rows["stem_conv"]["parameters"] == 8 * 3 * 9 + 8
    code, out, _ = run_cli(capsys, "inspect", "--layers", model)
    assert "stem_conv" in out and "userDefined[team] = specsurgery" in out


@pytest.mark.corpus
def test_inspect_storage_kinds(capsys):
    for name, storage in (("resnet_classifier_nn_fp16", "float16"), ("resnet_classifier_nn_int8", "linear8"),
                          ("resnet_classifier_nn_lut4", "lut4")):
        path = CORPUS / "generated" / f"{name}.mlmodel"
        if not path.exists():
            pytest.skip("corpus file missing")
        code, out, _ = run_cli(capsys, "inspect", "--json", path)
        assert storage in json.loads(out)["weight_bytes"], name


@pytest.mark.corpus
def test_inspect_linked_pipeline(capsys, tmp_path):
    path = CORPUS / "generated" / "linked_backbone_pipeline.mlmodel"
    if not path.exists():
        pytest.skip("corpus file missing")
    code, out, _ = run_cli(capsys, "inspect", "--json", path)
    data = json.loads(out)
    assert data["tree"]["stage_names"] == ["backbone", "head"]
    link = data["linked"][0]
    assert link["file_name"] == "Backbone.mlmodelc" and link["resolved"] is None
    # a copy with the target beside it resolves
    shutil.copy(path, tmp_path / "app.mlmodel")
    (tmp_path / "Backbone.mlmodel").write_bytes(serialize(residual_network(blocks=1)))
    code, out, _ = run_cli(capsys, "inspect", "--json", tmp_path / "app.mlmodel")
    assert json.loads(out)["linked"][0]["resolved"].endswith("Backbone.mlmodel")
    code, out, _ = run_cli(capsys, "tree", "--ascii", path)
    assert "|-- backbone: linkedModel v4 -> 'Backbone.mlmodelc'" in out


@pytest.mark.corpus
def test_missing_weight_file_inspects(tmp_path, capsys):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    if not src.exists():
        pytest.skip("corpus package missing")
    pkg = tmp_path / "m.mlpackage"
    shutil.copytree(src, pkg)
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    code, out, err = run_cli(capsys, "inspect", pkg)
    assert code == 0, err
    assert "weight file weights/weight.bin: MISSING" in out
    code, out, _ = run_cli(capsys, "inspect", "--json", pkg)
    files = json.loads(out)["ml_program"]["weight_files"]
    assert files and all(f["missing"] for f in files)
    code, out, err = run_cli(capsys, "render", pkg, "-o", tmp_path / "m.dot")
    assert code == 0, err
    assert "MISSING" in (tmp_path / "m.dot").read_text()


def test_render_cli(tmp_path, capsys):
    model = tmp_path / "r.mlmodel"
    model.write_bytes(serialize(residual_network(blocks=3, classes=3)))
    code, out, err = run_cli(capsys, "render", model, "-o", tmp_path / "r.dot", "--rankdir", "LR",
                             "--collapse", "blocks", "--highlight", "fc", "--cut", "x1")
    assert code == 0, err
    text = (tmp_path / "r.dot").read_text()
    assert 'rankdir="LR"' in text and "backbone:" in text
    code, out, err = run_cli(capsys, "render", model, "-o", tmp_path / "r.dot", "--cut", "nope")
    assert code == 1 and "unknown blob" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "render", model, "-o", tmp_path / "r.dot", "--collapse", "lots")
    assert code == 2
    if shutil.which("dot"):
        code, out, err = run_cli(capsys, "render", model, "-o", tmp_path / "r.svg")
        assert code == 0 and (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")


def test_inspect_does_not_import_heavy_modules(tmp_path):
    model = tmp_path / "r.mlmodel"
    model.write_bytes(serialize(residual_network(blocks=1)))
    code = ("import sys; from specsurgery.cli import main; main(['inspect', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'networkx', 'graphviz') if m in sys.modules]; "
            "ct = type(sys.modules.get('coremltools')).__name__; "
            "print('HEAVY', heavy, ct)")
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    assert "HEAVY [] _DeferredPackage" in out.stdout


@pytest.mark.corpus
def test_tree_json_and_stages_only(capsys):
    path = CORPUS / "generated" / "linked_backbone_pipeline.mlmodel"
    if not path.exists():
        pytest.skip("corpus file missing")
    code, out, _ = run_cli(capsys, "tree", "--json", path)
    tree = json.loads(out)
    assert [s["name"] for s in tree["stages"]] == ["backbone", "head"]
    assert tree["stages"][0]["linked"]["file_name"] == "Backbone.mlmodelc"
    code, out, _ = run_cli(capsys, "tree", "--stages-only", "--ascii", path)
    assert "gap [pooling]" not in out and "`-- head: neuralNetworkClassifier v4" in out


@pytest.mark.corpus
def test_palettized_program_weights_by_storage(capsys):
    path = CORPUS / "generated" / "shared_backbone_classifier_palettized.mlpackage"
    if not path.exists():
        pytest.skip("corpus file missing")
    code, out, _ = run_cli(capsys, "inspect", "--json", path)
    assert "lut4" in json.loads(out)["weight_bytes"]
