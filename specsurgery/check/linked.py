"""Linked-model rules (format notes §3) and, with a search path, resolution
of the target and comparison of interfaces."""

from __future__ import annotations

from pathlib import Path

from ..errors import SpecSurgeryError
from .._proto import Model_pb2
from ..io import load, load_description
from ..linked import resolve_linked
from ..spec import describe_type
from .findings import Findings
from .pipeline import type_diff


def check_linked(spec, out: Findings) -> None:
    lm = spec.linkedModel
    if spec.isUpdatable:
        out.error("linkedModel", "linked.updatable",
                  "a linkedModel cannot be updatable; clear isUpdatable")
    for f in spec.description.input:
        if f.type.isOptional:
            out.error(f"input:{f.name}", "linked.optional-input",
                      f"linkedModel input '{f.name}' is optional; linked models accept no optional inputs")
    if lm.WhichOneof("LinkType") is None:
        out.error("linkedModel", "linked.no-link-type",
                  "linkedModel sets no LinkType; set linkedModelFile (file name and search path)")
        return
    lf = lm.linkedModelFile
    name = lf.linkedModelFileName.defaultValue
    if not name:
        out.error("linkedModel", "linked.file-name-empty",
                  "linkedModelFileName is empty; name the compiled target, e.g. 'Backbone.mlmodelc'")
    elif not name.endswith(".mlmodelc"):
        out.warning("linkedModel", "linked.not-compiled-name",
                    f"linkedModelFileName '{name}' does not end in .mlmodelc; the target must be a "
                    "compiled model (Xcode does not compile linked targets)")
    search = lf.linkedModelSearchPath.defaultValue
    if search:
        for entry in search.split(":"):
            if entry == "":
                out.warning("linkedModel", "linked.empty-search-entry",
                            f"search path '{search}' has an empty entry (an empty path means '.'; "
                            "remove the stray ':')")
                break
        for entry in search.split(":"):
            leaves = _leaves_bundle(entry.strip())
            if leaves:
                out.warning("linkedModel", "linked.leaves-bundle",
                            f"search path entry '{entry}' {leaves}; on a device the app's sandbox "
                            "holds nothing outside its bundle, so Core ML will not find the target "
                            "there: ship the target inside the bundle and use '.' or $BUNDLE_MAIN")
        if "$BUNDLE_IDENTIFIER(" in search:
            for entry in search.split(":"):
                if entry.startswith("$BUNDLE_IDENTIFIER(") and not entry.endswith(")"):
                    out.warning("linkedModel", "linked.bad-bundle-identifier",
                                f"search path entry '{entry}' does not close $BUNDLE_IDENTIFIER( with ')'")


def _leaves_bundle(entry: str) -> str:
    """Why a search path entry leaves the bundle ('' when it stays inside)."""
    if entry.startswith("$") or entry in ("", "."):
        return ""
    if entry.startswith("/") or entry.startswith("~"):
        return "is an absolute path"
    depth = 0
    for part in Path(entry).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return "leads above the folder of the model that holds the stub"
    return ""


def _resolve(spec, out, report, rule, **where):
    """``resolve_linked``, a resolver error becoming a finding: (found, tried), or (None, None)."""
    try:
        return resolve_linked(spec, **where)
    except Exception as exc:  # a resolver error is a finding, not a crash
        report("linkedModel", rule, f"cannot resolve the linked target: {exc}")
        return None, None


def check_target(spec, out: Findings, search_path, base_dir, bundle=None, bundle_ids=None, *,
                 check_model) -> None:
    """Resolve the stub's target on ``search_path`` and compare interfaces;
    ``check_model`` (the package's ``check``, passed in by its caller so that this
    rule does not import the module that imports it) checks the target itself."""
    found, tried = _resolve(spec, out, out.error, "linked.not-found", search_path=search_path,
                            base_dir=base_dir, bundle=bundle, bundle_ids=bundle_ids)
    if tried is None:
        return
    name = spec.linkedModel.linkedModelFile.linkedModelFileName.defaultValue
    if found is None:
        out.error("linkedModel", "linked.not-found",
                  f"linked target '{name}' not found; tried " + ("; ".join(str(t) for t in tried) or "nothing")
                  + "; pass --search-path (and --bundle for $BUNDLE_MAIN) with the folder that holds "
                  "it, or its source .mlmodel/.mlpackage")
        return
    loaded, problem = _load_target(found)
    if problem:
        out.error("linkedModel", "linked.target-not-a-model",
                  f"linked target '{name}' resolves to {found}, which is not a Core ML model "
                  f"({problem}); put the compiled target or its source .mlmodel/.mlpackage there")
        return
    target = getattr(loaded, "spec", loaded)  # an MLPackage keeps its weights for the target's check
    if target is None:
        out.info("linkedModel", "linked.target-unreadable",
                 f"linked target found at {found} but it is compiled (.mlmodelc) and cannot be read "
                 "offline; interface not compared")
        return
    _compare(spec, target, out, found)
    bad = [f for f in check_model(loaded) if f.severity == "error"]
    if bad:
        out.error("linkedModel", "linked.target-invalid",
                  f"linked target {found} fails check with {len(bad)} error(s): "
                  + "; ".join(str(f) for f in bad[:5]) + ("; ..." if len(bad) > 5 else ""))


