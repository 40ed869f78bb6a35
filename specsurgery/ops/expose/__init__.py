"""``expose``: add intermediate blobs (NeuralNetwork) or values (ML Program) as
extra model outputs, typed by shape inference or the program's value types.

The original outputs stay as they are; an exposed name inside a pipeline
stage becomes an output of that stage and of every pipeline around it.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import working_copy
from . import mlprogram, nn

__all__ = ["expose"]

_BACKENDS = {"nn": nn, "mlprogram": mlprogram}


def _where_produced(spec) -> tuple[dict, dict, dict]:
    """(name -> stage path producing it, name -> why it cannot be exposed, every name -> where)."""
    produced, blocked, known = {}, {}, {}
    for info in S.iter_models(spec):
        backend = S.backend_of(info.model)
        where = f"stage {info.path!r}" if info.path else "the model"
        if backend is not None:
            names, inner = _BACKENDS[backend].produced_names(info.model)
            for name in names:
                produced.setdefault(name, info.path)
                known.setdefault(name, where)
            for name, why in inner.items():
                blocked.setdefault(name, f"{why} ({where})")
                known.setdefault(name, where)
        elif S.model_type(info.model) == "linkedModel":
            for f in info.model.description.output:
                known.setdefault(f.name, where)
    return produced, blocked, known


def expose(model, blobs: Sequence[str], *, shapes: Optional[Mapping[str, Sequence[int]]] = None,
           inplace: bool = False):
    """``model`` with ``blobs`` added as outputs (after the original ones).

    ``shapes`` gives a blob's declared shape where shape inference cannot
    (NeuralNetwork), or the default size of a program's unknown dimensions
    (ML Program).  Returns the edited spec (an :class:`MLPackage` for ML
    Programs)."""
    blobs = list(dict.fromkeys(blobs))
    if not blobs:
        raise SpecSurgeryError("expose: name at least one blob or value to expose")
    result, spec = working_copy(model, inplace)
    if S.backend_of(spec) is None and S.pipeline_of(spec) is None:
        raise UnsupportedError(f"expose: a {S.model_type(spec) or 'model without a type'} has no "
                               "intermediate blobs; expose works on neural networks, ML Programs and "
                               "pipelines of them")
    outputs = {f.name for f in spec.description.output}
    inputs = {f.name for f in spec.description.input}
    already = [b for b in blobs if b in outputs]
    if already:
        raise SpecSurgeryError("expose: already model output(s): " + ", ".join(map(repr, already))
                               + "; name blobs that are not outputs yet")
    are_inputs = [b for b in blobs if b in inputs]
    if are_inputs:
        raise SpecSurgeryError("expose: model input(s) " + ", ".join(map(repr, are_inputs))
                               + " cannot also be outputs; expose a blob computed from them")
    produced, blocked, known = _where_produced(spec)
    stopped = [f"{b!r}: {blocked[b]}" for b in blobs if b not in produced and b in blocked]
    if stopped:
        raise UnsupportedError("expose: cannot expose " + "; ".join(stopped))
    linked = [b for b in blobs if b not in produced and b in known]
    if linked:
        raise UnsupportedError("expose: " + ", ".join(map(repr, linked)) + " are computed inside a linked "
                               "model, whose layers this file does not hold; expose them in the linked "
                               "target itself")
    unknown = [b for b in blobs if b not in produced]
    if unknown:
        raise NotFoundError(missing_message("blob", unknown, produced, "the model")
                            + "; `specsurgery inspect --layers` lists the layers and their outputs")
    by_stage: dict = {}
    for b in blobs:
        by_stage.setdefault(produced[b], []).append(b)
    version = spec.specificationVersion
    for path, names in by_stage.items():
        stage = S.model_at(spec, path) if path else spec
        feats = _BACKENDS[S.backend_of(stage)].add_outputs(stage, names, shapes=shapes, version=version)
        _propagate(spec, path, feats)
    return result


def _propagate(root, path: str, feats) -> None:
    """Add ``feats`` to every pipeline between the root and the stage at ``path``."""
    if not path:
        return
    parts = path.split("/")
    for depth in range(len(parts)):
        holder = S.model_at(root, "/".join(parts[:depth])) if depth else root
        have = {f.name for f in holder.description.output}
        for f in feats:
            if f.name not in have:
                holder.description.output.add().CopyFrom(f)
