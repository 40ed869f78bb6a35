"""specsurgery: surgery on Core ML models at the protobuf level.

Split a model at a blob, link a stage, assemble pipelines, dedupe a bundle's
shared backbone, compress weights, render graphs, and prove every step offline
with a validator (``check``) and a numpy reference runtime.

Heavy modules load on first use: ``import specsurgery`` is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import _hooks  # noqa: E402
from ._lazy import lazy_exports  # noqa: E402
from .errors import (  # noqa: E402
    CheckError, LoadError, NotFoundError, SaveError, SpecSurgeryError, UnsupportedError, VerifyError,
)


def _validate_before_save(model, **where):
    """What ``io.save`` runs before writing: check, loaded on first use (io sits below it)."""
    from .check import assert_valid

    assert_valid(model, **where)


_hooks.validator = _validate_before_save

from . import ops as _ops  # noqa: E402  (cheap: its names load lazily too)

# public name -> module that defines it (imported lazily)
_LAZY = {
    "load": "io", "load_spec": "io", "save": "io", "MLPackage": "io",
    "check": "check", "assert_valid": "check", "Finding": "check",
    "GraphIndex": "graph", "build_graph": "graph",
    "predict": "runtime", "verify": "runtime", "diff": "diff",
    "to_dot": "render", "render": "render",
    "from_torch": "convert",
    # every operation of specsurgery.ops (its own lazy map lists them once)
    **dict.fromkeys(_ops.PUBLIC, "ops"),
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
