"""``specsurgery link MODEL --stage NAME --file F.mlmodelc -o OUT``: a stage becomes a linked stub."""

from __future__ import annotations

from ._common import add_stub_search_path, notes_to_stderr


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="pipeline .mlmodel (or any model with --standalone)")
    parser.add_argument("--stage", metavar="NAME",
                        help="stage name, index or nested path outer/inner (omit with --standalone)")
    parser.add_argument("--file", required=True, metavar="F.mlmodelc",
                        help="compiled model the stub names (linkedModelFileName)")
    add_stub_search_path(parser)
    parser.add_argument("--standalone", action="store_true",
                        help="write a stub for the whole MODEL instead of replacing a stage")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=".mlmodel to write")


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..io import save
    from ..ops.link import link_stage, make_linked_stub

    with notes_to_stderr():
        if args.standalone:
            out = make_linked_stub(args.model, file_name=args.file, search_path=args.search_path)
        else:
            if args.stage is None:
                raise SpecSurgeryError("link: give --stage NAME (or --standalone for a stub of the whole model)"
                                       + _stage_hint(args.model))
            out = link_stage(args.model, args.stage, file_name=args.file, search_path=args.search_path)
    save(out, args.output)
    print(f"wrote {args.output}: {'stub' if args.standalone else 'stage ' + repr(args.stage)} links "
          f"{args.file} (search path {args.search_path!r}), spec version {getattr(out, 'spec', out).specificationVersion}")
    return 0


def _stage_hint(model) -> str:
    """"; stages are a, b" for a pipeline, what the model is otherwise."""
    from .. import spec as S
    from ..io import load_spec

    spec = load_spec(model)
    pipeline = S.pipeline_of(spec)
    if pipeline is None:
        return f"; {model} is a {S.model_type(spec)}, not a pipeline, so only --standalone applies"
    return "; stages are " + ", ".join(S.stage_names(pipeline))
