"""Operations on specs.  Each is ``op(spec, ..., *, inplace=False) -> Model``;
one module per operation, imported on first use."""

from __future__ import annotations

import importlib

_LAZY = {
    "split_at": "split", "suggest_cuts": "cuts", "extract": "extract",
    "make_pipeline": "pipeline", "link_stage": "link", "make_linked_stub": "link", "unlink": "link",
    "rename_feature": "rename", "dedupe": "dedupe", "dedupe_files": "dedupe", "plan_dedupe": "dedupe",
    "compress": "compress",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'specsurgery.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"specsurgery.ops.{module}"), name)
    globals()[name] = value
    return value
