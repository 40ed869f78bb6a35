"""Linked models: replace a pipeline stage with a ``linkedModel`` stub, make a
stub for a standalone model, and inline stubs back (``unlink``).

One public function per verb for both backends.  The stub edits are the same
for every model (:mod:`.stubs`); when the model holds ML Programs, or a stub
links to one, :mod:`.mlprogram` carries the programs' weights and the result
is an :class:`~specsurgery.io.MLPackage`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ...io import copy_spec, load, split_model
from . import mlprogram, stubs
from .stubs import DEFAULT_SEARCH_PATH, LINKED_MIN_VERSION, make_linked_stub

__all__ = ["link_stage", "make_linked_stub", "unlink", "relink", "DEFAULT_SEARCH_PATH", "LINKED_MIN_VERSION"]


def link_stage(spec, stage, file_name: str = "Backbone.mlmodelc", search_path: str = DEFAULT_SEARCH_PATH,
               *, inplace: bool = False):
    """Replace the pipeline stage ``stage`` (name, index, or "outer/inner")
    with a linked stub of its interface naming ``file_name``.  The stage
    name stays; the stub and enclosing pipelines get spec version >= 4 (a
    :class:`SurgeryNote` says so when a version is raised).

    A pipeline holding ML Programs gives an MLPackage whose remaining
    programs keep exactly their weights (a plain spec when the linked stage
    was the last program).  ``inplace=True`` edits the given spec, or the
    given MLPackage, and returns it (a plain spec whose programs keep weights
    comes back inside a new MLPackage around that same spec)."""
    model = load(spec)
    root, pkg = split_model(model)
    programs = mlprogram.has_program(root)
    out = root if inplace else copy_spec(root)
    stubs.replace_stage(out, stage, file_name, search_path)
    if not programs:
        return out
    return mlprogram.carry_weights(out, {(): pkg}, pkg if inplace else None)


def unlink(spec, search_path: Optional[str] = None, base_dir=None, bundle=None, *, inplace: bool = False):
    """Inline every linked stub's target back into the model (nested
    pipelines too), resolved with :func:`specsurgery.linked.resolve_linked`
    (``search_path`` overrides the stubs' own; ``base_dir`` is the folder of
    the containing model, by default the folder of the file or package given;
    ``bundle`` what ``$BUNDLE_MAIN`` stands for).  A target whose interface
    differs from its stub's is an error.

    When a target (or the model) holds an ML Program the result is an
    MLPackage carrying every program's weights.  ``inplace=True`` edits the
    given spec (or MLPackage) and returns it, or, for a spec whose inlined
    targets bring weights, a new MLPackage around that same spec."""
    model = load(spec)
    root, pkg = split_model(model)
    if base_dir is None:
        if isinstance(spec, (str, os.PathLike)):
            base_dir = Path(spec).parent
        elif pkg is not None and pkg.path is not None:
            base_dir = pkg.path.resolve().parent
    out = root if inplace else copy_spec(root)
    inlined = stubs.inline_stubs(out, search_path, base_dir, bundle)
    given = pkg if inplace else None
    if given is None and not mlprogram.has_program(out):
        return out
    return mlprogram.carry_weights(out, {(): pkg, **inlined}, given)


def relink(spec, stage=None, *, file_name: Optional[str] = None, search_path: Optional[str] = None,
           inplace: bool = False):
    """Edit an existing linked stub in one step: its ``linkedModelFileName``
    (``file_name``) and/or ``linkedModelSearchPath`` (``search_path``).
    ``stage`` is the stub's stage (name, index or "outer/inner"); None when
    the model itself is a stub.  A package comes back as a package with its
    weights (editing a stub moves none)."""
    model = load(spec)
    root, pkg = split_model(model)
    out = root if inplace else copy_spec(root)
    stubs.edit_stub(out, stage, file_name, search_path)
    if pkg is None:
        return out
    if inplace:
        return pkg
    new = pkg.copy()
    new.spec = out
    return new
