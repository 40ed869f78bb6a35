"""The one dedupe planner, for both backends.

A backend (``nn`` for neuralNetwork models, ``mlprogram`` for ML Programs)
reads each model once and reduces it to a :class:`Fingerprint`: name-free
computation ids of its nodes (layers, or the non-const ops of a program), the
values each node reads, and the hashes and sizes of the weights each node
uses.  A fingerprint holds no weight bytes and no model.  Everything here
works on fingerprints only:

* the shared part of a group of models is the intersection of their node ids
  (closed under "everything it reads", because an id includes the ids of the
  values it reads), minus the nodes that produce an interface output and
  everything computed from them (an interface output must come from the
  model's own stage);
* every group of two or more models is scored by the bytes it saves: the
  members' copies of the shared weights minus the one copy the backbone keeps
  minus the linking overhead, with each member sharing at least ``min_share``
  of its own weight bytes; the partition of the models with the largest total
  saving wins (exactly, by dynamic programming over subsets, up to
  ``EXACT_LIMIT`` models; greedily beyond);
* each chosen group gets its cut (the shared values a head reads) and
  collision-free names for the backbone's outputs;
* after a backend built the files, :func:`settle` drops the groups that could
  not be built or did not shrink, and records the measured sizes.

Sizes: "best possible" is the total size if every distinct weight (by
content) were stored once: ``total before - (sum of all weight bytes - sum of
distinct weight bytes)``.  The saving share is ``(before - after) / (before -
best possible)``.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ... import io
from ...errors import SpecSurgeryError

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
REPORT_NAME = "dedupe-report.json"
EXACT_LIMIT = 12          # up to this many models the grouping is optimal (3^N subsets)
LINK_OVERHEAD = 256       # bytes per rewritten model beyond its description (stub, names, cut features)



#: below this many bytes a model is not worth a full garbage collection (which
#: costs about 0.1 s in a process that holds torch)
_COLLECT_ABOVE = 16 << 20


def _release(nbytes: int) -> None:
    """Free a large parsed model now: it sits in reference cycles, and the next
    one would otherwise be read while it is still held."""
    if nbytes > _COLLECT_ABOVE:
        gc.collect()

def digest(*parts) -> str:
    """A short hash of ``parts`` (bytes, or anything with a ``str``)."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        hasher.update(b"\x00")
    return hasher.hexdigest()


# --------------------------------------------------------------------------- fingerprints

class Fingerprint:
    """What the planner knows of one model: node ids, reads and weight hashes, never weights.

    A *node* is a layer (neuralNetwork) or a non-const op (ML Program); a
    *value* is a blob or a program value, its id ``"<node id>:<output k>"``,
    or ``"in:<signature>"`` for a model input.
    """

    def __init__(self, name: str, *, description_bytes: int, unit: str = "layers", allow_fp16: bool = False):
        self.name = name
        self.unit = unit                              # what a node is called in explanations
        self.allow_fp16 = allow_fp16
        self.node_ids: list[str] = []                 # in model order
        self.index_of: dict[str, int] = {}            # node id -> position
        self.node_inputs: dict[str, list[str]] = {}   # node id -> value ids read
        self.node_weights: dict[str, tuple] = {}      # node id -> ((weight key, bytes), ...)
        self.producer: dict[str, str] = {}            # value id -> node id
        self.value_name: dict[str, str] = {}          # value id -> name in this model
        self.names: set[str] = set()                  # every value and feature name of the model
        self.output_values: set[str] = set()          # value ids the interface reads
        self.weights: dict[str, int] = {}             # content hash -> bytes, every weight of the model
        self.weight_bytes = 0                         # weight bytes the model stores
        self.storage: dict[str, int] = {}             # storage kind -> weight bytes
        self.struct_ids: list[str] = []               # per node: architecture only (no weight values)
        # bytes a rewritten model adds: its interface is stored on the pipeline and on the head,
        # plus the stub (the backbone's interface, file name, search path) and stage names
        self.description_bytes = description_bytes
        self.link_overhead = 2 * description_bytes + LINK_OVERHEAD
        self._seen: dict[str, int] = {}
        self._children: Optional[dict] = None

    def add_input(self, name: str, signature: str) -> str:
        vid = "in:" + signature
        self.value_name[vid] = name
        self.names.add(name)
        return vid

    def add_node(self, node_id: str, inputs, outputs, weights) -> list[str]:
        """Record a node; returns the value ids of its ``outputs`` (names)."""
        if node_id in self._seen:   # two identical branches inside one model stay two nodes
            self._seen[node_id] += 1
            node_id = digest(node_id, self._seen[node_id])
        else:
            self._seen[node_id] = 0
        self.index_of[node_id] = len(self.node_ids)
        self.node_ids.append(node_id)
        self.node_inputs[node_id] = list(inputs)
        self.node_weights[node_id] = tuple(weights)
        vids = []
        for k, name in enumerate(outputs):
            vid = f"{node_id}:{k}"
            self.value_name[vid] = name
            self.producer[vid] = node_id
            self.names.add(name)
            vids.append(vid)
        return vids

    def ids(self) -> set:
        return set(self.node_ids)

    def bytes_of(self, node_ids) -> int:
        """Weight bytes the nodes use (a weight several of them read counts once)."""
        used = {}
        for nid in node_ids:
            used.update(self.node_weights[nid])
        return sum(used.values())

    def children(self) -> dict:
        if self._children is None:
            out: dict[str, set] = {}
            for nid, inputs in self.node_inputs.items():
                for vid in inputs:
                    prod = self.producer.get(vid)
                    if prod is not None:
                        out.setdefault(prod, set()).add(nid)
            self._children = out
        return self._children


