"""Bundle dedupe: find the backbone several models share, store it once, link it.

An app that ships a classifier, a regressor and a segmenter built on the same
feature extractor carries that extractor's weights three times.  ``dedupe``
finds the largest computation the models share, writes it once as
``<backbone>.mlmodel`` (``.mlpackage`` for ML Programs) and rewrites every
model as a pipeline of ``[linked stub of the backbone, the model's own head]``
with the model's original interface, so app code does not change.  A pipeline
whose first stage is a network (a detector, ``[network, nms]``) takes part
through that stage and becomes ``[linked stub, head, <its later stages>]``.

One public signature for both backends:

* :mod:`.nn` reads neuralNetwork models (layers) into fingerprints and
  rewrites them; :mod:`.mlprogram` does the same for ML Programs (ops);
* :mod:`.plan` is the one planner: which models share which backbone and
  where each is cut, from the fingerprints alone (hashes of the weights,
  never the weights), and the accounting after the build.

Every option means the same on both backends; one that a backend cannot
honour (``multifunction`` for neuralNetwork models, ``allow_fp16_match`` for
ML Programs) is refused with an error naming the option and the backend.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ... import io
from ..._atomic import staging, write_error
from ..._proto import Model_pb2
from ...errors import SaveError, SpecSurgeryError, UnsupportedError
from ...spec import model_type
from . import mlprogram, nn
from .plan import (DEFAULT_SEARCH_PATH, REPORT_NAME, BackboneGroup, Candidate, DedupePlan,  # noqa: F401
                   DedupeResult, Fingerprint, HashStats, ModelPlan)


def _is_mlprogram_input(source) -> bool:
    if isinstance(source, io.MLPackage):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)   # a compiled .mlmodelc folder is refused by io.load, not routed here
        return path.suffix == ".mlpackage" or (path.is_dir() and path.suffix != ".mlmodelc")
    if isinstance(source, Model_pb2.Model):
        return model_type(source) == "mlProgram"
    return False


def _backend(models):
    """The backend module of ``models``: every input an ML Program, or none; a mix is an error."""
    sources = list(models.values()) if isinstance(models, dict) else list(models)
    flags = [_is_mlprogram_input(s) for s in sources]
    if flags and all(flags):
        return mlprogram
    if any(flags):
        ml = [str(s) for s, f in zip(sources, flags) if f]
        raise UnsupportedError(
            "dedupe: neuralNetwork and ML Program models cannot share a backbone; run dedupe separately on the "
            f"ML Programs ({', '.join(ml)}) and on the .mlmodel files")
    return nn


def plan_dedupe(models, *, backbone_name: str = "Backbone", min_share: float = 0.2,
                allow_fp16_match: bool = False, search_path: str = DEFAULT_SEARCH_PATH,
                progress=None, multifunction: bool = False) -> DedupePlan:
    """Decide which models share which backbone and where each is cut (nothing built)."""
    return _backend(models).plan(models, backbone_name=backbone_name, min_share=min_share,
                                 allow_fp16_match=allow_fp16_match, search_path=search_path, progress=progress,
                                 multifunction=multifunction)


def dedupe(models, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
           min_share: float = 0.2, allow_fp16_match: bool = False, build: bool = True,
           progress=None, multifunction: bool = False) -> DedupeResult:
    """Plan the shared backbones of ``models`` and build the rewritten models.

    ``models`` is a list of model-likes (paths name the outputs after their
    file stems; others are ``model0``, ``model1``...) or a ``{name: model}``
    dict, all neuralNetwork models or all ML Programs.  Returns a
    :class:`DedupeResult`; with ``build=False`` only the plan
    (``result.backbones`` and ``result.models`` empty).  ``progress(text)`` is
    called once per model read and once per model rewritten.
    ``multifunction`` (ML Programs) keeps the one-package alternative in
    ``result.multifunction``.  Nothing is written.
    """
    return _backend(models).dedupe(models, backbone_name=backbone_name, search_path=search_path,
                                   min_share=min_share, allow_fp16_match=allow_fp16_match, build=build,
                                   progress=progress, multifunction=multifunction)


def _check_out_dir(out_dir: Path, paths: list) -> None:
    for p in paths:
        if out_dir.resolve() == p.resolve().parent:
            raise SpecSurgeryError(f"output folder {out_dir} holds the input {p.name}; choose another -o folder "
                                   "(the rewritten model keeps the input's name)")
    if out_dir.exists() and not out_dir.is_dir():
        raise SaveError(f"{out_dir} exists and is not a folder; pass a folder for -o")
    if any(parent.is_file() for parent in out_dir.parents):
        raise write_error(out_dir, NotADirectoryError(str(out_dir)))


def dedupe_files(paths, out_dir, *, backbone_name: str = "Backbone", search_path: str = DEFAULT_SEARCH_PATH,
                 min_share: float = 0.2, allow_fp16_match: bool = False, dry_run: bool = False,
                 progress=None, multifunction: bool = False, multifunction_name: str = "Models") -> dict:
    """Dedupe model files into ``out_dir``; returns the report (a dict).

    Writes ``<backbone_name>.mlmodel`` (``.mlpackage``; ``<backbone_name>2``...
    when several backbones pay off), one output per input under its own name
    and format, and ``dedupe-report.json``; with ``multifunction`` (ML
    Programs) ``<multifunction_name>.mlpackage`` instead, one function per
    model.  Writes nothing when ``dry_run`` is true or when the models share
    nothing (``report["written"]`` is then empty).  The set is staged beside
    ``out_dir`` and moved in at the end: a failure leaves ``out_dir`` as it was.
    """
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    backend = _backend(paths)
    if not dry_run:
        _check_out_dir(out_dir, paths)
    t0 = time.perf_counter()
    # pass 1: the plan, from fingerprints; one parsed model at a time
    loaded: dict = {}
    plan = backend.plan(paths, backbone_name=backbone_name, min_share=min_share, allow_fp16_match=allow_fp16_match,
                        search_path=search_path, progress=progress, multifunction=multifunction, _loaded=loaded)
    written: list = []
    if not dry_run and plan.shares_anything:
        # pass 2: build and save each output in turn into a staging folder, then move the set in
        with staging(out_dir) as st:
            names = backend.write_files(plan, loaded, st.dir, search_path=search_path, progress=progress,
                                        multifunction_name=multifunction_name)
            if plan.shares_anything:   # else every group was undone: nothing is moved in
                if progress is not None:
                    progress(f"write {out_dir}")
                saved = _report(plan, time.perf_counter() - t0) | {"out_dir": str(out_dir),
                                                                   "files": sorted(names) + [REPORT_NAME]}
                (st.dir / REPORT_NAME).write_text(json.dumps(saved, indent=2, default=str) + "\n")
                written = st.commit(names + [REPORT_NAME])
    report = _report(plan, time.perf_counter() - t0)
    report["dry_run"] = dry_run
    report["out_dir"] = str(out_dir)
    report["written"] = [str(p) for p in written]
    report["table"] = plan.table()
    return report


def _report(plan: DedupePlan, seconds: float) -> dict:
    return plan.to_json() | {"seconds": round(seconds, 3)}


__all__ = ["dedupe", "dedupe_files", "plan_dedupe", "DedupePlan", "DedupeResult", "BackboneGroup",
           "ModelPlan", "Candidate", "HashStats", "Fingerprint"]


from ..._callable import make_callable  # noqa: E402

make_callable(__name__, "dedupe")
