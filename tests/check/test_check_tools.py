"""The differential harness (tools/check_diff.py) without Apple's validator:
its seeded mutator is deterministic and makes one change per mutant; the
validator wrapper says how to build itself when it is missing.  (The harness
itself needs a coremltools checkout and is never run in CI.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import nnbuild as b

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name):
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TOOLS))


def test_mutator_is_deterministic_and_changes_one_thing():
    diff = _tool("check_diff")
    spec = b.tiny_classifier()
    sites = diff.sites(spec)
    assert len(sites) > 50
    assert sites == diff.sites(spec)
    ops = {op for _, op, _ in sites}
    assert {"set", "clear", "clear-oneof", "drop-last", "dup-last", "set-empty"} <= ops
    original = spec.SerializeToString()
    changed = 0
    for path, op, arg in sites[:200]:
        m = type(spec)()
        m.ParseFromString(original)
        try:
            diff.apply(m, path, op, arg)
        except Exception:
            continue
        changed += m.SerializeToString() != original
        assert diff.describe(path, op, arg)
    assert changed > 100


def test_validator_wrapper_asks_to_be_built(tmp_path):
    apple = _tool("apple_validator")
    with pytest.raises(SystemExit, match="not built"):
        apple.run([tmp_path / "m.mlmodel"], build_dir=tmp_path)
    pkg = tmp_path / "x.mlpackage"
    assert apple.spec_file(tmp_path / "m.mlmodel") == tmp_path / "m.mlmodel"
    pkg.mkdir()
    assert apple.spec_file(pkg) == pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"
