"""Cross-cutting CLI error behaviour: one line on stderr, exit 1, the culprit,
the allowed values and the fix, every missing name at once, no partial files."""

from __future__ import annotations

import numpy as np
import pytest

from nnbuild import tiny_nn, tiny_pipeline
from specsurgery.cli import main
from specsurgery.errors import missing_message
from specsurgery.io import save


def _one_error(capsys) -> str:
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1, cap.err
    assert "Traceback" not in cap.err and "rerun with --debug" not in cap.err, cap.err
    return cap.err


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.mlmodel"
    save(tiny_nn(), path)
    return path


def test_missing_message_lists_known_names_when_nothing_is_near():
    msg = missing_message("blob", ["zzz", "hh"], ["x", "h", "y", ""])
    assert "'zzz'" in msg and "'hh' (did you mean 'h'?)" in msg
    assert msg.endswith("known: 'x', 'h', 'y'")        # no empty name, given order
    assert "known:" not in missing_message("blob", ["hh"], ["h"])   # a hint is enough
    long = missing_message("layer", ["q"], [f"l{i}" for i in range(40)])
    assert "... (40 in all)" in long
    assert "there is no input" in missing_message("input", ["a"], [])


def test_split_unknown_blobs_show_the_known_ones(tiny, tmp_path, capsys):
    assert main(["split", str(tiny), "--at", "relu_out,nope", "-o", str(tmp_path / "out")]) == 1
    err = _one_error(capsys)
    assert "'relu_out'" in err and "'nope'" in err and "known: 'x', 'h', 'y'" in err
    assert not (tmp_path / "out").exists()


def test_rename_lists_every_unknown_old_name(tiny, tmp_path, capsys):
    out = tmp_path / "r.mlmodel"
    assert main(["rename", str(tiny), "xx=a", "qq=b", "h=c", "-o", str(out)]) == 1
    err = _one_error(capsys)
    assert "'xx' (did you mean 'x'?)" in err and "'qq'" in err and "'h'" not in err.split("known")[0]
    assert not out.exists()
    # renames apply in order: the second one no longer finds 'x'
    assert main(["rename", str(tiny), "x=a", "x=b", "-o", str(out)]) == 1
    assert "'x' is already 'a'" in _one_error(capsys)
    assert main(["rename", str(tiny), "x=a", "a=b", "-o", str(out)]) == 0
    assert out.exists()


def test_run_checks_input_names_before_reading_files(tiny, tmp_path, capsys):
    assert main(["run", str(tiny), "--input", "xx=missing.npy", "--input", "foo=other.npy"]) == 1
    err = _one_error(capsys)
    assert "'xx' (did you mean 'x'?)" in err and "'foo'" in err and "known: 'x'" in err


def test_run_unreadable_npy_is_a_clean_error(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy\n")
    assert main(["run", str(tiny), "--input", f"x={bad}"]) == 1
    err = _one_error(capsys)
    assert "bad.npy" in err and "numpy.save" in err
    assert main(["run", str(tiny), "--input", "=x.npy"]) == 1
    assert "expected NAME=FILE" in _one_error(capsys)


def test_run_output_must_be_npz(tiny, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.ones(4, dtype=np.float32))
    out = tmp_path / "out.txt"
    assert main(["run", str(tiny), "--input", f"x={x}", "-o", str(out)]) == 1
    assert "*.npz" in _one_error(capsys)
    assert not out.exists()
    assert main(["run", str(tiny), "--input", f"x={x}", "-o", str(tmp_path / "out.npz")]) == 0


def test_link_without_stage_names_the_stages(tiny, tmp_path, capsys):
    pipe = tmp_path / "pipe.mlmodel"
    save(tiny_pipeline(), pipe)
    assert main(["link", str(pipe), "--file", "B.mlmodelc", "-o", str(tmp_path / "l.mlmodel")]) == 1
    assert "stages are backbone, head" in _one_error(capsys)
    assert main(["link", str(tiny), "--file", "B.mlmodelc", "-o", str(tmp_path / "l.mlmodel")]) == 1
    assert "not a pipeline, so only --standalone applies" in _one_error(capsys)
    assert not (tmp_path / "l.mlmodel").exists()


@pytest.mark.parametrize("verb", [["compress", "--fp16"], ["rename", "x=a"], ["pipeline"], ["extract", "--inputs", "x", "--outputs", "y"]])
def test_output_naming_the_input_is_refused(verb, tiny, capsys):
    before = tiny.read_bytes()
    argv = [verb[0], str(tiny)] + verb[1:] + ["-o", str(tiny.parent / "." / tiny.name)]
    assert main(argv) == 1
    assert "is the input model" in _one_error(capsys)
    assert tiny.read_bytes() == before


@pytest.mark.parametrize("verb", ["pipeline", "dedupe"])
def test_every_missing_model_file_is_named(verb, tiny, tmp_path, capsys):
    argv = [verb, str(tiny), str(tmp_path / "gone1.mlmodel"), str(tmp_path / "gone2.mlmodel"),
            "-o", str(tmp_path / "out")]
    assert main(argv) == 1
    err = _one_error(capsys)
    assert "gone1.mlmodel" in err and "gone2.mlmodel" in err
    assert not (tmp_path / "out").exists()


def test_run_without_inputs_says_how_to_pass_them(tiny, capsys):
    assert main(["run", str(tiny)]) == 1
    err = _one_error(capsys)
    assert "missing input 'x'" in err and "--input NAME=FILE" in err


@pytest.mark.parametrize("flag, value", [("--rtol", "-1"), ("--atol", "nan")])
def test_verify_refuses_a_negative_or_nan_tolerance(flag, value, tiny, capsys):
    assert main(["verify", str(tiny), str(tiny), flag, value]) == 1
    assert "a tolerance must be a number >= 0" in _one_error(capsys)


def test_demo_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["demo", str(tmp_path / "afile" / "out")]) == 1
    assert "afile is a file, not a folder" in _one_error(capsys)
    assert main(["demo", str(tmp_path / "afile")]) == 1
    assert "exists and is not a folder" in _one_error(capsys)


def test_run_string_array_for_a_multiarray_is_a_clean_error(tiny, tmp_path, capsys):
    # used to end in "ValueError: could not convert string to float"
    words = tmp_path / "words.npy"
    np.save(words, np.array(["a", "b", "c", "d"]))
    assert main(["run", str(tiny), "--input", f"x={words}"]) == 1
    err = _one_error(capsys)
    assert "--input x: the array holds <U1 values" in err and "MultiArray<FLOAT32>[4]" in err


def test_run_function_on_a_model_without_programs_is_refused(tiny, tmp_path, capsys):
    # --function was silently ignored for neural networks
    x = tmp_path / "x.npy"
    np.save(x, np.ones(4, dtype=np.float32))
    assert main(["run", str(tiny), "--input", f"x={x}", "--function", "main"]) == 1
    assert "functions belong to ML Programs" in _one_error(capsys)
