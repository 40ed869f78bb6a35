"""``specsurgery suggest-cuts MODEL``: blobs where one cut splits the network."""

from __future__ import annotations

from ..units import human_bytes
from ._common import add_json, print_json


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="neural-network model or ML Program")
    parser.add_argument("--stage", metavar="PATH", default="",
                        help="stage path of the network inside a pipeline (default: the model itself)")
    parser.add_argument("--max-blobs", type=int, default=1, metavar="K",
                        help="also list cuts over up to K blobs (skip connections crossing the cut)")
    add_json(parser)


def run(args) -> int:
    from ..ops.cuts import suggest_cuts

    cuts = suggest_cuts(args.model, path=args.stage, max_blobs=args.max_blobs)
    if args.json:
        print_json([c.to_json() for c in cuts])
        return 0
    if not cuts:
        print("no single blob separates the network (every cut needs several blobs: use split --at a,b)")
        return 0
    width = max(len(c.blob) for c in cuts)
    print(f"{'blob':<{width}}  {'shape':<18} {'layers':>13}  {'weights before':>16}")  # noqa: E501
    for c in cuts:
        shape = " + ".join("x".join(map(str, s)) if s is not None else "?" for s in c.shapes)
        print(f"{c.blob:<{width}}  {shape:<18} {c.layers_before:>5} | {c.layers_after:<5}  "
              f"{human_bytes(c.weight_bytes_before):>10} {100 * c.weight_share:5.1f}%")
    return 0
