"""specsurgery: surgery on Core ML models at the protobuf level.

Split a model at a blob, link a stage, assemble pipelines, dedupe a bundle's
shared backbone, compress weights, render graphs, and prove every step offline
with a validator (``check``) and a numpy reference runtime.

Heavy modules load on first use: ``import specsurgery`` is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    CheckError, LoadError, NotFoundError, SaveError, SpecSurgeryError, UnsupportedError, VerifyError,
)

# public name -> module that defines it (imported lazily)
_LAZY = {
    "load": "io", "load_spec": "io", "save": "io", "MLPackage": "io",
    "check": "check", "assert_valid": "check", "Finding": "check",
    "GraphIndex": "graph", "build_graph": "graph",
    "predict": "runtime", "verify": "runtime",
    "split_at": "ops", "make_pipeline": "ops", "link_stage": "ops", "make_linked_stub": "ops",
    "unlink": "ops", "rename_feature": "ops", "extract": "ops", "suggest_cuts": "ops",
    "dedupe": "ops", "compress": "ops",
    "to_dot": "render", "render": "render",
    "from_torch": "convert",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'specsurgery' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"specsurgery.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
