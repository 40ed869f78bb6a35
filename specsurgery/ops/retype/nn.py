"""retype, NeuralNetwork part (and pipelines).

An image is held as ``[1,1,C,H,W]`` (``imageInputShapeMapping`` 0) or
``[1,C,H,W]`` (1); a MultiArray as rank 5 under the legacy array mapping
(0) or as declared under the exact one (1).  The retyped input keeps the
rank the layers saw: the shape mapping is switched when no other input
depends on it, else the retype is refused naming the inputs in the way.
"""

from __future__ import annotations

from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError
from .. import _nn
from .types import ARRAY, array_chw, image_channels, make_array_type, make_image_type

#: first spec version with the rank-4 image / exact-rank array input mappings
MAPPING_VERSION = 4


def _image_rank(nn) -> int:
    return 5 if nn.imageInputShapeMapping == 0 else 4


def _array_rank(nn, declared_rank: int) -> int:
    return 5 if nn.arrayInputShapeMapping == 0 else declared_rank


def _raise_version(spec) -> None:
    if spec.specificationVersion < MAPPING_VERSION:
        _nn.note(f"retype: spec version raised from {spec.specificationVersion} to {MAPPING_VERSION}, the "
                 "first with this input shape mapping")
        spec.specificationVersion = MAPPING_VERSION


def _preprocessing_for(nn, name: str, n_images: int) -> list:
    return [i for i, p in enumerate(nn.preprocessing)
            if p.featureName == name or (p.featureName == "" and n_images == 1)]


def _to_image(spec, nn, name: str, want, others_images: list) -> None:
    f = next(x for x in spec.description.input if x.name == name)
    flag = f"--input {name}"
    c, h, w, has_batch = array_chw(name, f.type, want, flag)
    held = _array_rank(nn, 4 if has_batch else 3)
    if held not in (4, 5):
        raise UnsupportedError(
            f"retype: input {name!r} ({S.describe_type(f.type)}) is held as a rank-{held} array under this "
            "network's exact-rank array mapping, and an image input is held as rank 4 or 5; declare the "
            "array as 1xCxHxW first (that needs the layers to take rank 4)")
    if held != _image_rank(nn):
        if others_images:
            raise UnsupportedError(
                f"retype: input {name!r} is held as rank {held}, and an image as rank {_image_rank(nn)} "
                f"under imageInputShapeMapping {nn.imageInputShapeMapping}, which image input(s) "
                f"{', '.join(map(repr, others_images))} also use; retype those too or leave {name!r} an array")
        nn.imageInputShapeMapping = 0 if held == 5 else 1
        if held == 4:
            _raise_version(spec)
    # a nameless preprocessing applied to the one image input: name it before there are two
    current_images = [x.name for x in spec.description.input if x.type.WhichOneof("Type") == "imageType"]
    for p in nn.preprocessing:
        if p.featureName == "" and len(current_images) == 1:
            p.featureName = current_images[0]
    make_image_type(f.type, want, h, w, has_batch)
    biases = want.biases()
    if want.scale != 1.0 or any(biases):
        pre = nn.preprocessing.add()
        pre.featureName = name
        s = pre.scaler
        s.channelScale = float(want.scale)
        if want.channels == 1:
            s.grayBias = biases[0]
        else:
            s.redBias, s.greenBias, s.blueBias = biases


def _to_array(spec, nn, name: str, other_arrays: list) -> None:
    f = next(x for x in spec.description.input if x.name == name)
    img = f.type.imageType
    c = image_channels(img)
    n_images = sum(1 for x in spec.description.input if x.type.WhichOneof("Type") == "imageType")
    rank = _image_rank(nn)
    if nn.arrayInputShapeMapping == 0:
        if rank == 5:
            lead = [c]
        elif other_arrays:
            raise UnsupportedError(
                f"retype: image input {name!r} is held as [1,C,H,W] (rank 4), and arrays as rank 5 under "
                f"the legacy arrayInputShapeMapping, which MultiArray input(s) "
                f"{', '.join(map(repr, other_arrays))} use; retype them together or keep {name!r} an image")
        else:
            nn.arrayInputShapeMapping = 1
            _raise_version(spec)
            lead = [1, c]
    else:
        lead = [1, c] if rank == 4 else [1, 1, c]
    drop = _preprocessing_for(nn, name, n_images)
    for i in reversed(drop):
        kind = nn.preprocessing[i].WhichOneof("preprocessor")
        del nn.preprocessing[i]
        _nn.note(f"retype: the {kind} preprocessing of {name!r} is folded away: feed the array the values "
                 "the image gave after it (pixels * scale + bias)")
    make_array_type(f.type, lead)


def retype_nn(spec, plan: dict) -> None:
    nn = S.nn_of(spec)
    inputs = spec.description.input
    to_image = [n for n, t in plan.items() if t != ARRAY]
    to_array = [n for n, t in plan.items() if t == ARRAY]
    for name in to_array:
        others = [x.name for x in inputs if x.type.WhichOneof("Type") == "multiArrayType"
                  and x.name not in to_image]
        _to_array(spec, nn, name, others)
    for name in to_image:
        others = [x.name for x in inputs if x.type.WhichOneof("Type") == "imageType"
                  and x.name not in plan]
        _to_image(spec, nn, name, plan[name], others)
    _check_runs(spec)


def _check_runs(spec) -> None:
    """The layers still take what the inputs are now fed (shape inference)."""
    from ...runtime import infer_shapes

    try:
        infer_shapes(spec)
    except UnsupportedError:
        pass   # a layer the runtime cannot run: nothing to learn here
    except SpecSurgeryError as exc:
        raise SpecSurgeryError(f"retype: the network does not take the retyped inputs: {exc}") from None


def retype_pipeline(spec, plan: dict) -> None:
    """Retype pipeline inputs in every stage that reads them from the pipeline."""
    from . import mlprogram

    pipe = S.pipeline_of(spec)
    produced = set()
    for k, stage in enumerate(pipe.models):
        names = [f.name for f in stage.description.input if f.name in plan and f.name not in produced]
        if names:
            sub = {n: plan[n] for n in names}
            kind = S.model_type(stage)
            if kind in S.NN_TYPES:
                retype_nn(stage, sub)
            elif kind in S.PIPELINE_TYPES:
                retype_pipeline(stage, sub)
            elif kind == "mlProgram":
                mlprogram.retype_program(stage, sub)
            else:
                raise UnsupportedError(f"retype: stage {k} ({kind or 'untyped'}) reads "
                                       f"{', '.join(map(repr, names))}; retype works on neural-network and "
                                       f"ML Program stages (option 'types' on backend {kind or 'untyped'})")
            for f in spec.description.input:
                if f.name in sub:
                    f.type.CopyFrom(next(x for x in stage.description.input if x.name == f.name).type)
            spec.specificationVersion = max(spec.specificationVersion, stage.specificationVersion)
        produced.update(f.name for f in stage.description.output)
    missing = [n for n in plan if not any(n in [f.name for f in st.description.input] for st in pipe.models)]
    if missing:
        raise SpecSurgeryError("retype: no stage reads pipeline input(s) " + ", ".join(map(repr, missing)))

