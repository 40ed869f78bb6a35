"""``specsurgery extract MODEL --inputs a,b --outputs c -o OUT``: the sub-network between blobs
(NeuralNetwork) or the sub-program between values (ML Program)."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="neural-network model or ML Program")
    parser.add_argument("--inputs", required=True, metavar="a,b", help="blobs/values that become the inputs")
    parser.add_argument("--outputs", required=True, metavar="c", help="blobs/values that become the outputs")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help=".mlmodel (NeuralNetwork) or .mlpackage (ML Program) to write")


def run(args) -> int:
    from ..io import save
    from ..ops.extract import extract
    from ..io import MLPackage
    from ..mil.program import iter_functions, iter_ops
    from ..spec import describe_type, nn_of

    out = extract(args.model, args.inputs, args.outputs)
    save(out, args.output)
    if isinstance(out, MLPackage):
        spec = out.spec
        ops = [op for _, fn in iter_functions(spec) for block in fn.block_specializations.values()
               for op in iter_ops(block, recursive=False)]
        consts = sum(op.type == "const" or op.type.startswith("constexpr_") for op in ops)
        size = f"{len(ops) - consts} ops, {consts} consts"
    else:
        spec = out
        size = f"{len(nn_of(out).layers)} layers"
    print(f"wrote {args.output}: {size}; inputs "
          + ", ".join(f"{f.name} {describe_type(f.type)}" for f in spec.description.input) + "; outputs "
          + ", ".join(f"{f.name} {describe_type(f.type)}" for f in spec.description.output))
    return 0
