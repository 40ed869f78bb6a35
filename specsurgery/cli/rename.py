"""``specsurgery rename MODEL OLD=NEW... -o OUT``: rename features, blobs (NeuralNetwork) and
values (ML Program) everywhere; an .mlpackage is written with its weights unchanged."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model to edit")
    parser.add_argument("renames", nargs="+", metavar="OLD=NEW", help="renames, applied in order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..io import save
    from ..ops.rename import rename_features

    pairs = []
    for item in args.renames:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise SpecSurgeryError(f"rename: {item!r} is not OLD=NEW")
        pairs.append((old, new))
    save(rename_features(args.model, pairs), args.output)
    print(f"wrote {args.output}: " + ", ".join(f"{o} -> {n}" for o, n in pairs))
    return 0
