"""``specsurgery relink PIPELINE STAGE --file NAME.mlmodelc --search-path P -o OUT``:
edit an existing linked stub in one step."""

from __future__ import annotations

from ._common import notes_to_stderr


def configure(parser) -> None:
    parser.add_argument("model", metavar="PIPELINE", help="a pipeline with a linked stage (or a stub)")
    parser.add_argument("stage", metavar="STAGE", nargs="?", default=None,
                        help="the linked stage: name, index or outer/inner (omit when PIPELINE is a stub)")
    parser.add_argument("--file", metavar="NAME.mlmodelc", default=None,
                        help="new linkedModelFileName")
    parser.add_argument("--search-path", metavar="P", default=None,
                        help="new linkedModelSearchPath, ':'-separated (e.g. .:$BUNDLE_MAIN)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")


def run(args) -> int:
    from ..io import save
    from ..ops.link import relink

    with notes_to_stderr():
        out = relink(args.model, args.stage, file_name=args.file, search_path=args.search_path)
    save(out, args.output)
    where = f"stage {args.stage!r}" if args.stage is not None else "the stub"
    parts = ([f"file {args.file}"] if args.file is not None else []) + \
        ([f"search path {args.search_path!r}"] if args.search_path is not None else [])
    print(f"wrote {args.output}: {where} now links " + ", ".join(parts))
    return 0
