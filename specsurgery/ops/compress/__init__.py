"""Weight compression: float16, n-bit linear, palettization (k-means look-up
tables) and magnitude pruning, per layer, through pipelines.

One public :func:`compress` with one signature for both backends; the parts:

* :mod:`.options`: the options, checked once, and the ``--layers``/``--exclude`` selection;
* :mod:`.modes`: the four modes on arrays and in ``WeightParams`` storage;
* :mod:`.kmeans`: the 1-D k-means behind palettization;
* :mod:`.nn`: neuralNetwork models (nested loop and branch bodies included),
  in Core ML's own ``WeightParams`` storage;
* :mod:`.mlprogram`: ML Programs (``.mlpackage``), directly or through
  ``coremltools.optimize.coreml``;
* :mod:`.report`: what was done (:class:`CompressReport`), the SNR figures;
* :mod:`.verify`: the outputs' SNR on seeded random inputs.

Pipelines (nested ones too) are walked here: each neuralNetwork stage goes to
:mod:`.nn`, each ML Program stage of a pipeline package to :mod:`.mlprogram`.
An option a backend cannot honour is refused with an error naming the option
and the backend, never dropped.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from ... import io as ssio
from ...errors import UnsupportedError
from ...spec import iter_models, model_type, nn_of
from . import mlprogram as _ml
from . import nn as _nn
from .modes import linear_quantize, palettize, prune_magnitude
from .nn import dequantize, iter_layers
from .options import MODES, Selector, check_options
from .report import CompressReport, LayerReport, Skipped, explain_nothing_done, snr_db
from .verify import verify_outputs

_PIPELINES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def compress(model, *, mode: str = "fp16", nbits: Optional[int] = None, per_channel: bool = False,
             sparsity: Optional[float] = None, layers=None, exclude=None, min_weights: int = 2048,
             seed: int = 0, granularity: str = "per_tensor", group_size: Optional[int] = None,
             inplace: bool = False, return_report: bool = False, progress: Optional[Callable] = None):
    """Compress the weights of ``model``; returns the new spec (an ``MLPackage``
    for ML Programs), or ``(model, CompressReport)`` with ``return_report``.

    ``mode``: ``"fp16"``, ``"linear"`` (``nbits`` 1..8, default 8; per tensor or
    ``per_channel``), ``"palettize"`` (``nbits`` 1..8, default 4; k-means look-up
    table) or ``"prune"`` (``sparsity`` in [0, 1)).  ``sparsity`` with another
    mode prunes first, then compresses (zeros stay exact).  ``layers`` and
    ``exclude`` are globs on layer names or ``stage/layer`` paths; a pattern
    that matches nothing is an error.  Layers with fewer than ``min_weights``
    weights, kinds that cannot hold the storage, and layers already compressed
    are skipped, and the report says why.  ``granularity="per_grouped_channel"``
    (ML Programs only, iOS 18) gives one table per ``group_size`` channels
    (default 32).  The weights' SNR is measured only when the report is asked
    for (it costs a pass or two over the weights); without it ``snr_db`` is
    None.  ``progress(name)`` is called after each compressed layer (ML
    Programs: each weight).  The input is modified only with ``inplace=True``
    (a spec, or an ``MLPackage`` whose spec and weights are replaced).
    """
    opts = check_options(mode, nbits, per_channel, sparsity, min_weights, seed, granularity, group_size,
                         measure=return_report)
    loaded = ssio.load(model)
    spec, pkg = ssio.split_model(loaded)
    given = loaded if (inplace and loaded is model) else None
    if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
        inplace = True      # our own freshly read copy: no need to copy it again
    report = CompressReport(opts.mode, opts.nbits, opts.per_channel, opts.sparsity)
    selector = Selector(layers, exclude)

    if model_type(spec) == "mlProgram":
        if pkg is None:
            raise UnsupportedError("compress: this ML Program has no weights attached; load it from "
                                   "its .mlpackage (the weights live in weights/weight.bin)")
        out = _ml.compress_package(pkg, opts, selector, report, progress=progress)
    else:
        out = _compress_spec(spec, pkg, opts, selector, report, inplace, progress)
    if given is not None and isinstance(given, ssio.MLPackage) and out is not given:
        # inplace on an MLPackage: the caller's object takes the new spec and weights.
        given.spec.CopyFrom(out.spec)
        given.weights = dict(out.weights)
        out = given
    return (out, report) if return_report else out


def _compress_spec(spec, pkg, opts, selector, report, inplace, progress):
    """A neuralNetwork model or a pipeline (of neuralNetwork and, in a package,
    ML Program stages), stage by stage."""
    if opts.granularity != "per_tensor":
        raise UnsupportedError(
            f"compress: granularity {opts.granularity!r} exists only for ML Programs (iOS 18 per-grouped-"
            "channel tables); a neuralNetwork look-up table is per tensor")
    out_spec = spec if inplace else ssio.copy_spec(spec)
    known_layers: list[str] = []
    new_weights: dict = {}
    need: dict[tuple, int] = {}
    found = False
    for info in iter_models(out_spec):
        kind = model_type(info.model)
        nn = nn_of(info.model)
        if nn is not None:
            found = True
            v = _nn.compress_network(nn, info.path, opts, selector, report, known_layers, progress)
            if v:
                need[info.index] = v
        elif kind == "linkedModel":
            target = info.model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue
            report.notes.append(
                f"stage {info.path or '<top>'!r} is a linkedModel stub for {target!r}: its weights live "
                "in that file; compress the model it was compiled from instead")
        elif kind == "mlProgram":
            done = _ml.compress_stage(info, pkg, opts, selector, report, known_layers, new_weights, progress)
            if done:
                found = True
                need[info.index] = max(need.get(info.index, 0), info.model.specificationVersion)
            elif done is None:
                found = True
        elif kind not in _PIPELINES and info.path:
            report.notes.append(f"stage {info.path!r} is a {kind} model: no neural-network weights")
    if not found:
        raise UnsupportedError(
            f"compress: a {model_type(spec)} model has no neural-network weights to compress; "
            "compress works on neuralNetwork(Classifier/Regressor) models, pipelines of them and "
            "ML Programs (.mlpackage)" + ("; " + "; ".join(report.notes) if report.notes else ""))
    selector.check_all_used(known_layers)
    _raise_spec_versions(out_spec, need, report)
    explain_nothing_done(report)
    if pkg is None:
        return out_spec
    weights = dict(pkg.weights)
    weights.update(new_weights)
    return ssio.MLPackage(out_spec, weights, None, dict(pkg.metadata))


def _raise_spec_versions(spec, need: dict, report) -> None:
    """Raise the version of every stage that needs it, and of its parents."""
    if not need:
        return
    infos = {info.index: info for info in iter_models(spec)}
    required: dict[tuple, int] = {}
    for index, version in need.items():
        for depth in range(len(index) + 1):
            key = index[:depth]
            required[key] = max(required.get(key, 0), version)
    for index, version in sorted(required.items()):
        model = infos[index].model
        before = model.specificationVersion
        if before < version:
            model.specificationVersion = version
            report.versions[infos[index].path] = (before, version)


def count_weighted_layers(model) -> int:
    """How many layers (ML Programs: weight consts) ``compress`` may touch,
    nested and pipeline stages included: a progress total."""
    spec, pkg = ssio.split_model(ssio.load(model))
    if model_type(spec) == "mlProgram":
        return _ml.count_weights(pkg) if pkg is not None else 0
    return _nn.count_weighted_layers(spec)


def compress_file(source, output, **kwargs):
    """Path-level wrapper: load ``source``, compress, check and save to ``output``."""
    result, report = compress(source, return_report=True, **kwargs)
    ssio.save(result, output)
    return report


__all__ = ["compress", "compress_file", "dequantize", "verify_outputs", "CompressReport", "LayerReport", "Skipped",
           "prune_magnitude", "linear_quantize", "palettize", "snr_db", "MODES", "iter_layers",
           "count_weighted_layers"]


from ..._callable import make_callable  # noqa: E402

make_callable(__name__, "compress")
