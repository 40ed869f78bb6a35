"""``suggest_cuts``: where one cut splits a model in two.

One public function for both backends: the blobs every path of a neural
network runs through (:mod:`.nn`), or the values of an ML Program that are
the only ones still needed after the op that computes them
(:mod:`.mlprogram`).  Each suggestion (a :class:`Cut`) carries the blob's shape
as the cut interface would declare it and the share of the weight bytes that
would go to the backbone, which is what a shared-backbone split saves.
"""

from __future__ import annotations

from ... import spec as S
from ...errors import SpecSurgeryError
from ...io import MLPackage, load
from . import mlprogram, nn
from .cut import Cut

__all__ = ["Cut", "suggest_cuts"]


def suggest_cuts(spec, path: str = "", max_blobs: int = 1) -> list[Cut]:
    """Every single-blob cut of the model (at stage ``path`` of a pipeline,
    "" for the model itself), in topological order; with ``max_blobs`` > 1
    also the cuts over up to that many blobs (a skip connection crossing the
    cut), in layer order after the single ones."""
    if isinstance(max_blobs, bool) or not isinstance(max_blobs, int) or max_blobs < 1:
        raise SpecSurgeryError(f"suggest-cuts: max_blobs (--max-blobs) {max_blobs!r} must be a whole number "
                               ">= 1: 1 lists single-blob cuts, K > 1 also cuts over up to K blobs")
    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    target = S.model_at(root, path) if path else root
    if S.model_type(target) == "mlProgram":
        if target is not root:
            # a program stage of a pipeline (package): the stage's spec over the package's weights
            model = MLPackage(target, model.weights, model.path, model.metadata) \
                if isinstance(model, MLPackage) else target
        return mlprogram.suggest_cuts(model, max_blobs=max_blobs)
    return nn.suggest_cuts(root, target, path, max_blobs)
