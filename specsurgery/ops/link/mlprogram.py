"""The ML Program part of ``link`` and ``unlink``: the weights programs carry.

A stub carries no weights, so linking and inlining are the same spec edits
for every backend (:mod:`.stubs`).  What ML Programs add is their weight
files: after a stage is linked, the remaining program stages keep their
weights, repacked per stage (``weights/<i>-weight.bin``) with exactly the
blobs each reads, so the linked stage's weights leave the package; after an
ML Program target is inlined, its weights come along from its own package.

A linked ML Program backbone can only be checked offline: its interface is
compared with the stub's and its body run by the numpy runtime, but whether a
device loads ``<name>.mlmodelc`` is only known on the device.
"""

from __future__ import annotations

from typing import Optional

from ...io import MLPackage
from ..pipeline.mlprogram import has_program, pack_weights

__all__ = ["carry_weights", "has_program"]


def carry_weights(out, sources: dict, given: Optional[MLPackage] = None):
    """``out`` (a spec whose programs read blobs from ``sources``, a
    {stage index tuple: MLPackage} map as :func:`pack_weights` takes) with
    its weights repacked: an MLPackage, or the plain spec when no program is
    left.  ``given`` (inplace) is the package to edit and return instead of
    a new one."""
    weights = pack_weights(out, sources) if has_program(out) else {}
    if given is not None:
        given.spec, given.weights = out, weights
        return given
    if not has_program(out):
        return out
    return MLPackage(out, weights, None, {})
