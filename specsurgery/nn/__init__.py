"""NeuralNetwork (.mlmodel) backend facts: the layer-kind table (:mod:`.kinds`)."""

from .kinds import (
    IOS12_KINDS, KINDS, LayerKind, WeightField, category, dynamic_weights, key_params, kind_of, own_weights,
    iter_layers, kinds_where, sub_networks, layer_facts, version_needs, weight_fields,
)

__all__ = ["KINDS", "LayerKind", "WeightField", "IOS12_KINDS", "kind_of", "weight_fields",
           "dynamic_weights", "own_weights", "sub_networks", "iter_layers", "key_params", "version_needs", "category", "kinds_where", "layer_facts"]
