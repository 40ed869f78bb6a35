"""``specsurgery diff A B``: what changed between two models (exit 0: same, 1: different)."""

from __future__ import annotations

from ._common import add_json


def configure(parser) -> None:
    parser.add_argument("a", metavar="A", help="the first model (.mlmodel or .mlpackage)")
    parser.add_argument("b", metavar="B", help="the model compared with it")
    add_json(parser)


def _fmt(value) -> str:
    if isinstance(value, list) and len(value) == 2:
        return f"{value[0]!r} -> {value[1]!r}"
    return str(value)


def _lines(report: dict) -> list[str]:
    lines = []
    a, b = report["spec_version"]
    if a != b:
        lines.append(f"spec version      {a} -> {b}")
    for role, entry in report["interface"].items():
        if isinstance(entry, dict) and role in ("inputs", "outputs"):
            for name in entry.get("added", []):
                lines.append(f"{role[:-1]:<17} + {name}")
            for name in entry.get("removed", []):
                lines.append(f"{role[:-1]:<17} - {name}")
            for name, (ta, tb) in entry.get("changed", {}).items():
                lines.append(f"{role[:-1]:<17} ~ {name}: {ta} -> {tb}")
            if "order" in entry:
                lines.append(f"{role[:-1]:<17} order {entry['order'][0]} -> {entry['order'][1]}")
        elif role == "class_labels":
            first = entry["first_difference"]
            lines.append(f"class labels      {entry['count'][0]} -> {entry['count'][1]}"
                         + (f", first difference at {first['index']}: {first['a']!r} -> {first['b']!r}"
                            if first else ""))
        else:
            lines.append(f"{role:<17} {_fmt(entry)}")
    for key, value in report["metadata"].items():
        if isinstance(value, dict):
            for sub, pair in value.items():
                lines.append(f"metadata          {key}[{sub}]: {_fmt(pair)}")
        else:
            lines.append(f"metadata          {key}: {_fmt(value)}")
    stages = report["stages"]
    for row in stages.get("added", []):
        lines.append(f"stage             + {row['stage']} ({row['type']})")
    for row in stages.get("removed", []):
        lines.append(f"stage             - {row['stage']} ({row['type']})")
    for row in stages.get("changed", []):
        lines.append(f"stage             ~ {row['stage']}: {', '.join(row['what'])}")
    layers = report["layers"]
    rows = ([("+", r["stage"], r["name"], r["kind"], "", "") for r in layers["added"]]
            + [("-", r["stage"], r["name"], r["kind"], "", "") for r in layers["removed"]]
            + [("~", r["stage"], r["name"], r["kind"], ",".join(r["what"]),
                "" if r["max_abs"] is None else f"{r['max_abs']:.3g}") for r in layers["changed"]])
    if rows:
        lines.append("")
        header = ("", "stage", "layer", "kind", "what", "max |a-b|")
        table = [header] + [tuple(str(c) for c in row) for row in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for row in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for text in report["other"]:
        lines.append(text)
    return lines


def run(args) -> int:
    from ..diff import diff
    from ._common import print_json

    report = diff(args.a, args.b).to_json()
    if args.json:
        print_json(report)
    elif report["same"]:
        print(f"{args.a} and {args.b} are the same model")
    else:
        print(f"{args.a} -> {args.b}:")
        for line in _lines(report):
            print(f"  {line}" if line else "")
    return 0 if report["same"] else 1
