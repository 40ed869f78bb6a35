"""``specsurgery pipeline STAGE... -o OUT``: assemble models into a pipeline."""

from __future__ import annotations

from ._common import notes_to_stderr


def configure(parser) -> None:
    parser.add_argument("stages", nargs="+", metavar="STAGE", help="stage models, in order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="pipeline .mlmodel to write")
    parser.add_argument("--names", metavar="a,b", help="stage names (default model0, model1, ...)")
    parser.add_argument("--kind", choices=("auto", "pipeline", "classifier", "regressor"), default="auto",
                        help="pipeline kind (auto: classifier/regressor when the last stage is one)")
    parser.add_argument("--coerce", action="store_true",
                        help="fix interface mismatches Core ML allows (DOUBLE vs FLOAT32 arrays, "
                             "unspecified output shapes) instead of reporting them")
    parser.add_argument("--prefixes", metavar="p1,p2",
                        help="per stage, a prefix for its output names ('' to leave a stage alone)")


def run(args) -> int:
    from ..io import save
    from ..ops.pipeline import make_pipeline
    from ..spec import model_type

    names = args.names.split(",") if args.names else None
    prefixes = [p or None for p in args.prefixes.split(",")] if args.prefixes is not None else None
    with notes_to_stderr():
        pipe = make_pipeline(args.stages, names=names, kind=args.kind, coerce=args.coerce, prefixes=prefixes)
    save(pipe, args.output)
    print(f"wrote {args.output}: {model_type(getattr(pipe, 'spec', pipe))} of {len(args.stages)} stages, "
          f"spec version {getattr(pipe, 'spec', pipe).specificationVersion}")
    return 0
