"""Bundle dedupe: find the backbone several models share, store it once, link it.

``nn`` holds the neuralNetwork part, ``mlprogram`` the ML Program part.
"""

from __future__ import annotations

from .nn import (DEFAULT_SEARCH_PATH, REPORT_NAME, BackboneGroup, Candidate, DedupePlan, DedupeResult,  # noqa: F401
                 HashStats, ModelPlan, dedupe, dedupe_files, plan_dedupe)
from ... import io  # noqa: F401

__all__ = ["dedupe", "dedupe_files", "plan_dedupe", "DedupePlan", "DedupeResult", "BackboneGroup",
           "ModelPlan", "Candidate", "HashStats"]


from ..._callable import make_callable  # noqa: E402

make_callable(__name__, "dedupe")
