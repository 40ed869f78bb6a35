"""ResNet-50 forward, batch 1, 224x224: specsurgery's numpy runtime vs torch eager.

Both sides run in fresh processes of this venv, in the same run, with the same
thread count (``--threads``, default: all cores; set through OMP/OpenBLAS/MKL
variables before numpy or torch is imported).  Each loads its model, runs one
warm-up forward, then ``--repeat`` timed forwards (the best is kept).  Printed:
the forward time of each, the whole process's wall time and peak RSS, their
ratios, and the largest difference between the two outputs.

    python benchmarks/bench_runtime.py [--threads N] [--repeat R] [--smoke]

``--smoke``: a tiny 4-convolution network on both sides (torch only when it
is installed), to check that the benchmark runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import _bench

OURS = """
import time
import numpy as np
from specsurgery import io
import specsurgery.runtime as rt
spec = io.load_spec({model!r})
x = np.random.default_rng(0).random({shape!r}, dtype=np.float32)
t = time.perf_counter()
out = rt.predict(spec, {{"x": x}})
first = time.perf_counter() - t
times = []
for _ in range({repeat}):
    t = time.perf_counter()
    rt.predict(spec, {{"x": x}})
    times.append(time.perf_counter() - t)
np.save({out!r}, np.asarray(out[{name!r}], dtype=np.float32))
report(best=min(times), first=first)
"""

TORCH = """
import time
import numpy as np
import torch
torch.set_num_threads({threads})
{build}
x = torch.from_numpy(np.random.default_rng(0).random({shape!r}, dtype=np.float32))
with torch.no_grad():
    out = model(x)
    times = []
    for _ in range({repeat}):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
np.save({out!r}, out.numpy())
report(best=min(times))
"""

RESNET = "import _bench\nmodel = _bench.resnet50_module().eval()"

SMALL = """
torch.manual_seed(0)
convs = [torch.nn.Conv2d(3 if k == 0 else 32, 32, 3, padding=1) for k in range(4)]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(*[m for c in convs for m in (c, torch.nn.ReLU())])
        self.head = torch.nn.Linear(32, 10)
    def forward(self, x):
        return self.head(self.trunk(x).mean(dim=(2, 3)))
model = Net().eval()
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=5, help="timed forwards per side (best is kept)")
    ap.add_argument("--smoke", action="store_true", help="a tiny network: checks that the benchmark runs")
    args = ap.parse_args(argv)
    env = {v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="bench_runtime_") as tmp:
        tmp = Path(tmp)
        if args.smoke:
            model, shape, name, build = _bench.conv_net_nn(tmp / "small.mlmodel"), [1, 3, 8, 8], "y", SMALL
            shape_ours = [3, 8, 8]
        else:
            model, shape, name, build = _bench.resnet50_nn(), [1, 3, 224, 224], "logits", RESNET
            shape_ours = shape
        repeat = 1 if args.smoke else args.repeat
        ours = _bench.job("specsurgery runtime", OURS.format(model=str(model), shape=shape_ours, repeat=repeat,
                                                             out=str(tmp / "ours.npy"), name=name), env=env)
        theirs = None
        if _bench.has("torch"):
            theirs = _bench.job("torch eager", TORCH.format(threads=args.threads, build=build, shape=shape,
                                                             repeat=repeat, out=str(tmp / "torch.npy")), env=env)
        fwd = lambda r: _bench.Result(r.label, r.extra["best"], r.peak_mib)  # noqa: E731
        rows = [("forward (best of %d), process peak RSS" % repeat, fwd(ours), theirs and fwd(theirs)),
                ("whole process (load + warm-up + forwards)", ours, theirs)]
        print(f"model: {model.name}, threads {args.threads}")
        print(_bench.table(rows, "numpy reference runtime vs torch eager"))
        print(f"\nfirst predict (decodes and caches the weights): {ours.extra['first'] * 1000:.0f} ms")
        if theirs is not None:
            print(f"ratio numpy/torch per forward: {ours.extra['best'] / theirs.extra['best']:.2f}x")
            if not args.smoke:  # the tiny networks' weights differ between the two sides
                a, b = np.load(tmp / "ours.npy").reshape(-1), np.load(tmp / "torch.npy").reshape(-1)
                print(f"max relative difference vs torch: {np.abs(a - b).max() / np.abs(b).max():.2e}")
        else:
            print("torch is not installed: the torch side was skipped")
        print(f"machine: {_bench.machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
