"""Cold start of ``specsurgery inspect`` on a ResNet-50 .mlmodel vs coremltools' load_spec.

Builds (once, cached under the temp folder) a ResNet-50 with random weights
in plain torch, converts it with ``ct.convert(convert_to="neuralnetwork")``
(about 100 MB), then times in fresh processes of the same venv, one run each:

* ``specsurgery inspect MODEL`` (console script),
* ``python -c "import coremltools as ct; ct.utils.load_spec(MODEL)"``
  (whose ``import coremltools`` pulls in torch when torch is installed),
* ``specsurgery --help``.

Prints the times and the ratio (target: inspect >= 8x faster; --help < 0.3 s).

    python tools/bench_inspect.py [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "specsurgery-bench"


def resnet50_module():
    """A torchvision-style ResNet-50 (bottleneck v1.5) in plain torch, eval mode, seed 0."""
    import torch
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.c1, self.b1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
            self.c2, self.b2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
            self.c3, self.b3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)))
            return torch.relu(self.b3(self.c3(y)) + idt)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for mid, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(n):
                    layers.append(Bottleneck(cin, mid, stride if i == 0 else 1))
                    cin = mid * 4
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    return ResNet50().eval()


def resnet50_mlmodel() -> Path:
    """Path of the cached ResNet-50 .mlmodel (converted on first use, ~1-2 minutes)."""
    import torch

    cache = CACHE / f"resnet50-torch{torch.__version__}.mlmodel"
    if cache.exists():
        return cache
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from specsurgery._proto import coremltools

    ct = coremltools()
    cache.parent.mkdir(parents=True, exist_ok=True)
    model = resnet50_module()
    x = torch.randn(1, 3, 224, 224)
    t0 = time.perf_counter()
    ml = ct.convert(torch.jit.trace(model, x), convert_to="neuralnetwork",
                    inputs=[ct.TensorType(name="x", shape=(1, 3, 224, 224))],
                    outputs=[ct.TensorType(name="logits")])
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.mlmodel")
    ml.save(str(tmp))
    os.replace(tmp, cache)
    print(f"converted ResNet-50 in {time.perf_counter() - t0:.1f} s -> {cache}")
    return cache


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run of ``cmd``."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an existing .mlmodel to use instead of the ResNet-50")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else resnet50_mlmodel()
    size = model.stat().st_size
    bindir = Path(sys.executable).parent
    cli = str(bindir / "specsurgery")
    if not Path(cli).exists():
        cli_cmd = [sys.executable, "-m", "specsurgery"]
    else:
        cli_cmd = [cli]
    import torch  # noqa: F401  (the comparison is only fair in a venv where torch is installed)

    model.read_bytes()  # both sides start with the file in the page cache
    t_ct = timed([sys.executable, "-c", f"import coremltools as ct; ct.utils.load_spec({str(model)!r})"])
    t_inspect = timed(cli_cmd + ["inspect", str(model)])
    t_help = timed(cli_cmd + ["--help"])
    print(f"model: {model} ({size / 2**20:.1f} MiB)")
    print(f"coremltools import + load_spec: {t_ct[0]:6.2f} s wall, {t_ct[1]:6.2f} s CPU")
    print(f"specsurgery inspect (cold):      {t_inspect[0]:6.2f} s wall, {t_inspect[1]:6.2f} s CPU")
    print(f"specsurgery --help:              {t_help[0]:6.2f} s wall, {t_help[1]:6.2f} s CPU (target < 0.3 s)")
    print(f"ratio: inspect is {t_ct[0] / t_inspect[0]:.1f}x faster in wall time, "
          f"{t_ct[1] / max(t_inspect[1], 1e-9):.1f}x in CPU time (target >= 8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
