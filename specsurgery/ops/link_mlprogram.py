"""Linking with ML Programs: ``link_mlprogram(model, stage, file_name, search_path)``.

``link_stage`` in ``ops/link.py`` sends models with ML Program stages here.

* ``model`` a pipeline (package): stage ``stage`` (name, index or
  "outer/inner") becomes a linkedModel stub with the stage's description; the
  remaining ML Program stages keep their weights, repacked per stage
  (``weights/<i>-weight.bin``) with exactly the blobs each reads, so the
  linked stage's weights leave the package.  Returns an MLPackage (or a plain
  spec when no ML Program is left).
* ``model`` an ML Program on its own: the standalone stub for it
  (``make_linked_stub``).

A linked ML Program backbone can only be checked offline: its interface is
compared with the stub's and its body run by the numpy runtime, but whether a
device loads ``<name>.mlmodelc`` is only known on the device.
"""

from __future__ import annotations

from .. import spec as S
from ..errors import NotFoundError, SpecSurgeryError
from ..io import MLPackage, copy_spec, load, split_model
from .pipeline_mlprogram import has_program, pack_weights

DEFAULT_SEARCH_PATH = ".:$BUNDLE_MAIN"
LINKED_MIN_VERSION = 4


def _locate(root, stage):
    """(chain of pipeline models from root, pipeline message, index)."""
    parts = [stage] if isinstance(stage, int) else str(stage).split("/")
    chain = [root]
    model = root
    for depth, part in enumerate(parts):
        pipe = S.pipeline_of(model)
        if pipe is None:
            raise SpecSurgeryError(f"link: {'/'.join(map(str, parts[:depth])) or 'the model'} is a "
                                   f"{S.model_type(model)}, not a pipeline; it has no stage {part!r}")
        names = S.stage_names(pipe)
        if isinstance(part, int) or (part.lstrip("-").isdigit() and part not in names):
            idx = int(part)
            if not -len(names) <= idx < len(names):
                raise NotFoundError(f"stage index {idx} out of range; stages: {', '.join(names)}")
            idx %= len(names)
        elif part in names:
            idx = names.index(part)
        else:
            from ..errors import missing_message

            raise NotFoundError(missing_message("stage", [part], names))
        if depth == len(parts) - 1:
            return chain, pipe, idx
        model = pipe.models[idx]
        chain.append(model)
    raise SpecSurgeryError("link: empty stage path")  # pragma: no cover


def link_mlprogram(model, stage=None, file_name: str = "Backbone.mlmodelc",
                   search_path: str = DEFAULT_SEARCH_PATH):
    from .link import make_linked_stub

    loaded = load(model)
    spec, pkg = split_model(loaded)
    if S.pipeline_of(spec) is None:
        return make_linked_stub(spec, file_name=file_name, search_path=search_path)
    out = copy_spec(spec)
    chain, pipe, idx = _locate(out, stage)
    stub = make_linked_stub(pipe.models[idx], file_name=file_name, search_path=search_path)
    pipe.models[idx].CopyFrom(stub)
    for m in chain:
        m.specificationVersion = max(m.specificationVersion, LINKED_MIN_VERSION)
    if not has_program(out):
        return out
    # every remaining program reads from the original package's files
    sources = {i: pkg for i in range(len(S.pipeline_of(out).models))}
    weights = pack_weights(out, sources)
    return MLPackage(out, weights, None, {})


link_stage = link_mlprogram


def unlink_mlprogram(model, search_path=None, base_dir=None, bundle=None) -> MLPackage:
    """Inline every top-level linked stage whose target is an ML Program (or a
    pipeline holding one) back into the pipeline, weights included: each
    program gets its own ``weights/<i>-weight.bin`` with exactly its blobs.

    ``search_path`` overrides the stubs' own; ``base_dir`` is the folder of the
    model holding the stubs (default: the package's folder); ``bundle`` stands
    for ``$BUNDLE_MAIN``.  A target whose interface differs from its stub's is
    an error.
    """
    from pathlib import Path

    from ..linked import require_linked
    from .pipeline import type_difference

    if base_dir is None and isinstance(model, (str, Path)):
        base_dir = Path(model).resolve().parent
    loaded = load(model)
    spec, pkg = split_model(loaded)
    if base_dir is None and pkg is not None and pkg.path is not None:
        base_dir = pkg.path.resolve().parent
    pipe_msg = S.pipeline_of(spec)
    if pipe_msg is None:
        raise SpecSurgeryError("unlink: the model is not a pipeline; nothing to inline")
    out = copy_spec(spec)
    pipe = S.pipeline_of(out)
    sources = {i: pkg for i in range(len(pipe.models))}
    names = S.stage_names(pipe)
    found = False
    for i, stage in enumerate(pipe.models):
        if S.model_type(stage) != "linkedModel":
            continue
        found = True
        path = require_linked(stage, search_path=search_path, base_dir=base_dir, bundle=bundle,
                              where=f"stage {names[i]!r}")
        target = load(path)
        tspec, tpkg = split_model(target)
        problems = []
        for kind in ("input", "output"):
            want = {f.name: f.type for f in getattr(stage.description, kind)}
            have = {f.name: f.type for f in getattr(tspec.description, kind)}
            for name in want:
                if name not in have:
                    problems.append(f"{kind} {name!r} missing from the target")
                elif type_difference(want[name], have[name]):
                    problems.append(f"{kind} {name!r}: {type_difference(want[name], have[name])}")
        if problems:
            raise SpecSurgeryError(f"unlink: the target {path} of stage {names[i]!r} does not match its stub: "
                                   + "; ".join(problems))
        pipe.models[i].CopyFrom(tspec)
        sources[i] = tpkg
    if not found:
        raise NotFoundError("unlink: the model has no linkedModel stages; nothing to inline")
    out.specificationVersion = max([out.specificationVersion] + [m.specificationVersion for m in pipe.models])
    if not has_program(out):
        return out
    return MLPackage(out, pack_weights(out, sources), None, {})


__all__ = ["link_mlprogram", "link_stage", "unlink_mlprogram"]
