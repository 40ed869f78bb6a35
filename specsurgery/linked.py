"""Resolving linkedModel stubs to files on disk.

A stub names a *compiled* model (``X.mlmodelc``) and a ``:``-separated search
path.  Entries are folders, absolute or relative to the folder of the file
that holds the stub (``.``), ``$BUNDLE_MAIN`` (the app bundle; here a folder
the caller gives, by default the top model's folder) and
``$BUNDLE_IDENTIFIER(id)`` (a folder from a mapping the caller gives).

Linux cannot read compiled models, so for each place this looks for the
compiled name first, then its sources ``X.mlmodel`` and ``X.mlpackage`` in the
same folder.  :func:`resolve_linked` returns the first hit plus every place it
tried, so a caller can raise an error that lists them all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Union

from .errors import NotFoundError

PathLike = Union[str, os.PathLike]

_BUNDLE_ID = re.compile(r"^\$BUNDLE_IDENTIFIER\((.*)\)$")
SOURCE_SUFFIXES = (".mlmodel", ".mlpackage")


def stub_file_name(stub_spec) -> str:
    """The ``linkedModelFileName`` of a linkedModel spec (or LinkedModel message)."""
    link = stub_spec.linkedModel if hasattr(stub_spec, "linkedModel") else stub_spec
    return link.linkedModelFile.linkedModelFileName.defaultValue


def stub_search_path(stub_spec) -> str:
    link = stub_spec.linkedModel if hasattr(stub_spec, "linkedModel") else stub_spec
    return link.linkedModelFile.linkedModelSearchPath.defaultValue


def candidate_names(file_name: str) -> list[str]:
    """``X.mlmodelc`` -> [X.mlmodelc, X.mlmodel, X.mlpackage]; other names as given
    (plus their sources when they carry no model suffix)."""
    p = Path(file_name)
    if p.suffix == ".mlmodelc":
        stem = file_name[: -len(".mlmodelc")]
        return [file_name] + [stem + s for s in SOURCE_SUFFIXES]
    if p.suffix in SOURCE_SUFFIXES:
        return [file_name]
    return [file_name, file_name + ".mlmodelc"] + [file_name + s for s in SOURCE_SUFFIXES]


def search_dirs(search_path: str, *, base_dir: Optional[PathLike] = None,
                bundle: Optional[PathLike] = None,
                bundle_ids: Optional[Mapping[str, PathLike]] = None,
                also_from: Optional[PathLike] = None) -> list[tuple[str, Optional[Path]]]:
    """(entry as written, folder or None when it cannot be resolved) per entry.

    A relative entry is taken from ``base_dir`` (the folder of the file that
    holds the stub, as Core ML does); with ``also_from`` (the current folder,
    for a search path the caller typed) it is looked for there first."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    out: list[tuple[str, Optional[Path]]] = []
    entries = [e for e in (search_path or ".").split(":")] or ["."]
    for entry in entries:
        e = entry.strip()
        if e == "":
            e = "."
        if e == "$BUNDLE_MAIN":
            out.append((entry, Path(bundle) if bundle is not None else base))
            continue
        m = _BUNDLE_ID.match(e)
        if m:
            ident = m.group(1)
            folder = (bundle_ids or {}).get(ident)
            out.append((entry, Path(folder) if folder is not None else None))
            continue
        p = Path(os.path.expanduser(e))
        if p.is_absolute():
            out.append((entry, p))
            continue
        if also_from is not None and (Path(also_from) / p).resolve() != (base / p).resolve():
            out.append((entry, Path(also_from) / p))
        out.append((entry, base / p))
    return out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _readable(path: Path) -> bool:
    if path.suffix == ".mlmodelc":
        return False      # compiled models cannot be read without Core ML
    try:
        if path.suffix == ".mlpackage":
            return path.is_dir()
        return path.is_file()
    except OSError:       # a name too long for the file system, a loop of links: nothing there
        return False


def resolve_linked(stub_spec, search_path: Optional[str] = None, base_dir: Optional[PathLike] = None,
                   bundle: Optional[PathLike] = None,
                   bundle_ids: Optional[Mapping[str, PathLike]] = None) -> tuple[Optional[Path], list[str]]:
    """Find the model a linkedModel stub points to.

    ``stub_spec`` is a linkedModel ``Model`` (or its ``LinkedModel``
    message).  ``search_path`` overrides the stub's own search path (like
    ``MLModelConfiguration.parameters`` does on device); its relative entries
    are looked for in the current folder first, then beside the stub's file.  ``base_dir`` is the
    folder of the file that holds the stub (``.``); ``bundle`` is what
    ``$BUNDLE_MAIN`` means (default ``base_dir``); ``bundle_ids`` maps bundle
    identifiers to folders.

    Returns ``(path or None, tried)``: ``tried`` lists every place looked at,
    in order, with a reason for entries that could not be searched.
    """
    file_name = stub_file_name(stub_spec)
    path_text = search_path if search_path is not None else stub_search_path(stub_spec)
    tried: list[str] = []
    if not file_name:
        return None, ["(the stub names no linkedModelFileName)"]
    names = candidate_names(file_name)
    # a search path the caller gives is typed relative to where they are
    also_from = Path.cwd() if search_path is not None else None
    for entry, folder in search_dirs(path_text, base_dir=base_dir, bundle=bundle, bundle_ids=bundle_ids,
                                     also_from=also_from):
        if folder is None:
            known = ", ".join(sorted((bundle_ids or {}).keys())) or "none given"
            tried.append(f"{entry} (no folder for this bundle identifier; known: {known})")
            continue
        for name in names:
            cand = folder / name
            note = str(cand) + (" (compiled: cannot be read offline)"
                                if cand.suffix == ".mlmodelc" and _exists(cand) else "")
            if note not in tried:   # '.' and $BUNDLE_MAIN are often the same folder: list it once
                tried.append(note)
            if _readable(cand):
                return cand, tried
    return None, tried


def require_linked(stub_spec, search_path=None, base_dir=None, bundle=None, bundle_ids=None,
                   where: str = "linked model") -> Path:
    """:func:`resolve_linked` or a :class:`NotFoundError` listing every place tried."""
    path, tried = resolve_linked(stub_spec, search_path, base_dir, bundle, bundle_ids)
    if path is None:
        sp = search_path if search_path is not None else stub_search_path(stub_spec)
        raise NotFoundError(
            f"{where}: cannot find {stub_file_name(stub_spec)!r} (or its source .mlmodel/.mlpackage) "
            f"on search path {sp or '.'!r}; tried: " + "; ".join(tried)
            + ". Pass --search-path/--bundle (search_path=, bundle=) to say where it lives")
    return path
