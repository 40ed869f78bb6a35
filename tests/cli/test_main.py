"""The CLI frame: exit codes, one-line errors, --debug, --help speed path."""

import subprocess
import sys

import pytest

from conftest import CORPUS
from specsurgery.cli import COMMANDS, build_parser, main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in COMMANDS:
        assert verb in out


def test_usage_error_exits_2(capsys):
    assert main(["no-such-verb"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_verb_has_help(capsys):
    for verb in COMMANDS:
        assert main([verb, "--help"]) == 0, verb
        assert "usage: specsurgery " + verb in capsys.readouterr().out


def test_bad_input_is_one_line_exit_1(capsys):
    bad = CORPUS / "invalid" / "simple_layer_NNv2_draft.mlmodel"
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "simple_layer_NNv2_draft.mlmodel" in err


def test_debug_shows_traceback():
    bad = CORPUS / "invalid" / "simple_layer_NNv2_draft.mlmodel"
    proc = subprocess.run([sys.executable, "-m", "specsurgery", "--debug", "inspect", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "LoadError" in proc.stderr


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from specsurgery.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'coremltools', 'networkx', 'graphviz', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
