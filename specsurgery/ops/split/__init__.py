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

``stage=`` cuts one stage of a pipeline (a detector's first stage, say): the
halves are that stage's, and the pipeline written is the original one with the
stage replaced by ``<S>_backbone`` and ``<S>_head`` (:func:`split_stage_pipeline`),
every other stage, the interface, labels and metadata unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ... import spec as S
from ..._proto import Model_pb2
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError
from ...io import load, split_model as _split_loaded
from ..extract.nn import _names
from ..link.stubs import DEFAULT_SEARCH_PATH
from . import mlprogram, nn

__all__ = ["split_at", "split_pipeline", "split_stage_pipeline", "split_model", "stage_halves_names",
           "DEFAULT_SEARCH_PATH"]


def _locate_stage(root, stage):
    """(chain of models from the top to the parent pipeline, the parent's Pipeline message,
    index, path) of pipeline stage ``stage`` (a name, an index, or "outer/inner")."""
    if S.pipeline_of(root) is None:
        raise UnsupportedError(
            f"split: option 'stage' (--stage) {stage!r} needs a pipeline, but the model is a "
            f"{S.model_type(root)}; leave --stage out to split the model itself")
    parts = [stage] if isinstance(stage, int) else [p for p in str(stage).split("/") if p != ""]
    if not parts:
        raise SpecSurgeryError("split: empty stage name; give --stage NAME (see inspect or tree)")
    chain, current, names = [root], root, []
    for depth, part in enumerate(parts):
        if S.pipeline_of(current) is None:
            where = "/".join(names)
            raise UnsupportedError(f"split: stage {where!r} is a {S.model_type(current)}, not a pipeline, "
                                   f"so it has no stage {part!r}; give --stage {where}")
        pipe, idx = S.find_stage(current, part)
        names.append(S.stage_names(pipe)[idx])
        if depth == len(parts) - 1:
            return chain, pipe, idx, "/".join(names)
        current = pipe.models[idx]
        chain.append(current)
    raise AssertionError("unreachable")  # pragma: no cover


def _stage_model(model, stage):
    """The model of pipeline stage ``stage`` on its own: a spec, or for an ML Program
    stage of a package, an MLPackage of the stage over the package's weights."""
    root, pkg = _split_loaded(model)
    _, pipe, idx, path = _locate_stage(root, stage)
    target = pipe.models[idx]
    kind = S.model_type(target)
    if kind not in S.NN_TYPES and kind != "mlProgram":
        split_kinds = "neuralNetwork, neuralNetworkClassifier, neuralNetworkRegressor or mlProgram"
        cuttable = [i.path for i in S.iter_models(root)
                    if i.path and (S.model_type(i.model) in S.NN_TYPES or S.model_type(i.model) == "mlProgram")]
        raise UnsupportedError(
            f"split: stage {path!r} is a {kind}; split cuts a {split_kinds} stage"
            + (f": give --stage {' or --stage '.join(cuttable)}" if cuttable else " and the pipeline has none"))
    if kind == "mlProgram":
        from ...io import MLPackage

        if pkg is None:
            raise SpecSurgeryError(f"split: stage {path!r} is an ML Program but the model has no weights "
                                   "folder; load it from its .mlpackage")
        return MLPackage(target, pkg.weights, pkg.path, pkg.metadata), path
    return target, path


def split_at(spec, blobs, *, stage=None, shapes=None, freeze_backbone: bool = False,
             drop_updatable: bool = False, inplace: bool = False):
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

    ``stage`` (a name, an index or "outer/inner") cuts that stage of a
    pipeline instead: the halves are the stage's (its interface, not the
    pipeline's); :func:`split_stage_pipeline` puts them back in the pipeline.
    ``inplace`` is refused with ``stage`` (the given model is a pipeline, not
    either half).

    Errors: a blob not in the network (with near matches), a cut at a model
    input, a cut that does not separate the graph (naming a path that
    bypasses it), a cut that leaves the head empty, ``shapes`` naming a blob
    the cut does not cross.
    """
    model = load(spec)
    root, pkg = _split_loaded(model)
    if stage is not None:
        if inplace:
            raise UnsupportedError("split_at: option 'inplace' is not supported with 'stage': the given model "
                                   "is the pipeline, not a half; leave inplace out (split_stage_pipeline "
                                   "builds the new pipeline)")
        model, _ = _stage_model(model, stage)
        root, pkg = _split_loaded(model)
    elif S.pipeline_of(root) is not None:
        stages = [i.path for i in S.iter_models(root)
                  if i.path and (S.model_type(i.model) in S.NN_TYPES or S.model_type(i.model) == "mlProgram")]
        raise UnsupportedError(
            f"split: the model is a {S.model_type(root)}, which has no neural-network layers of its own; cut one of its "
            + (f"stages with stage= (--stage {' or --stage '.join(stages)})" if stages
               else "stages with stage= (--stage NAME), but it has no network or ML Program stage"))
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


def stage_halves_names(pipe, idx: int) -> tuple[str, str]:
    """Names for the two halves of stage ``idx`` of the Pipeline message ``pipe``:
    ``<S>_backbone`` and ``<S>_head``, made unique among the other stage names."""
    names = S.stage_names(pipe)
    others = set(names[:idx] + names[idx + 1:])
    out = []
    for role in ("backbone", "head"):
        cand, k = f"{names[idx]}_{role}", 2
        while cand in others:
            cand, k = f"{names[idx]}_{role}{k}", k + 1
        others.add(cand)
        out.append(cand)
    return out[0], out[1]


def split_stage_pipeline(original, stage, backbone, head):
    """``original`` (a pipeline) with its stage ``stage`` replaced by the two stages
    ``backbone`` and ``head`` (named as :func:`stage_halves_names` says); the
    interface, the other stages, labels and metadata stay as they are.

    Returns a spec, or an MLPackage when an ML Program is inside (each program
    stage then gets its own weight file, as ``make_pipeline`` writes them).
    Errors: a cut value whose name another stage of the pipeline already uses."""
    from ...io import copy_spec
    from ..pipeline.mlprogram import has_program, pack_weights

    model = load(original)
    root, pkg = _split_loaded(model)
    out = copy_spec(root)
    chain, pipe, idx, path = _locate_stage(out, stage)
    halves = [_split_loaded(load(m)) for m in (backbone, head)]
    (bspec, bpkg), (hspec, hpkg) = halves
    # a cut value must not take a name the rest of the pipeline uses
    cut_names = [f.name for f in bspec.description.output]
    used = set()
    for k, m in enumerate(pipe.models):
        if k != idx:
            used |= {f.name for f in list(m.description.input) + list(m.description.output)}
    for outer in chain:
        used |= {f.name for f in list(outer.description.input) + list(outer.description.output)}
    clash = [n for n in cut_names if n in used]
    if clash:
        raise SpecSurgeryError(
            f"split: cut blob(s) {', '.join(map(repr, clash))} of stage {path!r} have the name of a feature "
            "another stage or the pipeline uses; rename the blob in the stage first (specsurgery rename) or "
            "cut elsewhere")
    names = S.stage_names(pipe)
    new_names = stage_halves_names(pipe, idx)
    models = [Model_pb2.Model.FromString(m.SerializeToString()) for m in pipe.models]
    del pipe.models[:]
    del pipe.names[:]
    for k, (n, m) in enumerate(zip(names, models)):
        if k == idx:
            pipe.models.add().CopyFrom(bspec)
            pipe.models.add().CopyFrom(hspec)
            pipe.names.extend(new_names)
        else:
            pipe.models.add().CopyFrom(m)
            pipe.names.append(n)
    for outer in chain:   # the pipeline never asks for less than a half needs
        outer.specificationVersion = max(outer.specificationVersion, bspec.specificationVersion,
                                         hspec.specificationVersion)
    if not has_program(out):
        return out
    from ...io import MLPackage

    # a program reads blobs from the package it came from: the halves from their own
    # packages, every other stage from the original's (pack_weights takes the deepest entry)
    parent_index = _index_of(root, path)[:-1]
    sources = {(): pkg} if pkg is not None else {}
    if bpkg is not None:
        sources[parent_index + (idx,)] = bpkg
    if hpkg is not None:
        sources[parent_index + (idx + 1,)] = hpkg
    return MLPackage(out, pack_weights(out, sources), None, {})


def _index_of(root, path: str) -> tuple:
    for info in S.iter_models(root):
        if info.path == path:
            return info.index
    raise AssertionError(path)  # pragma: no cover - path comes from _locate_stage


def split_model(model, blobs, out_dir, *, name: Optional[str] = None, link: bool = False,
                search_path: str = DEFAULT_SEARCH_PATH, check_search_path: Optional[str] = None,
                shapes=None, freeze_backbone: bool = False, drop_updatable: bool = False,
                stage=None) -> dict:
    """Split ``model`` (a path or spec) at ``blobs`` and write
    ``out_dir/<N>Backbone.mlmodel``, ``<N>Head.mlmodel`` and ``<N>.mlmodel``
    (the pipeline; with ``link`` its backbone stage is a stub naming
    ``<N>Backbone.mlmodelc`` on ``search_path``).  Returns the paths.

    ``stage`` (a pipeline's stage S, e.g. a detector's first stage): the
    halves are S's, and ``<N>.mlmodel`` is the original pipeline with S
    replaced by ``<S>_backbone`` (linked with ``link``) and ``<S>_head``."""
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
    backbone, head = split_at(original, blobs, stage=stage, shapes=shapes, freeze_backbone=freeze_backbone,
                              drop_updatable=drop_updatable)
    if stage is None:
        if isinstance(model, (str, os.PathLike)):
            # the loaded model is this call's own: keep its interface only, so that its
            # weights are freed before the pipeline copies the halves
            original = _interface_of(original)
        pipe, linked = split_pipeline(original, backbone, head), "backbone"
    else:
        _, parent, idx, path = _locate_stage(_split_loaded(original)[0], stage)
        linked = "/".join(path.split("/")[:-1] + [stage_halves_names(parent, idx)[0]])
        pipe = split_stage_pipeline(original, stage, backbone, head)
    if link:
        pipe = link_stage(pipe, linked, file_name=f"{name}Backbone.mlmodelc", search_path=search_path)
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
    # each model is dropped once written, so the pipeline is serialized without the halves in memory
    models = {"backbone": backbone, "head": head, "pipeline": pipe}
    del backbone, head, pipe, original
    try:   # all or nothing: a failed check or write removes what this call wrote
        for role in ("backbone", "head", "pipeline"):
            existed = paths[role].exists()
            save(models.pop(role), paths[role],
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


def _interface_of(model) -> "Model_pb2.Model":
    """A model holding only what :func:`split_pipeline` reads of the original: its
    description, updatability and spec version (no layers, no weights)."""
    spec = model.spec if hasattr(model, "spec") else model
    out = Model_pb2.Model()
    out.specificationVersion = spec.specificationVersion
    out.isUpdatable = spec.isUpdatable
    out.description.CopyFrom(spec.description)
    return out


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
