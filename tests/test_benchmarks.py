"""Every benchmark in benchmarks/ runs its smallest configuration (``--smoke``),
so that none can rot.  No timing is asserted: a benchmark is a script with
figures, not a timed test.  Without torch or coremltools the benchmarks skip
those sides themselves (and say so); a benchmark that needs one of them for
its own side is skipped here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
NEEDS = {"bench_inspect": (), "bench_runtime": (), "bench_compress": (), "bench_dedupe": (),
         "bench_render": ("graphviz",)}


def test_every_benchmark_is_smoke_tested():
    assert sorted(p.stem for p in BENCH.glob("bench_*.py")) == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_benchmark_smoke(name):
    for module in NEEDS[name]:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    if name == "bench_render":
        import shutil

        if shutil.which("dot") is None:
            pytest.skip("Graphviz's dot is not installed")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if os.environ.get("SPECSURGERY_TEST_CACHE"):  # converted models stay with the tests' other caches
        env["SPECSURGERY_BENCH_CACHE"] = str(Path(os.environ["SPECSURGERY_TEST_CACHE"]) / "benchmarks")
    run = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--smoke"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "machine: " in out
    if name != "bench_render":
        assert "| job |" in out or "| backend |" in out   # the markdown table of figures
