"""The seeded fuzzer (tools/fuzz.py): a short deterministic run on the models the tests
build in code, so it runs without the corpus.  An internal fault (an exception that is
not a SpecSurgeryError, a timeout, a MemoryError under the address-space limit, a dead
worker) fails the test; the message names each fault and how to regenerate its mutant.

Also: every command the fuzzer runs succeeds on the unmutated fixtures, for both
backends (NeuralNetwork .mlmodel and ML Program .mlpackage), which keeps every
read-only verb, run, verify and compress tested without the corpus.
"""

from __future__ import annotations

import shutil
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import fuzz  # noqa: E402

SEED = 19
COUNT = 200


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return fuzz.fixture_sources(tmp_path_factory.mktemp("fuzz-fixtures"))


def _describe(report) -> str:
    lines = [report.summary(), "regenerate a mutant with: python tools/fuzz.py --seed SEED --only INDEX "
             "--no-corpus --out DIR  (then --replay DIR/<name>)"]
    seen = set()
    for f in report.faults:
        key = (f["verb"], f["exception"].split(":", 1)[0], f["where"])
        if key in seen:
            continue
        seen.add(key)
        lines += [f"--- {f['mutant']} (index {f['index']}): {' '.join(map(str, f['argv'] or []))}",
                  f"    mutations: {'; '.join(f['mutations'])}", f["traceback"][-1500:]]
    return "\n".join(lines)


def test_short_fuzz_run_has_no_internal_faults(sources, tmp_path):
    report = fuzz.fuzz(sources, seed=SEED, count=COUNT, out=tmp_path / "out", verbs=list(fuzz.COMMANDS), jobs=2)
    assert report.mutants == COUNT
    assert report.commands >= COUNT * 8
    assert not report.faults, _describe(report)
    # faulting mutants would be saved under reproducible names; none here
    assert not (tmp_path / "out" / "faults").exists()


def _contents(path):
    if path.is_dir():
        return sorted((q.relative_to(path).as_posix(), q.is_symlink() and str(q.readlink()),
                       q.is_file() and not q.is_symlink() and q.read_bytes()) for q in path.rglob("*"))
    return path.read_bytes()


@pytest.mark.parametrize("index", [3, 7, 11, 42])
def test_mutants_are_reproducible(sources, tmp_path, index):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fuzz.make_mutant(sources, SEED, index, tmp_path / "a")
    b = fuzz.make_mutant(sources, SEED, index, tmp_path / "b")
    assert a[0].name == b[0].name and a[0].name.startswith(f"s{SEED}-{index:05d}-")
    assert a[2] == b[2] and a[2]          # the same mutations, described
    assert _contents(a[0]) == _contents(b[0])


def test_every_command_passes_on_the_unmutated_fixtures(sources, tmp_path):
    backends = {".mlmodel": set(), ".mlpackage": set()}
    failures = []
    for src in sources:
        if src.name == "tiny_linked":   # its target is not there: run/verify/compress must say so
            continue
        for verb, make_argv in fuzz.commands_for(src.path, False, list(fuzz.COMMANDS), tmp_path):
            res = fuzz.run_in_process(make_argv, fuzz.DEFAULT_TIMEOUT)
            if res["status"] != "ok":
                failures.append(f"{src.name} {verb}: {res.get('exception')}\n{res.get('traceback', '')[-1500:]}")
            elif res["code"] == 0:
                backends[".mlpackage" if src.is_package else ".mlmodel"].add(verb)
            elif verb == "suggest-cuts" and src.name == "tiny_pipeline":  # a pipeline has no single graph
                pass
            elif not fuzz.applicable(verb, src.path):   # nothing to expose or retype: refused cleanly
                pass
            else:
                failures.append(f"{src.name} {verb}: exit {res['code']}")
            for leftover in tmp_path.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    assert not failures, "\n".join(failures)
    assert backends[".mlmodel"] == set(fuzz.COMMANDS)
    if any(s.is_package for s in sources):   # the ML Program fixtures need torch + coremltools
        assert backends[".mlpackage"] == set(fuzz.COMMANDS)
