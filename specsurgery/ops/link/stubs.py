"""Linked stubs on the spec, the part of ``link`` and ``unlink`` every backend shares.

A stub's description equals the stage's interface, so the pipeline's type
table does not change.  Core ML needs spec version 4 for a linked model; the
stub and every pipeline around it are raised to at least 4, and the raise is
reported as a :class:`SurgeryNote` warning.

:func:`replace_stage` turns a stage into a stub and :func:`inline_stubs` puts
the stubs' targets back, both editing the spec they are given; what an ML
Program's weights need on top of that lives in :mod:`.mlprogram`.
"""

from __future__ import annotations

from typing import Optional

from ..._proto import Model_pb2
from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError
from ...io import MLPackage, copy_spec, load, split_model
from .. import _nn

__all__ = ["make_linked_stub", "replace_stage", "inline_stubs", "DEFAULT_SEARCH_PATH", "LINKED_MIN_VERSION"]

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
LINKED_MIN_VERSION = 4


def make_linked_stub(spec_or_description, file_name: str = "Backbone.mlmodelc",
                     search_path: str = DEFAULT_SEARCH_PATH) -> "Model_pb2.Model":
    """A ``linkedModel`` whose description equals the model's (or the given
    ModelDescription), pointing at the compiled ``file_name`` on
    ``search_path``.  Spec version 4 (more if the interface needs it).  The
    same for every backend: a stub carries no weights."""
    if not file_name:
        raise SpecSurgeryError("make_linked_stub: file_name is empty; name the compiled model, "
                               "e.g. 'Backbone.mlmodelc'")
    if isinstance(spec_or_description, Model_pb2.ModelDescription):
        desc, version, updatable, where = spec_or_description, 1, False, "the description"
    else:
        model = load(spec_or_description)
        spec = model.spec if isinstance(model, MLPackage) else model
        desc, version, updatable = spec.description, spec.specificationVersion, spec.isUpdatable
        where = f"the {S.model_type(spec)} model"
    optional = [f.name for f in desc.input if f.type.isOptional]
    if optional:
        raise UnsupportedError(
            f"make_linked_stub: {where} has optional input(s) {', '.join(map(repr, optional))}; Core ML "
            "does not allow optional inputs on a linked model: make them required first")
    if updatable:
        raise UnsupportedError(f"make_linked_stub: {where} is updatable; a linked model cannot be "
                               "marked updatable")
    stub = Model_pb2.Model()
    stub.description.CopyFrom(desc)
    del stub.description.trainingInput[:]
    lf = stub.linkedModel.linkedModelFile
    lf.linkedModelFileName.defaultValue = file_name
    lf.linkedModelSearchPath.defaultValue = search_path or ""
    stub.specificationVersion = max(version, LINKED_MIN_VERSION)
    _nn.set_min_version(stub, stub.specificationVersion)
    if not file_name.endswith(".mlmodelc"):
        _nn.note(f"linked file name {file_name!r} does not end in .mlmodelc; Core ML loads compiled "
                 "models only")
    return stub


# --------------------------------------------------------------------------- link

def _split_stage_path(stage) -> list:
    if isinstance(stage, int):
        return [stage]
    parts = [p for p in str(stage).split("/") if p != ""]
    if not parts:
        raise SpecSurgeryError("link: empty stage name")
    return parts


def _locate(spec, stage) -> tuple[list, object, int]:
    """(chain of models from the top to the parent pipeline, pipeline message, index)."""
    chain = [spec]
    parts = _split_stage_path(stage)
    current = spec
    for depth, part in enumerate(parts):
        if S.pipeline_of(current) is None:
            where = "/".join(map(str, parts[:depth])) or "the top model"
            raise UnsupportedError(
                f"{where} is a {S.model_type(current)}, not a pipeline, so it has no stage {part!r}; "
                "for a standalone model use make_linked_stub (--standalone on the command line)")
        pipe, idx = S.find_stage(current, part)
        if depth == len(parts) - 1:
            return chain, pipe, idx
        current = pipe.models[idx]
        chain.append(current)
    raise AssertionError("unreachable")


def _raise_versions(chain, floor: int, reason: str) -> None:
    for model in chain:
        if model.specificationVersion < floor:
            old = model.specificationVersion
            model.specificationVersion = floor
            where = "the pipeline" if model is chain[0] else "a nested pipeline"
            _nn.note(f"raised the spec version of {where} from {old} to {floor}: {reason}")


def replace_stage(out, stage, file_name: str, search_path: str) -> None:
    """Replace the pipeline stage ``stage`` (name, index, or "outer/inner") of
    ``out`` (edited in place) with a linked stub of its interface naming
    ``file_name``.  The stage name stays; the stub and enclosing pipelines get
    spec version >= 4 (a :class:`SurgeryNote` says so when a version is raised)."""
    chain, pipe, idx = _locate(out, stage)
    target = pipe.models[idx]
    if S.model_type(target) == "linkedModel":
        raise SpecSurgeryError(f"link: stage {stage!r} is already a linked model "
                               f"({target.linkedModel.linkedModelFile.linkedModelFileName.defaultValue})")
    stub = make_linked_stub(target, file_name=file_name, search_path=search_path)
    old_version = target.specificationVersion
    pipe.models[idx].CopyFrom(stub)
    if old_version < LINKED_MIN_VERSION:
        _nn.note(f"raised the spec version of stage {stage!r} from {old_version} to "
                 f"{stub.specificationVersion}: a linkedModel needs spec version {LINKED_MIN_VERSION}")
    _raise_versions(chain, max(LINKED_MIN_VERSION, stub.specificationVersion),
                    f"stage {stage!r} is a linkedModel, which needs spec version {LINKED_MIN_VERSION}")


