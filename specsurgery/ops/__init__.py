"""Operations on specs.  Each is ``op(spec, ..., *, inplace=False) -> Model``;
one module per operation, imported on first use."""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "split_at": "split", "suggest_cuts": "cuts", "extract": "extract",
    "make_pipeline": "pipeline", "link_stage": "link", "make_linked_stub": "link", "unlink": "link", "relink": "link",
    "rename_feature": "rename", "dedupe": "dedupe", "dedupe_files": "dedupe", "plan_dedupe": "dedupe",
    "compress": "compress", "set_metadata": "metadata", "expose": "expose",
    "add_nms": "nms",
    "reshape": "reshape", "retype": "retype",
}


#: the operations' public names (specsurgery re-exports them)
PUBLIC = tuple(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
