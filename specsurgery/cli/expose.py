"""``specsurgery expose MODEL BLOB... -o OUT``: intermediate blobs as extra outputs."""

from __future__ import annotations

from ._common import add_output


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage")
    parser.add_argument("blobs", metavar="BLOB", nargs="+",
                        help="blobs (NeuralNetwork) or values (ML Program) to add as outputs")
    add_output(parser, help_text="the model with the extra outputs")
    parser.add_argument("--shape", action="append", metavar="BLOB=DxDxD",
                        help="declared shape of a blob where shape inference cannot tell (repeatable)")


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..io import save
    from ..ops.expose import expose
    from ..spec import describe_type
    from ._common import key_values

    shapes = {}
    for name, text in key_values(args.shape, "--shape").items():
        try:
            shapes[name] = [int(d) for d in text.lower().split("x")]
        except ValueError:
            raise SpecSurgeryError(f"--shape {name}={text}: expected dims like 1x64x32x32") from None
    edited = expose(args.model, args.blobs, shapes=shapes or None)
    save(edited, args.output)
    spec = getattr(edited, "spec", edited)
    added = {f.name: f for f in spec.description.output}
    for blob in args.blobs:
        print(f"output {blob}: {describe_type(added[blob].type)}")
    print(f"wrote {args.output}")
    return 0
