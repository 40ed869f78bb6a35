"""``make_pipeline`` for stages that hold ML Programs: an MLPackage.

The pipeline's description is computed by the neuralNetwork ``make_pipeline``
(:mod:`.nn`) itself: every ML Program stage takes part through a stand-in (a linkedModel
stub with the stage's description), then the real stages are put back.  So
interface rules, names, kinds and the original-interface adoption are the
same for both model kinds.

Weights: a pipeline package holds one weight file per ML Program stage,
``weights/<i>-weight.bin`` (``<i>-<j>-weight.bin`` inside a nested pipeline),
and each stage's ``blobFileValue.fileName`` is rewritten to
``@model_path/weights/<i>-weight.bin``, as ``ct.utils.make_pipeline`` does.
Each file is written by :class:`~specsurgery.mil.blobs.BlobWriter` with
exactly the blobs that stage reads (duplicates within a stage stored once).
We do not merge all stages into one file: Core ML's compiler copies the weight
file each stage references into that stage's compiled folder (coremltools
#1818), so a merged file would be copied once per stage.

A pipeline with ML Program stages needs spec version 6 (iOS 15) or more.
"""

from __future__ import annotations

from ... import spec as S
from ..._proto import Model_pb2
from ...errors import SpecSurgeryError, UnsupportedError
from ...io import MLPackage, load, split_model
from ...mil import blobs as B
from . import nn

MLPROGRAM_MIN_VERSION = 6


def has_program(spec) -> bool:
    return any(S.model_type(i.model) == "mlProgram" for i in S.iter_models(spec))


def _stand_in(spec) -> "Model_pb2.Model":
    stub = Model_pb2.Model()
    stub.description.CopyFrom(spec.description)
    del stub.description.trainingInput[:]
    lf = stub.linkedModel.linkedModelFile
    lf.linkedModelFileName.defaultValue = "__specsurgery_stand_in__.mlmodelc"
    stub.specificationVersion = max(spec.specificationVersion, 4)
    return stub


def weight_tag(index) -> str:
    return "-".join(str(i) for i in index)


def _source(sources: dict, index: tuple):
    """The package of the deepest entry of ``sources`` that holds stage ``index``."""
    for depth in range(len(index), -1, -1):
        if index[:depth] in sources:
            return sources[index[:depth]]
    return None


def pack_weights(spec, sources: dict) -> dict:
    """Rewrite every ML Program in pipeline ``spec`` to its own weight file.

    ``sources`` maps a stage index tuple to the MLPackage the blobs of the
    programs at or under that stage come from (``()`` for the whole model;
    the deepest entry wins).  Returns the new ``weights`` mapping; ``spec`` is
    edited in place.
    """
    weights = {}
    for info in S.iter_models(spec):
        if S.model_type(info.model) != "mlProgram":
            continue
        src = _source(sources, info.index)
        tag = weight_tag(info.index) if info.index else ""
        file_name = f"@model_path/weights/{tag + '-' if tag else ''}weight.bin"
        writer = B.rewrite_blobs(info.model, src, B.BlobWriter(), file_name=file_name,
                                 programs=[info.model.mlProgram])
        if writer.count:
            weights[file_name[len("@model_path/"):]] = writer.to_weight_file()
    return weights


def make_pipeline(stages, names=None, kind: str = "auto", coerce: bool = False, prefixes=None,
                  *, interface=None) -> MLPackage:
    """A pipeline package of ``stages``, some of which hold ML Programs (see
    :func:`specsurgery.ops.pipeline.make_pipeline`)."""
    loaded = [load(s) for s in stages]
    if not loaded:
        raise SpecSurgeryError("make_pipeline: give at least one stage (Core ML needs one or more models)")
    specs, packages = [], {}
    for i, m in enumerate(loaded):
        spec, pkg = split_model(m)
        specs.append(spec)
        if pkg is not None:
            packages[(i,)] = pkg
    program_stages = [i for i, s in enumerate(specs) if has_program(s)]
    if prefixes is not None and len(prefixes) == len(specs):
        # a program stage's outputs are renamed in its program too (nn.make_pipeline renames the rest)
        from ..rename import rename_feature

        prefixes = list(prefixes)
        for i in program_stages:
            if prefixes[i]:
                renamed = loaded[i]
                for f in list(specs[i].description.output):
                    renamed = rename_feature(renamed, f.name, prefixes[i] + f.name)
                specs[i], pkg = split_model(renamed)
                if pkg is not None:
                    packages[(i,)] = pkg
                prefixes[i] = None
    stand_ins = [(_stand_in(s) if i in program_stages else s) for i, s in enumerate(specs)]
    last = specs[-1]
    if kind == "auto" and S.model_type(last) == "mlProgram":
        if last.description.predictedProbabilitiesName or last.description.predictedFeatureName:
            kind = "classifier" if any(f.name == last.description.predictedFeatureName and
                                       f.type.WhichOneof("Type") in ("stringType", "int64Type")
                                       for f in last.description.output) else "regressor"
    # message equality, not bytes: the metadata's userDefined map has no fixed byte order
    before = [Model_pb2.ModelDescription.FromString(s.description.SerializeToString()) for s in stand_ins]
    out = nn.make_pipeline(stand_ins, names=names, kind=kind, coerce=coerce, prefixes=prefixes,
                           interface=interface)
    pipe = S.pipeline_of(out)
    for i in program_stages:
        if pipe.models[i].description != before[i]:
            raise UnsupportedError(
                f"make_pipeline: option 'coerce' is not supported for ML Program stages: the interface of "
                f"stage {S.stage_names(pipe)[i]!r} would have to change (coerce); ML Program stages are not "
                "coerced, fix the other stage instead")
        pipe.models[i].CopyFrom(specs[i])
    out.specificationVersion = max(out.specificationVersion, MLPROGRAM_MIN_VERSION,
                                   *(s.specificationVersion for s in specs))
    weights = pack_weights(out, packages)
    return MLPackage(out, weights, None, {})


__all__ = ["make_pipeline", "pack_weights", "has_program"]
