"""Bundle dedupe: find the backbone several models share, store it once, link it.

An app that ships a classifier, a regressor and a segmenter built on the same
feature extractor carries that extractor's weights three times.  ``dedupe``
finds the largest computation the models share, writes it once as
``<backbone>.mlmodel`` and rewrites every model as a pipeline of
``[linked stub of the backbone, the model's own head]`` with the model's
original interface, so app code does not change.

How layers are matched (neuralNetwork, -Classifier, -Regressor):

* Every layer gets a *computation id*: a hash of its kind, all its parameters
  except names, the content hash of each weight (each weight's bytes are hashed
  exactly once), and the ids of the blobs it reads.  A blob's id is the id of
  the layer that produced it plus the output position; a model input's id is
  its name, its feature type (size, colour space, dtype, shape flexibility),
  its preprocessing (image scale, biases, mean image) and the network's input
  shape mapping.  Blob and layer names never enter an id.
* Two layers in two models therefore have the same id exactly when they
  compute the same function of the same (equally preprocessed) inputs: the
  shared part of a group of models is the intersection of their id sets, a
  sub-graph closed under "everything it reads", i.e. a common prefix from the
  inputs.  It may end at several blobs (a skip connection across the cut).
* Layers that produce a model's interface output stay in that model's head
  (an interface output must come from the model's own stage).
* Which models share which backbone: every group of two or more models is
  scored by the bytes it saves, ``(members - 1) * shared weight bytes``, with
  each member sharing at least ``min_share`` of its own weight bytes; the
  partition of the models into groups with the largest total saving wins
  (exactly, by dynamic programming over subsets, up to 12 models; greedily
  beyond).  The plan records the alternatives and why they lost.

Sizes: "best possible" is the total size if every distinct weight (by content)
were stored once: ``total before - (sum of all weight bytes - sum of distinct
weight bytes)``.  The saving share is ``(before - after) / (before - best
possible)``.

ML Programs (``.mlpackage``) are handled by ``ops/dedupe_mlprogram.py``;
:func:`dedupe` and :func:`dedupe_files` hand them over.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ... import io
from ..._proto import Model_pb2, NeuralNetwork_pb2
from ...errors import SaveError, SpecSurgeryError, UnsupportedError
from ...spec import NN_TYPES, model_type, nn_of
from ...weights import storage_kind, weight_nbytes

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
REPORT_NAME = "dedupe-report.json"
EXACT_LIMIT = 12          # up to this many models the grouping is optimal (3^N subsets)
LINK_OVERHEAD = 256       # bytes per rewritten model beyond its description (stub, names, cut features)
_WeightParams = NeuralNetwork_pb2.WeightParams


# --------------------------------------------------------------------------- stats

@dataclass
class HashStats:
    """How much weight data the canonicalisation read and hashed."""

    weights_hashed: int = 0       # WeightParams messages hashed
    bytes_hashed: int = 0         # weight bytes (as stored) fed to the hash
    weight_bytes_total: int = 0   # weight bytes the inputs hold (should equal bytes_hashed)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"weights_hashed": self.weights_hashed, "bytes_hashed": self.bytes_hashed,
                "weight_bytes_total": self.weight_bytes_total, "seconds": round(self.seconds, 4)}


# --------------------------------------------------------------------------- canonical form

def _is_repeated(fld) -> bool:
    flag = getattr(fld, "is_repeated", None)   # protobuf >= 6
    return bool(flag) if flag is not None else fld.label == fld.LABEL_REPEATED


def _h(*parts) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        hasher.update(b"\x00")
    return hasher.hexdigest()


def _weight_hash(tag: bytes, data: bytes) -> str:
    # SHA-256 runs at ~1.5 GB/s on CPUs with SHA extensions: the weights' bytes are the bulk
    hasher = hashlib.sha256(tag + b"\x00")
    hasher.update(data)
    return hasher.hexdigest()[:32]


class _Canon:
    """The name-free computation ids of one neural-network model."""

    def __init__(self, name: str, spec, *, allow_fp16_match: bool, stats: HashStats):
        self.name = name
        self.spec = spec
        self.nn = nn_of(spec)
        self.allow_fp16 = allow_fp16_match
        self.stats = stats
        self.layer_ids: list[str] = []               # per layer index
        self.index_of: dict[str, int] = {}           # layer id -> index
        self.layer_bytes: dict[str, int] = {}        # layer id -> weight bytes
        self.layer_inputs: dict[str, list[str]] = {}  # layer id -> blob ids read
        self.blob_name: dict[str, str] = {}          # blob id -> name in this model
        self.producer: dict[str, str] = {}           # blob id -> layer id
        self.weights: dict[str, int] = {}            # weight digest -> bytes
        self.names: set[str] = set()                 # every blob and feature name
        self.input_ids: dict[str, str] = {}          # input name -> blob id
        self.output_blobs: set[str] = set()          # blob ids the interface reads
        self.weight_bytes = 0
        self.storage: dict[str, int] = {}            # storage kind -> weight bytes
        self.struct_ids: list[str] = []              # per layer: architecture only (no weight values)
        # bytes a rewritten model adds: its interface is stored on the pipeline and on the head,
        # plus the stub (the backbone's interface, file name, search path) and stage names
        self.link_overhead = 2 * spec.description.ByteSize() + LINK_OVERHEAD
        self._build()

    # one weight -> digest; the bytes are hashed exactly once
    def _weight_digest(self, wp) -> str:
        nbytes = weight_nbytes(wp)
        self.stats.weights_hashed += 1
        self.stats.bytes_hashed += nbytes
        self.stats.weight_bytes_total += nbytes
        kind = storage_kind(wp)
        self.storage[kind] = self.storage.get(kind, 0) + nbytes
        if self.allow_fp16 and kind in ("float32", "float16"):
            # fp16 and fp32 copies compare equal when the fp32 values round to the fp16 ones
            import numpy as np

            if kind == "float32":
                data = np.asarray(wp.floatValue, dtype=np.float32).astype("<f2").tobytes()
            else:
                data = bytes(wp.float16Value)
            digest = _weight_hash(b"half%d" % wp.isUpdatable, data)
        else:
            digest = _weight_hash(b"weight", wp.SerializeToString(deterministic=True))
        self.weights[digest] = nbytes
        self.weight_bytes += nbytes
        return digest

    def _hash_message(self, msg, hasher, weight_list: list) -> None:
        for fld, value in msg.ListFields():
            hasher.update(fld.name.encode() + b"=")
            if fld.message_type is None:
                if isinstance(value, bytes):
                    hasher.update(value)
                elif _is_repeated(fld):
                    hasher.update(repr(list(value)).encode())
                else:
                    hasher.update(repr(value).encode())
            elif isinstance(value, _WeightParams):
                digest = self._weight_digest(value)
                weight_list.append(digest)
                hasher.update(digest.encode())
            elif fld.message_type.GetOptions().map_entry:
                for key in sorted(value):
                    item = value[key]
                    hasher.update(repr(key).encode())
                    if hasattr(item, "ListFields"):
                        self._hash_message(item, hasher, weight_list)
                    else:
                        hasher.update(repr(item).encode())
            elif not hasattr(value, "ListFields"):  # repeated messages
                for item in value:
                    hasher.update(b"[")
                    if isinstance(item, _WeightParams):
                        digest = self._weight_digest(item)
                        weight_list.append(digest)
                        hasher.update(digest.encode())
                    else:
                        self._hash_message(item, hasher, weight_list)
                    hasher.update(b"]")
            else:
                hasher.update(b"{")
                self._hash_message(value, hasher, weight_list)
                hasher.update(b"}")
            hasher.update(b";")

    def _structure(self, msg, hasher) -> None:
        """Like the computation id, with each weight reduced to its element count."""
        for fld, value in msg.ListFields():
            if fld.message_type is None:
                if _is_repeated(fld):
                    hasher.update(f"{fld.name}={list(value)!r};".encode())
                elif not isinstance(value, bytes):
                    hasher.update(f"{fld.name}={value!r};".encode())
            elif isinstance(value, _WeightParams):
                from ...weights import weight_count

                hasher.update(f"{fld.name}=w{weight_count(value)};".encode())
            elif fld.message_type.GetOptions().map_entry:
                continue
            elif not hasattr(value, "ListFields"):
                for item in value:
                    if isinstance(item, _WeightParams):
                        from ...weights import weight_count

                        hasher.update(f"[w{weight_count(item)}]".encode())
                    else:
                        self._structure(item, hasher)
            else:
                hasher.update(fld.name.encode() + b"{")
                self._structure(value, hasher)
                hasher.update(b"}")

    def _input_signature(self, feature) -> str:
        ft = type(feature.type)()
        ft.CopyFrom(feature.type)
        ft.isOptional = False
        parts = [b"input", feature.name.encode(), ft.SerializeToString(deterministic=True),
                 str(self.nn.arrayInputShapeMapping), str(self.nn.imageInputShapeMapping)]
        for pre in self.nn.preprocessing:
            if pre.featureName == feature.name or (pre.featureName == "" and len(self.spec.description.input) == 1):
                p = type(pre)()
                p.CopyFrom(pre)
                p.featureName = ""
                parts.append(p.SerializeToString(deterministic=True))
        return _h(*parts)

    def _build(self) -> None:
        desc = self.spec.description
        current: dict[str, str] = {}  # blob name -> blob id of its latest producer
        struct_of: dict[str, str] = {}  # blob id -> structure id of the blob
        for feature in desc.input:
            bid = "in:" + self._input_signature(feature)
            struct_of[bid] = "in:" + feature.name
            current[feature.name] = bid
            self.input_ids[feature.name] = bid
            self.blob_name[bid] = feature.name
            self.names.add(feature.name)
        seen: dict[str, int] = {}
        for layer in self.nn.layers:
            kind = layer.WhichOneof("layer")
            inputs = [current.get(name, "missing:" + name) for name in layer.input]
            hasher = hashlib.blake2b(digest_size=16)
            hasher.update(f"{kind}|{len(layer.output)}|".encode())
            for bid in inputs:
                hasher.update(bid.encode() + b",")
            hasher.update(b"|")
            weights: list = []
            if kind is not None:
                self._hash_message(getattr(layer, kind), hasher, weights)
            for extra in (layer.inputTensor, layer.outputTensor):
                for t in extra:
                    hasher.update(t.SerializeToString(deterministic=True) + b",")
                hasher.update(b"|")
            hasher.update(b"u" if layer.isUpdatable else b"-")
            lid = hasher.hexdigest()
            # two identical branches inside one model stay two layers
            if lid in seen:
                seen[lid] += 1
                lid = _h(lid, seen[lid])
            else:
                seen[lid] = 0
            shasher = hashlib.blake2b(digest_size=16)
            shasher.update(f"{kind}|".encode() + ",".join(struct_of.get(b, b) for b in inputs).encode())
            if kind is not None:
                self._structure(getattr(layer, kind), shasher)
            sid = shasher.hexdigest()
            self.struct_ids.append(sid)
            self.index_of[lid] = len(self.layer_ids)
            self.layer_ids.append(lid)
            self.layer_inputs[lid] = inputs
            self.layer_bytes[lid] = sum(self.weights[d] for d in weights)
            for k, name in enumerate(layer.output):
                bid = f"{lid}:{k}"
                struct_of[bid] = f"{sid}:{k}"
                current[name] = bid
                self.blob_name[bid] = name
                self.producer[bid] = lid
            self.names.update(layer.input)
            self.names.update(layer.output)
        for feature in desc.output:
            self.names.add(feature.name)
            if feature.name in current:
                self.output_blobs.add(current[feature.name])
        if model_type(self.spec) == "neuralNetworkClassifier":
            prob = self.nn.labelProbabilityLayerName
            if prob and prob in current:
                self.output_blobs.add(current[prob])

    # helpers used by the planner
    def ids(self) -> set:
        return set(self.layer_ids)

    def bytes_of(self, layer_ids) -> int:
        return sum(self.layer_bytes[i] for i in layer_ids)

    def children(self) -> dict:
        if getattr(self, "_children", None) is not None:
            return self._children
        out: dict[str, set] = {}
        self._children = out
        for lid, inputs in self.layer_inputs.items():
            for bid in inputs:
                prod = self.producer.get(bid)
                if prod is not None:
                    out.setdefault(prod, set()).add(lid)
        return out


# --------------------------------------------------------------------------- plan

@dataclass
class Candidate:
    """A group of models and what they share."""

    members: tuple            # model names
    shared: frozenset         # layer ids in every member
    shared_layers: int
    shared_bytes: int
    saving: int               # the members' shared bytes - the backbone's copy - the linking overhead
    shares: dict              # member -> share of its weight bytes that is shared
    held_back: int = 0        # layers kept in heads because they produce an interface output
    rejected: str = ""        # why the group cannot form ("" if it can)
    reference: str = ""       # the member whose layers the backbone keeps
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
    reference: str                 # the member whose layers (and blob names) the backbone keeps
    shared_layers: int
    shared_bytes: int
    saving: int
    inputs: list                   # backbone input names
    outputs: list                  # backbone output names (after collision renames)
    cuts: dict                     # member -> {its blob name: backbone output name}
    head_cuts: dict = field(default_factory=dict)   # member -> its blob names its head reads
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
        return {
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

    def table(self) -> str:
        """The printed summary: per model before/after, backbones, totals, saving share."""
        from ...cli._common import human_bytes

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
        return "\n".join(lines)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- planning

def _held_back(members: list, shared: set) -> set:
    """Shared layers that must stay in heads: producers of an interface output
    (or a classifier's probability blob) in some member, and everything after them."""
    drop: set = set()
    for canon in members:
        for bid in canon.output_blobs:
            lid = canon.producer.get(bid)
            if lid is not None and lid in shared:
                drop.add(lid)
    if not drop:
        return drop
    children: dict = {}
    for canon in members:
        for k, v in canon.children().items():
            children.setdefault(k, set()).update(v)
    stack = list(drop)
    while stack:
        lid = stack.pop()
        for child in children.get(lid, ()):
            if child in shared and child not in drop:
                drop.add(child)
                stack.append(child)
    return drop


def _candidate(members: list, shared: set, min_share: float) -> Candidate:
    held = _held_back(members, shared) if shared else set()
    shared = shared - held
    per_member = [c.bytes_of(shared) for c in members]
    # the backbone keeps the cheapest copy (they differ only when fp16 and fp32 copies match);
    # on a tie the first model in input order
    k = per_member.index(min(per_member)) if per_member else 0
    nbytes = per_member[k] if per_member else 0
    shares = {c.name: (b / c.weight_bytes if c.weight_bytes else 0.0) for c, b in zip(members, per_member)}
    # what linking costs: every member's pipeline wrapping, the backbone's own description
    overhead = sum(c.link_overhead for c in members) + members[k].spec.description.ByteSize()
    cand = Candidate(tuple(c.name for c in members), frozenset(shared), len(shared), nbytes,
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


def _choose_groups(canons: list, min_share: float) -> tuple[list, list]:
    """(chosen candidates, every scored candidate)."""
    n = len(canons)
    sets = [c.ids() for c in canons]
    scored: dict[int, Candidate] = {}

    def score(mask: int) -> Candidate:
        if mask not in scored:
            idx = [i for i in range(n) if mask >> i & 1]
            shared = set.intersection(*(sets[i] for i in idx))
            scored[mask] = _candidate([canons[i] for i in idx], shared, min_share)
        return scored[mask]

    def value(mask: int) -> int:
        if mask & (mask - 1) == 0:
            return 0
        cand = score(mask)
        return -1 if cand.rejected else cand.saving

    if n <= EXACT_LIMIT:
        # only models that pairwise share some layer can form a useful group
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


def _backbone_names(base: str, count: int) -> list[str]:
    return [base if i == 0 else f"{base}{i + 1}" for i in range(count)]


def _group_layout(cand: Candidate, canons: dict, name: str) -> BackboneGroup:
    """Cut blobs of every member and collision-free backbone output names."""
    members = [canons[m] for m in cand.members]
    ref = canons[cand.reference]
    shared = cand.shared
    cut_ids: set = set()
    used: dict = {}
    raw_inputs: dict = {}
    for canon in members:
        mine = used.setdefault(canon.name, set())
        raw = raw_inputs.setdefault(canon.name, [])
        for lid in canon.layer_ids:
            if lid in shared:
                continue
            for bid in canon.layer_inputs[lid]:
                if canon.producer.get(bid) in shared:
                    cut_ids.add(bid)
                    mine.add(bid)
                elif bid.startswith("in:") and canon.blob_name[bid] not in raw:
                    raw.append(canon.blob_name[bid])
    ordered = sorted(cut_ids, key=lambda b: (ref.index_of[ref.producer[b]], b))
    taken = set().union(*(c.names for c in members))
    out_names: dict[str, str] = {}
    for bid in ordered:
        name_ref = ref.blob_name[bid]
        clash = any(name_ref in c.names and c.blob_name.get(bid) != name_ref for c in members)
        if clash:
            fresh = f"{_sanitize(name)}_{_sanitize(name_ref)}"
            k = 2
            while fresh in taken:
                fresh = f"{_sanitize(name)}_{_sanitize(name_ref)}_{k}"
                k += 1
            taken.add(fresh)
            out_names[bid] = fresh
        else:
            out_names[bid] = name_ref
    used_inputs = sorted({ref.blob_name[b] for lid in shared for b in ref.layer_inputs[lid] if b.startswith("in:")})
    cuts = {c.name: {c.blob_name[b]: out_names[b] for b in ordered} for c in members}
    head_cuts = {c.name: [c.blob_name[b] for b in ordered if b in used[c.name]] for c in members}
    return BackboneGroup(name, list(cand.members), ref.name, cand.shared_layers, cand.shared_bytes,
                         cand.saving, used_inputs, [out_names[b] for b in ordered], cuts, head_cuts,
                         raw_inputs)


def _explain(group: BackboneGroup, cand: Candidate, scored: list, canons: dict) -> str:
    parts = [f"{', '.join(group.members)} compute the same {group.shared_layers} layers "
             f"({group.shared_bytes:,} weight bytes) from input(s) {', '.join(group.inputs) or '-'}; "
             f"cut at {', '.join(group.outputs)}"]
    shares = ", ".join(f"{m} {100 * cand.shares[m]:.1f}%" for m in group.members)
    parts.append(f"shared share of each model's weights: {shares}")
    if cand.held_back:
        parts.append(f"{cand.held_back} shared layer(s) stay in the heads because they produce an interface output")
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


def _why_alone(canon, canons: list, scored: list, min_share: float) -> str:
    mine = [c for c in scored if canon.name in c.members]
    useful = [c for c in mine if c.shared_bytes > 0]
    if not useful:
        # same weights but different inputs/preprocessing?
        same = []
        for other in canons:
            if other is canon:
                continue
            common = set(canon.weights) & set(other.weights)
            nbytes = sum(canon.weights[d] for d in common)
            if nbytes and nbytes >= 0.05 * max(1, canon.weight_bytes):
                same.append((other.name, nbytes))
        if same:
            who = ", ".join(f"{n} ({b:,} bytes)" for n, b in same)
            return (f"holds the same weights as {who}, but they are fed by a different input or preprocessing "
                    "(image size, colour space, scale or bias), so they compute different things: not merged")
        mine = set(canon.struct_ids)
        for other in canons:
            if other is canon or not mine:
                continue
            alike = len(mine & set(other.struct_ids))
            if alike < max(2, len(mine) // 2):
                continue
            kinds, theirs = set(canon.storage), set(other.storage)
            if not canon.allow_fp16 and {"float16", "float32"} & kinds and {"float16", "float32"} & theirs \
                    and kinds != theirs:
                return (f"has the architecture of {other.name} ({alike} of {len(mine)} layers alike) but stores "
                        f"its weights as {'/'.join(sorted(kinds))} where {other.name} uses "
                        f"{'/'.join(sorted(theirs))}; pass --allow-fp16-match to share fp16 and fp32 copies "
                        "(outputs then differ by fp16 rounding)")
            return (f"has the architecture of {other.name} ({alike} of {len(mine)} layers alike) but other weight "
                    f"values{' or storage (' + '/'.join(sorted(kinds)) + ')' if kinds != theirs else ''}: "
                    "nothing to share")
        return "shares no weights with the other models (no common computation from the same inputs)"
    low = [c for c in useful if c.rejected]
    ok = [c for c in useful if not c.rejected]
    if ok:
        top = max(ok, key=lambda c: c.saving)
        return (f"could share {top.shared_bytes:,} bytes with {', '.join(m for m in top.members if m != canon.name)}, "
                "but the chosen grouping saves more")
    top = max(low, key=lambda c: c.shared_bytes)
    if top.rejected.startswith("linking would cost"):
        others = ", ".join(m for m in top.members if m != canon.name)
        return f"shares {top.shared_bytes:,} weight bytes with {others}, but {top.rejected}"
    return (f"shares only {100 * top.shares[canon.name]:.1f}% of its weight bytes "
            f"({top.shared_bytes:,} bytes with {', '.join(m for m in top.members if m != canon.name)}); "
            f"--min-share is {100 * min_share:.0f}%")


def _name_for(source, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.name[: -len(path.suffix)] if path.suffix else path.name
    pkg_path = getattr(source, "path", None)
    if pkg_path is not None:
        return Path(pkg_path).stem
    return f"model{index}"


def _model_bytes(source, model) -> int:
    if isinstance(source, (str, os.PathLike)) and Path(source).exists():
        return io.file_size(source)
    spec, pkg = io.split_model(model)
    return spec.ByteSize() + (pkg.weight_bytes if pkg is not None else 0)


def _normalise_inputs(models) -> list[tuple[str, object, str]]:
    """[(name, source, source label)] from a list of models or a {name: model} dict."""
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
    return [(n, m, str(m) if isinstance(m, (str, os.PathLike)) else f"<{type(m).__name__}>") for n, m in items]


def plan_dedupe(models, *, backbone_name: str = "Backbone", min_share: float = 0.2,
                allow_fp16_match: bool = False, search_path: str = DEFAULT_SEARCH_PATH,
                progress=None, _loaded: Optional[dict] = None) -> DedupePlan:
    """Decide which models share which backbone and where each is cut (no output built)."""
    if not 0.0 <= min_share <= 1.0:
        raise SpecSurgeryError(f"min_share {min_share} is outside 0..1 (it is a share of a model's weight bytes)")
    if not backbone_name or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", backbone_name):
        raise SpecSurgeryError(f"backbone name {backbone_name!r} must be a plain file stem "
                               "(letters, digits, _ . -), e.g. Backbone")
    items = _normalise_inputs(models)
    clash = sorted({n for n, _, _ in items} & set(_backbone_names(backbone_name, len(items))))
    if clash:
        raise SpecSurgeryError(f"backbone name {backbone_name!r} clashes with the input model name(s) "
                               f"{', '.join(clash)}; pass another --backbone-name")
    stats = HashStats()
    t0 = time.perf_counter()
    loaded = {} if _loaded is None else _loaded
    plans, canons = [], []
    for name, source, label in items:
        if progress is not None:
            progress(f"read {name}")
        model = io.load(source)
        loaded[name] = model
        spec, pkg = io.split_model(model)
        kind = model_type(spec) or "none"
        plan = ModelPlan(name, label, kind, _model_bytes(source, model))
        plans.append(plan)
        if kind not in NN_TYPES:
            plan.reason = (f"model type {kind!r}: dedupe rewrites neuralNetwork, neuralNetworkClassifier and "
                           "neuralNetworkRegressor models" + (" (ML Programs: see dedupe_mlprogram)" if kind == "mlProgram" else ""))
            continue
        if spec.isUpdatable or any(l.isUpdatable for l in nn_of(spec).layers):
            plan.reason = "updatable model: a pipeline with a linked stage cannot stay updatable"
            continue
        canon = _Canon(name, spec, allow_fp16_match=allow_fp16_match, stats=stats)
        plan.weight_bytes = canon.weight_bytes
        canons.append(canon)
    stats.seconds = time.perf_counter() - t0

    chosen, scored = _choose_groups(canons, min_share) if len(canons) >= 2 else ([], [])
    by_name = {c.name: c for c in canons}
    names = _backbone_names(backbone_name, len(chosen))
    groups = []
    for cand, bname in zip(chosen, names):
        group = _group_layout(cand, by_name, bname)
        group.why = _explain(group, cand, scored, by_name)
        groups.append(group)
    plan_by_name = {p.name: p for p in plans}
    backbone_bytes = {}
    for group, cand in zip(groups, chosen):
        backbone_bytes[group.name] = cand.shared_bytes  # estimate until built
        for member in group.members:
            p = plan_by_name[member]
            p.backbone = group.name
            p.shared_bytes = by_name[member].bytes_of(cand.shared)
            p.bytes_after = p.bytes_before - p.shared_bytes
            p.reason = f"linked to {group.name} ({100 * p.share:.1f}% of its weight bytes shared)"
    for canon in canons:
        p = plan_by_name[canon.name]
        if p.backbone is None:
            p.reason = _why_alone(canon, canons, scored, min_share)
    distinct: dict = {}
    for canon in canons:
        for digest, nbytes in canon.weights.items():
            distinct[digest] = min(nbytes, distinct.get(digest, nbytes))
    # repeated weights inside one model count as stored more than once too
    total_weights = stats.weight_bytes_total
    chosen_sets = {frozenset(c.members) for c in chosen}
    alternatives = sorted((c for c in scored if frozenset(c.members) not in chosen_sets and (c.shared_bytes or c.rejected != "no shared weights")),
                          key=lambda c: (-c.saving, c.members))[:10]
    plan = DedupePlan(plans, groups, alternatives, total_weights, sum(distinct.values()), backbone_bytes, stats,
                      {"backbone_name": backbone_name, "search_path": search_path, "min_share": min_share,
                       "allow_fp16_match": allow_fp16_match})
    if allow_fp16_match:
        plan.notes.append("fp16 and fp32 copies of a weight were matched (values equal after rounding to fp16); "
                          "each backbone keeps the smallest copy (fp16), so members that stored fp32 copies now "
                          "compute with fp16 weights")
    return plan


# --------------------------------------------------------------------------- building

@dataclass
class DedupeResult:
    """The plan plus the produced specs: ``backbones`` name -> spec, ``models`` name -> spec
    (rewritten pipelines, or the original model for those left unchanged)."""

    plan: DedupePlan
    backbones: dict
    models: dict
    formats: dict = field(default_factory=dict)   # name -> output suffix
    seconds: float = 0.0

    def to_json(self) -> dict:
        out = self.plan.to_json()
        out["seconds"] = round(self.seconds, 3)
        return out


def _ops():
    # the surgery operations (modules by full name: the package's lazy map binds the
    # short names, e.g. "extract", to functions)
    import importlib

    mod = lambda name: importlib.import_module(f"specsurgery.ops.{name}")  # noqa: E731
    return (mod("split").split_at, mod("extract").extract, mod("pipeline").make_pipeline,
            mod("link").make_linked_stub, mod("rename").rename_feature)


def _backbone_version(backbone, member_specs) -> int:
    """The oldest member's spec version, unless the backbone itself needs more: the shared
    model should not ask for a newer OS than any model that links it."""
    try:
        from ...check import min_spec_version

        need = min_spec_version(backbone)[0]
    except ImportError:  # pragma: no cover - the check package is part of the build
        return backbone.specificationVersion
    return max(need, min(s.specificationVersion for s in member_specs))


def _build_backbone(group: BackboneGroup, ref_spec, extract, rename_feature):
    # extract, not split_at: the backbone outputs every member's cut blobs, also those
    # the reference's own head does not read
    backbone = extract(ref_spec, group.inputs, list(group.cuts[group.reference]))
    for old, new in group.cuts[group.reference].items():
        if old != new:
            backbone = rename_feature(backbone, old, new)
    meta = backbone.description.metadata
    meta.shortDescription = (f"Shared backbone of {', '.join(group.members)} (specsurgery dedupe); "
                             f"linked from each of them as {group.name}.mlmodelc")
    meta.userDefined["com.specsurgery.dedupe.members"] = ",".join(group.members)
    return backbone


def _build_member(group: BackboneGroup, member: str, spec, stub, split_at, extract, make_pipeline,
                  rename_feature, backbone=None):
    cuts = group.cuts[member]
    if group.head_reads_inputs.get(member):
        # the head also reads a model input (preprocessing included): split_at handles that
        _, head = split_at(spec, group.head_cuts[member])
    else:
        # extract copies only the head's layers (split_at would copy the backbone too). The cut
        # blobs compute what the backbone outputs, so their types come from the backbone: no
        # second shape inference over (a copy of) the backbone's layers per member
        from ...spec import feature_shape

        typed = {f.name: f for f in backbone.description.output}
        given = {old: feature_shape(typed[cuts[old]].type) for old in group.head_cuts[member]}
        head = extract(spec, group.head_cuts[member], [f.name for f in spec.description.output],
                       shapes={k: v for k, v in given.items() if v})
        for f in head.description.input:
            if f.name in cuts and cuts[f.name] in typed:
                f.type.CopyFrom(typed[cuts[f.name]].type)
        declared = {f.name: f for f in spec.description.output}
        for f in head.description.output:      # keep the original's declared output types
            if f.name in declared:
                f.CopyFrom(declared[f.name])
        head.description.metadata.CopyFrom(spec.description.metadata)
    for old, new in cuts.items():
        if old != new and any(f.name == old for f in head.description.input):
            head = rename_feature(head, old, new)
    kind = model_type(spec)
    pipe_kind = {"neuralNetworkClassifier": "classifier", "neuralNetworkRegressor": "regressor"}.get(kind, "pipeline")
    # the original interface, word for word: names, types, descriptions, metadata
    new = make_pipeline([stub, head], names=[group.name, "head"], kind=pipe_kind, interface=spec)
    new.specificationVersion = max(new.specificationVersion, spec.specificationVersion, 4)
    return new


def _build(plan: DedupePlan, loaded: dict, search_path: str, progress=None) -> tuple[dict, dict]:
    split_at, extract, make_pipeline, make_linked_stub, rename_feature = _ops()
    backbones, outputs = {}, {}
    for group in list(plan.groups):
        try:
            ref_spec = io.load_spec(loaded[group.reference])
            backbone = _build_backbone(group, ref_spec, extract, rename_feature)
            backbone.specificationVersion = _backbone_version(
                backbone, [io.load_spec(loaded[m]) for m in group.members])
            stub = make_linked_stub(backbone, file_name=f"{group.name}.mlmodelc", search_path=search_path)
            built = {}
            for member in group.members:
                if progress is not None:
                    progress(f"rewrite {member}")
                built[member] = _build_member(group, member, io.load_spec(loaded[member]), stub,
                                              split_at, extract, make_pipeline, rename_feature, backbone)
        except SpecSurgeryError as exc:
            # this group cannot be cut here (e.g. a cut blob shape inference cannot type):
            # its members stay unchanged, the others go ahead, and the report says why
            plan.groups.remove(group)
            plan.backbone_bytes.pop(group.name, None)
            for p in plan.models:
                if p.backbone == group.name:
                    p.backbone, p.shared_bytes, p.bytes_after = None, 0, p.bytes_before
                    p.reason = f"{group.name} could not be built at cut {', '.join(group.outputs)}: {exc}"
            plan.notes.append(f"{group.name} ({', '.join(group.members)}) was dropped: {exc}")
            continue
        backbones[group.name] = backbone
        outputs.update(built)
    # a group whose rewritten files end up no smaller than the originals is undone
    for group in list(plan.groups):
        before = sum(p.bytes_before for p in plan.models if p.backbone == group.name)
        after = backbones[group.name].ByteSize() + sum(outputs[m].ByteSize() for m in group.members)
        if after >= before:
            plan.groups.remove(group)
            del backbones[group.name]
            plan.backbone_bytes.pop(group.name, None)
            for p in plan.models:
                if p.backbone == group.name:
                    p.backbone, p.shared_bytes = None, 0
                    p.reason = (f"linking through {group.name} would make the files bigger "
                                f"({after:,} bytes vs {before:,}): left unchanged")
                    outputs.pop(p.name, None)
            plan.notes.append(f"{group.name} was undone: the rewritten files were not smaller")
    for p in plan.models:
        if p.name not in outputs:
            outputs[p.name] = loaded[p.name]
    # measured sizes
    for name, spec in backbones.items():
        plan.backbone_bytes[name] = spec.ByteSize()
    for p in plan.models:
        if p.backbone is not None:
            p.bytes_after = outputs[p.name].ByteSize()
            p.measured = True
        else:
            p.bytes_after = p.bytes_before
            p.measured = True
    return backbones, outputs


def _is_mlprogram_input(source) -> bool:
    if isinstance(source, io.MLPackage):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)   # a compiled .mlmodelc folder is refused by io.load, not routed here
        return path.suffix == ".mlpackage" or (path.is_dir() and path.suffix != ".mlmodelc")
    if isinstance(source, Model_pb2.Model):
        return model_type(source) == "mlProgram"
    return False


def _mlprogram_module():
    try:
        from . import mlprogram as dedupe_mlprogram
    except ImportError as exc:
        raise UnsupportedError("dedupe of ML Programs (.mlpackage) needs specsurgery.ops.dedupe_mlprogram, "
                               "which is not available in this build") from exc
    return dedupe_mlprogram


def _call_accepting(fn, *args, **kwargs):
    """Call ``fn`` with the keyword arguments it declares (the ML Program dedupe may take fewer)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def _route(models) -> Optional[str]:
    """'mlprogram' when every input is an ML Program, None when none is; mixed is an error."""
    sources = list(models.values()) if isinstance(models, dict) else list(models)
    flags = [_is_mlprogram_input(s) for s in sources]
    if all(flags) and flags:
        return "mlprogram"
    if any(flags):
        ml = [str(s) for s, f in zip(sources, flags) if f]
        raise UnsupportedError(
            "dedupe: neuralNetwork and ML Program models cannot share a backbone; run dedupe separately on the "
            f"ML Programs ({', '.join(ml)}) and on the .mlmodel files")
    return None


def dedupe(models, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
           min_share: float = 0.2, allow_fp16_match: bool = False, build: bool = True,
           progress=None) -> DedupeResult:
    """Plan the shared backbones of ``models`` and build the rewritten specs.

    ``models`` is a list of model-likes (paths name the outputs after their
    file stems; others are ``model0``, ``model1``...) or a ``{name: model}``
    dict.  Returns a :class:`DedupeResult`; with ``build=False`` only the plan
    (``result.backbones`` and ``result.models`` empty).  Nothing is written.
    """
    if _route(models) == "mlprogram":
        return _call_accepting(_mlprogram_module().dedupe, models, backbone_name=backbone_name,
                               search_path=search_path, min_share=min_share, allow_fp16_match=allow_fp16_match)
    t0 = time.perf_counter()
    loaded: dict = {}
    plan = plan_dedupe(models, backbone_name=backbone_name, min_share=min_share,
                       allow_fp16_match=allow_fp16_match, search_path=search_path, progress=progress,
                       _loaded=loaded)
    backbones, outputs = ({}, {})
    if build and plan.shares_anything:
        backbones, outputs = _build(plan, loaded, search_path, progress)
    formats = {}
    items = list(models.items()) if isinstance(models, dict) else [(p.name, m) for p, m in zip(plan.models, models)]
    for name, source in items:
        suffix = Path(source).suffix if isinstance(source, (str, os.PathLike)) else ".mlmodel"
        formats[name] = suffix if suffix in (".mlmodel", ".pbtxt") else ".mlmodel"
    for p in plan.models:
        p.output = f"{p.name}{formats[p.name]}"
    return DedupeResult(plan, backbones, outputs, formats, time.perf_counter() - t0)


# --------------------------------------------------------------------------- files

def _assert_stub_matches(model, backbone, where: str) -> None:
    from ...spec import pipeline_of

    for stage in pipeline_of(model).models:
        if stage.WhichOneof("Type") == "linkedModel":
            mine, theirs = stage.description, backbone.description
            if list(mine.input) != list(theirs.input) or list(mine.output) != list(theirs.output):
                raise SpecSurgeryError(f"{where}: the linked stub's interface differs from the backbone's "
                                       "(internal error; please report)")


def _write_set(result: DedupeResult, sources: dict, out_dir: Path, search_path: str) -> list[Path]:
    """Write every output into a temporary folder beside ``out_dir``, check each, then move
    them in: a failure leaves ``out_dir`` as it was."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.dedupe-", dir=out_dir.parent))
    except OSError as exc:   # a file where a parent folder should be, no permission
        raise io._write_error(out_dir, exc) from None
    written: list[str] = []
    try:
        for name, backbone in result.backbones.items():
            io.save(backbone, tmp / f"{name}.mlmodel")
            written.append(f"{name}.mlmodel")
        for p in result.plan.models:
            target = tmp / p.output
            if p.backbone is None:
                source = sources[p.name]
                if isinstance(source, (str, os.PathLike)) and Path(source).is_file() \
                        and Path(source).suffix == Path(p.output).suffix:
                    shutil.copyfile(source, target)      # unchanged, byte for byte
                else:
                    io.save(result.models[p.name], target, check=False)
            else:
                # the stub's interface was copied from the backbone, which was checked just above;
                # checking each stub against the target on disk would re-read and re-check the
                # backbone once per member (100 MB apiece for a ResNet-50)
                _assert_stub_matches(result.models[p.name], result.backbones[p.backbone], p.name)
                io.save(result.models[p.name], target)
            written.append(p.output)
        report = result.to_json()
        report["out_dir"] = str(out_dir)
        report["files"] = sorted(written) + [REPORT_NAME]
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n")
        written.append(REPORT_NAME)
        # move into place
        if not out_dir.exists():
            os.replace(tmp, out_dir)
            tmp = None
        else:
            if not out_dir.is_dir():
                raise SaveError(f"{out_dir} exists and is not a folder; pass a folder for -o")
            for rel in written:
                os.replace(tmp / rel, out_dir / rel)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / rel for rel in written]


