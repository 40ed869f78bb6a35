"""Linked-model stubs: syntax rules, and with a search path the target's
interface compared with the stub's."""

from __future__ import annotations

import pytest

import nnbuild as b
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.io import serialize


def _rules(findings, severity="error"):
    return {f.rule for f in findings if f.severity == severity}


def _bundle(tmp_path, target):
    (tmp_path / "models").mkdir()
    stub_pipeline = b.tiny_pipeline([b.tiny_linked(search_path="models"), b.tiny_head()])
    path = tmp_path / "App.mlmodel"
    path.write_bytes(serialize(stub_pipeline))
    (tmp_path / "models" / "Backbone.mlmodel").write_bytes(serialize(target))
    return path


def test_syntax_warnings():
    spec = b.tiny_linked(file_name="Backbone.mlmodel", search_path=".::$BUNDLE_IDENTIFIER(com.x")
    found = _rules(check(spec), "warning")
    assert {"linked.not-compiled-name", "linked.empty-search-entry", "linked.bad-bundle-identifier"} <= found
    assert not _rules(check(spec))


def test_target_found_and_interface_matches(tmp_path):
    path = _bundle(tmp_path, b.tiny_nn())
    findings = check(path, search_path="models")
    assert not _rules(findings)


def test_target_interface_mismatch(tmp_path):
    path = _bundle(tmp_path, b.tiny_nn(n_hidden=5, output_name="y"))
    findings = check(path, search_path="models")
    bad = [f for f in findings if f.rule == "linked.interface-mismatch"]
    assert bad and "shape" in bad[0].message and bad[0].path == "backbone/output:y"


def test_target_missing_lists_every_place_tried(tmp_path):
    path = _bundle(tmp_path, b.tiny_nn())
    findings = check(path, search_path="elsewhere:$BUNDLE_MAIN")
    [f] = [f for f in findings if f.rule == "linked.not-found"]
    assert "elsewhere" in f.message and str(tmp_path) in f.message
    assert f.path == "backbone/linkedModel"


def test_without_search_path_the_target_beside_the_model_is_compared(tmp_path):
    # issue 17: plain check follows the stub's own search path from the model's folder
    path = _bundle(tmp_path, b.tiny_nn(n_hidden=5))
    assert _rules(check(path)) == {"linked.interface-mismatch"}
    (tmp_path / "good").mkdir()
    good = _bundle(tmp_path / "good", b.tiny_nn())
    assert not _rules(check(good)) and "linked.target-not-checked" not in _rules(check(good), "warning")


def test_without_search_path_a_missing_target_warns(tmp_path):
    path = _bundle(tmp_path, b.tiny_nn())
    (tmp_path / "models" / "Backbone.mlmodel").unlink()
    findings = check(path)
    assert not _rules(findings)
    [f] = [f for f in findings if f.rule == "linked.target-not-checked"]
    assert f.severity == "warning" and "--search-path" in f.message and "models" in f.message
    assert not [f for f in check(b.tiny_pipeline([b.tiny_linked(), b.tiny_head()]))
                if f.rule == "linked.target-not-checked"]          # a spec in memory has no folder


def test_default_resolution_reads_only_the_description(tmp_path, monkeypatch):
    from specsurgery import io

    path = _bundle(tmp_path, b.tiny_nn())
    calls = []
    real = io._parse
    monkeypatch.setattr(io, "_parse", lambda data, where: calls.append(where) or real(data, where))
    check(path)
    assert not any("Backbone" in str(c) for c in calls), calls


def test_cli_search_path(tmp_path, capsys):
    path = _bundle(tmp_path, b.tiny_nn(n_hidden=5))
    assert main(["check", str(path)]) == 1
    assert "[linked.interface-mismatch]" in capsys.readouterr().out
    assert main(["check", "--search-path", "models", str(path)]) == 1
    assert "[linked.interface-mismatch]" in capsys.readouterr().out
    assert main(["check", "--search-path", "elsewhere", str(path)]) == 1
    assert "[linked.not-found]" in capsys.readouterr().out


def test_invalid_target_is_reported(tmp_path):
    target = b.tiny_nn()
    target.neuralNetwork.layers[0].innerProduct.weights.floatValue.append(0.0)
    path = _bundle(tmp_path, target)
    [f] = [f for f in check(path, search_path="models") if f.rule == "linked.target-invalid"]
    assert "weights.count-mismatch" in f.message


def test_save_resolves_relative_search_path_from_the_target_folder(tmp_path, monkeypatch):
    from specsurgery.errors import CheckError
    from specsurgery.io import save

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "Backbone.mlmodel").write_bytes(serialize(b.tiny_nn()))
    monkeypatch.chdir(tmp_path / "models")  # cwd must not matter
    stub_pipeline = b.tiny_pipeline([b.tiny_linked(search_path="models"), b.tiny_head()])
    save(stub_pipeline, tmp_path / "App.mlmodel", search_path="models")
    with pytest.raises(CheckError, match="linked.not-found"):
        save(stub_pipeline, tmp_path / "other" / "App.mlmodel", search_path="models")
