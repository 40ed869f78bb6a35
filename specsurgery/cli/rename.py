"""``specsurgery rename MODEL OLD=NEW... -o OUT``: rename features, blobs (NeuralNetwork) and
values (ML Program) everywhere; an .mlpackage is written with its weights unchanged.

A feature of a linked stage is also a feature of the stage's target file: the
target is found on ``--search-path`` (default: the stub's own search path,
beside MODEL), renamed too, and written beside OUT."""

from __future__ import annotations

from ._common import add_bundle, add_search_path


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model to edit")
    parser.add_argument("renames", nargs="+", metavar="OLD=NEW", help="renames, applied in order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    add_search_path(parser)
    add_bundle(parser)


def _pairs(items):
    from ..errors import SpecSurgeryError

    pairs, bad = [], []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            bad.append(item)
        pairs.append((old, new))
    if bad:
        raise SpecSurgeryError("rename: " + ", ".join(repr(b) for b in bad) + " is not OLD=NEW")
    return pairs


def _targets(model, pairs, args) -> dict:
    """{linkedModelFileName: source path} of the linked targets the renames touch."""
    from pathlib import Path

    from ..errors import NotFoundError
    from ..io import load_spec
    from ..linked import resolve_linked
    from ..ops.rename import linked_uses
    from ..spec import iter_models

    root = load_spec(model)
    touched = {target for old, _ in pairs for _, target in linked_uses(root, old)}
    stubs = {info.model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue: info.model
             for info in iter_models(root) if info.model.WhichOneof("Type") == "linkedModel"}
    found, problems = {}, []
    base = Path(args.model).resolve().parent
    for target in sorted(touched):
        path, tried = resolve_linked(stubs[target], search_path=args.search_path, base_dir=base,
                                     bundle=args.bundle)
        if path is None:
            compiled = [t for t in tried if "compiled" in t]
            problems.append(f"{target}: " + ("only the compiled model was found (" + compiled[0] + "), which "
                                             "cannot be edited; put its source .mlmodel/.mlpackage beside it"
                                             if compiled else "not found; tried " + "; ".join(tried)))
        else:
            found[target] = path
    if problems:
        raise NotFoundError("rename: the renames touch linked targets that must be renamed too: "
                            + " | ".join(problems) + ". Pass --search-path with the folder that holds them")
    return found


def run(args) -> int:
    from pathlib import Path

    from .. import _atomic
    from ..errors import SaveError
    from ..io import save
    from ..ops.rename import rename_features, rename_linked

    pairs = _pairs(args.renames)
    targets = _targets(args.model, pairs, args)
    if not targets:
        save(rename_features(args.model, pairs), args.output)
        print(f"wrote {args.output}: " + ", ".join(f"{o} -> {n}" for o, n in pairs))
        return 0
    out = Path(args.output)
    clash = [str(p) for p in targets.values() if p.resolve().parent == out.resolve().parent]
    if clash:
        raise SaveError(f"rename: -o {out} would write the renamed linked target(s) over "
                        f"{', '.join(clash)}, which are inputs; choose an output folder of its own")
    pipeline, renamed = rename_linked(args.model, pairs, {t: p for t, p in targets.items()})
    with _atomic.staging(out.parent if str(out.parent) else Path(".")) as st:
        names = []
        for target, model in renamed.items():
            name = targets[target].name
            save(model, st.dir / name)
            names.append(name)
        save(pipeline, st.dir / out.name, search_path=str(st.dir))
        st.commit(names + [out.name])
    print(f"wrote {args.output}: " + ", ".join(f"{o} -> {n}" for o, n in pairs))
    for target, path in targets.items():
        print(f"wrote {out.parent / path.name} (the linked target {target}, renamed the same way; every "
              f"other model that links {target} needs the same renames)")
    return 0