def dedupe_files(paths, out_dir, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
                 min_share: float = 0.2, allow_fp16_match: bool = False, dry_run: bool = False,
                 progress=None, multifunction: bool = False, multifunction_name: str = "Models") -> dict:
    """Dedupe model files into ``out_dir``; returns the report (a dict).

    Writes ``<backbone_name>.mlmodel`` (and ``<backbone_name>2``... when several
    backbones pay off), one output per input under its own name and format, and
    ``dedupe-report.json``.  Writes nothing when ``dry_run`` is true or when the
    models share nothing (``report["written"]`` is then empty).  ML Programs
    (every input an ``.mlpackage``) go to ``dedupe_mlprogram.dedupe_files``;
    ``multifunction``/``multifunction_name`` apply to them only.
    """
    paths = [Path(p) for p in paths]
    if _route(paths) == "mlprogram":
        return _call_accepting(_mlprogram_module().dedupe_files, paths, out_dir, backbone_name=backbone_name,
                               search_path=search_path, min_share=min_share,
                               allow_fp16_match=allow_fp16_match, dry_run=dry_run, progress=progress,
                               multifunction=multifunction, multifunction_name=multifunction_name)
    if multifunction:
        raise UnsupportedError("dedupe --multifunction builds one ML Program package whose functions share "
                               "weights (spec 9, iOS 18); the inputs are neuralNetwork models, which have no "
                               "functions. Drop --multifunction, or convert the models to ML Programs")
    out_dir = Path(out_dir)
    for p in paths:
        if out_dir.resolve() == p.resolve().parent and not dry_run:
            raise SpecSurgeryError(f"output folder {out_dir} holds the input {p.name}; choose another -o folder "
                                   "(the rewritten model keeps the input's name)")
    result = dedupe(paths, backbone_name=backbone_name, search_path=search_path, min_share=min_share,
                    allow_fp16_match=allow_fp16_match, build=not dry_run, progress=progress)
    report = result.to_json()
    report["dry_run"] = dry_run
    report["out_dir"] = str(out_dir)
    report["written"] = []
    if dry_run or not result.plan.shares_anything:
        return report | {"table": result.plan.table()}
    sources = {p.name: path for p, path in zip(result.plan.models, paths)}
    if progress is not None:
        progress(f"write {out_dir}")
    written = _write_set(result, sources, out_dir, search_path)
    report["written"] = [str(p) for p in written]
    report["table"] = result.plan.table()
    return report


__all__ = ["dedupe", "dedupe_files", "plan_dedupe", "DedupePlan", "DedupeResult", "BackboneGroup",
           "ModelPlan", "Candidate", "HashStats"]

