"""suggest_cuts: articulation blobs with shapes and weight shares."""

from __future__ import annotations

import json

import pytest

import surgery_models as sm
from conftest import CORPUS
from specsurgery.cli import main
from specsurgery.errors import UnsupportedError
from specsurgery.io import save
from specsurgery.ops import split_at, suggest_cuts


def test_skip_net_cuts():
    cuts = suggest_cuts(sm.skip_net())
    assert [c.blob for c in cuts] == ["a", "b", "d", "e", "f"]    # never "c" (the skip bypasses it)
    by = {c.blob: c for c in cuts}
    assert by["b"].shape == [1, 4, 8, 8] and by["b"].layers_before == 2 and by["b"].layers_after == 5
    assert 0 < by["a"].weight_share < by["d"].weight_share < by["f"].weight_share == 1.0
    assert sm.skip_net().neuralNetwork.layers  # the input is not modified
    for c in cuts:           # every suggestion is a cut split_at accepts
        split_at(sm.skip_net(), c.blob)


@pytest.mark.corpus
def test_legacy_shapes_and_weight_share_on_corpus():
    cuts = suggest_cuts(CORPUS / "real/TinyDrawingEmbedding.mlmodel")
    by = {c.blob: c for c in cuts}
    assert by["max_pooling2d_6_output"].shape == [64, 3, 3]
    assert by["dense_3_output"].weight_share == 1.0
    shares = [c.weight_share for c in cuts]
    assert shares == sorted(shares)
    assert by["flatten_2_output"].to_json()["weight_share"] == pytest.approx(by["flatten_2_output"].weight_share, abs=1e-6)


@pytest.mark.corpus
def test_not_a_network():
    with pytest.raises(UnsupportedError):
        suggest_cuts(CORPUS / "generated/sklearn_scaler_logreg.mlmodel")


def test_cli_suggest_cuts(tmp_path, capsys):
    save(sm.skip_net(), tmp_path / "s.mlmodel")
    assert main(["suggest-cuts", str(tmp_path / "s.mlmodel")]) == 0
    text = capsys.readouterr().out
    assert "b " in text and "1x4x8x8" in text and "%" in text
    assert main(["suggest-cuts", str(tmp_path / "s.mlmodel"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["blob"] for r in rows] == ["a", "b", "d", "e", "f"]
    assert rows[-1]["weight_share"] == 1.0


def test_multi_blob_cuts_cover_skip_connections():
    cuts = suggest_cuts(sm.skip_net(), max_blobs=2)
    multi = [c for c in cuts if len(c.blobs) > 1]
    assert [c.blob for c in multi] == ["b,c"]
    assert multi[0].shapes == [[1, 4, 8, 8], [1, 4, 8, 8]] and multi[0].layers_before == 3
    backbone, head = split_at(sm.skip_net(), multi[0].blob)
    assert [f.name for f in head.description.input] == ["b", "c"]


def test_undefined_blob_is_an_error_not_no_cuts():
    # used to answer "no single blob separates the network"
    from nnbuild import tiny_nn

    from specsurgery.errors import SpecSurgeryError

    spec = tiny_nn()
    spec.neuralNetwork.layers[1].input[0] = "ghost"
    with pytest.raises(SpecSurgeryError, match="layer 'relu' reads 'ghost', which no model input"):
        suggest_cuts(spec)


@pytest.mark.parametrize("k", [0, -2])
def test_max_blobs_below_one_is_an_error(k):
    # used to be accepted silently (same output as 1)
    from specsurgery.errors import SpecSurgeryError

    with pytest.raises(SpecSurgeryError, match=r"--max-blobs\) .* must be a whole number >= 1"):
        suggest_cuts(sm.skip_net(), max_blobs=k)


def test_pipeline_without_stage_names_its_stages():
    from nnbuild import tiny_pipeline

    with pytest.raises(UnsupportedError, match=r"pipeline of stages backbone \(neuralNetwork\), head .*--stage"):
        suggest_cuts(tiny_pipeline())
