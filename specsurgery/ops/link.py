"""Linked models: replace a pipeline stage with a ``linkedModel`` stub, make a
stub for a standalone model, and inline stubs back (``unlink``).

A stub's description equals the stage's interface, so the pipeline's type
table does not change.  Core ML needs spec version 4 for a linked model; the
stub and every pipeline around it are raised to at least 4, and the raise is
reported as a :class:`SurgeryNote` warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .._proto import Model_pb2
from .. import spec as S
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError
from ..io import MLPackage, copy_spec, load
from . import _nn

__all__ = ["link_stage", "make_linked_stub", "unlink", "DEFAULT_SEARCH_PATH", "LINKED_MIN_VERSION"]

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
LINKED_MIN_VERSION = 4


def make_linked_stub(spec_or_description, file_name: str = "Backbone.mlmodelc",
                     search_path: str = DEFAULT_SEARCH_PATH) -> "Model_pb2.Model":
    """A ``linkedModel`` whose description equals the model's (or the given
    ModelDescription), pointing at the compiled ``file_name`` on
    ``search_path``.  Spec version 4 (more if the interface needs it)."""
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


def link_stage(spec, stage, file_name: str = "Backbone.mlmodelc", search_path: str = DEFAULT_SEARCH_PATH,
               *, inplace: bool = False):
    """Replace the pipeline stage ``stage`` (name, index, or "outer/inner")
    with a linked stub of its interface naming ``file_name``.  The stage
    name stays; the stub and enclosing pipelines get spec version >= 4 (a
    :class:`SurgeryNote` says so when a version is raised)."""
    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    if S.model_type(root) == "mlProgram" or (S.pipeline_of(root) is not None and any(
            S.model_type(i.model) == "mlProgram" for i in S.iter_models(root))):
        fn = _nn.mlprogram_dispatch("link_mlprogram", "link_mlprogram", "link")
        return fn(model, stage, file_name=file_name, search_path=search_path)
    out = root if inplace else copy_spec(root)
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
    return out


# --------------------------------------------------------------------------- unlink

def _resolve(stub, search_path, base_dir, bundle, where) -> "Model_pb2.Model":
    from ..linked import require_linked

    path = require_linked(stub, search_path=search_path, base_dir=base_dir, bundle=bundle,
                          where=f"unlink: {where}")
    model = load(path)
    return model.spec if isinstance(model, MLPackage) else model


def unlink(spec, search_path: Optional[str] = None, base_dir=None, bundle=None, *, inplace: bool = False):
    """Inline every linked stub's target back into the model (nested
    pipelines too), resolved with :func:`specsurgery.linked.resolve_linked`
    (``search_path`` overrides the stubs' own; ``base_dir`` is the folder of
    the containing model; ``bundle`` what ``$BUNDLE_MAIN`` stands for).  A
    target whose interface differs from its stub's is an error."""
    from .pipeline import type_difference

    model = load(spec)
    if base_dir is None and isinstance(spec, (str, Path)):
        base_dir = Path(spec).parent
    root = model.spec if isinstance(model, MLPackage) else model
    if _links_to_program(root, search_path, base_dir, bundle):
        # the targets' weights must come along: the result is an .mlpackage
        fn = _nn.mlprogram_dispatch("link_mlprogram", "unlink_mlprogram", "unlink")
        return fn(spec if isinstance(spec, (str, Path)) else model, search_path=search_path,
                  base_dir=base_dir, bundle=bundle)
    out = root if inplace else copy_spec(root)
    if S.model_type(out) == "linkedModel":
        target = _inline_one(out, search_path, base_dir, bundle, "the model", type_difference)
        out.CopyFrom(target)
        return out
    found_any = False
    for info in list(S.iter_models(out)):
        if info.path and S.model_type(info.model) == "linkedModel":
            found_any = True
            target = _inline_one(info.model, search_path, base_dir, bundle, f"stage {info.path!r}",
                                 type_difference)
            info.model.CopyFrom(target)
    if not found_any:
        raise NotFoundError("unlink: the model has no linkedModel stages; nothing to inline")
    # enclosing pipelines must be at least the inlined targets' versions
    _fix_outer_versions(out)
    return out


def _links_to_program(root, search_path, base_dir, bundle) -> bool:
    """True when a top-level stage links to an ML Program (an .mlpackage target)."""
    from ..linked import resolve_linked

    pipe = S.pipeline_of(root)
    if pipe is None:
        return False
    for stage in pipe.models:
        if S.model_type(stage) != "linkedModel":
            continue
        found, _ = resolve_linked(stage, search_path=search_path, base_dir=base_dir, bundle=bundle)
        if found is not None and Path(found).suffix == ".mlpackage":
            return True
    return False


def _fix_outer_versions(spec) -> int:
    pipe = S.pipeline_of(spec)
    if pipe is None:
        return spec.specificationVersion
    need = max(_fix_outer_versions(m) for m in pipe.models)
    spec.specificationVersion = max(spec.specificationVersion, need)
    return spec.specificationVersion


def _inline_one(stub, search_path, base_dir, bundle, where, type_difference) -> "Model_pb2.Model":
    target = _resolve(stub, search_path, base_dir, bundle, where)
    if S.model_type(target) == "mlProgram":
        raise UnsupportedError(f"unlink: {where} links to an ML Program, whose weights cannot be "
                               "inlined into an .mlmodel pipeline; mlProgram surgery is not supported yet")
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
    return copy_spec(target)
