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
    blob: str
    shape: Optional[list]        # declared MultiArray shape (None when shape inference cannot tell)
    layers_before: int           # layers in the backbone
    layers_after: int            # layers in the head
    weight_bytes_before: int
    weight_bytes_total: int

    @property
    def weight_share(self) -> float:
        return self.weight_bytes_before / self.weight_bytes_total if self.weight_bytes_total else 0.0

    def to_json(self) -> dict:
        out = asdict(self)
        out["weight_share"] = round(self.weight_share, 6)
        return out


def suggest_cuts(spec, path: str = "") -> list[Cut]:
    """Every single-blob cut of the network (at stage ``path`` of a
    pipeline, "" for the model itself), in topological order."""
    from ..graph import build_graph

    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    target = S.model_at(root, path) if path else root
    if S.model_type(target) == "mlProgram":
        return _nn.mlprogram_dispatch("split_mlprogram", "suggest_cuts", "suggest-cuts")(model)
    nn = S.require_nn(target, "suggest-cuts")
    blobs = build_graph(root).articulation_blobs(path)
    model_inputs = [f.name for f in target.description.input]
    total = _nn.total_weight_bytes(nn)
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
    for b in blobs:
        cl = _nn.closure(nn, [b], model_inputs=model_inputs)
        before = _nn.total_weight_bytes(nn, cl.layers)
        out.append(Cut(b, shapes.get(b), len(cl.layers), len(nn.layers) - len(cl.layers), before, total))
    return out
