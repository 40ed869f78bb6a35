"""``suggest_cuts``: the blobs where one cut splits a network in two.

A blob qualifies when every path from the model inputs to the outputs runs
through it (an articulation blob; the graph index computes them with
dominators).  Each suggestion carries the blob's shape as the cut interface
would declare it and the share of the weight bytes that would go to the
backbone, which is what a shared-backbone split saves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .. import spec as S
from ..errors import SpecSurgeryError
from ..io import MLPackage, load
from . import _nn

__all__ = ["Cut", "suggest_cuts"]


@dataclass
class Cut:
    blob: str                    # the blob; "a,b" for a cut over several blobs
    shape: Optional[list]        # declared MultiArray shape (None when shape inference cannot tell)
    layers_before: int           # layers in the backbone
    layers_after: int            # layers in the head
    weight_bytes_before: int
    weight_bytes_total: int
    blobs: Optional[list] = None     # every blob of the cut (several when a skip connection crosses it)
    shapes: Optional[list] = None    # their shapes

    def __post_init__(self):
        if self.blobs is None:
            self.blobs = self.blob.split(",")
        if self.shapes is None:
            self.shapes = [self.shape] if len(self.blobs) == 1 else [None] * len(self.blobs)

    @property
    def weight_share(self) -> float:
        return self.weight_bytes_before / self.weight_bytes_total if self.weight_bytes_total else 0.0

    def to_json(self) -> dict:
        out = asdict(self)
        out["weight_share"] = round(self.weight_share, 6)
        return out


def multi_blob_cuts(nn, model_inputs, max_blobs: int) -> list[list[str]]:
    """Blob sets of 2..``max_blobs`` blobs that separate the network, in layer
    order: after each layer, the blobs computed so far that a later layer
    (or the interface) still reads."""
    last_use: dict = {}
    for i, layer in enumerate(nn.layers):
        for b in _nn.layer_reads(layer):
            last_use[b] = i
    inputs = set(model_inputs)
    out, seen, live = [], set(), []
    for i, layer in enumerate(nn.layers):
        live = [b for b in live if last_use.get(b, -1) > i]
        for b in _nn.layer_writes(layer):
            if b not in inputs and last_use.get(b, -1) > i and b not in live:
                live.append(b)
        key = tuple(sorted(live))
        if 2 <= len(live) <= max_blobs and key not in seen:
            seen.add(key)
            out.append(list(live))
    return out


def suggest_cuts(spec, path: str = "", max_blobs: int = 1) -> list[Cut]:
    """Every single-blob cut of the network (at stage ``path`` of a
    pipeline, "" for the model itself), in topological order; with
    ``max_blobs`` > 1 also the cuts over up to that many blobs (a skip
    connection crossing the cut), in layer order after the single ones."""
    from ..graph import build_graph

    if isinstance(max_blobs, bool) or not isinstance(max_blobs, int) or max_blobs < 1:
        raise SpecSurgeryError(f"suggest-cuts: max_blobs (--max-blobs) {max_blobs!r} must be a whole number "
                               ">= 1: 1 lists single-blob cuts, K > 1 also cuts over up to K blobs")
    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    target = S.model_at(root, path) if path else root
    if S.model_type(target) == "mlProgram":
        if target is not root and isinstance(model, MLPackage):
            # a program stage of a pipeline package: the stage's spec over the package's weights
            model = MLPackage(target, model.weights, model.path, model.metadata)
        return _nn.mlprogram_dispatch("split_mlprogram", "suggest_cuts", "suggest-cuts")(model)
    nn = S.require_nn(target, "suggest-cuts")
    _nn.require_wired(target, nn, "suggest-cuts")
    blobs = build_graph(root).articulation_blobs(path)
    model_inputs = [f.name for f in target.description.input]
    total = sum(_nn.layer_weight_bytes(nn))
    shapes = {}
    if blobs:
        try:
            shapes, _ = _nn.blob_shapes(target, blobs)
        except (SpecSurgeryError, ImportError):
            # some blob cannot be typed (custom layer, huge input): type the ones before it
            for b in blobs:
                try:
                    shapes.update(_nn.blob_shapes(target, [b])[0])
                except (SpecSurgeryError, ImportError):
                    break
    out = []
    prods = _nn.producers(nn)
    per_layer = _nn.layer_weight_bytes(nn)
    # each articulation blob lies on every path to the next one, so the next
    # backbone is this one plus the layers between the two: one walk in all
    before_layers: set = set()
    prev: list = []
    before = 0
    for b in blobs:
        cl = _nn.closure(nn, [b], stops=prev, model_inputs=model_inputs, prods=prods)
        before += sum(per_layer[i] for i in cl.layers - before_layers)
        before_layers |= cl.layers
        prev = [b]
        out.append(Cut(b, shapes.get(b), len(before_layers), len(nn.layers) - len(before_layers),
                       before, total))
    if max_blobs > 1:
        outputs = {f.name for f in target.description.output}
        groups = [g for g in multi_blob_cuts(nn, model_inputs, max_blobs) if not outputs & set(g)]
        wanted = sorted({b for g in groups for b in g} - set(shapes))
        if wanted:
            try:
                shapes.update(_nn.blob_shapes(target, wanted)[0])
            except (SpecSurgeryError, ImportError):
                pass
        for group in groups:
            cl = _nn.closure(nn, group, model_inputs=model_inputs, prods=prods)
            group_shapes = [shapes.get(b) for b in group]
            out.append(Cut(",".join(group), None, len(cl.layers), len(nn.layers) - len(cl.layers),
                           sum(per_layer[i] for i in cl.layers), total, list(group), group_shapes))
    return out
