"""`specsurgery demo [DIR]`: the end-to-end job on bundled, generated models."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("out_dir", nargs="?", default="demo-out", metavar="DIR",
                        help="folder for everything the demo writes (default: demo-out)")


def run(args) -> int:
    from .._demo import run_demo

    return 0 if run_demo(args.out_dir) else 1