def check_target_beside(spec, out: Findings, base_dir, bundle=None, bundle_ids=None) -> None:
    """Without a search path: look for the target where the stub's own search
    path leads from the model's folder (``$BUNDLE_MAIN`` = that folder unless
    ``bundle`` says otherwise) and compare interfaces; reading only the
    target's description, so a large backbone is scanned, not decoded."""
    name = spec.linkedModel.linkedModelFile.linkedModelFileName.defaultValue
    if not name:
        return
    found, tried = _resolve(spec, out, out.warning, "linked.target-not-checked", search_path=None,
                            base_dir=base_dir, bundle=bundle, bundle_ids=bundle_ids)
    if tried is None:
        return
    if found is None:
        compiled = [t for t in tried if "compiled" in t]
        if compiled:
            out.info("linkedModel", "linked.target-unreadable",
                     f"linked target found at {compiled[0]}, which cannot be read offline; interface not "
                     "compared (put its source .mlmodel/.mlpackage beside it)")
            return
        out.warning("linkedModel", "linked.target-not-checked",
                    f"linked target '{name}' is not beside the model (tried " + "; ".join(tried)
                    + "), so its interface was not compared; pass --search-path (and --bundle) with the "
                    "folder that holds it, or its source .mlmodel/.mlpackage")
        return
    try:
        description = load_description(found)
    except SpecSurgeryError as exc:
        out.error("linkedModel", "linked.target-not-a-model",
                  f"linked target '{name}' resolves to {found}, which is not a Core ML model "
                  f"({' '.join(str(exc).split())}); put the compiled target or its source .mlmodel/.mlpackage there")
        return
    holder = Model_pb2.Model()
    holder.description.CopyFrom(description)
    _compare(spec, holder, out, found)


def _load_target(found):
    """(model or None for a compiled folder, problem text when a file there is no model)."""
    path = Path(found)
    candidates = [path]
    if path.suffix == ".mlmodelc":  # a source model beside the compiled name
        candidates = [path.with_suffix(".mlmodel"), path.with_suffix(".mlpackage"), path]
    problem = ""
    for cand in candidates:
        if not cand.exists():
            continue
        try:
            return load(cand), ""
        except SpecSurgeryError as exc:
            if cand.is_dir() and cand.suffix == ".mlmodelc":
                continue       # compiled: unreadable offline, which is no fault of the model
            problem = problem or " ".join(str(exc).split())
    return None, problem


def _compare(stub, target, out: Findings, where_found) -> None:
    for role in ("input", "output"):
        mine = {f.name: f for f in getattr(stub.description, role)}
        theirs = {f.name: f for f in getattr(target.description, role)}
        for name in sorted(set(mine) - set(theirs)):
            out.error(f"{role}:{name}", "linked.interface-mismatch",
                      f"stub {role} '{name}' is not a {role} of the target {where_found} "
                      f"(target {role}s: {sorted(theirs)})")
        if role == "input":
            for name in sorted(set(theirs) - set(mine)):
                if not theirs[name].type.isOptional:
                    out.error(f"input:{name}", "linked.interface-mismatch",
                              f"target {where_found} needs input '{name}' that the stub does not declare")
        for name in sorted(set(mine) & set(theirs)):
            diffs = type_diff(theirs[name].type, mine[name].type)
            if diffs:
                out.error(f"{role}:{name}", "linked.interface-mismatch",
                          f"stub {role} '{name}' is {describe_type(mine[name].type)} but the target has "
                          f"{describe_type(theirs[name].type)}: " + "; ".join(diffs))
