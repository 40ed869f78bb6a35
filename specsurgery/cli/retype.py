"""``specsurgery retype MODEL --input NAME=image:RGB,scale=S,bias=R,G,B -o OUT``: image inputs, or back."""

from __future__ import annotations

import argparse

from ._common import add_json, add_output

EPILOG = """examples:
  specsurgery retype net.mlmodel --input x=image:RGB,scale=1/255 -o image.mlmodel
  specsurgery retype net.mlpackage --input x=image:BGR,scale=0.017,bias=-2.1,-2.0,-1.8 -o image.mlpackage
  specsurgery retype image.mlmodel --input x=array -o array.mlmodel"""


def configure(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage")
    parser.add_argument("--input", action="append", metavar="NAME=TYPE", required=True,
                        help="image:RGB|BGR|GRAY[,scale=S][,bias=R,G,B] turns a [1,C,H,W] or [C,H,W] "
                             "MultiArray into an image (the network sees pixel*S+bias); array turns an "
                             "image back, folding its preprocessing away (repeatable)")
    add_json(parser)
    add_output(parser, help_text="the retyped model")


def run(args) -> int:
    from ..io import save
    from ..ops.retype import retype
    from ._common import key_values, report_inputs

    types = key_values(args.input, "--input")
    edited = retype(args.model, types)
    save(edited, args.output)
    return report_inputs(args, edited, types)
