"""``specsurgery rename MODEL OLD=NEW... -o OUT``: rename features, blobs (NeuralNetwork) and
values (ML Program) everywhere; an .mlpackage is written with its weights unchanged."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model to edit")
    parser.add_argument("renames", nargs="+", metavar="OLD=NEW", help="renames, applied in order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..io import load, save
    from ..ops.rename import rename_feature

    pairs = []
    for item in args.renames:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise SpecSurgeryError(f"rename: {item!r} is not OLD=NEW")
        pairs.append((old, new))
    model = load(args.model)
    _check_olds(model, pairs)
    for old, new in pairs:
        model = rename_feature(model, old, new)
    save(model, args.output)
    print(f"wrote {args.output}: " + ", ".join(f"{o} -> {n}" for o, n in pairs))
    return 0


def _check_olds(model, pairs) -> None:
    """Every OLD that names nothing and every NEW that is already taken
    (renames applied in order), all at once."""
    from ..errors import NotFoundError, SpecSurgeryError, missing_message
    from ..io import load_spec
    from ..ops.rename import names_in

    names = dict(names_in(load_spec(model)))
    missing, clashes, renamed = [], [], {}
    for old, new in pairs:
        if old not in names:
            missing.append(old)
            continue
        if new != old and new in names:
            clashes.append(f"{new!r} (for {old!r}) already names a value ({names[new]})")
        names[new] = names.pop(old)
        renamed[old] = new
    if clashes and not missing:
        raise SpecSurgeryError("rename: " + "; ".join(clashes) + "; renaming to a taken name would merge "
                               "two values: pick other names, or rename the taken ones first")
    if missing:
        message = missing_message("feature or blob", missing, sorted(names)) + " (rename)"
        earlier = [f"{o!r} is already {renamed[o]!r}" for o in missing if o in renamed]
        if earlier:
            message += "; renames apply in order and " + ", ".join(earlier)
        raise NotFoundError(message)
