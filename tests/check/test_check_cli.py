"""`specsurgery check` in-process: exit codes, text and --json output."""

from __future__ import annotations

import json

import pytest

import nnbuild as b
from conftest import INVALID_FILES, VALID_FILES, corpus_id
from specsurgery.cli import main
from specsurgery.io import save, serialize


def _write(tmp_path, name, spec):
    path = tmp_path / name
    path.write_bytes(serialize(spec))
    return path


def test_valid_model_exits_zero(tmp_path, capsys):
    path = _write(tmp_path, "ok.mlmodel", b.tiny_nn())
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok (0 errors" in out


def test_broken_model_exits_one_and_names_rule(tmp_path, capsys):
    spec = b.tiny_nn()
    spec.neuralNetwork.layers[1].input[0] = "hidden"
    path = _write(tmp_path, "bad.mlmodel", spec)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "[nn.undefined-blob]" in out and "layer:relu" in out and "FAILED" in out


def test_json_output(tmp_path, capsys):
    good = _write(tmp_path, "ok.mlmodel", b.tiny_classifier())
    spec = b.tiny_pipeline()
    spec.pipeline.names.append("extra")
    bad = _write(tmp_path, "bad.mlmodel", spec)
    assert main(["check", "--json", str(good), str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    first, second = report["models"]
    assert first["ok"] is True and first["errors"] == 0
    assert second["ok"] is False
    assert {"severity", "path", "rule", "message"} <= set(second["findings"][0])
    assert "pipeline.names-count" in {f["rule"] for f in second["findings"]}


@pytest.mark.parametrize("content", [b"", b"\x08\x04\x12", b"garbage that is not protobuf \xff\xff"])
def test_unreadable_file_gives_one_line(tmp_path, capsys, content):
    path = tmp_path / "broken.mlmodel"
    path.write_bytes(content)
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in captured.err


def test_missing_file_and_good_file_together(tmp_path, capsys):
    good = _write(tmp_path, "ok.mlmodel", b.tiny_nn())
    assert main(["check", str(tmp_path / "nope.mlmodel"), str(good)]) == 1
    captured = capsys.readouterr()
    assert "nope.mlmodel" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "ok.mlmodel: ok" in captured.out


def test_corpus_invalid_files_one_line_each(corpus, capsys):
    if not INVALID_FILES:
        pytest.skip("no invalid files")
    assert main(["check", *map(str, INVALID_FILES)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(INVALID_FILES)


def test_whole_corpus_passes_at_the_cli(corpus, capsys):
    from test_check_corpus import KNOWN_INVALID

    good = [p for p in VALID_FILES if corpus_id(p) not in KNOWN_INVALID]
    assert main(["check", "-q", *map(str, good)]) == 0
    assert "error" not in capsys.readouterr().out
    bad = [p for p in VALID_FILES if corpus_id(p) in KNOWN_INVALID]
    if bad:
        assert main(["check", "-q", *map(str, bad)]) == 1


def test_warnings_as_errors(tmp_path, capsys):
    spec = b.tiny_nn()
    spec.description.input.add().CopyFrom(spec.description.input[0])
    spec.description.input[1].name = "unused"
    path = _write(tmp_path, "warn.mlmodel", spec)
    assert main(["check", str(path)]) == 0
    assert main(["check", "--warnings-as-errors", str(path)]) == 1
    assert "[nn.unused-input]" in capsys.readouterr().out


def test_save_refuses_invalid_model(tmp_path):
    from specsurgery.errors import CheckError

    spec = b.tiny_nn()
    spec.description.output[0].name = "other"
    with pytest.raises(CheckError, match="nn.output-not-produced"):
        save(spec, tmp_path / "x.mlmodel")
    assert not (tmp_path / "x.mlmodel").exists()


def test_explain_prints_what_a_rule_checks_and_its_source(capsys):
    assert main(["check", "--explain", "knn.samples-labels", "--explain", "feature.duplicate-name"]) == 0
    out = capsys.readouterr().out
    assert "knn.samples-labels (error)" in out and "KNearestNeighborsClassifierValidator.cpp" in out
    assert "feature.duplicate-name (warning)" in out and "ours only" in out


def test_explain_all_and_unknown_rule(capsys):
    assert main(["check", "--explain", "all"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n  from: ") > 150
    assert main(["check", "--explain", "tree.missing-chid"]) == 2
    assert "did you mean 'tree.missing-child'" in capsys.readouterr().err


def test_check_without_models_is_a_usage_error(capsys):
    assert main(["check"]) == 2
    assert "--explain" in capsys.readouterr().err
