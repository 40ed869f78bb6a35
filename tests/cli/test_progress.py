"""Progress bars: a tqdm bar on a terminal's stderr; nothing when stderr is piped,
under --quiet or under --json (whose stdout stays one clean JSON document)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from nnbuild import add_inner_product, add_relu, array_feature
from specsurgery._proto import Model_pb2
from specsurgery.cli import main
from specsurgery.cli._common import Progress
from specsurgery.io import save


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _model(head_seed: int, n: int = 64):
    """x[n] -> fc trunk (n x n, shared) -> relu -> fc head (seeded) -> y[8]."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    array_feature(spec.description.input, "x", [n])
    array_feature(spec.description.output, "y", [8])
    nn = spec.neuralNetwork
    add_inner_product(nn, "trunk", "x", "h", n, n, seed=0)
    add_relu(nn, "relu", "h", "r")
    add_inner_product(nn, "head", "r", "y", n, 8, seed=head_seed)
    return spec


@pytest.fixture
def models(tmp_path):
    a, b = tmp_path / "a.mlmodel", tmp_path / "b.mlmodel"
    save(_model(10), a)
    save(_model(20), b)
    return a, b


def _run(argv, stderr, capsys):
    """main(argv) with ``stderr`` as sys.stderr; returns (exit code, stdout)."""
    capsys.readouterr()
    old = sys.stderr
    sys.stderr = stderr
    try:
        code = main([str(a) for a in argv])
    finally:
        sys.stderr = old
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------- the class


def test_bar_writes_on_a_terminal():
    tty = FakeTTY()
    with Progress(3, "work", tty) as bar:
        for name in ("a", "b", "c"):
            bar.step(name)
    assert bar.active and bar.done == 3
    text = tty.getvalue()
    assert "work" in text and "/3" in text  # redraws are throttled (mininterval)


@pytest.mark.parametrize("stream,enabled", [(io.StringIO(), True), (FakeTTY(), False)],
                         ids=["piped", "disabled"])
def test_bar_is_silent_off_a_terminal_or_disabled(stream, enabled):
    with Progress(3, "work", stream, enabled=enabled) as bar:
        bar.describe("stage")
        for _ in range(3):
            bar.step("x")
    assert not bar.active and bar.done == 3
    assert stream.getvalue() == ""


@pytest.mark.parametrize("flags,active", [({}, True), ({"quiet": True}, False), ({"json": True}, False)])
def test_for_args_honours_quiet_and_json(flags, active):
    import argparse

    args = argparse.Namespace(**{"quiet": False, "json": False, **flags})
    tty = FakeTTY()
    bar = Progress.for_args(args, 2, "work", tty)
    bar.step()
    bar.close()
    assert bar.active is active
    assert (tty.getvalue() != "") is active


# --------------------------------------------------------------------------- the verbs


def _verbs(models, tmp_path):
    a, b = models
    return {
        "dedupe": ["dedupe", a, b, "-o", tmp_path / "deduped"],
        "compress": ["compress", a, "--palettize", "2", "-o", tmp_path / "pal.mlmodel"],
        "verify": ["verify", a, a, "--samples", "4"],
        "split": ["split", a, "--at", "r", "-o", tmp_path / "split"],
    }


@pytest.mark.parametrize("verb", ["dedupe", "compress", "verify", "split"])
def test_verb_shows_a_bar_on_a_terminal(verb, models, tmp_path, capsys):
    argv = _verbs(models, tmp_path)[verb]
    tty = FakeTTY()
    code, _ = _run(argv, tty, capsys)
    assert code == 0
    text = tty.getvalue()
    assert verb in text and "|" in text  # tqdm's "label: 50%|#####     | 1/2 ..." line


@pytest.mark.parametrize("verb", ["dedupe", "compress", "verify", "split"])
@pytest.mark.parametrize("how", ["piped", "--quiet", "--json"])
def test_verb_writes_nothing_to_stderr_when_piped_quiet_or_json(verb, how, models, tmp_path, capsys):
    argv = _verbs(models, tmp_path)[verb]
    stream = io.StringIO() if how == "piped" else FakeTTY()
    if how != "piped":
        argv = argv + [how]
    code, out = _run(argv, stream, capsys)
    assert code == 0
    assert stream.getvalue() == ""
    if how == "--json":
        json.loads(out)  # stdout is one clean JSON document


def test_run_quiet(models, tmp_path, capsys):
    import numpy as np

    x = tmp_path / "x.npy"
    np.save(x, np.ones(64, dtype=np.float32))
    tty = FakeTTY()
    code, _ = _run(["run", models[0], "--input", f"x={x}"], tty, capsys)
    assert code == 0 and "run" in tty.getvalue()
    tty = FakeTTY()
    code, _ = _run(["run", models[0], "--input", f"x={x}", "--quiet"], tty, capsys)
    assert code == 0 and tty.getvalue() == ""


def test_library_progress_callbacks_are_plain_callables(models):
    """verify() and compress() call a plain callable once per sample / layer."""
    from specsurgery.ops.compress import compress
    from specsurgery.runtime import verify

    seen = []
    verify(models[0], models[1], samples=3, progress=seen.append)
    assert seen == ["sample 1/3", "sample 2/3", "sample 3/3"]
    seen.clear()
    compress(str(models[0]), mode="palettize", nbits=2, progress=seen.append)
    assert seen == ["trunk"]   # the head has 512 weights, under --min-weights' 2048


def test_convert_has_quiet():
    from specsurgery.cli import build_parser

    args = build_parser().parse_args(["convert", "m.py:f", "--input", "x=1x3", "-o", "o.mlmodel", "--quiet"])
    assert args.quiet


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("flag", [None, "--json", "--quiet"])
def test_dedupe_on_a_real_terminal(flag, models, tmp_path):
    """stderr a pseudo-terminal (of size 0, as nobody sized it): the bar is drawn, unless
    --json or --quiet; stdout (a pipe) stays clean JSON under --json."""
    import os
    import pty
    import subprocess
    import threading

    master, slave = pty.openpty()
    chunks = []

    def read():
        try:
            while True:
                data = os.read(master, 4096)
                if not data:
                    break
                chunks.append(data)
        except OSError:  # the other side closed
            pass

    reader = threading.Thread(target=read)
    reader.start()
    argv = [sys.executable, "-m", "specsurgery", "dedupe", str(models[0]), str(models[1]),
            "-o", str(tmp_path / "out")] + ([flag] if flag else [])
    try:
        run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert run.returncode == 0
    drawn = b"".join(chunks).decode("utf-8", "replace")
    if flag is None:
        assert "dedupe:" in drawn and "/5" in drawn
    else:
        assert drawn.strip() == ""
    if flag == "--json":
        json.loads(run.stdout)
