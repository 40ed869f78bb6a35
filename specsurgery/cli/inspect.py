"""``specsurgery inspect MODEL``: type, spec versions, features, layers, weights, stages."""

from __future__ import annotations

from ._common import add_bundle, add_json, add_search_path


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel, .mlpackage or .pbtxt")
    add_json(parser)
    parser.add_argument("--layers", action="store_true",
                        help="list every layer: kind, blobs, key parameters, weights, inferred shapes")
    add_search_path(parser)
    add_bundle(parser)


def run(args) -> int:
    from ..summary import format_summary, summarize
    from ._common import print_json

    summary = summarize(args.model, layers=args.layers, search_path=args.search_path,
                        bundle=args.bundle, source=args.model)
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))
    return 0
