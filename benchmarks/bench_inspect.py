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
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _resnet50 import resnet50

    return resnet50()


def resnet50_mlmodel() -> Path:
    """Path of the cached ResNet-50 .mlmodel (converted on first use, ~1-2 minutes)."""
    import torch

    cache = CACHE / f"resnet50-v2-torch{torch.__version__}.mlmodel"
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
