"""`specsurgery demo [DIR]`: the end-to-end job on bundled, generated models."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("out_dir", nargs="?", default="demo-out", metavar="DIR",
                        help="folder for everything the demo writes (default: demo-out)")


def run(args) -> int:
    from pathlib import Path

    from ..errors import SaveError
    from ..io import _write_error

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise SaveError(f"{out} exists and is not a folder; pass a folder for the demo's files")
    try:   # before the slow imports: a bad folder fails at once, in one line
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(out, exc) from None

    from .._demo import run_demo

    return 0 if run_demo(args.out_dir) else 1
