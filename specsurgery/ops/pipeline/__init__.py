"""``make_pipeline``: assemble models into a Pipeline, PipelineClassifier or
PipelineRegressor.

One public function for both backends.  The interface rules (the feature
table Core ML builds, type mismatches reported with their fix, ``coerce``,
``prefixes``, ``interface=``) live in :mod:`.nn`; when a stage holds an ML
Program, :mod:`.mlprogram` runs those rules over stand-ins of its stages and
returns an :class:`~specsurgery.io.MLPackage` whose weights are repacked per
stage.  An option the ML Program part cannot honour is refused by name
(``coerce`` never changes an ML Program stage's interface).
"""

from __future__ import annotations

from ...errors import SpecSurgeryError
from ...io import load, split_model
from . import mlprogram, nn
from .nn import pipeline_interface, type_difference, types_equivalent

__all__ = ["make_pipeline", "types_equivalent", "type_difference", "pipeline_interface"]


def make_pipeline(stages, names=None, kind: str = "auto", coerce: bool = False, prefixes=None,
                  *, interface=None):
    """A pipeline of ``stages`` (specs, paths, MLPackages or MLModels).

    ``names``: stage names (unique; default ``model0``, ``model1``...).
    ``kind``: auto (PipelineClassifier when the last stage classifies,
    PipelineRegressor when it regresses), pipeline, classifier or regressor.
    ``coerce``: apply the safe interface fixes instead of reporting them.
    ``prefixes``: per stage, a prefix for that stage's output names (None to
    leave a stage alone); resolves output-name collisions explicitly (an ML
    Program stage's values of those names follow, as a network's blobs do).
    ``interface``: a model (or ModelDescription) whose inputs, outputs,
    predicted feature names, metadata and updatability the pipeline adopts
    (``split`` and ``dedupe`` keep the original's interface this way).

    Returns a spec, or an MLPackage when a stage holds an ML Program.
    """
    loaded = [load(s) for s in stages]
    if not loaded:
        raise SpecSurgeryError("make_pipeline: give at least one stage (Core ML needs one or more models)")
    backend = mlprogram if any(mlprogram.has_program(split_model(m)[0]) for m in loaded) else nn
    return backend.make_pipeline(loaded, names=names, kind=kind, coerce=coerce, prefixes=prefixes,
                                 interface=interface)
