"""Every command on every corpus file: a result or one clean line, never a crash.

A crash is an exception that is not a SpecSurgeryError: the CLI then prints
"(rerun with --debug for the traceback)".  Files under invalid/ must be
rejected with exit 1 and one line.
"""

from __future__ import annotations

import json

import pytest

from conftest import CORPUS_FILES, corpus_id
from specsurgery.cli import main

pytestmark = pytest.mark.corpus

CRASH_MARK = "rerun with --debug"

# Two full forward passes of these take minutes on 2 cores; the runtime tests
# run them (and the surgery tests verify them on a shrunk copy).
HEAVY = {"real/carn.mlmodel": "CARN at 3x1000x1000: ~2 TFLOP per forward pass"}


def _commands(path, tmp):
    p = str(path)
    return {
        "inspect": ["inspect", p],
        "inspect-json": ["inspect", "--json", p],
        "inspect-layers": ["inspect", "--layers", p],
        "check": ["check", p],
        "tree": ["tree", p],
        "render-dot": ["render", p, "-o", str(tmp / "g.dot")],
        "suggest-cuts": ["suggest-cuts", p],
        "run": ["run", p, "-o", str(tmp / "out.npz")],
        "verify-self": ["verify", p, p, "--samples", "1"],
        "compress-fp16": ["compress", p, "--fp16", "-o", str(tmp / ("c" + (".mlpackage" if path.is_dir() else ".mlmodel")))],
    }


COMMAND_NAMES = list(_commands(CORPUS_FILES[0], CORPUS_FILES[0]).keys()) if CORPUS_FILES else []


@pytest.mark.parametrize("command", COMMAND_NAMES)
@pytest.mark.parametrize("path", CORPUS_FILES, ids=corpus_id)
def test_command_on_corpus_file(path, command, tmp_path, capsys):
    if command == "verify-self" and corpus_id(path) in HEAVY:
        pytest.skip(HEAVY[corpus_id(path)])
    argv = _commands(path, tmp_path)[command]
    code = main(argv)
    out, err = capsys.readouterr()
    assert CRASH_MARK not in err, f"{' '.join(argv)} crashed: {err}"
    assert "Traceback" not in err
    if corpus_id(path).startswith("invalid/"):
        assert code == 1 and err.count("\n") == 1, err
        return
    assert code in (0, 1), (code, err)
    if code == 1 and command not in ("check",):
        assert err.strip(), "exit 1 must say why"
        assert err.count("\n") == 1, err
    if command == "inspect-json" and code == 0:
        json.loads(out)
    if command in ("inspect", "inspect-json", "inspect-layers", "check", "tree", "render-dot"):
        # read commands must work on every valid file
        assert code == 0 or command == "check", err
