"""specsurgery._atomic: complete files or nothing, and no leftovers for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from specsurgery import _atomic
from specsurgery.errors import SaveError

REPO = Path(__file__).resolve().parents[2]


def _ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_replaces_and_leaves_only_the_target(tmp_path):
    target = tmp_path / "m.mlmodel"
    _atomic.write_bytes(target, b"one")
    _atomic.write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _ours(tmp_path) == ["m.mlmodel"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "m.mlmodel"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "replace", boom)
    with pytest.raises(SaveError, match="No space left"):
        _atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _ours(tmp_path) == ["m.mlmodel"]


def test_stale_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale_file = tmp_path / f".out.mlmodel.sstmp-{pid}-0badc0de"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".out.mlpackage.sstmp-{pid}-00000001"
    stale_dir.mkdir()
    mine = tmp_path / f".other.sstmp-{os.getpid()}-12345678"   # a live process's: kept
    mine.write_bytes(b"y")
    unrelated = tmp_path / ".hidden"
    unrelated.write_bytes(b"z")
    _atomic.write_bytes(tmp_path / "out.mlmodel", b"ok")
    assert _ours(tmp_path) == sorted([".hidden", mine.name, "out.mlmodel"])


def test_write_tree_swaps_a_folder_in(tmp_path):
    target = tmp_path / "M.mlpackage"

    def build(version):
        def fill(folder: Path):
            (folder / "Data").mkdir()
            (folder / "Data" / "v").write_text(version)
        return fill

    _atomic.write_tree(target, build("1"))
    _atomic.write_tree(target, build("2"))
    assert (target / "Data" / "v").read_text() == "2"
    assert _ours(tmp_path) == ["M.mlpackage"]


def test_write_tree_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "M.mlpackage"
    _atomic.write_tree(target, lambda f: (f / "keep").write_text("old"))

    def broken(folder: Path):
        (folder / "half").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        _atomic.write_tree(target, broken)
    assert (target / "keep").read_text() == "old"
    assert _ours(tmp_path) == ["M.mlpackage"]


def test_staging_commits_files_and_folders_or_nothing(tmp_path):
    out = tmp_path / "out"
    with _atomic.staging(out) as st:
        (st.dir / "a.txt").write_text("a")
        (st.dir / "B.mlpackage").mkdir()
        (st.dir / "B.mlpackage" / "x").write_text("b")
        st.commit(["a.txt", "B.mlpackage"])
    assert _ours(out) == ["B.mlpackage", "a.txt"]
    assert _ours(tmp_path) == ["out"]
    with pytest.raises(ValueError, match="oops"):
        with _atomic.staging(out) as st:
            (st.dir / "a.txt").write_text("changed")
            raise ValueError("oops")
    assert (out / "a.txt").read_text() == "a"
    assert _ours(tmp_path) == ["out"]


def test_staging_refuses_a_file_as_the_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(SaveError, match="is not a folder"):
        with _atomic.staging(tmp_path / "f" / "sub"):
            pass


def test_staging_commit_names_what_was_not_staged(tmp_path):
    with pytest.raises(SaveError, match="nothing was staged for a, b"):
        with _atomic.staging(tmp_path / "o") as st:
            st.commit(["a", "b"])


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from specsurgery import _atomic
    from specsurgery.cli import main

    real = _atomic.os.fdopen

    class Slow:
        def __init__(self, fh):
            self.fh = fh
        def __enter__(self):
            return self
        def __exit__(self, *a):
            return self.fh.__exit__(*a)
        def write(self, data):
            self.fh.write(data[:10]); self.fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        def __getattr__(self, name):
            return getattr(self.fh, name)

    _atomic.os.fdopen = lambda *a, **k: Slow(real(*a, **k))
    sys.argv = ["specsurgery"] + sys.argv[1:]
    sys.exit(main())
""")


def _start_slow_compress(src: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, "compress", str(src), "-o", str(out),
                             "--fp16", "--min-weights", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    line = proc.stdout.readline()
    assert line.strip() == "writing", proc.stderr.read()
    return proc


def _tiny_model(path: Path) -> Path:
    from nnbuild import tiny_nn
    from specsurgery.io import save

    return save(tiny_nn(n_in=8, n_hidden=8), path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_compress_runs_leave_only_the_output_after_one_clean_run(tmp_path):
    src = _tiny_model(tmp_path / "src" / "m.mlmodel")
    out_dir = tmp_path / "out"
    out = out_dir / "small.mlmodel"
    for _ in range(3):
        proc = _start_slow_compress(src, out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # each new run already removed the leftover of the one killed before it
    leftovers = _ours(out_dir)
    assert len(leftovers) == 1 and ".sstmp-" in leftovers[0], leftovers
    from specsurgery.cli import main

    assert main(["compress", str(src), "-o", str(out), "--fp16", "--min-weights", "1"]) == 0
    assert _ours(out_dir) == ["small.mlmodel"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_remove_the_temporary_at_once(tmp_path, sig):
    src = _tiny_model(tmp_path / "src" / "m.mlmodel")
    out_dir = tmp_path / "out"
    proc = _start_slow_compress(src, out_dir / "small.mlmodel")
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert _ours(out_dir) == []
