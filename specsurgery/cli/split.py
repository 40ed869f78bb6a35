"""``specsurgery split MODEL --at BLOB[,BLOB] -o DIR``: backbone, head and a pipeline of both."""

from __future__ import annotations

from ._common import Progress, add_json, add_quiet, add_stub_search_path, notes_to_stderr, print_json


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel (neuralNetwork, classifier or regressor) or ML Program .mlpackage")
    parser.add_argument("--at", required=True, metavar="BLOB[,BLOB]",
                        help="blob(s) to cut at; several when a skip connection crosses the cut "
                             "(see suggest-cuts)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder for <N>Backbone.mlmodel, <N>Head.mlmodel and <N>.mlmodel")
    parser.add_argument("--name", metavar="N", help="base name of the outputs (default: MODEL's stem)")
    parser.add_argument("--stage", metavar="NAME",
                        help="cut this stage of a pipeline (name, index or outer/inner; e.g. a detector's first "
                             "stage): <N>.mlmodel is the pipeline with the stage replaced by NAME_backbone "
                             "and NAME_head")
    parser.add_argument("--link", action="store_true",
                        help="make the pipeline's backbone stage a linked stub naming <N>Backbone.mlmodelc")
    add_stub_search_path(parser, "search path of the linked stub")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="updatable models: mark the backbone's layers not updatable (train the head only)")
    parser.add_argument("--drop-updatable", action="store_true",
                        help="updatable models: drop on-device training from both halves")
    add_quiet(parser)
    add_json(parser)


def run(args) -> int:
    from ..ops.split import split_model

    with notes_to_stderr() as notes, Progress.for_args(args, 1, "split") as bar:
        bar.describe(f"cut at {args.at}")
        paths = split_model(args.model, args.at, args.output, name=args.name, link=args.link,
                            search_path=args.search_path, freeze_backbone=args.freeze_backbone,
                            drop_updatable=args.drop_updatable, stage=args.stage)
        bar.step()
    if args.json:
        print_json({k: str(v) for k, v in paths.items()} | {"notes": notes})
    else:
        for role, path in paths.items():
            print(f"{role:9} {path}")
    return 0
