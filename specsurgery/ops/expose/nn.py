"""expose, NeuralNetwork part: a layer's output blob becomes a model output,
typed by the runtime's shape inference (flexible where the inputs are)."""

from __future__ import annotations

from ... import spec as S
from ...nn.kinds import iter_layers, sub_networks
from ..extract.nn import typed_features


def produced_names(model) -> tuple[list, dict]:
    """(blobs a top-level layer writes, {blob: why not} for blobs only nested networks write)."""
    nn = S.nn_of(model)
    top = [b for layer in nn.layers for b in layer.output]
    inner = {}
    for layer in nn.layers:
        for _, sub in sub_networks(layer):
            for _, inner_layer in iter_layers(sub):
                for b in inner_layer.output:
                    if b not in top:
                        inner[b] = (f"it is written inside the {layer.WhichOneof('layer')} layer "
                                    f"{layer.name!r}; only blobs of the top-level network can be outputs")
    return top, inner


def add_outputs(model, names, *, shapes=None, version=None) -> list:
    feats = typed_features(model, names, role="output", shapes=shapes)
    for f in feats:
        model.description.output.add().CopyFrom(f)
    return feats
