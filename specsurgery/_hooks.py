"""Slots through which a higher layer lends a service to a lower one.

``io.save`` checks a model before writing it, but ``io`` sits below
``check``: importing it would make a cycle.  The package root fills
:data:`validator` with a function that loads :mod:`specsurgery.check` on
first use, so ``io`` calls the checker without importing it.
"""

from __future__ import annotations

from typing import Callable, Optional

#: ``validator(model, *, search_path, where, base_dir)`` raises CheckError on an invalid model.
validator: Optional[Callable] = None
