"""Dedupe across ML Programs (``.mlpackage``).

``dedupe(models, ...)`` and ``dedupe_files(paths, out_dir, ...)`` mirror the
neuralNetwork versions in ``ops/dedupe.py`` (which hands .mlpackage inputs
here) and return the same :class:`~specsurgery.ops.dedupe.DedupeResult` /
report structure.

Matching: every op of a program's main function gets a *computation id*, a
hash of its type, its attributes and inputs (immediate values by content,
values read from the weight file by the sha256 of their raw blob bytes and
dtype, named inputs by the id of the value they read) and its output types.
Function inputs get an id from their name, MIL type and the description's
feature type (an image's size and colour space), so the same weights behind
another input interface never merge; the image scale/bias of ct.convert are
ops, so other preprocessing gives other ids.  Op and value names never enter
an id.  Ops with the same id in several models compute the same thing.

Grouping: every subset of two or more models is scored by
``(members - 1) * shared weight bytes``; the best subset is taken, its models
removed, and so on (exact for the usual 2-4 models).  A model whose shared
share of its weight bytes is below ``min_share`` joins no group.

Outputs, two choices, both measured and reported:

* linked (iOS 15+, spec 6): ``<backbone>.mlpackage`` holding the shared ops
  and their weights once, and per model a pipeline package
  ``[linked stub of <backbone>.mlmodelc, head]`` with the original interface
  and only the head's weights.  A linked ML Program backbone is checked
  offline only: the stub's interface is compared with the backbone's and the
  whole pipeline runs in the numpy runtime, but whether a device resolves the
  link is only known on the device.
* multifunction (iOS 18+, spec 9), ``multifunction=True``: one package whose
  functions are the models (named after them) and whose weight file stores
  every distinct blob once, like ``ct.utils.save_multifunction``.  The app
  loads each model with ``MLModelConfiguration.functionName``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path


from ... import io
from ... import spec as S
from ..._proto import Model_pb2
from ...errors import SaveError, SpecSurgeryError, UnsupportedError
from ...mil import blobs as B
from ...mil import program as P

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
REPORT_NAME = "dedupe-report.json"
MULTIFUNCTION_VERSION = 9


# --------------------------------------------------------------------------- sizes

def package_bytes(pkg) -> int:
    """Bytes of a package as shipped: the serialized spec plus its weight files."""
    spec, p = io.split_model(pkg)
    return len(io.serialize(spec)) + (sum(w.size for w in p.weights.values()) if p is not None else 0)


# --------------------------------------------------------------------------- canonical ids

class _Model:
    """One input model: its package, main block and per-op computation ids."""

    def __init__(self, name, source, pkg, stats):
        self.name = name
        self.source = source
        self.pkg = pkg
        self.spec = pkg.spec
        if S.model_type(self.spec) != "mlProgram":
            raise UnsupportedError(f"dedupe: {name} is a {S.model_type(self.spec)}, not an ML Program")
        self.fname, self.fn = P.get_function(self.spec)
        self.block = P.main_block(self.fn)
        self.ops = list(self.block.operations)
        self.value_id: dict[str, str] = {}
        self.op_ids: list[str] = []
        self.op_blob: dict[int, list] = {}   # op index -> [(digest, nbytes)]
        self._blob_cache: dict = {}
        self.stats = stats
        feats = {f.name: f for f in self.spec.description.input}
        for i in self.fn.inputs:
            ft = feats.get(i.name)
            self.value_id[i.name] = _h("input", i.name, i.type.SerializeToString(deterministic=True),
                                       ft.type.SerializeToString(deterministic=True) if ft else b"")
        for idx, op in enumerate(self.ops):
            oid = self._op_id(idx, op)
            self.op_ids.append(oid)
            for k, o in enumerate(op.outputs):
                self.value_id[o.name] = _h(oid, k)
        self.id_to_idx = {oid: i for i, oid in enumerate(self.op_ids)}
        self.weight_bytes = sum(n for blobs in self.op_blob.values() for _, n in blobs)
        self.bytes_before = package_bytes(pkg)

    def _value_digest(self, idx, value) -> str:
        if value.WhichOneof("value") == "blobFileValue":
            bfv = value.blobFileValue
            key = (bfv.fileName, bfv.offset)
            if key not in self._blob_cache:
                rec, raw = B.raw_bytes(B.blob_source(self.pkg, bfv.fileName), bfv.offset)
                digest = B.BlobWriter.key(rec.dtype, rec.padding_bits, raw).hex()
                self.stats["bytes_hashed"] += rec.size
                self.stats["blobs_hashed"] += 1
                self._blob_cache[key] = (digest, rec.size)
            digest, size = self._blob_cache[key]
            self.op_blob.setdefault(idx, []).append((digest, size))
            return _h("blob", value.type.SerializeToString(deterministic=True), digest)
        return _h("imm", value.SerializeToString(deterministic=True))

    def _op_id(self, idx, op) -> str:
        parts = ["op", op.type]
        for key in sorted(op.attributes):
            if key == "name":
                continue
            parts += [key, self._value_digest(idx, op.attributes[key])]
        for key in sorted(op.inputs):
            parts.append(key)
            for b in op.inputs[key].arguments:
                if b.WhichOneof("binding") == "name":
                    if b.name not in self.value_id:
                        raise SpecSurgeryError(f"dedupe: {self.name}: value {b.name!r} is read before it "
                                               "is defined; run check on the model")
                    parts.append(self.value_id[b.name])
                else:
                    parts.append(self._value_digest(idx, b.value))
        if op.blocks:
            parts.append(_h("blocks", *[b.SerializeToString(deterministic=True) for b in op.blocks]))
        for o in op.outputs:
            parts.append(o.type.SerializeToString(deterministic=True))
        return _h(*parts)


def _h(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _is_const(op) -> bool:
    return op.type == "const" or op.type.startswith("constexpr_")


# --------------------------------------------------------------------------- planning

def _shared_ids(members) -> set:
    ids = set(members[0].op_ids)
    for m in members[1:]:
        ids &= set(m.op_ids)
    # ops producing an interface output stay in each model's own head,
    # and so does everything computed from them
    drop = set()
    for m in members:
        for name in m.block.outputs:
            if name in {o.name for op in m.ops for o in op.outputs}:
                idx = next(i for i, op in enumerate(m.ops) if any(o.name == name for o in op.outputs))
                drop.add(m.op_ids[idx])
    changed = True
    ids -= drop
    while changed:
        changed = False
        for m in members:
            for i, op in enumerate(m.ops):
                oid = m.op_ids[i]
                if oid not in ids:
                    continue
                deps = [n for _, n in P.input_names(op)]
                for n in deps:
                    pidx = _producer(m, n)
                    if pidx is not None and m.op_ids[pidx] not in ids:
                        ids.discard(oid)
                        changed = True
                        break
    # only computations count: a const shared on its own is not a backbone
    return ids


def _producer(m, name):
    cache = getattr(m, "_prod", None)
    if cache is None:
        cache = m._prod = {o.name: i for i, op in enumerate(m.ops) for o in op.outputs}
    return cache.get(name)


def _shared_bytes(m, ids) -> int:
    """Weight bytes of ``m`` the backbone takes: blobs of shared consts that
    shared computation reads."""
    read = set()
    for i, op in enumerate(m.ops):
        if m.op_ids[i] in ids and not _is_const(op):
            read |= {n for _, n in P.input_names(op)}
    seen = {}
    for i, oid in enumerate(m.op_ids):
        op = m.ops[i]
        if oid in ids and _is_const(op) and any(o.name in read for o in op.outputs):
            for digest, n in m.op_blob.get(i, []):
                seen[digest] = n
    return sum(seen.values())


def _cut_values(m, ids) -> list[str]:
    """Values computed by shared (non-const) ops that a non-shared op or an output reads."""
    shared_vals = {}
    for i, op in enumerate(m.ops):
        if m.op_ids[i] in ids and not _is_const(op):
            for o in op.outputs:
                shared_vals[o.name] = i
    cuts = []
    for i, op in enumerate(m.ops):
        if m.op_ids[i] in ids:
            continue
        for _, n in P.input_names(op):
            if n in shared_vals and n not in cuts:
                cuts.append(n)
    return sorted(cuts, key=lambda n: shared_vals[n])


def _plan(members_all, min_share):
    from .nn import BackboneGroup, Candidate

    remaining = list(members_all)
    groups, alternatives = [], []
    while len(remaining) >= 2:
        best = None
        for k in range(len(remaining), 1, -1):
            for combo in itertools.combinations(remaining, k):
                ids = _shared_ids(list(combo))
                if not any(not _is_const(combo[0].ops[combo[0].id_to_idx[i]]) for i in ids):
                    continue
                nbytes = _shared_bytes(combo[0], ids)
                shares = {m.name: (nbytes / m.weight_bytes if m.weight_bytes else 0.0) for m in combo}
                cand = Candidate(tuple(m.name for m in combo), frozenset(ids),
                                 sum(1 for i in ids if not _is_const(combo[0].ops[combo[0].id_to_idx[i]])),
                                 nbytes, (k - 1) * nbytes, shares)
                low = [n for n, s in shares.items() if s < min_share]
                if low:
                    cand.rejected = (f"{', '.join(low)} would share less than min_share "
                                     f"{min_share:.0%} of its weight bytes")
                    alternatives.append(cand)
                    continue
                if best is None or cand.saving > best[0].saving:
                    if best is not None:
                        alternatives.append(best[0])
                    best = (cand, list(combo), ids)
                else:
                    alternatives.append(cand)
        if best is None or best[0].saving <= 0:
            break
        cand, combo, ids = best
        groups.append((cand, combo, ids))
        remaining = [m for m in remaining if m not in combo]
    alternatives.sort(key=lambda c: -c.saving)
    return groups, alternatives[:10], BackboneGroup


# --------------------------------------------------------------------------- building

def _rename_value(spec, old: str, new: str) -> None:
    """Rename a value (function input or op output) of the main function, and its feature."""
    _, fn = P.get_function(spec)
    for i in fn.inputs:
        if i.name == old:
            i.name = new
    for block in fn.block_specializations.values():
        for op in P.iter_ops(block):
            for o in op.outputs:
                if o.name == old:
                    o.name = new
            for arg in op.inputs.values():
                for b in arg.arguments:
                    if b.WhichOneof("binding") == "name" and b.name == old:
                        b.name = new
        for k, n in enumerate(block.outputs):
            if n == old:
                block.outputs[k] = new
    for f in list(spec.description.input) + list(spec.description.output):
        if f.name == old:
            f.name = new


def _all_names(spec) -> set:
    _, fn = P.get_function(spec)
    names = {i.name for i in fn.inputs}
    for block in fn.block_specializations.values():
        names |= {o.name for op in P.iter_ops(block) for o in op.outputs}
    return names


def _build_group(cand, combo, ids, backbone_name, search_path, step=lambda *a, **k: None):
    from ..link_mlprogram import link_mlprogram
    from ..pipeline_mlprogram import pipeline_mlprogram
    from ..split_mlprogram import split_program

    ref = combo[0]
    ref_cuts = _cut_values(ref, ids)
    # the backbone's outputs carry the reference's value names; each member's
    # cut values are matched to them by computation id
    ref_ids = [ref.value_id[v] for v in ref_cuts]
    backbone, _ = split_program(ref.pkg, ref_cuts)
    outputs, cuts = {}, {}
    for m in combo:
        by_id = {m.value_id[o.name]: o.name for op in m.ops for o in op.outputs}
        member_cuts = [by_id[i] for i in ref_ids]
        _, head = split_program(m.pkg, member_cuts)
        taken = _all_names(head.spec)
        for mine, theirs in zip(member_cuts, ref_cuts):
            if mine == theirs:
                continue
            if theirs in taken:   # another value already has the backbone's name: move it aside
                alt, k = f"{theirs}_{m.name}", 0
                while alt in taken:
                    k += 1
                    alt = f"{theirs}_{m.name}{k}"
                _rename_value(head.spec, theirs, alt)
                taken.add(alt)
            _rename_value(head.spec, mine, theirs)
            taken.add(theirs)
        cuts[m.name] = dict(zip(member_cuts, ref_cuts))
        pipe = pipeline_mlprogram([backbone, head], names=["backbone", "head"], interface=m.pkg)
        outputs[m.name] = link_mlprogram(pipe, "backbone", file_name=f"{backbone_name}.mlmodelc",
                                         search_path=search_path)
        step()
    return backbone, outputs, ref_cuts, cuts


def build_multifunction(members, names=None) -> io.MLPackage:
    """One spec-9 package whose functions are the models' main functions and whose
    weight file stores every distinct blob once."""
    names = names or [m.name for m in members]
    out = Model_pb2.Model()
    out.specificationVersion = max(MULTIFUNCTION_VERSION, *(m.spec.specificationVersion for m in members))
    out.description.metadata.CopyFrom(members[0].spec.description.metadata)
    writer = B.BlobWriter()
    pkgs = {}
    for m, fname in zip(members, names):
        if not P.IDENTIFIER.match(fname):
            raise SpecSurgeryError(f"multifunction: {fname!r} is not a valid function name "
                                   "([A-Za-z_][A-Za-z0-9_@]*); rename the model")
        fn = out.mlProgram.functions[fname]
        fn.CopyFrom(m.fn)
        d = out.description.functions.add()
        d.name = fname
        d.input.extend(m.spec.description.input)
        d.output.extend(m.spec.description.output)
        d.state.extend(m.spec.description.state)
        d.predictedFeatureName = m.spec.description.predictedFeatureName
        d.predictedProbabilitiesName = m.spec.description.predictedProbabilitiesName
        out.mlProgram.version = m.spec.mlProgram.version
    for m, fname in zip(members, names):
        sub = Model_pb2.Model()
        sub.mlProgram.functions[fname].CopyFrom(out.mlProgram.functions[fname])
        B.rewrite_blobs(sub, m.pkg, writer)
        out.mlProgram.functions[fname].CopyFrom(sub.mlProgram.functions[fname])
        pkgs[fname] = m.pkg
    out.description.defaultFunctionName = names[0]
    return io.MLPackage(out, {"weights/weight.bin": writer.to_weight_file()} if writer.count else {}, None, {})


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_@]", "_", name)
    return s if re.match(r"[A-Za-z_]", s) else "m_" + s


def _load_members(models, step=lambda *a, **k: None):
    stats = {"bytes_hashed": 0, "blobs_hashed": 0}
    items = list(models.items()) if isinstance(models, dict) else [
        (Path(m).stem if isinstance(m, (str, os.PathLike)) else f"model{i}", m) for i, m in enumerate(models)]
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecSurgeryError(f"dedupe: two inputs are named {', '.join(dup)}; give a {{name: model}} dict")
    members = []
    for name, source in items:
        loaded = io.load(source)
        spec, pkg = io.split_model(loaded)
        pkg = pkg if pkg is not None else io.MLPackage(spec)
        members.append(_Model(name, source, pkg, stats))
        step()
    return members, stats


def _why_alone(name, groups, alternatives, min_share) -> str:
    """Why model ``name`` joined no backbone, for the report."""
    mine = [c for c in alternatives if name in c.members]
    if not mine:
        return "shares no computation with the other models"
    best = max(mine, key=lambda c: c.saving)
    if best.rejected:
        return f"with {', '.join(n for n in best.members if n != name)}: {best.rejected}"
    chosen = [cand for cand, _, _ in groups]
    beaten = " and ".join(", ".join(c.members) for c in chosen) or "another group"
    return (f"its best group ({', '.join(best.members)}) would share {best.shared_bytes} weight bytes, "
            f"saving {best.saving}; the chosen group ({beaten}) saves more and a model joins one backbone")


def dedupe(models, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
           min_share: float = 0.2, allow_fp16_match: bool = False, multifunction: bool = False,
           build: bool = True, progress=None):
    """Plan and build the dedupe of ML Programs; returns a ``DedupeResult``
    (``result.multifunction`` holds the multifunction package when asked)."""
    from .nn import DedupePlan, DedupeResult, HashStats, ModelPlan

    t0 = time.perf_counter()
    if len(list(models)) < 2:
        raise SpecSurgeryError("dedupe: give at least two models")
    step = progress or (lambda *a, **k: None)
    members, stats = _load_members(models, step)
    groups, alternatives, BackboneGroup = _plan(members, min_share)
    plans = [ModelPlan(m.name, str(m.source) if isinstance(m.source, (str, os.PathLike)) else m.name,
                       "mlProgram", m.bytes_before, m.weight_bytes) for m in members]
    by_name = {p.name: p for p in plans}
    all_digests, total_w = {}, 0
    for m in members:
        seen = {}
        for blobs in m.op_blob.values():
            for digest, n in blobs:
                seen[digest] = n
        total_w += sum(seen.values())
        all_digests.update(seen)
    hs = HashStats(weights_hashed=stats["blobs_hashed"], bytes_hashed=stats["bytes_hashed"],
                   weight_bytes_total=total_w)
    plan = DedupePlan(plans, [], alternatives, total_w, sum(all_digests.values()), {}, hs,
                      {"backbone_name": backbone_name, "search_path": search_path, "min_share": min_share,
                       "multifunction": multifunction, "format": "mlpackage"})
    backbones, outputs = {}, {}
    for gi, (cand, combo, ids) in enumerate(groups):
        name = backbone_name if gi == 0 else f"{backbone_name}{gi + 1}"
        group = BackboneGroup(name, [m.name for m in combo], combo[0].name, cand.shared_layers,
                              cand.shared_bytes, cand.saving, [], [], {},
                              why=f"shares {cand.shared_layers} ops and {cand.shared_bytes} weight bytes "
                                  f"across {len(combo)} models; best saving of the candidate groups")
        plan.groups.append(group)
        for m in combo:
            by_name[m.name].backbone = name
            by_name[m.name].shared_bytes = cand.shared_bytes
        if not build:   # dry run: estimates (weights move to the backbone)
            plan.backbone_bytes[name] = cand.shared_bytes
            for m in combo:
                by_name[m.name].bytes_after = by_name[m.name].bytes_before - cand.shared_bytes
        if build:
            backbone, outs, ref_cuts, cuts = _build_group(cand, combo, ids, name, search_path, step)
            group.outputs = list(ref_cuts)
            group.inputs = [f.name for f in backbone.spec.description.input]
            group.cuts = cuts
            backbones[name] = backbone
            plan.backbone_bytes[name] = package_bytes(backbone)
            outputs.update(outs)
    for m in members:
        p = by_name[m.name]
        if p.backbone is None:
            p.reason = _why_alone(m.name, groups, alternatives, min_share)
            outputs[m.name] = m.pkg
            p.bytes_after = p.bytes_before
            p.measured = True
        elif build:
            p.bytes_after = package_bytes(outputs[m.name])
            p.measured = True
        p.output = f"{m.name}.mlpackage"
    if not groups:
        plan.notes.append("the models share no computation; nothing to do")
    result = DedupeResult(plan, backbones, outputs if build else {}, {m.name: ".mlpackage" for m in members},
                          0.0)
    result.multifunction = None
    mf = build_multifunction(members, [_safe_name(m.name) for m in members]) if build else None
    if mf is not None:
        plan.options["multifunction_bytes"] = package_bytes(mf)
        plan.options["linked_bytes"] = plan.total_after
        plan.notes.append(
            f"bundle size: linked pipelines (iOS 15+) {plan.total_after} bytes; one multifunction package "
            f"(iOS 18+, spec 9) {package_bytes(mf)} bytes; before {plan.total_before} bytes")
        if multifunction:
            result.multifunction = mf
    result.seconds = time.perf_counter() - t0
    return result


def dedupe_files(paths, out_dir, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
                 min_share: float = 0.2, allow_fp16_match: bool = False, dry_run: bool = False,
                 multifunction: bool = False, multifunction_name: str = "Models", progress=None) -> dict:
    """Dedupe .mlpackage files into ``out_dir`` (see module doc); returns the report dict.

    Linked (default): ``<backbone_name>.mlpackage`` plus ``<model>.mlpackage``
    pipelines.  ``multifunction=True``: ``<multifunction_name>.mlpackage``, one
    function per model.  Writes nothing on ``dry_run`` or when nothing is shared.
    """
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    for p in paths:
        if not dry_run and out_dir.resolve() == p.resolve().parent:
            raise SpecSurgeryError(f"output folder {out_dir} holds the input {p.name}; choose another -o folder")
    result = dedupe(paths, backbone_name=backbone_name, search_path=search_path, min_share=min_share,
                    allow_fp16_match=allow_fp16_match, multifunction=multifunction, build=not dry_run,
                    progress=progress)
    report = result.to_json()
    report["dry_run"] = dry_run
    report["out_dir"] = str(out_dir)
    report["written"] = []
    report["table"] = result.plan.table()
    opts = result.plan.options
    if "multifunction_bytes" in opts:
        from ...cli._common import human_bytes

        report["bundle_sizes"] = {"before": result.plan.total_before, "linked": opts["linked_bytes"],
                                  "multifunction": opts["multifunction_bytes"]}
        report["table"] += (f"\nbundle size: linked backbone pipelines (iOS 15+) {human_bytes(opts['linked_bytes'])}"
                            f"; one multifunction package (iOS 18+) {human_bytes(opts['multifunction_bytes'])}"
                            f" ({'written' if multifunction else 'use --multifunction'})")
    if dry_run or not result.plan.shares_anything:
        return report
    if out_dir.exists() and not out_dir.is_dir():
        raise SaveError(f"{out_dir} exists and is not a folder; pass a folder for -o")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.dedupe-", dir=out_dir.parent))
    except OSError as exc:   # a file where a parent folder should be, no permission
        raise io._write_error(out_dir, exc) from None
    written = []
    try:
        if multifunction:
            io.save(result.multifunction, tmp / f"{multifunction_name}.mlpackage")
            written.append(f"{multifunction_name}.mlpackage")
        else:
            for name, bb in result.backbones.items():
                io.save(bb, tmp / f"{name}.mlpackage")
                written.append(f"{name}.mlpackage")
            for p in result.plan.models:
                io.save(result.models[p.name], tmp / p.output, search_path=str(tmp))
                written.append(p.output)
        report["files"] = sorted(written) + [REPORT_NAME]
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n")
        written.append(REPORT_NAME)
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel in written:
            target = out_dir / rel
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / rel, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["written"] = [str(out_dir / rel) for rel in written]
    return report


__all__ = ["dedupe", "dedupe_files", "build_multifunction", "package_bytes"]
