"""The CLI verbs on .mlpackage models: run --function, check, dedupe --multifunction."""

import shutil

import numpy as np
import pytest

from conftest import CORPUS
from specsurgery.cli import main

pytestmark = pytest.mark.corpus

PAIR = ["shared_backbone_classifier", "shared_backbone_segmenter"]


def _inputs(tmp_path):
    out = []
    for n in PAIR:
        shutil.copytree(CORPUS / "generated" / f"{n}.mlpackage", tmp_path / f"{n}.mlpackage")
        out.append(str(tmp_path / f"{n}.mlpackage"))
    return out


def test_dedupe_multifunction_then_run_a_function(tmp_path, capsys):
    inputs = _inputs(tmp_path)
    assert main(["dedupe", *inputs, "-o", str(tmp_path / "mf"), "--multifunction"]) == 0
    text = capsys.readouterr().out
    assert "one multifunction package (iOS 18+)" in text and "linked backbone pipelines" in text
    pkg = tmp_path / "mf" / "Models.mlpackage"
    assert main(["check", str(pkg)]) == 0
    np.save(tmp_path / "img.npy", np.zeros((64, 64, 3), np.uint8))
    assert main(["run", str(pkg), "--function", "shared_backbone_segmenter",
                 "--input", f"image={tmp_path / 'img.npy'}", "-o", str(tmp_path / "o.npz")]) == 0
    assert np.load(tmp_path / "o.npz")["segmentation"].shape == (1, 5, 64, 64)
    assert main(["run", str(pkg), "--function", "nope", "--input", f"image={tmp_path / 'img.npy'}",
                 "-o", str(tmp_path / "o.npz")]) == 1
    assert "unknown function" in capsys.readouterr().err


def test_check_reports_a_truncated_weight_file(tmp_path, capsys):
    inputs = _inputs(tmp_path)
    wfile = tmp_path / f"{PAIR[0]}.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    wfile.write_bytes(wfile.read_bytes()[:4096])
    assert main(["check", inputs[0]]) == 1
    out = capsys.readouterr()
    assert "too short" in out.out + out.err and "(4096 bytes)" in out.out + out.err


def test_split_then_pipeline_link_unlink_packages_from_the_cli(tmp_path, capsys):
    # pipeline/link/unlink wrote the .mlpackage, then died printing its spec version
    # ("'MLPackage' object has no attribute ...") and exited 1
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    parts = tmp_path / "parts"
    assert main(["split", str(src), "--at", "input_29_cast_fp16", "-o", str(parts), "--name", "m"]) == 0
    capsys.readouterr()
    steps = [
        ["pipeline", str(parts / "mBackbone.mlpackage"), str(parts / "mHead.mlpackage"),
         "-o", str(tmp_path / "p.mlpackage")],
        ["link", str(parts / "m.mlpackage"), "--stage", "backbone", "--file", "mBackbone.mlmodelc",
         "-o", str(parts / "linked.mlpackage")],
        ["unlink", str(parts / "linked.mlpackage"), "-o", str(tmp_path / "u.mlpackage")],
    ]
    for argv in steps:
        assert main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert out.startswith("wrote ") and "spec version 6" in out, out
    assert main(["check", str(tmp_path / "p.mlpackage"), str(tmp_path / "u.mlpackage")]) == 0


def test_suggest_cuts_on_a_program_stage_of_a_pipeline_package(tmp_path, capsys):
    # --stage was ignored for ML Programs: "expected an mlProgram model, got pipelineClassifier"
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    assert main(["split", str(src), "--at", "input_29_cast_fp16", "-o", str(tmp_path), "--name", "m"]) == 0
    capsys.readouterr()
    assert main(["suggest-cuts", "--json", str(tmp_path / "m.mlpackage"), "--stage", "head"]) == 0
    import json

    cuts = json.loads(capsys.readouterr().out)
    assert cuts and cuts[-1]["weight_share"] > 0.9