# --------------------------------------------------------------------------- plan records

@dataclass
class HashStats:
    """How much weight data the fingerprinting read and hashed."""

    weights_hashed: int = 0       # weights (WeightParams messages, blobs) hashed
    bytes_hashed: int = 0         # weight bytes (as stored) fed to the hash
    weight_bytes_total: int = 0   # weight bytes the inputs hold (should equal bytes_hashed)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"weights_hashed": self.weights_hashed, "bytes_hashed": self.bytes_hashed,
                "weight_bytes_total": self.weight_bytes_total, "seconds": round(self.seconds, 4)}


@dataclass
class Candidate:
    """A group of models and what they share."""

    members: tuple            # model names
    shared: frozenset         # node ids in every member
    shared_layers: int
    shared_bytes: int
    saving: int               # the members' shared bytes - the backbone's copy - the linking overhead
    shares: dict              # member -> share of its weight bytes that is shared
    held_back: int = 0        # nodes kept in heads because they produce an interface output
    rejected: str = ""        # why the group cannot form ("" if it can)
    reference: str = ""       # the member whose nodes the backbone keeps
    overhead: int = 0         # estimated bytes the linking adds (already taken off saving)

    def to_json(self) -> dict:
        return {"members": list(self.members), "shared_layers": self.shared_layers,
                "shared_bytes": self.shared_bytes, "saving": self.saving, "linking_overhead": self.overhead,
                "shares": {k: round(v, 4) for k, v in self.shares.items()},
                **({"rejected": self.rejected} if self.rejected else {})}


@dataclass
class BackboneGroup:
    """One shared backbone of the plan."""

    name: str
    members: list
    reference: str                 # the member whose nodes (and value names) the backbone keeps
    shared_layers: int
    shared_bytes: int
    saving: int
    inputs: list                   # backbone input names
    outputs: list                  # backbone output names (after collision renames)
    cuts: dict                     # member -> {its value name: backbone output name}
    head_cuts: dict = field(default_factory=dict)   # member -> its value names its head reads
    head_reads_inputs: dict = field(default_factory=dict)  # member -> model inputs its head reads
    why: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "file": f"{self.name}.mlmodel", "compiled_name": f"{self.name}.mlmodelc",
                "members": self.members, "reference": self.reference,
                "shared_layers": self.shared_layers, "shared_bytes": self.shared_bytes,
                "saving_estimate": self.saving, "inputs": self.inputs, "outputs": self.outputs,
                "cuts": self.cuts, "head_inputs": self.head_cuts, "why": self.why}


@dataclass
class ModelPlan:
    """What happens to one input model."""

    name: str
    source: str
    kind: str
    bytes_before: int
    weight_bytes: int = 0
    backbone: Optional[str] = None
    shared_bytes: int = 0
    bytes_after: Optional[int] = None     # measured once outputs are built, else an estimate
    measured: bool = False
    reason: str = ""
    output: str = ""

    @property
    def share(self) -> float:
        return self.shared_bytes / self.weight_bytes if self.weight_bytes else 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "kind": self.kind,
                "output": self.output, "backbone": self.backbone,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "weight_bytes": self.weight_bytes, "shared_bytes": self.shared_bytes,
                "shared_share": round(self.share, 4), "reason": self.reason}


