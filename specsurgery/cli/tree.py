"""``specsurgery tree MODEL``: the pipeline, its stages and layers as a text tree."""

from __future__ import annotations

import sys

from ._common import add_json


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel, .mlpackage or .pbtxt")
    parser.add_argument("--ascii", action="store_true",
                        help="draw the tree with ASCII characters (default: box drawing when the terminal can)")
    parser.add_argument("--stages-only", action="store_true",
                        help="show pipelines and stages but not layers or ops")
    add_json(parser)


def _can_encode(text: str) -> bool:
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def run(args) -> int:
    from ..summary import tree_text

    if args.json:  # the stage tree (name, type, version, features, sizes, linked target) as JSON
        from ..summary import summarize
        from ._common import print_json

        print_json(summarize(args.model, source=args.model)["tree"])
        return 0
    use_ascii = args.ascii or not _can_encode("├└│")
    print(tree_text(args.model, ascii=use_ascii, layers=not args.stages_only, title=args.model))
    return 0
