"""Every numbered example under examples/ runs in CI, each into a temp folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EXAMPLES = sorted(p for p in (REPO / "examples").glob("[0-9][0-9]_*/run.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_runs(script: Path, tmp_path):
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (script.parent / "README.md").is_file()


def test_examples_exist():
    assert len(EXAMPLES) >= 5, [p.parent.name for p in EXAMPLES]
