"""``specsurgery render MODEL -o OUT.(svg|png|pdf|dot)``: draw the graph."""

from __future__ import annotations

from ._common import add_bundle, add_output, add_search_path


def _collapse(value: str):
    if value in ("none", ""):
        return None
    if value == "blocks":
        return "blocks"
    try:
        depth = int(value)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"{value!r}: use 'blocks', 'none' or a depth (0, 1, 2...)")
    if depth < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"depth {depth} must be >= 0")
    return depth


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel, .mlpackage or .pbtxt")
    add_output(parser, help_text="output file: .svg, .png, .pdf (need Graphviz's dot) or .dot")
    parser.add_argument("--rankdir", choices=("TB", "LR", "BT", "RL"), default="TB",
                        help="layout direction (default TB: top to bottom)")
    parser.add_argument("--collapse", type=_collapse, default=None, metavar="blocks|DEPTH",
                        help="'blocks' folds repeated blocks (ResNet bottlenecks) into one node each; "
                             "a number folds stages nested that deep into one node (0: whole model)")
    parser.add_argument("--highlight", action="append", metavar="NAME", default=None,
                        help="draw this layer, blob or stage in red (repeatable)")
    parser.add_argument("--cut", action="append", metavar="BLOB", default=None,
                        help="preview a split at this blob (stage/blob inside pipelines; repeatable): "
                             "backbone and head coloured, bytes on each side")
    parser.add_argument("--expand-linked", action="store_true",
                        help="draw the target of each linked stub the search path resolves")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("--no-shapes", action="store_true", help="do not label edges with inferred shapes")
    parser.add_argument("--layout", choices=("auto", "dot", "layered"), default="auto",
                        help="dot: Graphviz places nodes; layered: fast built-in layout for big graphs; "
                             "auto (default): layered above 400 nodes")


def run(args) -> int:
    from ..render import render

    out = render(args.model, args.output, rankdir=args.rankdir, collapse=args.collapse,
                 highlight=args.highlight, cut=args.cut, expand_linked=args.expand_linked,
                 search_path=args.search_path, bundle=args.bundle, shapes=not args.no_shapes,
                 layout=args.layout)
    print(f"wrote {out}")
    return 0
