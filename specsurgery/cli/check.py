"""``specsurgery check MODEL... [--search-path P] [--json]``: the offline validator;
``specsurgery check --explain RULE`` says what a rule checks and where it comes from."""

from __future__ import annotations

from ._common import add_bundle, add_json, add_search_path


def configure(parser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=".mlmodel, .mlpackage or .pbtxt files to check")
    parser.add_argument("--explain", metavar="RULE", action="append",
                        help="print what RULE (e.g. tree.missing-child) checks and the Core ML "
                             "validator file it mirrors, or why only we check it; 'all' lists "
                             "every rule (repeatable)")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("--warnings-as-errors", action="store_true",
                        help="exit 1 on warnings too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print errors only (no warnings, infos or 'ok' lines)")
    add_json(parser)


def run(args) -> int:
    import sys

    from ..check import check
    from ..errors import SpecSurgeryError
    from ._common import print_json

    if args.explain:
        return _explain(args.explain, args.models)
    if not args.models:
        print("specsurgery check: error: give one or more MODEL files (or --explain RULE)",
              file=sys.stderr)
        return 2
    failed = False
    report = []
    n_failed = 0
    for path in args.models:
        try:
            search_path = args.search_path
            if search_path is None and args.bundle is not None:
                search_path = "$BUNDLE_MAIN"
            findings = check(path, search_path=search_path, bundle=args.bundle)
        except SpecSurgeryError as exc:
            failed = True
            n_failed += 1
            message = " ".join(str(exc).split())
            if message.startswith(f"{path}: "):  # load errors already name the file
                message = message[len(path) + 2:]
            if args.json:
                report.append({"model": path, "ok": False, "load_error": message, "findings": []})
            else:
                print(f"{path}: error: {message}", file=sys.stderr)
            continue
        n_err = sum(f.severity == "error" for f in findings)
        n_warn = sum(f.severity == "warning" for f in findings)
        bad = n_err > 0 or (args.warnings_as_errors and n_warn > 0)
        failed = failed or bad
        n_failed += bool(bad)
        if args.json:
            report.append({"model": path, "ok": not bad, "errors": n_err, "warnings": n_warn,
                           "findings": [f.to_json() for f in findings]})
            continue
        for f in findings:
            if args.quiet and f.severity != "error":
                continue
            print(f"{path}: {f}")
        if not args.quiet:
            status = "ok" if not bad else "FAILED"
            print(f"{path}: {status} ({n_err} error{'s' * (n_err != 1)}, "
                  f"{n_warn} warning{'s' * (n_warn != 1)})")
    if args.json:
        print_json({"ok": not failed, "models": report})
    elif len(args.models) > 1 and not args.quiet:
        print(f"{len(args.models)} models checked: {len(args.models) - n_failed} ok, {n_failed} failed")
    return 1 if failed else 0


def _explain(rule_ids, models) -> int:
    import sys

    from ..check.rules import all_rules, explain
    from ..errors import SpecSurgeryError

    if models:
        print("specsurgery check: error: --explain takes rule ids, not models "
              f"(got {', '.join(models)})", file=sys.stderr)
        return 2
    ids = list(all_rules()) if "all" in rule_ids else rule_ids
    status = 0
    for rid in ids:
        try:
            print(explain(rid))
        except SpecSurgeryError as exc:
            print(f"specsurgery check: error: {exc}", file=sys.stderr)
            status = 2
    return status
