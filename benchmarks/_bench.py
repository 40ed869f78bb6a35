"""What every benchmark here shares: jobs timed in fresh processes, the models.

A *job* is a snippet of Python run in a fresh interpreter of this venv; the
parent measures its wall time (interpreter start and imports included: each
side pays its own) and its peak resident memory (``os.wait4``'s rusage of that
child alone: its VmHWM, the figure ``/usr/bin/time -v`` prints).  A benchmark runs ours
and the alternative (coremltools, torch) as jobs in the same run and prints a
markdown table with both and their ratios.  No job asserts a time.

Models: ``resnet50_nn()`` / ``resnet50_ml()`` are a plain-torch ResNet-50
(``_resnet50.py``) converted once with coremltools and cached in the temp
folder; ``conv_net_nn()`` builds a convolution trunk at the spec level (no
torch, no coremltools) — the models of ``--smoke``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# converted models are kept here between runs ($SPECSURGERY_BENCH_CACHE to move it)
CACHE = Path(os.environ.get("SPECSURGERY_BENCH_CACHE") or Path(tempfile.gettempdir()) / "specsurgery-bench")
MARK = "@@bench@@"


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, load average {load:.1f} at the end of the run"


# --------------------------------------------------------------------------- jobs

@dataclass
class Result:
    label: str
    wall: float            # seconds, the whole child process
    peak_mib: float        # peak RSS of the child, MiB
    extra: dict = field(default_factory=dict)   # what the job reported with report(...)


PRELUDE = f"""
import atexit as _atexit, json as _json, sys as _sys
_sys.path[:0] = [{str(REPO)!r}, {str(HERE)!r}]
def report(**kw):
    print({MARK!r} + _json.dumps(kw), flush=True)
def _peak():
    # VmHWM: this process image's own high-water mark (ru_maxrss would also count
    # the parent's pages the child had between fork and exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                _sys.stdout.flush()
                report(_peak_kib=int(line.split()[1]))
    except OSError:
        pass
_atexit.register(_peak)
"""


def job(label: str, code: str, *, env: dict | None = None, cwd: Path | None = None) -> Result:
    """Run ``code`` in a fresh interpreter; its wall time and peak RSS.

    The code may call ``report(key=value, ...)`` to hand figures back (a
    best-of-N time measured inside, a saving share); they land in
    ``Result.extra``.  A failing job raises with the end of its stderr."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, cwd=cwd or REPO, text=True)
    # read both pipes before reaping the child (a full pipe would block it)
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"job {label!r} failed (exit {proc.returncode}):\n{err[-3000:]}")
    extra = {}
    for line in out.splitlines():
        if line.startswith(MARK):
            extra.update(json.loads(line[len(MARK):]))
    peak_kib = extra.pop("_peak_kib", usage.ru_maxrss)
    return Result(label, wall, peak_kib / 1024, extra)