@dataclass
class DedupePlan:
    """The choice of backbones and cuts, the reasons, and the byte accounting."""

    models: list                       # ModelPlan, input order
    groups: list                       # BackboneGroup, by saving
    alternatives: list = field(default_factory=list)   # Candidate (not chosen), best first
    total_weight_bytes: int = 0
    distinct_weight_bytes: int = 0
    backbone_bytes: dict = field(default_factory=dict)  # name -> bytes (estimate or measured)
    stats: HashStats = field(default_factory=HashStats)
    options: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)        # name -> specificationVersion of the input

    @property
    def backbone_suffix(self) -> str:
        return ".mlpackage" if self.options.get("format") == "mlpackage" else ".mlmodel"

    @property
    def shares_anything(self) -> bool:
        return bool(self.groups)

    @property
    def total_before(self) -> int:
        return sum(m.bytes_before for m in self.models)

    @property
    def total_after(self) -> int:
        after = sum(m.bytes_after if m.bytes_after is not None else m.bytes_before for m in self.models)
        return after + sum(self.backbone_bytes.values())

    @property
    def best_possible(self) -> int:
        """Total bytes if every distinct weight were stored once."""
        return self.total_before - (self.total_weight_bytes - self.distinct_weight_bytes)

    @property
    def saving(self) -> int:
        return self.total_before - self.total_after

    @property
    def saving_share(self) -> Optional[float]:
        best = self.total_before - self.best_possible
        return self.saving / best if best > 0 else None

    def to_json(self) -> dict:
        share = self.saving_share
        out = {
            "options": self.options,
            "shares_anything": self.shares_anything,
            "backbones": [g.to_json() | {"file": f"{g.name}{self.backbone_suffix}"} for g in self.groups],
            "backbone_bytes": self.backbone_bytes,
            "models": [m.to_json() for m in self.models],
            "alternatives": [c.to_json() for c in self.alternatives],
            "totals": {"before": self.total_before, "after": self.total_after, "saving": self.saving,
                       "best_possible": self.best_possible,
                       "best_possible_saving": self.total_before - self.best_possible,
                       "saving_share_of_best": None if share is None else round(share, 6),
                       "total_weight_bytes": self.total_weight_bytes,
                       "distinct_weight_bytes": self.distinct_weight_bytes},
            "hashing": self.stats.to_json(),
            "notes": self.notes,
        }
        if "multifunction_bytes" in self.options:
            out["bundle_sizes"] = {"before": self.total_before, "linked": self.options["linked_bytes"],
                                   "multifunction": self.options["multifunction_bytes"]}
        return out

    def table(self) -> str:
        """The printed summary: per model before/after, backbones, totals, saving share."""
        from ...units import human_bytes

        rows = [("model", "backbone", "before", "after", "shared weights", "note")]
        for m in self.models:
            after = m.bytes_after if m.bytes_after is not None else m.bytes_before
            est = "" if m.measured or m.backbone is None else "~"
            rows.append((m.name, m.backbone or "-", human_bytes(m.bytes_before), est + human_bytes(after),
                         f"{human_bytes(m.shared_bytes)} ({100 * m.share:.1f}%)" if m.backbone else "-",
                         "" if m.backbone else _short(m.reason)))
        for name, nbytes in self.backbone_bytes.items():
            est = "" if all(m.measured for m in self.models if m.backbone == name) else "~"
            rows.append((f"{name}{self.backbone_suffix}", "(shared)", "-", est + human_bytes(nbytes), "-", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 .rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        share = self.saving_share
        lines.append("")
        lines.append(f"total before {human_bytes(self.total_before)}, after {human_bytes(self.total_after)}, "
                     f"saved {human_bytes(self.saving)}"
                     + (f" = {100 * share:.2f}% of the best possible "
                        f"({human_bytes(self.total_before - self.best_possible)}: every distinct weight stored once)"
                        if share is not None else " (no weight is stored twice: nothing to save)"))
        for g in self.groups:
            lines.append(f"{g.name}: {g.why}")
        for m in self.models:
            if m.backbone is None:
                lines.append(f"{m.name}: unchanged; {m.reason}")
        opts = self.options
        if "multifunction_bytes" in opts:
            lines.append(f"bundle size: linked backbone pipelines (iOS 15+) {human_bytes(opts['linked_bytes'])}; "
                         f"one multifunction package (iOS 18+) {'' if opts.get('multifunction_measured') else '~'}"
                         f"{human_bytes(opts['multifunction_bytes'])} "
                         f"({'written' if opts.get('multifunction') else 'use --multifunction'})")
        return "\n".join(lines)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass
class DedupeResult:
    """The plan plus the produced models: ``backbones`` name -> model, ``models`` name -> model
    (rewritten pipelines, or the original model for those left unchanged).  Specs for
    neuralNetwork inputs, MLPackages for ML Programs; ``multifunction`` is the one-package
    alternative of ML Programs when it was asked for."""

    plan: DedupePlan
    backbones: dict
    models: dict
    formats: dict = field(default_factory=dict)   # name -> output suffix
    seconds: float = 0.0
    multifunction: object = None

    def to_json(self) -> dict:
        out = self.plan.to_json()
        out["seconds"] = round(self.seconds, 3)
        return out


# --------------------------------------------------------------------------- inputs and options

def _name_for(source, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.name[: -len(path.suffix)] if path.suffix else path.name
    pkg_path = getattr(source, "path", None)
    if pkg_path is not None:
        return Path(pkg_path).stem
    return f"model{index}"


def backbone_names(base: str, count: int) -> list[str]:
    return [base if i == 0 else f"{base}{i + 1}" for i in range(count)]


def normalise_inputs(models, *, backbone_name: str, min_share: float) -> list[tuple[str, object, str]]:
    """[(name, source, source label)] from a list of models or a {name: model} dict,
    after checking the options both backends share."""
    if not 0.0 <= min_share <= 1.0:
        raise SpecSurgeryError(f"min_share {min_share} is outside 0..1 (it is a share of a model's weight bytes)")
    if not backbone_name or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", backbone_name):
        raise SpecSurgeryError(f"backbone name {backbone_name!r} must be a plain file stem "
                               "(letters, digits, _ . -), e.g. Backbone")
    if isinstance(models, dict):
        items = list(models.items())
    else:
        items = [(_name_for(m, i), m) for i, m in enumerate(models)]
    if len(items) < 2:
        raise SpecSurgeryError(f"dedupe needs 2 or more models, got {len(items)}")
    names = [n for n, _ in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecSurgeryError(
            "dedupe: several inputs would be written under the same name: " + ", ".join(dupes)
            + "; rename the files or pass a {name: model} dict")
    clash = sorted(set(names) & set(backbone_names(backbone_name, len(items))))
    if clash:
        raise SpecSurgeryError(f"backbone name {backbone_name!r} clashes with the input model name(s) "
                               f"{', '.join(clash)}; pass another --backbone-name")
    return [(n, m, str(m) if isinstance(m, (str, os.PathLike)) else f"<{type(m).__name__}>") for n, m in items]


def read_models(models, read: Callable, *, backbone_name: str, min_share: float, progress=None,
                loaded: Optional[dict] = None) -> tuple[list, list, HashStats]:
    """Read every input once with ``read(name, source, label, stats) -> (ModelPlan,
    Fingerprint or None, model)``; returns (model plans, fingerprints, stats).  With
    ``loaded``, each input is kept there for the build: its path (read again, see
    :func:`open_model`), or the model object it was given as."""
    items = normalise_inputs(models, backbone_name=backbone_name, min_share=min_share)
    stats = HashStats()
    t0 = time.perf_counter()
    plans, fps = [], []
    for name, source, label in items:
        if progress is not None:
            progress(f"read {name}")
        model_plan, fp, model = read(name, source, label, stats)
        plans.append(model_plan)
        if fp is not None:
            fps.append(fp)
        if loaded is not None:   # a path is read again when needed: one parsed model at a time
            loaded[name] = source if isinstance(source, (str, os.PathLike)) else model
        del model
        _release(fp.weight_bytes if fp is not None else 0)
    stats.weight_bytes_total = sum(fp.weight_bytes for fp in fps)
    stats.seconds = time.perf_counter() - t0
    return plans, fps, stats


def refuse_unsupported(backend: str, cannot: dict, **options) -> None:
    """Raise for the first option given (true) that ``backend`` cannot honour;
    ``cannot`` maps an option to (why, what to do).  Never drop one silently."""
    from ...errors import UnsupportedError

    for option, value in options.items():
        if value and option in cannot:
            why, fix = cannot[option]
            raise UnsupportedError(f"dedupe: option {option} (--{option.replace('_', '-')}) is not supported "
                                   f"for {backend} models: {why}; {fix}")


# --------------------------------------------------------------------------- planning

def _held_back(members: list, shared: set) -> set:
    """Shared nodes that must stay in heads: producers of an interface output
    (or a classifier's probability blob) in some member, and everything after them."""
    drop: set = set()
    for fp in members:
        for vid in fp.output_values:
            nid = fp.producer.get(vid)
            if nid is not None and nid in shared:
                drop.add(nid)
    if not drop:
        return drop
    children: dict = {}
    for fp in members:
        for k, v in fp.children().items():
            children.setdefault(k, set()).update(v)
    stack = list(drop)
    while stack:
        nid = stack.pop()
        for child in children.get(nid, ()):
            if child in shared and child not in drop:
                drop.add(child)
                stack.append(child)
    return drop


def _candidate(members: list, shared: set, min_share: float) -> Candidate:
    held = _held_back(members, shared) if shared else set()
    shared = shared - held
    per_member = [fp.bytes_of(shared) for fp in members]
    # the backbone keeps the cheapest copy (they differ only when fp16 and fp32 copies match);
    # on a tie the first model in input order
    k = per_member.index(min(per_member)) if per_member else 0
    nbytes = per_member[k] if per_member else 0
    shares = {fp.name: (b / fp.weight_bytes if fp.weight_bytes else 0.0) for fp, b in zip(members, per_member)}
    # what linking costs: every member's pipeline wrapping, the backbone's own description
    overhead = sum(fp.link_overhead for fp in members) + members[k].description_bytes
    cand = Candidate(tuple(fp.name for fp in members), frozenset(shared), len(shared), nbytes,
                     sum(per_member) - nbytes - overhead, shares, len(held),
                     reference=members[k].name if members else "", overhead=overhead)
    if nbytes == 0:
        cand.rejected = "no shared weights"
    elif cand.saving <= 0:
        cand.rejected = (f"linking would cost about {overhead:,} bytes (pipelines, stubs, descriptions) "
                         f"for {sum(per_member) - nbytes:,} bytes of duplicate weights")
    else:
        low = [n for n, s in shares.items() if s < min_share]
        if low:
            cand.rejected = ", ".join(f"{n} shares {100 * shares[n]:.1f}%" for n in low) + \
                f" of its weight bytes (< min share {100 * min_share:.0f}%)"
    return cand


def choose_groups(fps: list, min_share: float) -> tuple[list, list]:
    """(chosen candidates, every scored candidate)."""
    n = len(fps)
    sets = [fp.ids() for fp in fps]
    scored: dict[int, Candidate] = {}

    def score(mask: int) -> Candidate:
        if mask not in scored:
            idx = [i for i in range(n) if mask >> i & 1]
            shared = set.intersection(*(sets[i] for i in idx))
            scored[mask] = _candidate([fps[i] for i in idx], shared, min_share)
        return scored[mask]

    def value(mask: int) -> int:
        if mask & (mask - 1) == 0:
            return 0
        cand = score(mask)
        return -1 if cand.rejected else cand.saving

    if n <= EXACT_LIMIT:
        # only models that pairwise share some node can form a useful group
        compat = [sum(1 << j for j in range(n) if sets[i] & sets[j]) for i in range(n)]
        cache: dict[int, int] = {}

        def group_value(group: int) -> int:
            if group not in cache:
                ok = all(group & ~compat[j] == 0 for j in range(n) if group >> j & 1)
                cache[group] = value(group) if ok else -1
            return cache[group]

        best: dict[int, tuple] = {0: (0, 0, ())}
        for mask in range(1, 1 << n):
            low = mask & -mask
            i = low.bit_length() - 1
            rest = mask ^ low
            choice = best[rest]                       # model i alone
            sub = rest & compat[i]
            while sub:
                if (sub | low) & ~compat[i] == 0:
                    group = sub | low
                    v = group_value(group)
                    if v > 0:
                        other = best[mask ^ group]
                        # more saving first; on a tie, fewer backbones
                        cand = (other[0] + v, other[1] - 1, other[2] + (group,))
                        if (cand[0], cand[1]) > (choice[0], choice[1]):
                            choice = cand
                sub = (sub - 1) & rest & compat[i]
            best[mask] = choice
        chosen = [scored[g] for g in best[(1 << n) - 1][2]]
    else:
        groups = [1 << i for i in range(n)]
        while True:
            best_gain, best_pair = 0, None
            for a, b in itertools.combinations(range(len(groups)), 2):
                gain = value(groups[a] | groups[b]) - max(value(groups[a]), 0) - max(value(groups[b]), 0)
                if gain > best_gain:
                    best_gain, best_pair = gain, (a, b)
            if best_pair is None:
                break
            a, b = best_pair
            merged = groups[a] | groups[b]
            groups = [g for k, g in enumerate(groups) if k not in (a, b)] + [merged]
        chosen = [scored[g] for g in groups if g & (g - 1)]
    chosen.sort(key=lambda c: -c.saving)
    return chosen, list(scored.values())


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _group_layout(cand: Candidate, fps: dict, name: str) -> BackboneGroup:
    """Cut values of every member and collision-free backbone output names."""
    members = [fps[m] for m in cand.members]
    ref = fps[cand.reference]
    shared = cand.shared
    cut_ids: set = set()
    used: dict = {}
    raw_inputs: dict = {}
    for fp in members:
        mine = used.setdefault(fp.name, set())
        raw = raw_inputs.setdefault(fp.name, [])
        for nid in fp.node_ids:
            if nid in shared:
                continue
            for vid in fp.node_inputs[nid]:
                if fp.producer.get(vid) in shared:
                    cut_ids.add(vid)
                    mine.add(vid)
                elif vid.startswith("in:") and fp.value_name[vid] not in raw:
                    raw.append(fp.value_name[vid])
    ordered = sorted(cut_ids, key=lambda v: (ref.index_of[ref.producer[v]], v))
    taken = set().union(*(fp.names for fp in members))
    out_names: dict[str, str] = {}
    for vid in ordered:
        name_ref = ref.value_name[vid]
        clash = any(name_ref in fp.names and fp.value_name.get(vid) != name_ref for fp in members)
        if clash:
            fresh = f"{_sanitize(name)}_{_sanitize(name_ref)}"
            k = 2
            while fresh in taken:
                fresh = f"{_sanitize(name)}_{_sanitize(name_ref)}_{k}"
                k += 1
            taken.add(fresh)
            out_names[vid] = fresh
        else:
            out_names[vid] = name_ref
    used_inputs = sorted({ref.value_name[v] for nid in shared for v in ref.node_inputs[nid] if v.startswith("in:")})
    cuts = {fp.name: {fp.value_name[v]: out_names[v] for v in ordered} for fp in members}
    head_cuts = {fp.name: [fp.value_name[v] for v in ordered if v in used[fp.name]] for fp in members}
    return BackboneGroup(name, list(cand.members), ref.name, cand.shared_layers, cand.shared_bytes,
                         cand.saving, used_inputs, [out_names[v] for v in ordered], cuts, head_cuts,
                         raw_inputs)


def _explain(group: BackboneGroup, cand: Candidate, scored: list, unit: str) -> str:
    parts = [f"{', '.join(group.members)} compute the same {group.shared_layers} {unit} "
             f"({group.shared_bytes:,} weight bytes) from input(s) {', '.join(group.inputs) or '-'}; "
             f"cut at {', '.join(group.outputs)}"]
    shares = ", ".join(f"{m} {100 * cand.shares[m]:.1f}%" for m in group.members)
    parts.append(f"shared share of each model's weights: {shares}")
    if cand.held_back:
        parts.append(f"{cand.held_back} shared {unit} stay in the heads because they produce an interface output")
    gross = cand.saving + cand.overhead
    if gross == (len(group.members) - 1) * cand.shared_bytes:
        parts.append(f"saves (members - 1) x shared - linking overhead = {gross:,} - {cand.overhead:,} "
                     f"= {cand.saving:,} bytes")
    else:
        parts.append(f"keeps {group.reference}'s copy (the smallest); saves {gross:,} - {cand.overhead:,} "
                     f"linking overhead = {cand.saving:,} bytes")
    # the best rival that overlaps this group, was not chosen, and cuts at another depth
    rivals = [c for c in scored if not c.rejected and c.saving > 0 and set(c.members) & set(group.members)
              and set(c.members) != set(group.members) and c.shared_bytes != cand.shared_bytes]
    if rivals:
        top = max(rivals, key=lambda c: c.saving)
        depth = "deeper" if top.shared_bytes > cand.shared_bytes else "shallower"
        parts.append(f"rather than {{{', '.join(top.members)}}} sharing a {depth} backbone "
                     f"({top.shared_bytes:,} bytes, saving {top.saving:,})")
    else:
        parts.append("no other grouping saves as much")
    return "; ".join(parts)


def _why_alone(fp: Fingerprint, fps: list, scored: list, min_share: float) -> str:
    mine = [c for c in scored if fp.name in c.members]
    useful = [c for c in mine if c.shared_bytes > 0]
    if not useful:
        # same weights but different inputs/preprocessing?
        same = []
        for other in fps:
            if other is fp:
                continue
            common = set(fp.weights) & set(other.weights)
            nbytes = sum(fp.weights[d] for d in common)
            if nbytes and nbytes >= 0.05 * max(1, fp.weight_bytes):
                same.append((other.name, nbytes))
        if same:
            who = ", ".join(f"{n} ({b:,} bytes)" for n, b in same)
            return (f"holds the same weights as {who}, but they are fed by a different input or preprocessing "
                    "(image size, colour space, scale or bias), so they compute different things: not merged")
        arch = set(fp.struct_ids)
        for other in fps:
            if other is fp or not arch:
                continue
            alike = len(arch & set(other.struct_ids))
            if alike < max(2, len(arch) // 2):
                continue
            kinds, theirs = set(fp.storage), set(other.storage)
            if not fp.allow_fp16 and {"float16", "float32"} & kinds and {"float16", "float32"} & theirs \
                    and kinds != theirs:
                return (f"has the architecture of {other.name} ({alike} of {len(arch)} {fp.unit} alike) but "
                        f"stores its weights as {'/'.join(sorted(kinds))} where {other.name} uses "
                        f"{'/'.join(sorted(theirs))}; pass --allow-fp16-match to share fp16 and fp32 copies "
                        "(outputs then differ by fp16 rounding)")
            return (f"has the architecture of {other.name} ({alike} of {len(arch)} {fp.unit} alike) but other "
                    f"weight values{' or storage (' + '/'.join(sorted(kinds)) + ')' if kinds != theirs else ''}: "
                    "nothing to share")
        return "shares no weights with the other models (no common computation from the same inputs)"
    low = [c for c in useful if c.rejected]
    ok = [c for c in useful if not c.rejected]
    if ok:
        top = max(ok, key=lambda c: c.saving)
        return (f"could share {top.shared_bytes:,} bytes with {', '.join(m for m in top.members if m != fp.name)}, "
                "but the chosen grouping saves more")
    top = max(low, key=lambda c: c.shared_bytes)
    if top.rejected.startswith("linking would cost"):
        others = ", ".join(m for m in top.members if m != fp.name)
        return f"shares {top.shared_bytes:,} weight bytes with {others}, but {top.rejected}"
    return (f"shares only {100 * top.shares[fp.name]:.1f}% of its weight bytes "
            f"({top.shared_bytes:,} bytes with {', '.join(m for m in top.members if m != fp.name)}); "
            f"--min-share is {100 * min_share:.0f}%")


def make_plan(plans: list, fps: list, stats: HashStats, *, backbone_name: str, min_share: float,
              options: dict) -> DedupePlan:
    """The plan for the models ``plans`` (every input), of which ``fps`` could take part."""
    chosen, scored = choose_groups(fps, min_share) if len(fps) >= 2 else ([], [])
    by_name = {fp.name: fp for fp in fps}
    unit = fps[0].unit if fps else "layers"
    groups = []
    for cand, bname in zip(chosen, backbone_names(backbone_name, len(chosen))):
        group = _group_layout(cand, by_name, bname)
        group.why = _explain(group, cand, scored, unit)
        groups.append(group)
    plan_by_name = {p.name: p for p in plans}
    for fp in fps:
        plan_by_name[fp.name].weight_bytes = fp.weight_bytes
    backbone_bytes = {}
    for group, cand in zip(groups, chosen):
        backbone_bytes[group.name] = cand.shared_bytes  # estimate until built
        for member in group.members:
            p = plan_by_name[member]
            p.backbone = group.name
            p.shared_bytes = by_name[member].bytes_of(cand.shared)
            p.bytes_after = p.bytes_before - p.shared_bytes
            p.reason = f"linked to {group.name} ({100 * p.share:.1f}% of its weight bytes shared)"
    for fp in fps:
        p = plan_by_name[fp.name]
        if p.backbone is None:
            p.reason = _why_alone(fp, fps, scored, min_share)
    distinct: dict = {}
    for fp in fps:
        for key, nbytes in fp.weights.items():
            distinct[key] = min(nbytes, distinct.get(key, nbytes))
    # repeated weights inside one model count as stored more than once too
    total_weights = sum(fp.weight_bytes for fp in fps)
    chosen_sets = {frozenset(c.members) for c in chosen}
    alternatives = sorted((c for c in scored if frozenset(c.members) not in chosen_sets
                           and (c.shared_bytes or c.rejected != "no shared weights")),
                          key=lambda c: (-c.saving, c.members))[:10]
    plan = DedupePlan(plans, groups, alternatives, total_weights, sum(distinct.values()), backbone_bytes, stats,
                      dict(options, backbone_name=backbone_name, min_share=min_share))
    if not groups:
        plan.notes.append("the models share no computation; nothing to do")
    return plan


# --------------------------------------------------------------------------- after building

def label_backbone(spec, group: BackboneGroup, suffix: str = ".mlmodelc") -> None:
    meta = spec.description.metadata
    meta.shortDescription = (f"Shared backbone of {', '.join(group.members)} (specsurgery dedupe); "
                             f"linked from each of them as {group.name}{suffix}")
    meta.userDefined["com.specsurgery.dedupe.members"] = ",".join(group.members)


def _unlink(plan: DedupePlan, group: BackboneGroup, reason: str, note: str) -> None:
    plan.groups.remove(group)
    plan.backbone_bytes.pop(group.name, None)
    for p in plan.models:
        if p.backbone == group.name:
            p.backbone, p.shared_bytes, p.bytes_after = None, 0, p.bytes_before
            p.reason = reason
    plan.notes.append(note)


class Sink:
    """Where :func:`settle` puts each model as soon as it is built.

    This one measures each model with ``size_of`` and, with ``keep``, holds it
    (``backbones``, ``models``): the library's :func:`dedupe`.  A backend's
    writer saves each model at once instead, so the files of a bundle are made
    one after another and never all held together."""

    def __init__(self, size_of: Callable[[object], int], keep: bool = True):
        self.size_of = size_of
        self.keep = keep
        self.backbones: dict = {}
        self.models: dict = {}

    def put(self, group: BackboneGroup, role: str, name: str, model) -> int:
        """Take ``model`` (``role`` "backbone" or "member"); returns its size in bytes."""
        if self.keep:
            (self.backbones if role == "backbone" else self.models)[name] = model
        return self.size_of(model)

    def drop(self, names) -> None:
        """Forget (or remove) what was put under ``names``: a group that is undone."""
        for name in names:
            self.backbones.pop(name, None)
            self.models.pop(name, None)


class FolderSink(Sink):
    """Saves each built model into ``folder`` (a staging folder) as it comes;
    a backend says how, in :meth:`save`, which returns the name written."""

    def __init__(self, folder: Path, plan: DedupePlan, size_of: Callable[[object], int]):
        super().__init__(size_of, keep=False)
        self.folder = folder
        self.outputs = {p.name: p.output for p in plan.models}
        self.written: dict = {}     # model name -> name in folder

    def save(self, group: BackboneGroup, role: str, name: str, model) -> str:
        raise NotImplementedError

    def put(self, group, role, name, model) -> int:
        self.written[name] = self.save(group, role, name, model)
        return self.size_of(model)

    def drop(self, names) -> None:
        for name in names:
            rel = self.written.pop(name, None)
            if rel is not None:
                path = self.folder / rel
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def settle(plan: DedupePlan, build_group: Callable, sink: Sink) -> None:
    """Build every group, one model at a time: ``build_group(group)`` yields
    ``(role, name, model)``, the backbone first, then each member's rewritten
    model, and ``sink`` takes each as it comes.  A group that cannot be built,
    or whose files end up no smaller than the originals, is undone with its
    reason.  Records the measured sizes."""
    for group in list(plan.groups):
        sizes: dict = {}
        models, failed = build_group(group), None
        while True:
            try:
                role, name, model = next(models)
            except StopIteration:
                break
            except SpecSurgeryError as exc:
                failed = exc
                break
            # a failure to store (a full disk) is no reason to undo a group: it propagates
            sizes[name] = sink.put(group, role, name, model)
            del model
            _release(max(sizes[name] or 0, group.shared_bytes))   # it was cut from a model of at least that
        if failed is not None:
            # this group cannot be cut here (e.g. a cut blob shape inference cannot type):
            # its members stay unchanged, the others go ahead, and the report says why
            sink.drop(list(sizes))
            _unlink(plan, group, f"{group.name} could not be built at cut {', '.join(group.outputs)}: {failed}",
                    f"{group.name} ({', '.join(group.members)}) was dropped: {failed}")
            continue
        backbone = sizes.pop(group.name)
        before = sum(p.bytes_before for p in plan.models if p.backbone == group.name)
        after = backbone + sum(sizes.values())
        if after >= before:
            sink.drop([group.name, *sizes])
            _unlink(plan, group, f"linking through {group.name} would make the files bigger "
                                 f"({after:,} bytes vs {before:,}): left unchanged",
                    f"{group.name} was undone: the rewritten files were not smaller")
            continue
        plan.backbone_bytes[group.name] = backbone
        for p in plan.models:
            if p.name in sizes:
                p.bytes_after = sizes[p.name]
    for p in plan.models:
        if p.backbone is None:
            p.bytes_after = p.bytes_before
        p.measured = True


def open_model(held):
    """A model kept by :func:`read_models`: read again when it was given as a path."""
    return io.load(held) if isinstance(held, (str, os.PathLike)) else held


# --------------------------------------------------------------------------- pipeline members

def first_network(spec, kinds) -> Optional[object]:
    """The first stage of pipeline ``spec`` when its model type is one of ``kinds``
    (a detector's network before its NMS stage), else None."""
    from ... import spec as S

    pipe = S.pipeline_of(spec)
    if pipe is None or not len(pipe.models):
        return None
    first = pipe.models[0]
    return first if S.model_type(first) in kinds else None


def pipeline_reason(spec, kinds_text: str) -> str:
    """Why a pipeline cannot take part: its first stage is not a network."""
    from ... import spec as S

    pipe = S.pipeline_of(spec)
    first = S.model_type(pipe.models[0]) if pipe is not None and len(pipe.models) else "nothing"
    return (f"model type {S.model_type(spec)!r} whose first stage is a {first}: dedupe rewrites {kinds_text} "
            "models, and pipelines whose first stage is one (a detector's network before its NMS stage)")


def unique_name(name: str, taken) -> str:
    cand, k = name, 2
    while cand in taken:
        cand, k = f"{name}{k}", k + 1
    return cand


def flatten_member(original, inner):
    """``original`` (a pipeline whose first stage was deduped) with that first stage
    replaced by the stages of ``inner`` (the rewritten ``[linked backbone, head]``): the
    later stages (NMS, decode), the interface and the metadata stay as they are.
    Returns a new spec (an ML Program caller repacks its weights)."""
    from ... import spec as S
    from ...io import copy_spec

    out = copy_spec(original)
    pipe, ipipe = S.pipeline_of(out), S.pipeline_of(inner)
    rest_names = S.stage_names(pipe)[1:]
    rest = [type(m).FromString(m.SerializeToString()) for m in pipe.models[1:]]
    names = []
    for n in S.stage_names(ipipe):
        names.append(unique_name(n, set(rest_names) | set(names)))
    del pipe.models[:]
    del pipe.names[:]
    for m in list(ipipe.models) + rest:
        pipe.models.add().CopyFrom(m)
    pipe.names.extend(names + rest_names)
    out.specificationVersion = max(out.specificationVersion, inner.specificationVersion)
    return out
