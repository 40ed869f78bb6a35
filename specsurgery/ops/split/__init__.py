"""``split_at``: cut a model at blobs into a backbone and a head.

One public function for both backends: a neural network is cut at blobs
(:mod:`.nn`), an ML Program at values (:mod:`.mlprogram`).  The backbone
computes the cut blobs from the model inputs and outputs them; the head
computes the original outputs from them (and any original input it still
reads) and keeps the classifier or regressor semantics.  Each layer or op goes
to exactly one half, so no weight is duplicated.  Every option means the same
for both backends; where an ML Program cannot honour one it is refused by
name.

``split_model`` writes ``<N>Backbone.mlmodel``, ``<N>Head.mlmodel`` and
``<N>.mlmodel`` (``.mlpackage`` for ML Programs): a pipeline of both with the original interface (the backbone
optionally a linked stub naming ``<N>Backbone.mlmodelc``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ... import spec as S
from ..._proto import Model_pb2
from ...errors import NotFoundError, SpecSurgeryError
from ...io import load, split_model as _split_loaded
from ..extract.nn import _names
from ..link.stubs import DEFAULT_SEARCH_PATH
from . import mlprogram, nn

__all__ = ["split_at", "split_pipeline", "split_model", "DEFAULT_SEARCH_PATH"]


def split_at(spec, blobs, *, shapes=None, freeze_backbone: bool = False, drop_updatable: bool = False,
             inplace: bool = False):
    """(backbone, head) of ``spec`` cut at ``blobs`` (a name, "a,b" or a list):
    specs for a neural network, MLPackages for an ML Program.

    ``shapes`` ({blob: declared shape}) types cut blobs that shape inference
    cannot (behind custom layers); an ML Program types every value itself, so
    there it can only fill the dims the program leaves unknown.  For an
    updatable model the updatable layers must all lie after the cut (only a
    pipeline's last stage may be updatable); ``freeze_backbone=True`` instead
    marks the backbone's layers not updatable (on-device training then
    updates the head only; refused for ML Programs, which Core ML does not
    train), and ``drop_updatable=True`` makes both halves plain prediction
    models (predictions are unchanged; on-device training is gone).
    ``inplace=True`` turns the given spec or MLPackage into the head and
    returns it as the second item (the backbone is always a new model).

    Errors: a blob not in the network (with near matches), a cut at a model
    input, a cut that does not separate the graph (naming a path that
    bypasses it), a cut that leaves the head empty, ``shapes`` naming a blob
    the cut does not cross.
    """
    model = load(spec)
    root, pkg = _split_loaded(model)
    cuts = _names(blobs)
    if not cuts:
        raise SpecSurgeryError("split: give at least one blob to cut at")
    if shapes:
        extra = [b for b in shapes if b not in cuts]
        if extra:
            raise NotFoundError(
                f"split: shapes names {', '.join(map(repr, extra))}, which the cut does not cross (it cuts "
                f"at {', '.join(map(repr, cuts))}); give shapes only for cut blobs")
    options = dict(shapes=shapes, freeze_backbone=freeze_backbone, drop_updatable=drop_updatable)
    if S.model_type(root) == "mlProgram":
        backbone, head = mlprogram.split_at(model, cuts, **options)
    else:
        backbone, head = nn.split_at(root, cuts, **options)
    if not inplace:
        return backbone, head
    if pkg is not None:          # the given package becomes the head, weights included
        head_spec, head_pkg = _split_loaded(head)
        pkg.spec.CopyFrom(head_spec)
        pkg.weights = dict(head_pkg.weights) if head_pkg is not None else {}
        return backbone, pkg
    root.CopyFrom(head)
    return backbone, root


def split_pipeline(original, backbone, head, *, names: Sequence[str] = ("backbone", "head")):
    """The pipeline [backbone, head] with ``original``'s interface (inputs,
    outputs and their order, descriptions, metadata, updatability) and at
    least its spec version (each half keeps only the version it needs)."""
    from ..pipeline import make_pipeline

    pipe = make_pipeline([backbone, head], names=list(names), interface=original)
    pspec, hspec = getattr(pipe, "spec", pipe), getattr(head, "spec", head)
    ospec = getattr(original, "spec", original)
    if isinstance(ospec, Model_pb2.Model):   # the pipeline keeps the original's deployment target
        pspec.specificationVersion = max(pspec.specificationVersion, ospec.specificationVersion)
    if not hspec.isUpdatable and pspec.isUpdatable:
        pspec.isUpdatable = False
        del pspec.description.trainingInput[:]
    return pipe


def split_model(model, blobs, out_dir, *, name: Optional[str] = None, link: bool = False,
                search_path: str = DEFAULT_SEARCH_PATH, check_search_path: Optional[str] = None,
                shapes=None, freeze_backbone: bool = False, drop_updatable: bool = False) -> dict:
    """Split ``model`` (a path or spec) at ``blobs`` and write
    ``out_dir/<N>Backbone.mlmodel``, ``<N>Head.mlmodel`` and ``<N>.mlmodel``
    (the pipeline; with ``link`` its backbone stage is a stub naming
    ``<N>Backbone.mlmodelc`` on ``search_path``).  Returns the paths."""
    from ...io import MLPackage, save
    from ..link import link_stage

    if name is None:
        if isinstance(model, (str, os.PathLike)):
            name = Path(model).stem
        else:
            raise SpecSurgeryError("split_model: give name= when the model is not a file path")
    if not name or name.startswith(".") or re.search(r"[/\\\x00]", name):
        # "" would write a hidden ".mlmodel", "a/b" a sub-folder
        raise SpecSurgeryError(f"split: base name {name!r} must be a plain file stem (no folder, not "
                               "empty, not starting with '.'), e.g. --name Classifier")
    out = Path(out_dir)
    original = load(model)
    backbone, head = split_at(original, blobs, shapes=shapes, freeze_backbone=freeze_backbone,
                              drop_updatable=drop_updatable)
    pipe = split_pipeline(original, backbone, head)
    if link:
        pipe = link_stage(pipe, "backbone", file_name=f"{name}Backbone.mlmodelc", search_path=search_path)
    def ext(m):   # ML Programs keep their weights in a package
        return ".mlpackage" if isinstance(m, MLPackage) else ".mlmodel"

    paths = {
        "backbone": out / f"{name}Backbone{ext(backbone)}",
        "head": out / f"{name}Head{ext(head)}",
        "pipeline": out / f"{name}{ext(pipe)}",
    }
    if isinstance(model, (str, os.PathLike)):
        clash = [p for p in paths.values() if _same_file(p, model)]
        if clash:
            raise SpecSurgeryError(f"split: {clash[0]} would overwrite the input model; write to another "
                                   "folder (-o) or give another base name (--name)")
    written = []
    try:   # all or nothing: a failed check or write removes what this call wrote
        for role in ("backbone", "head", "pipeline"):
            existed = paths[role].exists()
            save({"backbone": backbone, "head": head, "pipeline": pipe}[role], paths[role],
                 search_path=check_search_path if role == "pipeline" else None)
            if not existed:
                written.append(paths[role])
    except BaseException:
        for path in written:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        raise
    return paths


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
