"""The ``specsurgery`` command line: a thin layer over the library.

Each verb lives in ``specsurgery/cli/<verb>.py`` with ``configure(parser)``
(arguments only, no heavy imports) and ``run(args) -> int``.  ``main`` is
importable and returns the exit code, so tests call it in-process.

Exit codes: 0 success, 1 an error about the models (one line, no traceback;
``--debug`` shows it), 2 a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

#: verb -> (module, one-line help).  Order is the order of ``--help``.
COMMANDS = {
    "inspect": ("inspect", "summarise a model: type, spec versions, features, layers, weights, stages"),
    "check": ("check", "validate models offline with the Core ML compiler's rules"),
    "tree": ("tree", "print the pipeline, its stages and layers as a tree"),
    "render": ("render", "draw the graph as DOT, SVG, PNG or PDF"),
    "run": ("run", "run a model on inputs with the numpy reference runtime"),
    "verify": ("verify", "check that two models compute the same outputs"),
    "diff": ("diff", "list what changed between two models: interface, metadata, stages, layers"),
    "split": ("split", "split a model at blobs into backbone and head (and a pipeline of both)"),
    "pipeline": ("pipeline", "assemble models into a pipeline"),
    "link": ("link", "replace a pipeline stage with a linked-model stub"),
    "unlink": ("unlink", "inline the targets of linked-model stubs"),
    "relink": ("relink", "change a linked stub's file name or search path"),
    "rename": ("rename", "rename features and blobs everywhere"),
    "set": ("set", "set metadata, feature descriptions, class labels or the spec version"),
    "extract": ("extract", "cut out the sub-graph between blobs"),
    "expose": ("expose", "add intermediate blobs or program values as extra outputs"),
    "add-nms": ("add_nms", "turn a raw object detector into a detector pipeline with non-maximum suppression"),
    "reshape": ("reshape", "declare flexible input shapes: ranges or enumerated shapes"),
    "retype": ("retype", "turn a MultiArray input into an image input, or back"),
    "suggest-cuts": ("suggest_cuts", "list the blobs where one cut separates the graph"),
    "dedupe": ("dedupe", "share one linked backbone between models of a bundle"),
    "compress": ("compress", "compress weights: fp16, 8-bit linear, palettization, pruning"),
    "convert": ("convert", "convert a PyTorch module to Core ML"),
    "demo": ("demo", "run the end-to-end demo on bundled models"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like argparse but without the usage dump
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="specsurgery",
        description="Surgery on Core ML models at the protobuf level: split, link, pipeline, "
                    "dedupe, compress, render, check and run, offline.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"specsurgery {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for verb, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
        if only is None or only == verb:
            _command_module(module).configure(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _command_module(module: str):
    return importlib.import_module(f"specsurgery.cli.{module}")


def _version() -> str:
    from .. import __version__

    return __version__


def _which_verb(argv: Sequence[str]) -> Optional[str]:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:  # a real process (not a call from Python): SIGTERM unwinds, removing temp files
        from .._atomic import install_signal_cleanup

        install_signal_cleanup()
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _which_verb(argv)
    # Only the chosen verb's module is imported: `--help` and `inspect` stay fast.
    parser = build_parser(only=verb or "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    debug = getattr(args, "debug", False) or bool(os.environ.get("SPECSURGERY_DEBUG"))
    from ..errors import SpecSurgeryError

    try:
        _require_all_inputs(args)
        _refuse_overwriting_an_input(args)
        return int(_command_module(COMMANDS[args.command][0]).run(args) or 0)
    except SpecSurgeryError as exc:
        if debug:
            raise
        print(f"specsurgery {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("specsurgery: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug or an unexpected input: still one line
        if debug:
            raise
        print(f"specsurgery {args.command}: error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _require_all_inputs(args) -> None:
    """Several model files given and more than one missing: name them all, not just the first
    (``check`` reports each file itself)."""
    if args.command == "check":
        return
    paths = getattr(args, "models", None) or getattr(args, "stages", None) or []
    missing = [p for p in paths if isinstance(p, str) and not os.path.exists(p)]
    if len(missing) > 1:
        from ..errors import LoadError

        raise LoadError(f"no such files: {', '.join(missing)}; every model given must exist "
                        "(check the paths and the current folder)")


def _refuse_overwriting_an_input(args) -> None:
    """``-o`` naming one of the input models would replace it: refuse (inputs are never modified)."""
    out = getattr(args, "output", None)
    if not out or not os.path.exists(out):
        return
    given = []
    for attr in ("model", "models", "stages", "reference", "candidate"):
        value = getattr(args, attr, None)
        given += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    for path in given:
        if os.path.exists(path) and os.path.samefile(path, out):
            from ..errors import SaveError

            raise SaveError(f"-o {out} is the input model {path}; specsurgery never modifies its inputs: "
                            "write to a new file, then replace the original yourself if you want to")


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
