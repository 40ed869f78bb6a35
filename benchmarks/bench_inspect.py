"""Cold start of ``specsurgery inspect`` / ``check`` on a ResNet-50 .mlmodel vs coremltools' load_spec.

Each job runs in a fresh process of this venv, one run each, and is measured
for wall time (interpreter start and imports included) and peak RSS:

* ``specsurgery inspect MODEL`` and ``specsurgery check MODEL``,
* ``import coremltools as ct; ct.utils.load_spec(MODEL)`` (whose
  ``import coremltools`` pulls in torch when torch is installed),
* ``specsurgery --help``.

The model is a plain-torch ResNet-50 (random weights) converted once with
``ct.convert(convert_to="neuralnetwork")`` (about 100 MB, cached in the temp
folder).  Targets: inspect >= 8x faster than load_spec; --help < 0.3 s.

    python benchmarks/bench_inspect.py [--model PATH] [--smoke]

``--smoke``: a 0.1 MB model built at the spec level (no conversion), to check
that the benchmark runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _bench


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an existing .mlmodel to use instead of the ResNet-50")
    ap.add_argument("--smoke", action="store_true", help="a tiny model: checks that the benchmark runs")
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="bench_inspect_")
    try:
        if args.model:
            model = Path(args.model)
        elif args.smoke:
            model = _bench.conv_net_nn(Path(tmp.name) / "small.mlmodel")
        else:
            model = _bench.resnet50_nn()
        model.read_bytes()  # every job starts with the file in the page cache
        ct = None
        if _bench.has("coremltools"):
            ct = _bench.job("coremltools load_spec",
                            f"import coremltools as ct\nct.utils.load_spec({str(model)!r})")
        rows = [("inspect", _bench.job("inspect", _bench.cli("inspect", model)), ct),
                ("check", _bench.job("check", _bench.cli("check", model)), ct),
                ("--help", _bench.job("--help", "from specsurgery.cli import main\ntry:\n    main(['--help'])\n"
                                                "except SystemExit:\n    pass\n"), None)]
        print(f"model: {model} ({model.stat().st_size / 2**20:.1f} MiB)")
        print(_bench.table(rows, "cold start, one process per job"))
        if ct is not None:
            print(f"\ninspect is {ct.wall / rows[0][1].wall:.1f}x faster than coremltools' import + load_spec "
                  "(target >= 8x)")
        print(f"--help: {rows[2][1].wall:.2f} s (target < 0.3 s)")
        print(f"machine: {_bench.machine()}")
        return 0
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
