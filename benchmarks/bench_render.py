"""Rendering time: a ResNet-50 and a synthetic 2,000-layer graph to SVG (target < 10 s each).

One run each, in this process: ``to_dot`` (graph index, shape inference,
labels) and Graphviz's layout are timed separately, and the peak of Python's
allocations while drawing (tracemalloc; Graphviz runs in its own process) is
printed; the ResNet-50 is the cached ct.convert model of ``_bench.py``.  For
comparison, the same ResNet-50 with ``collapse="blocks"`` is drawn too.
coremltools draws no graphs, so there is no alternative to measure.

    python benchmarks/bench_render.py [--model PATH] [--layers N] [--keep DIR] [--smoke]

``--smoke``: a 0.1 MB network and a 50-layer synthetic graph, to check that
the benchmark runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _bench

sys.path.insert(0, str(_bench.REPO / "tests"))  # synthetic_nets


def one(label: str, model, out: Path, **kw) -> float:
    import tracemalloc

    from specsurgery.render import dot_to_bytes, to_dot

    tracemalloc.start()
    t0 = time.perf_counter()
    text = to_dot(model, **kw)
    t1 = time.perf_counter()
    svg = dot_to_bytes(text, "svg")
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out.write_bytes(svg)
    nodes = sum(1 for line in text.splitlines() if line.lstrip().startswith('"') and " -> " not in line)
    print(f"{label:<34} {t2 - t0:6.2f} s  (to_dot {t1 - t0:.2f} s, dot {t2 - t1:.2f} s; "
          f"{nodes} nodes, {len(svg) / 1024:.0f} KiB SVG; Python peak {peak / 2**20:.0f} MiB)")
    return t2 - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="ResNet-50 .mlmodel (default: converted once and cached by _bench.py)")
    ap.add_argument("--layers", type=int, default=2000, help="size of the synthetic graph")
    ap.add_argument("--keep", help="folder to keep the SVGs in (default: a temp folder)")
    ap.add_argument("--smoke", action="store_true", help="small graphs: checks that the benchmark runs")
    args = ap.parse_args(argv)
    from synthetic_nets import synthetic_network

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench_render_")
    out = Path(args.keep) if args.keep else Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.layers = 50
    if args.model:
        resnet = Path(args.model)
    elif args.smoke:
        resnet = _bench.conv_net_nn(out / "small.mlmodel")
    else:
        resnet = _bench.resnet50_nn()
    times = {
        "ResNet-50": one("ResNet-50 -> SVG", resnet, out / "resnet50.svg"),
        "ResNet-50 collapsed": one("ResNet-50 --collapse blocks -> SVG", resnet, out / "resnet50_blocks.svg",
                                   collapse="blocks"),
        f"synthetic {args.layers}": one(f"synthetic {args.layers} layers -> SVG", synthetic_network(args.layers),
                                        out / "synthetic.svg"),
    }
    worst = max(times["ResNet-50"], times[f"synthetic {args.layers}"])
    print(f"slowest of ResNet-50 / synthetic: {worst:.2f} s (target < 10 s): "
          f"{'OK' if worst < 10 else 'TOO SLOW'}" + (f"; SVGs in {out}" if args.keep else ""))
    print(f"machine: {_bench.machine()}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
