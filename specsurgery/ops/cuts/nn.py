"""``suggest_cuts`` for neural networks: the blobs where one cut splits the network in two.

A blob qualifies when every path from the model inputs to the outputs runs
through it (an articulation blob; the graph index computes them with
dominators).  Each suggestion carries the blob's shape as the cut interface
would declare it and the share of the weight bytes that would go to the
backbone, which is what a shared-backbone split saves.
"""

from __future__ import annotations

from ... import spec as S
from ...errors import SpecSurgeryError
from .. import _nn
from .cut import Cut

__all__ = ["suggest_cuts", "multi_blob_cuts"]


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


def suggest_cuts(root, target, path: str = "", max_blobs: int = 1) -> list[Cut]:
    """The cuts of network ``target``, the model at stage ``path`` of ``root``
    (see :func:`specsurgery.ops.cuts.suggest_cuts`)."""
    from ...graph import build_graph

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
