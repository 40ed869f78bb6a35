"""Old import path of the per-layer-kind facts, which now live in the layer-kind
table :mod:`specsurgery.nn.kinds`.  Kept as a thin re-export for the modules
that still import it (summary, ops._nn); new code imports ``specsurgery.nn``.
"""

from __future__ import annotations

from .nn.kinds import IOS12_KINDS as IOS12_LAYERS
from .nn.kinds import KINDS, WeightInfo, category, layer_facts, weight_infos

#: kind -> category
CATEGORY = {name: kind.category for name, kind in KINDS.items()}

#: Kinds that need v5 (iOS 14) by themselves.
IOS14_LAYERS = frozenset(name for name, kind in KINDS.items() if kind.min_spec_version == 5)

__all__ = ["CATEGORY", "IOS12_LAYERS", "IOS14_LAYERS", "WeightInfo", "category", "layer_facts",
           "weight_infos"]
