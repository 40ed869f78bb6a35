"""ResNet-50 forward, batch 1, 224x224: specsurgery's numpy runtime vs torch eager.

One run, same thread count for both (``--threads``, default: all cores;
numpy's BLAS is limited through threadpoolctl-free environment variables set
before numpy is imported).  Prints both times and their ratio.

    python tools/bench_runtime.py [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=5, help="timed forwards per side (best is kept)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch
    import torch.nn as nn

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import specsurgery.runtime as rt

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
    model = ResNet50().eval()
    x = torch.randn(1, 3, 224, 224)
    cache = Path(tempfile.gettempdir()) / "specsurgery-bench" / f"resnet50-torch{torch.__version__}.mlmodel"
    if not cache.exists():
        from specsurgery._proto import coremltools

        ct = coremltools()
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        before = set(Path(tempfile.gettempdir()).glob("tmp*"))
        ml = ct.convert(torch.jit.trace(model, x), convert_to="neuralnetwork",
                        inputs=[ct.TensorType(name="x", shape=(1, 3, 224, 224))],
                        outputs=[ct.TensorType(name="logits")])
        tmp = cache.with_suffix(".tmp.mlmodel")
        ml.save(str(tmp))
        os.replace(tmp, cache)
        del ml
        import shutil

        for left in set(Path(tempfile.gettempdir()).glob("tmp*")) - before:   # coremltools' leftovers
            if left.suffix in (".mlmodelc", ".mlpackage"):
                shutil.rmtree(left, ignore_errors=True)
        print(f"converted ResNet-50 in {time.perf_counter() - t0:.1f} s -> {cache}")
    from specsurgery import io

    spec = io.load_spec(cache)
    feed = {"x": x.numpy()}
    t0 = time.perf_counter()
    shapes = rt.infer_shapes(spec)
    t_shapes = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = rt.predict(spec, feed)["logits"]            # first call decodes and caches weights
    t_first = time.perf_counter() - t0
    with torch.no_grad():
        ref = model(x).numpy()
        model(x)
    err = float(np.abs(out.reshape(ref.shape) - ref).max() / np.abs(ref).max())

    def best(fn):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_np = best(lambda: rt.predict(spec, feed))
    with torch.no_grad():
        t_torch = best(lambda: model(x))
    print(f"threads {args.threads}, best of {args.repeat}")
    print(f"infer_shapes ({len(shapes)} blobs): {t_shapes * 1000:.1f} ms; first predict {t_first * 1000:.0f} ms")
    print(f"specsurgery numpy runtime: {t_np * 1000:.1f} ms")
    print(f"torch eager:               {t_torch * 1000:.1f} ms")
    print(f"ratio numpy/torch: {t_np / t_torch:.2f}x   (max rel. error vs torch {err:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
