"""``specsurgery compress MODEL -o OUT (--fp16 | --linear N | --palettize N | --prune S)``.

Compresses the weights of a neuralNetwork model (pipelines included) in Core
ML's own storage, or of an ML Program through coremltools.optimize; prints a
one-line summary, ``--report`` the per-layer table, ``--verify`` the SNR of
every output on seeded random inputs through the reference runtime.
"""

from __future__ import annotations

import argparse

from ._common import add_json, add_quiet, print_json
from .run import add_max_memory


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.5")
    return value


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage to compress")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="where to write the compressed model (.mlmodel, or .mlpackage for ML Programs)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fp16", action="store_true", help="store weights as float16 (half the bytes)")
    mode.add_argument("--linear", type=int, metavar="N", nargs="?", const=8,
                      help="N-bit linear quantization, 1..8 (default 8): value = code*scale + bias")
    mode.add_argument("--palettize", type=int, metavar="N",
                      help="N-bit look-up table (1..8) found by k-means: 2**N distinct values per tensor")
    parser.add_argument("--prune", type=_sparsity, metavar="SPARSITY", default=None,
                        help="zero the SPARSITY fraction (0 <= S < 1) of smallest weights; alone, or "
                             "together with --fp16/--linear/--palettize (pruning first)")
    parser.add_argument("--per-channel", action="store_true",
                        help="with --linear: one scale and bias per output channel")
    parser.add_argument("--grouped-channels", type=int, metavar="G", default=None,
                        help="with --palettize on an ML Program (iOS 18): one table per G output channels")
    parser.add_argument("--layers", nargs="+", metavar="GLOB", default=None,
                        help="compress only layers whose name (or stage/name) matches a glob")
    parser.add_argument("--exclude", nargs="+", metavar="GLOB", default=None,
                        help="leave layers whose name (or stage/name) matches a glob")
    parser.add_argument("--min-weights", type=int, default=2048, metavar="N",
                        help="skip layers with fewer weights (default 2048)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed (k-means, --verify inputs)")
    parser.add_argument("--report", action="store_true", help="print the per-layer table")
    parser.add_argument("--verify", action="store_true",
                        help="run both models on seeded random inputs and print each output's SNR")
    add_max_memory(parser)
    add_quiet(parser)
    add_json(parser)


def run(args) -> int:
    from .. import budget
    from ..cli._common import Progress
    from ..errors import SpecSurgeryError
    from ..io import load, save
    from ..ops.compress import compress, count_weighted_layers, verify_outputs

    if args.fp16:
        mode, nbits = "fp16", None
    elif args.linear is not None:
        mode, nbits = "linear", args.linear
    elif args.palettize is not None:
        mode, nbits = "palettize", args.palettize
    else:
        mode, nbits = "prune", None
    if mode == "prune" and args.prune is None:
        raise SpecSurgeryError("choose a compression: --fp16, --linear [N], --palettize N or --prune SPARSITY")
    if args.per_channel and mode != "linear":
        raise SpecSurgeryError("--per-channel applies to --linear only")
    if args.grouped_channels is not None and mode != "palettize":
        raise SpecSurgeryError("--grouped-channels applies to --palettize only")
    with budget.limited(args.max_memory):
        original = load(args.model)
        progress = Progress.for_args(args, count_weighted_layers(original), f"compress {mode}", unit="layer")
        try:
            compressed, report = compress(
                original, mode=mode, nbits=nbits, per_channel=args.per_channel, sparsity=args.prune,
                layers=args.layers, exclude=args.exclude, min_weights=args.min_weights, seed=args.seed,
                granularity="per_grouped_channel" if args.grouped_channels else "per_tensor",
                group_size=args.grouped_channels, return_report=True,
                progress=lambda name: progress.step(name),
                inplace=not args.verify)   # the loaded copy is ours: no second copy of the weights
        finally:
            progress.close()
        if args.verify:
            verify_outputs(original, compressed, report, seed=args.seed)
    save(compressed, args.output)
    if args.json:
        data = report.to_json()
        data["output"] = args.output
        print_json(data)
        return 0
    if args.report:
        print(report.table())
    else:
        print(report.summary())
        for name, snr in report.outputs.items():
            print(f"output {name}: SNR {'inf' if snr == float('inf') else f'{snr:.1f}'} dB")
    print(f"wrote {args.output}")
    return 0

