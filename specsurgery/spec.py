"""Small, shared facts about ``Model_pb2.Model`` messages.

Everything here reads the spec; nothing keeps state beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from ._proto import FeatureTypes_pb2, Model_pb2
from .errors import NotFoundError, UnsupportedError, missing_message

NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")
CLASSIFIER_TYPES = (
    "neuralNetworkClassifier", "pipelineClassifier", "glmClassifier", "supportVectorClassifier",
    "treeEnsembleClassifier", "kNearestNeighborsClassifier",
)
REGRESSOR_TYPES = (
    "neuralNetworkRegressor", "pipelineRegressor", "glmRegressor", "supportVectorRegressor",
    "treeEnsembleRegressor", "bayesianProbitRegressor",
)

ARRAY_DTYPES = {
    FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "FLOAT32",
    FeatureTypes_pb2.ArrayFeatureType.DOUBLE: "DOUBLE",
    FeatureTypes_pb2.ArrayFeatureType.INT32: "INT32",
    FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "FLOAT16",
}
if hasattr(FeatureTypes_pb2.ArrayFeatureType, "INT8"):
    ARRAY_DTYPES[FeatureTypes_pb2.ArrayFeatureType.INT8] = "INT8"

COLOR_SPACES = {
    FeatureTypes_pb2.ImageFeatureType.GRAYSCALE: "GRAYSCALE",
    FeatureTypes_pb2.ImageFeatureType.RGB: "RGB",
    FeatureTypes_pb2.ImageFeatureType.BGR: "BGR",
    FeatureTypes_pb2.ImageFeatureType.GRAYSCALE_FLOAT16: "GRAYSCALE_FLOAT16",
}


def model_type(spec: "Model_pb2.Model") -> Optional[str]:
    """The name of the ``Type`` oneof member that is set (``None`` if unset)."""
    return spec.WhichOneof("Type")


def is_nn(spec) -> bool:
    return model_type(spec) in NN_TYPES


def backend_of(spec) -> Optional[str]:
    """"nn" for the neural-network types, "mlprogram" for an ML Program, else None."""
    kind = model_type(spec)
    if kind in NN_TYPES:
        return "nn"
    if kind == "mlProgram":
        return "mlprogram"
    return None


def is_pipeline(spec) -> bool:
    return model_type(spec) in PIPELINE_TYPES


def nn_of(spec):
    """The NeuralNetwork(-Classifier/-Regressor) message of ``spec``, or None."""
    kind = model_type(spec)
    return getattr(spec, kind) if kind in NN_TYPES else None


def require_nn(spec, operation: str):
    nn = nn_of(spec)
    if nn is None:
        kind = model_type(spec)
        if kind == "mlProgram":
            raise UnsupportedError(
                f"{operation}: this is an ML Program (mlProgram); {operation} works on neuralNetwork, "
                "neuralNetworkClassifier and neuralNetworkRegressor models (convert with "
                "convert_to='neuralnetwork', or see the ML Program docs)")
        hint = ""
        pipeline = pipeline_of(spec)
        if pipeline is not None:   # the layers are one level down: say where
            stages = ", ".join(f"{n} ({model_type(m)})" for n, m in zip(stage_names(pipeline), pipeline.models))
            hint = (f"; it is a pipeline of stages {stages}: work on a stage's own model file "
                    "(or pick it with --stage where the command has one)")
        raise UnsupportedError(
            f"{operation}: model type {kind!r} has no neural-network layers; expected one of "
            + ", ".join(NN_TYPES) + hint)
    return nn


def pipeline_of(spec):
    """The ``Pipeline`` message of a pipeline, pipelineClassifier or pipelineRegressor."""
    kind = model_type(spec)
    if kind == "pipeline":
        return spec.pipeline
    if kind in ("pipelineClassifier", "pipelineRegressor"):
        return getattr(spec, kind).pipeline
    return None


def stage_names(pipeline) -> list[str]:
    """Stage names as Core ML scopes them: ``names`` or ``model0``, ``model1``..."""
    if len(pipeline.names) == len(pipeline.models) and len(pipeline.names):
        return list(pipeline.names)
    return [f"model{i}" for i in range(len(pipeline.models))]


@dataclass
class ModelInfo:
    """A model inside a (possibly nested) pipeline."""

    path: str          # "" for the top model, "backbone", "outer/inner" for stages
    name: str          # stage name ("" for the top model)
    index: tuple       # stage indexes from the top: (), (0,), (1, 0)
    model: "Model_pb2.Model"
    parent: Optional["Model_pb2.Model"] = None


def iter_models(spec, *, _path: str = "", _index: tuple = (), _parent=None) -> Iterator[ModelInfo]:
    """The model and every nested pipeline stage, depth first, in stage order."""
    name = _path.rsplit("/", 1)[-1] if _path else ""
    yield ModelInfo(_path, name, _index, spec, _parent)
    pipe = pipeline_of(spec)
    if pipe is not None:
        for i, (stage_name, stage) in enumerate(zip(stage_names(pipe), pipe.models)):
            sub = f"{_path}/{stage_name}" if _path else stage_name
            yield from iter_models(stage, _path=sub, _index=_index + (i,), _parent=spec)


def find_stage(spec, stage) -> tuple[object, int]:
    """(pipeline message, index) of a top-level stage given by name or index."""
    pipe = pipeline_of(spec)
    if pipe is None:
        raise UnsupportedError(
            f"model type {model_type(spec)!r} has no stages; stages exist only in pipeline, "
            "pipelineClassifier and pipelineRegressor models")
    names = stage_names(pipe)
    if isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit() and stage not in names):
        idx = int(stage)
        if not -len(names) <= idx < len(names):
            raise NotFoundError(f"stage index {idx} out of range; the pipeline has {len(names)} "
                                f"stages: {', '.join(names)}")
        return pipe, idx % len(names)
    if stage not in names:
        raise NotFoundError(missing_message("stage", [stage], names) + f"; stages are {', '.join(names)}")
    return pipe, names.index(stage)


def model_at(spec, path: str):
    """The nested model at ``stage/stage`` path ("" is the top)."""
    for info in iter_models(spec):
        if info.path == path:
            return info.model
    known = [i.path for i in iter_models(spec) if i.path]
    raise NotFoundError(missing_message("stage path", [path], known))


# --------------------------------------------------------------------------- features

def array_dtype_name(value: int) -> str:
    return ARRAY_DTYPES.get(value, f"INVALID({value})")


def feature_shape(ft) -> Optional[list[int]]:
    """The default shape of a MultiArray type (image: [C, H, W]); None otherwise."""
    kind = ft.WhichOneof("Type")
    if kind == "multiArrayType":
        arr = ft.multiArrayType
        if len(arr.shape):
            return list(arr.shape)
        flex = arr.WhichOneof("ShapeFlexibility")
        if flex == "enumeratedShapes" and len(arr.enumeratedShapes.shapes):
            return list(arr.enumeratedShapes.shapes[0].shape)
        if flex == "shapeRange":
            return [int(r.lowerBound) for r in arr.shapeRange.sizeRanges]
        return None
    if kind == "imageType":
        img = ft.imageType
        channels = 1 if img.colorSpace in (10, 40) else 3
        return [channels, int(img.height), int(img.width)]
    return None


def is_flexible(ft) -> bool:
    kind = ft.WhichOneof("Type")
    if kind == "multiArrayType":
        return ft.multiArrayType.WhichOneof("ShapeFlexibility") is not None
    if kind == "imageType":
        return ft.imageType.WhichOneof("SizeFlexibility") is not None
    return False


def describe_type(ft) -> str:
    """A short human string for a FeatureType: ``MultiArray<FLOAT32>[1,3,224,224]``."""
    kind = ft.WhichOneof("Type")
    opt = "?" if ft.isOptional else ""
    if kind == "multiArrayType":
        arr = ft.multiArrayType
        shape = ",".join(str(d) for d in arr.shape)
        flex = arr.WhichOneof("ShapeFlexibility")
        extra = ""
        if flex == "enumeratedShapes":
            extra = " enum{" + " | ".join("x".join(str(d) for d in s.shape) for s in arr.enumeratedShapes.shapes) + "}"
        elif flex == "shapeRange":
            extra = " range{" + ",".join(
                f"{r.lowerBound}..{'inf' if r.upperBound < 0 else r.upperBound}" for r in arr.shapeRange.sizeRanges) + "}"
        return f"MultiArray<{array_dtype_name(arr.dataType)}>[{shape}]{extra}{opt}"
    if kind == "imageType":
        img = ft.imageType
        flex = img.WhichOneof("SizeFlexibility")
        extra = ""
        if flex == "enumeratedSizes":
            extra = " enum{" + " | ".join(f"{s.width}x{s.height}" for s in img.enumeratedSizes.sizes) + "}"
        elif flex == "imageSizeRange":
            w, h = img.imageSizeRange.widthRange, img.imageSizeRange.heightRange
            fmt = lambda r: f"{r.lowerBound}..{'inf' if r.upperBound < 0 else r.upperBound}"
            extra = f" range{{w {fmt(w)}, h {fmt(h)}}}"
        cs = COLOR_SPACES.get(img.colorSpace, f"INVALID({img.colorSpace})")
        return f"Image<{cs} {img.width}x{img.height}>{extra}{opt}"
    if kind == "dictionaryType":
        key = ft.dictionaryType.WhichOneof("KeyType")
        return f"Dictionary<{'String' if key == 'stringKeyType' else 'Int64' if key == 'int64KeyType' else '?'},Double>{opt}"
    if kind == "sequenceType":
        el = ft.sequenceType.WhichOneof("Type")
        return f"Sequence<{'String' if el == 'stringType' else 'Int64' if el == 'int64Type' else '?'}>{opt}"
    if kind == "stateType":
        arr = ft.stateType.arrayType
        return f"State<{array_dtype_name(arr.dataType)}>[{','.join(str(d) for d in arr.shape)}]"
    if kind is None:
        return "<no type>"
    return {"int64Type": "Int64", "doubleType": "Double", "stringType": "String"}.get(kind, kind) + opt


def feature_dict(desc_list) -> dict:
    return {f.name: f for f in desc_list}


def feature_to_json(f) -> dict:
    out = {"name": f.name, "type": describe_type(f.type), "kind": f.type.WhichOneof("Type")}
    shape = feature_shape(f.type)
    if shape is not None:
        out["shape"] = shape
    if f.shortDescription:
        out["description"] = f.shortDescription
    if f.type.isOptional:
        out["optional"] = True
    return out


def sync_training_inputs(spec, names) -> None:
    """Give each training input named in ``names`` the type of the prediction input of
    that name, in ``spec`` and its stages (Core ML requires the two to be equal, so an
    edit of an input's type must reach both)."""
    names = set(names)
    for info in iter_models(spec):
        desc = info.model.description
        inputs = {f.name: f for f in desc.input}
        for t in desc.trainingInput:
            if t.name in names and t.name in inputs:
                t.type.CopyFrom(inputs[t.name].type)


def class_labels(spec) -> Optional[list]:
    """The class labels of a classifier (the last classifying stage for pipelines)."""
    kind = model_type(spec)
    if kind == "neuralNetworkClassifier":
        nn = spec.neuralNetworkClassifier
        which = nn.WhichOneof("ClassLabels")
        if which == "stringClassLabels":
            return list(nn.stringClassLabels.vector)
        if which == "int64ClassLabels":
            return list(nn.int64ClassLabels.vector)
        return []
    pipe = pipeline_of(spec)
    if pipe is not None:
        for stage in reversed(pipe.models):
            labels = class_labels(stage)
            if labels is not None:
                return labels
        return None
    for kind_name in ("glmClassifier", "supportVectorClassifier", "treeEnsembleClassifier",
                      "kNearestNeighborsClassifier"):
        if kind == kind_name:
            msg = getattr(spec, kind)
            which = msg.WhichOneof("ClassLabels")
            if which:
                return list(getattr(msg, which).vector)
            return []
    return None


def layer_kind(layer) -> Optional[str]:
    return layer.WhichOneof("layer")


def layers_by_name(nn) -> dict:
    return {layer.name: layer for layer in nn.layers}


def find_layer(nn, name: str):
    for layer in nn.layers:
        if layer.name == name:
            return layer
    raise NotFoundError(missing_message("layer", [name], (l.name for l in nn.layers)))


def new_model(version: int = 4) -> "Model_pb2.Model":
    spec = Model_pb2.Model()
    spec.specificationVersion = version
    return spec
