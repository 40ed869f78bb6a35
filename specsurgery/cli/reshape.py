"""``specsurgery reshape MODEL --input NAME=SHAPE -o OUT``: flexible input shapes."""

from __future__ import annotations

import argparse

from ._common import add_json, add_output

EPILOG = """examples:
  specsurgery reshape net.mlmodel --input image=1x3x64..512x64..512 -o flex.mlmodel
  specsurgery reshape net.mlpackage --input x=1x3x224x224,1x3x320x320 -o enum.mlpackage"""


def configure(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage")
    parser.add_argument("--input", action="append", metavar="NAME=SHAPE", required=True,
                        help="new shape of an input (repeatable): 1x3x224x224 (fixed), 1x3x64..512x64..-1 "
                             "(a range per dim, -1 unbounded) or 1x3x224x224,1x3x320x320 (enumerated)")
    add_json(parser)
    add_output(parser, help_text="the reshaped model")


def run(args) -> int:
    from ..io import save
    from ..ops.reshape import reshape
    from ._common import key_values, report_inputs

    shapes = key_values(args.input, "--input")
    edited = reshape(args.model, shapes)
    save(edited, args.output)
    return report_inputs(args, edited, shapes)
