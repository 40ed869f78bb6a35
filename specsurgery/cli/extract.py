"""``specsurgery extract MODEL --inputs a,b --outputs c -o OUT``: the sub-network between blobs."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="neural-network model")
    parser.add_argument("--inputs", required=True, metavar="a,b", help="blobs that become the inputs")
    parser.add_argument("--outputs", required=True, metavar="c", help="blobs that become the outputs")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=".mlmodel to write")


def run(args) -> int:
    from ..io import save
    from ..ops.extract import extract
    from ..spec import describe_type, nn_of

    out = extract(args.model, args.inputs, args.outputs)
    save(out, args.output)
    print(f"wrote {args.output}: {len(nn_of(out).layers)} layers; inputs "
          + ", ".join(f"{f.name} {describe_type(f.type)}" for f in out.description.input) + "; outputs "
          + ", ".join(f"{f.name} {describe_type(f.type)}" for f in out.description.output))
    return 0