def edit_stub(out, stage, file_name: Optional[str], search_path: Optional[str]) -> list[str]:
    """Change the file name and/or search path of the linked stub at ``stage``
    of ``out`` (edited in place; ``stage`` None: ``out`` itself is the stub).
    Returns what changed, as text."""
    if file_name is None and search_path is None:
        raise SpecSurgeryError("relink: nothing to change; give a new file name (--file) and/or search "
                               "path (--search-path)")
    if stage is None:
        if S.model_type(out) != "linkedModel":
            hint = ("; name the stage: " + ", ".join(S.stage_names(S.pipeline_of(out)))
                    if S.pipeline_of(out) is not None else "")
            raise UnsupportedError(f"relink: the model is a {S.model_type(out)}, not a linked stub{hint}")
        stub = out
    else:
        _, pipe, idx = _locate(out, stage)
        stub = pipe.models[idx]
        if S.model_type(stub) != "linkedModel":
            raise UnsupportedError(f"relink: stage {stage!r} is a {S.model_type(stub)}, not a linked stub; "
                                   "use link to turn it into one")
    lf = stub.linkedModel.linkedModelFile
    changed = []
    if file_name is not None:
        if not file_name or "/" in file_name:
            raise SpecSurgeryError(f"relink: file name {file_name!r} must be a plain name such as "
                                   "'Backbone.mlmodelc' (the folders go in the search path)")
        if not file_name.endswith(".mlmodelc"):
            _nn.note(f"linked file name {file_name!r} does not end in .mlmodelc; Core ML loads compiled "
                     "models only")
        changed.append(f"file {lf.linkedModelFileName.defaultValue} -> {file_name}")
        lf.linkedModelFileName.defaultValue = file_name
    if search_path is not None:
        changed.append(f"search path {lf.linkedModelSearchPath.defaultValue!r} -> {search_path!r}")
        lf.linkedModelSearchPath.defaultValue = search_path
    return changed


# --------------------------------------------------------------------------- unlink

def _resolve(stub, search_path, base_dir, bundle, where):
    """(spec, package or None) of the model a stub links to."""
    from ...linked import require_linked

    path = require_linked(stub, search_path=search_path, base_dir=base_dir, bundle=bundle,
                          where=f"unlink: {where}")
    return split_model(load(path))


def inline_stubs(out, search_path: Optional[str], base_dir, bundle) -> dict:
    """Put every linked stub's target back into ``out`` (edited in place;
    nested pipelines too, a linked top model as well), checking each target
    against its stub's interface.  Returns {stage index tuple: the target's
    MLPackage or None} of the stages inlined (``()`` for the top model), so a
    caller can carry their weights."""
    from ..pipeline import type_difference

    inlined: dict = {}
    if S.model_type(out) == "linkedModel":
        target, pkg = _inline_one(out, search_path, base_dir, bundle, "the model", type_difference)
        out.CopyFrom(target)
        inlined[()] = pkg
        return inlined
    for info in list(S.iter_models(out)):
        if info.path and S.model_type(info.model) == "linkedModel":
            target, pkg = _inline_one(info.model, search_path, base_dir, bundle, f"stage {info.path!r}",
                                      type_difference)
            info.model.CopyFrom(target)
            inlined[info.index] = pkg
    if not inlined:
        raise NotFoundError("unlink: the model has no linkedModel stages; nothing to inline")
    # enclosing pipelines must be at least the inlined targets' versions
    _fix_outer_versions(out)
    return inlined


def _fix_outer_versions(spec) -> int:
    pipe = S.pipeline_of(spec)
    if pipe is None:
        return spec.specificationVersion
    need = max(_fix_outer_versions(m) for m in pipe.models)
    spec.specificationVersion = max(spec.specificationVersion, need)
    return spec.specificationVersion


def _inline_one(stub, search_path, base_dir, bundle, where, type_difference):
    target, pkg = _resolve(stub, search_path, base_dir, bundle, where)
    problems = []
    for role in ("input", "output"):
        theirs = {f.name: f for f in getattr(target.description, role)}
        for f in getattr(stub.description, role):
            g = theirs.get(f.name)
            if g is None:
                problems.append(f"{role} {f.name!r} missing in the target")
            elif type_difference(f.type, g.type):
                problems.append(f"{role} {f.name!r}: stub {S.describe_type(f.type)} vs target "
                                f"{S.describe_type(g.type)}")
    if problems:
        raise SpecSurgeryError(f"unlink: {where}'s target does not match its stub's interface: "
                               + "; ".join(problems))
    return copy_spec(target), pkg
