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

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import specsurgery.runtime as rt

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _resnet50 import resnet50

    model = resnet50()
    x = torch.randn(1, 3, 224, 224)
    cache = Path(tempfile.gettempdir()) / "specsurgery-bench" / f"resnet50-v2-torch{torch.__version__}.mlmodel"
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