def _drain(proc) -> tuple[str, str]:
    """Both pipes to the end, without waiting for the child (os.wait4 reaps it)."""
    import threading

    chunks: dict = {}

    def read(name, stream):
        chunks[name] = stream.read()
        stream.close()

    threads = [threading.Thread(target=read, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return chunks["out"], chunks["err"]


def cli(*args) -> str:
    """A job's code that runs ``specsurgery ARGS`` in-process (as the console script would)."""
    return ("from specsurgery.cli import main\n"
            f"code = main({[str(a) for a in args]!r})\n"
            "raise SystemExit(code if code in (0, 1) else code)\n")


def table(rows, title: str = "") -> str:
    """Markdown: one row per (what, ours, alternative or None)."""
    lines = []
    if title:
        lines.append(f"\n### {title}\n")
    lines.append("| job | ours: wall | ours: peak RSS | alternative | alt: wall | alt: peak RSS | "
                 "time ratio alt/ours | memory ratio alt/ours |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for what, ours, alt in rows:
        if alt is None:
            lines.append(f"| {what} | {_s(ours.wall)} | {ours.peak_mib:.0f} MiB | — | | | | |")
        else:
            lines.append(f"| {what} | {_s(ours.wall)} | {ours.peak_mib:.0f} MiB | {alt.label} | {_s(alt.wall)} | "
                         f"{alt.peak_mib:.0f} MiB | {alt.wall / ours.wall:.2f}x | "
                         f"{alt.peak_mib / ours.peak_mib:.2f}x |")
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


# --------------------------------------------------------------------------- models

def resnet50_module(head: bool = True):
    from _resnet50 import resnet50

    return resnet50(head=head)


def _quiet():
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def resnet50_nn() -> Path:
    """The cached ResNet-50 neuralNetwork .mlmodel (about 100 MB; converted on first use)."""
    return _resnet50_converted("neuralnetwork")


def resnet50_ml() -> Path:
    """The cached ResNet-50 mlProgram .mlpackage (fp32 weights, iOS 16)."""
    return _resnet50_converted("mlprogram")


def _resnet50_converted(backend: str) -> Path:
    import shutil

    import torch

    suffix = ".mlmodel" if backend == "neuralnetwork" else ".mlpackage"
    path = CACHE / f"resnet50-v3-{backend}-torch{torch.__version__}{suffix}"
    if path.exists():
        return path
    from specsurgery._proto import coremltools

    ct = coremltools()
    model = resnet50_module()
    x = torch.rand(1, 3, 224, 224)
    t0 = time.perf_counter()
    kwargs = dict(inputs=[ct.TensorType(name="x", shape=x.shape)], outputs=[ct.TensorType(name="logits")],
                  convert_to=backend)
    if backend == "mlprogram":
        kwargs.update(compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    with _quiet():
        ml = ct.convert(torch.jit.trace(model, x), **kwargs)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".{path.name}.{os.getpid()}{suffix}"
    ml.save(str(tmp))
    if path.exists():  # another run got there first
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
    else:
        os.replace(tmp, path)
    print(f"(converted ResNet-50 to {backend} in {time.perf_counter() - t0:.0f} s, cached: {path})",
          file=sys.stderr)
    return path


def conv_net_nn(path: Path, member: int = 0, layers: int = 4, channels: int = 32, size: int = 8) -> Path:
    """A neuralNetwork .mlmodel built at the spec level: ``layers`` 3x3 convolutions
    (the same weights in every member: a trunk) + ReLU, a global pool and a
    dense head of the member's own.  4 x 32 channels: about 0.1 MB."""
    from specsurgery import io
    from specsurgery._proto import FeatureTypes_pb2, Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    inp = spec.description.input.add()
    inp.name = "x"
    inp.type.multiArrayType.shape.extend([3, size, size])
    inp.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    nn = spec.neuralNetwork
    last, cin = "x", 3
    for k in range(layers):
        rng = np.random.default_rng(k)
        ly = nn.layers.add()
        ly.name, ly.output[:] = f"conv{k}", [f"conv{k}_out"]
        ly.input.append(last)
        c = ly.convolution
        c.outputChannels, c.kernelChannels, c.nGroups, c.hasBias = channels, cin, 1, True
        c.kernelSize.extend([3, 3])
        c.stride.extend([1, 1])
        c.dilationFactor.extend([1, 1])
        c.same.asymmetryMode = 0
        c.weights.floatValue.extend(rng.normal(0, 0.05, channels * cin * 9).astype(np.float32).tolist())
        c.bias.floatValue.extend(rng.normal(0, 0.05, channels).astype(np.float32).tolist())
        relu = nn.layers.add()
        relu.name, relu.input[:], relu.output[:] = f"relu{k}", [f"conv{k}_out"], [f"relu{k}_out"]
        relu.activation.ReLU.SetInParent()
        last, cin = f"relu{k}_out", channels
    pool = nn.layers.add()
    pool.name, pool.input[:], pool.output[:] = "pool", [last], ["pooled"]
    pool.pooling.type, pool.pooling.globalPooling = pool.pooling.AVERAGE, True
    pool.pooling.valid.paddingAmounts.borderAmounts.add()
    pool.pooling.valid.paddingAmounts.borderAmounts.add()
    flat = nn.layers.add()
    flat.name, flat.input[:], flat.output[:] = "flat", ["pooled"], ["flat"]
    flat.flatten.SetInParent()
    rng = np.random.default_rng(1000 + member)
    head = nn.layers.add()
    head.name, head.input[:], head.output[:] = "head", ["flat"], ["y"]
    ip = head.innerProduct
    ip.inputChannels, ip.outputChannels, ip.hasBias = channels, 10, True
    ip.weights.floatValue.extend(rng.normal(0, 0.05, channels * 10).astype(np.float32).tolist())
    ip.bias.floatValue.extend(rng.normal(0, 0.05, 10).astype(np.float32).tolist())
    out = spec.description.output.add()
    out.name = "y"
    out.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    io.save(spec, path, check=False)
    return path


def conv_net_ml(path: Path, member: int = 0, layers: int = 4, channels: int = 32, size: int = 8) -> Path:
    """The same network as an ML Program, converted by coremltools from torch (cached)."""
    import shutil

    cached = CACHE / f"conv{layers}x{channels}s{size}_member{member}.mlpackage"
    if not cached.is_dir():
        import torch

        from specsurgery._proto import coremltools

        ct = coremltools()

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                convs = [torch.nn.Conv2d(3 if k == 0 else channels, channels, 3, padding=1) for k in range(layers)]
                self.trunk = torch.nn.Sequential(*[m for c in convs for m in (c, torch.nn.ReLU())])
                torch.manual_seed(1000 + member)
                self.head = torch.nn.Linear(channels, 10)

            def forward(self, x):
                return self.head(self.trunk(x).mean(dim=(2, 3)))

        example = torch.rand(1, 3, size, size)
        with _quiet():
            ml = ct.convert(torch.jit.trace(Net().eval(), example), convert_to="mlprogram",
                            inputs=[ct.TensorType(name="x", shape=example.shape)],
                            compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS15)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = CACHE / f".{os.getpid()}.{cached.name}"
        ml.save(str(tmp))
        if cached.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, cached)
    if Path(path).exists():
        shutil.rmtree(path)
    shutil.copytree(cached, path)
    return Path(path)
