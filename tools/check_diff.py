#!/usr/bin/env python3
"""Differential harness: `specsurgery check` against Apple's own validator.

A developer tool (never run in CI: it needs the validator built by
tools/apple_validator.py, which needs a coremltools checkout).  It makes seeded
mutants of the corpus models, each with one field broken, asks both validators
about each, and lists every disagreement:

    python tools/check_diff.py [--corpus ../shared/corpus] [--per-model 60] [--seed 15]
                               [--out /tmp/check_diff] [--json report.json] [--show 40]

Mutations (one per mutant): clear a set field or oneof, switch a oneof to
another member (a feature's type, a label kind, ...), zero / negate / bump a
number, set an enum to an unknown value, flip a bool, empty / rename / swap a
string (with another name of the same model), clear / shorten / extend a
repeated field.  Sites are every field of the spec tree (big weight arrays
count once).  Mutants identical to their model or to an earlier mutant are
dropped.  ML Program packages are mutated in their spec only; the weights are
copied next to it so that both validators see a whole package.

Verdicts: Apple "reject" = invalid or crash (it dies on a few specs); ours
"reject" = `check` reports an error or cannot load the file.  The report lists
"apple rejects, check passes" and "apple accepts, check rejects" with the
mutation, Apple's message and our rule ids.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apple_validator  # noqa: E402

from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
BIG = 64  # repeated scalar fields longer than this are weights: one site, few ops

_INT_TYPES = {FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_SINT32,
              FD.TYPE_SINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64, FD.TYPE_SFIXED32, FD.TYPE_SFIXED64}
_UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64}
_FLOAT_TYPES = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}


def corpus_models(corpus: Path) -> list[Path]:
    lines = (corpus / "MANIFEST.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    rows = [dict(zip(head, ln.split("\t"))) for ln in lines[1:] if ln.strip()]
    return [corpus / r["file"] for r in rows if not r["file"].startswith("invalid/")]


def _names(spec) -> list[str]:
    """Feature and blob names of a model (for 'swap' mutations)."""
    out = set()

    def walk(msg):
        for fd, value in msg.ListFields():
            if fd.type == FD.TYPE_MESSAGE:
                items = value if fd.is_repeated else [value]
                if fd.message_type.GetOptions().map_entry:
                    continue
                for item in items:
                    walk(item)
            elif fd.type == FD.TYPE_STRING and fd.name in ("name", "input", "output", "predictedFeatureName",
                                                           "predictedProbabilitiesName", "target"):
                for v in (value if fd.is_repeated else [value]):
                    if v:
                        out.add(v)
    walk(spec)
    return sorted(out)


def sites(spec) -> list[tuple[tuple, str, object]]:
    """Every (path, op, arg) mutation of ``spec``; path = ((field, index|None), ...)."""
    found = []
    names = _names(spec)

    def walk(msg, path):
        desc = msg.DESCRIPTOR
        for oneof in desc.oneofs:
            which = msg.WhichOneof(oneof.name)
            if which is not None:
                found.append((path, "clear-oneof", oneof.name))
                for other in oneof.fields:  # switch to another member (a feature's type, ...)
                    if other.name == which:
                        continue
                    step = path + ((other.name, None),)
                    if other.type == FD.TYPE_MESSAGE:
                        found.append((step, "set-empty", None))
                    elif other.type == FD.TYPE_STRING:
                        found.append((step, "set", "x"))
                    elif other.type in _INT_TYPES or other.type == FD.TYPE_ENUM:
                        found.append((step, "set", 1))
                    elif other.type in _FLOAT_TYPES:
                        found.append((step, "set", 1.0))
                    elif other.type == FD.TYPE_BOOL:
                        found.append((step, "set", True))
        for fd in desc.fields:
            step = path + ((fd.name, None),)
            if fd.is_repeated:
                values = getattr(msg, fd.name)
                n = len(values)
                if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
                    if n:
                        found.append((step, "clear", None))
                    continue
                if n:
                    found.append((step, "clear", None))
                    found.append((step, "drop-last", None))
                    found.append((step, "dup-last", None))
                elif fd.type != FD.TYPE_MESSAGE:
                    found.append((step, "append-one", None))
                if fd.type == FD.TYPE_MESSAGE:
                    for i, item in enumerate(values):
                        walk(item, path + ((fd.name, i),))
                elif n and n <= BIG:
                    for i in range(n):
                        _scalar_sites(fd, values[i], path + ((fd.name, i),), names, found)
                continue
            if fd.type == FD.TYPE_MESSAGE:
                if msg.HasField(fd.name):
                    if fd.containing_oneof is None:
                        found.append((step, "clear", None))
                    walk(getattr(msg, fd.name), step)
                elif fd.containing_oneof is None or msg.WhichOneof(fd.containing_oneof.name) is None:
                    found.append((step, "set-empty", None))
                continue
            if fd.containing_oneof is not None and msg.WhichOneof(fd.containing_oneof.name) != fd.name:
                continue
            _scalar_sites(fd, getattr(msg, fd.name), step, names, found)

    walk(spec, ())
    return found


def _scalar_sites(fd, value, step, names, found):
    t = fd.type
    if t == FD.TYPE_BOOL:
        found.append((step, "set", not value))
    elif t == FD.TYPE_ENUM:
        for v in fd.enum_type.values:
            if v.number != value:
                found.append((step, "set", v.number))
        found.append((step, "set", 99))
    elif t in _INT_TYPES:
        for v in {0, value + 1, 1, 2 if value != 2 else 3} | (set() if t in _UNSIGNED else {-1, -value}):
            if v != value:
                found.append((step, "set", v))
    elif t in _FLOAT_TYPES:
        for v in (0.0, -1.0, 1e9):
            if v != value:
                found.append((step, "set", v))
    elif t == FD.TYPE_STRING:
        if value:
            found.append((step, "set", ""))
            found.append((step, "set", value + "_x"))
        else:
            found.append((step, "set", "x"))
        for other in names[:6]:
            if other != value:
                found.append((step, "set", other))
    elif t == FD.TYPE_BYTES:
        if value:
            found.append((step, "set", b""))
            found.append((step, "set", value[: len(value) // 2]))


def apply(spec, path, op, arg) -> None:
    msg = spec
    for field, index in path[:-1] if op not in ("clear-oneof",) else path:
        msg = getattr(msg, field) if index is None else getattr(msg, field)[index]
    if op == "clear-oneof":
        msg.ClearField(msg.WhichOneof(arg))
        return
    field, index = path[-1]
    if index is not None:
        getattr(msg, field)[index] = arg
        return
    if op == "set":
        setattr(msg, field, arg)
    elif op == "clear":
        msg.ClearField(field)
    elif op == "set-empty":
        getattr(msg, field).SetInParent()
    elif op == "drop-last":
        del getattr(msg, field)[-1]
    elif op == "dup-last":
        rep = getattr(msg, field)
        if hasattr(rep, "add"):
            rep.add().CopyFrom(rep[-1])
        else:
            rep.append(rep[-1])
    elif op == "append-one":
        rep = getattr(msg, field)
        fd = msg.DESCRIPTOR.fields_by_name[field]
        rep.append({FD.TYPE_STRING: "x", FD.TYPE_BYTES: b"x", FD.TYPE_BOOL: True}.get(
            fd.type, 1.0 if fd.type in _FLOAT_TYPES else 1))


def describe(path, op, arg) -> str:
    p = ".".join(f + (f"[{i}]" if i is not None else "") for f, i in path)
    if op == "set":
        return f"{p} = {arg!r}"[:160]
    return f"{op} {p}" + (f" ({arg})" if op == "clear-oneof" else "")


def make_mutants(models, out: Path, per_model: int, seed: int) -> list[dict]:
    from specsurgery._proto import Model_pb2  # noqa: F401  (the package's protobuf classes)
    from specsurgery.io import load_spec

    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mutants = []
    for model in models:
        spec = load_spec(model)
        original = spec.SerializeToString()
        all_sites = sites(spec)
        rng.shuffle(all_sites)
        seen = {original}
        made = 0
        for path, op, arg in all_sites:
            if made >= per_model:
                break
            m = type(spec)()
            m.ParseFromString(original)
            try:
                apply(m, path, op, arg)
                data = m.SerializeToString()
            except Exception:
                continue
            if data in seen:
                continue
            seen.add(data)
            stem = f"{model.parent.name}__{model.name.split('.')[0]}__{made:03d}"
            if model.is_dir():
                target = out / (stem + ".mlpackage")
                shutil.copytree(model, target)
                for p in [target, *target.rglob("*")]:
                    p.chmod(0o755 if p.is_dir() else 0o644)
                apple_validator.spec_file(target).write_bytes(data)
            else:
                target = out / (stem + ".mlmodel")
                target.write_bytes(data)
            mutants.append({"path": str(target), "model": str(model.relative_to(model.parents[1])),
                            "mutation": describe(path, op, arg)})
            made += 1
    return mutants


def ours(path: str) -> tuple[bool, list[str]]:
    from specsurgery.check import check
    from specsurgery.errors import SpecSurgeryError

    try:
        found = check(path)
    except SpecSurgeryError as exc:
        return False, ["load-error: " + " ".join(str(exc).split())[:120]]
    except Exception as exc:  # a crash of ours is a finding of the harness
        return False, [f"CRASH {type(exc).__name__}: {exc}"[:160]]
    errs = sorted({f.rule for f in found if f.severity == "error"})
    return not errs, errs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--per-model", type=int, default=60)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("/tmp/check_diff"))
    ap.add_argument("--build-dir", type=Path, default=apple_validator.DEFAULT_BUILD)
    ap.add_argument("--json", type=Path, help="write every verdict here")
    ap.add_argument("--show", type=int, default=1000, help="disagreements to print per side")
    a = ap.parse_args(argv)

    models = corpus_models(a.corpus)
    t0 = time.time()
    mutants = make_mutants(models, a.out / "mutants", a.per_model, a.seed)
    apple = apple_validator.run([Path(m["path"]) for m in mutants], a.build_dir)
    t1 = time.time()
    for m in mutants:
        verdict, msg = apple.get(m["path"], ("missing", ""))
        m["apple"] = verdict
        m["apple_message"] = msg[:300]
        ok, rules = ours(m["path"])
        m["ours"] = "valid" if ok else "invalid"
        m["rules"] = rules
    t2 = time.time()
    miss = [m for m in mutants if m["apple"] != "valid" and m["ours"] == "valid"]
    extra = [m for m in mutants if m["apple"] == "valid" and m["ours"] != "valid"]
    agree = len(mutants) - len(miss) - len(extra)
    print(f"{len(mutants)} mutants of {len(models)} models (seed {a.seed}); apple {t1 - t0:.1f}s "
          f"(with mutating), check {t2 - t1:.1f}s")
    print(f"agree {agree} ({100 * agree / max(1, len(mutants)):.1f}%); apple rejects & check passes: "
          f"{len(miss)}; apple accepts & check rejects: {len(extra)}")
    crashes = [m for m in mutants if m["apple"] == "crash"]
    if crashes:
        print(f"apple crashed on {len(crashes)}: " + ", ".join(m["mutation"] for m in crashes[:5]))
    print("\n== apple rejects, check passes")
    for m in miss[: a.show]:
        print(f"- {m['model']}: {m['mutation']}\n    apple: {m['apple_message'][:200]}")
    print("\n== apple accepts, check rejects (by rule)")
    by_rule = collections.defaultdict(list)
    for m in extra:
        for r in m["rules"]:
            by_rule[r].append(m)
    for rule, ms in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        print(f"- {rule}: {len(ms)}")
        for m in ms[: min(a.show, 4)]:
            print(f"    {m['model']}: {m['mutation']}")
    if a.json:
        a.json.write_text(json.dumps(mutants, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
