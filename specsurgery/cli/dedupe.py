"""``specsurgery dedupe MODEL... -o DIR``: share one linked backbone between models.

Writes ``DIR/<backbone>.mlmodel``, one rewritten model per input under its own
name, and ``DIR/dedupe-report.json``; prints the per-model table.  Models that
share nothing: says so, writes nothing, exits 0.
"""

from __future__ import annotations

from ._common import add_json, add_quiet, print_json


def configure(parser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="models of one bundle (.mlmodel; .mlpackage ML Programs go to the ML Program dedupe); "
                             "a pipeline whose first stage is a network (a detector) shares that stage and "
                             "becomes [linked backbone, head, its later stages]")
    parser.add_argument("-o", "--output", metavar="DIR", required=True,
                        help="folder for the backbone, the rewritten models and dedupe-report.json")
    parser.add_argument("--backbone-name", default="Backbone", metavar="NAME",
                        help="file stem of the shared model (default Backbone; more backbones get NAME2, NAME3...); "
                             "the stubs link NAME.mlmodelc")
    parser.add_argument("--search-path", default=".:$BUNDLE_MAIN", metavar="P",
                        help="linkedModelSearchPath written into the stubs (default '.:$BUNDLE_MAIN')")
    parser.add_argument("--min-share", type=float, default=0.2, metavar="F",
                        help="least share (0..1) of a model's weight bytes that must be shared for it to join a "
                             "backbone (default 0.2)")
    parser.add_argument("--allow-fp16-match", action="store_true",
                        help="treat fp16 and fp32 copies of a weight as the same (outputs then differ by fp16 "
                             "rounding); neuralNetwork models only, refused for ML Programs")
    parser.add_argument("--multifunction", action="store_true",
                        help="ML Programs only (refused for neuralNetwork models): write one package whose "
                             "functions share weights (spec 9, iOS 18+) instead of linked pipelines")
    parser.add_argument("--multifunction-name", default="Models", metavar="NAME",
                        help="file stem of the --multifunction package (default Models)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    add_quiet(parser)
    add_json(parser)


def run(args) -> int:
    from ..ops.dedupe import dedupe_files
    from ._common import Progress

    # read + hash each model, rewrite each member, write the set (at most 2 N + 1 steps)
    bar = Progress.for_args(args, 2 * len(args.models) + 1, "dedupe")
    try:
        report = dedupe_files(args.models, args.output, backbone_name=args.backbone_name,
                              search_path=args.search_path, min_share=args.min_share,
                              allow_fp16_match=args.allow_fp16_match, dry_run=args.dry_run,
                              progress=bar.step, multifunction=args.multifunction,
                              multifunction_name=args.multifunction_name)
    finally:
        bar.close()
    if args.json:
        print_json({k: v for k, v in report.items() if k != "table"})
        return 0
    print(report.get("table", ""))
    if not report.get("shares_anything"):
        print("\nThe models share nothing worth a backbone; nothing written.")
    elif report.get("dry_run"):
        print(f"\nDry run: nothing written (would write to {args.output}).")
    elif args.multifunction:
        print(f"\nWrote {len(report['written'])} files to {args.output}: one multifunction package "
              f"({args.multifunction_name}.mlpackage); load each model as a function of it.")
    else:
        names = [b["name"] for b in report.get("backbones", [])]
        ext = ".mlpackage" if any(str(w).endswith(".mlpackage") for w in report["written"]) else ".mlmodel"
        print(f"\nWrote {len(report['written'])} files to {args.output}. Ship "
              + ", ".join(f"{n}{ext}" for n in names)
              + " in the app target (Xcode compiles it to "
              + ", ".join(f"{n}.mlmodelc" for n in names) + ") beside the rewritten models.")
    return 0
