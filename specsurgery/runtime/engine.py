"""``predict``: run a model (NN, pipeline, linked stub, ML Program) on inputs.

Model inputs are converted the way Core ML feeds a network: images become
``[C, H, W]`` float planes in the declared colour order with the
``NeuralNetworkPreprocessing`` scaler or mean image applied, then mapped to
rank 5 (``[1, 1, C, H, W]``) or rank 4 (``[1, C, H, W]``) by
``imageInputShapeMapping``; multiarrays keep their shape under
``EXACT_ARRAY_MAPPING`` and become ``[S, B, C, H, W]`` under the legacy
mapping.  Outputs are reshaped back to the declared shapes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .. import io as _io
from .. import spec as _spec
from .._proto import FeatureTypes_pb2
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message, near_matches
from ._inputs import check_array_shape, check_image_size
from .nn import Net
from .nms import undeclared_threshold_inputs

GRAY_SPACES = (FeatureTypes_pb2.ImageFeatureType.GRAYSCALE,
               getattr(FeatureTypes_pb2.ImageFeatureType, "GRAYSCALE_FLOAT16", 40))
BGR = FeatureTypes_pb2.ImageFeatureType.BGR

# --------------------------------------------------------------------------- loading

class Source:
    """A loaded model plus where it came from (for ``.`` in linked search paths)."""

    def __init__(self, model, base_dir=None):
        self.path: Optional[Path] = None
        if isinstance(model, (str, os.PathLike)):
            self.path = Path(model)
            loaded = _io.load(model)
            if base_dir is None:
                base_dir = self.path.resolve().parent
        else:
            loaded = _io.load(model)
            pkg_path = getattr(model, "package_path", None)
            if base_dir is None and pkg_path:
                base_dir = Path(pkg_path).resolve().parent
        self.spec, self.package = _io.split_model(loaded)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()


# --------------------------------------------------------------------------- prepared-model cache (paths)

#: {(resolved path, stamp): Source} of models ``predict`` loaded from a path, newest last.
#: A second ``predict`` on an unchanged file reuses the parsed spec and so the compiled
#: :class:`Net` and its decoded weights; a new size or mtime of any of its files re-reads it.
_SOURCES: "OrderedDict[tuple, Source]" = OrderedDict()
_SOURCES_SIZE = 3


def _stamp(path: Path) -> Optional[tuple]:
    """(size, mtime_ns, inode, ctime_ns) of a file, or of every file of a package folder; None if unreadable."""
    try:
        if path.is_dir():
            return tuple((f.relative_to(path).as_posix(),) + _stat_key(f.stat())
                         for f in sorted(path.rglob("*")) if f.is_file())
        return _stat_key(path.stat())
    except OSError:
        return None


def _stat_key(st) -> tuple:
    # the inode and ctime too: an atomic rewrite (a new file renamed over the old one)
    # within the file system's timestamp granularity still changes them
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _forget(src: Source) -> None:
    """Drop the compiled networks (and their decoded weights) of an evicted source."""
    ids = {id(info.model) for info in _spec.iter_models(src.spec)}
    for key in [k for k, hit in _CACHE.items() if id(hit[2]) in ids]:
        del _CACHE[key]


def source(model, base_dir=None) -> Source:
    """:class:`Source` of ``model``; a path is served from the cache while its files are unchanged."""
    if not isinstance(model, (str, os.PathLike)):
        return Source(model, base_dir)
    path = Path(model)
    try:
        resolved = path.resolve()
    except OSError:
        return Source(model, base_dir)
    stamp = _stamp(resolved)
    if stamp is None:
        return Source(model, base_dir)      # io.load names the problem
    key = (str(resolved), stamp, None if base_dir is None else str(base_dir))
    hit = _SOURCES.get(key)
    if hit is not None:
        _SOURCES.move_to_end(key)
        return hit
    for old in [k for k in _SOURCES if k[0] == key[0]]:   # an older version of this file
        _forget(_SOURCES.pop(old))
    src = Source(model, base_dir)
    _SOURCES[key] = src
    while len(_SOURCES) > _SOURCES_SIZE:
        _forget(_SOURCES.popitem(last=False)[1])
    return src


# --------------------------------------------------------------------------- compiled-network cache

_CACHE: "OrderedDict[int, tuple]" = OrderedDict()
_CACHE_SIZE = 8


def _fingerprint(nn_msg) -> tuple:
    return (len(nn_msg.layers),) + tuple((l.name, l.WhichOneof("layer"), tuple(l.input), tuple(l.output))
                                         for l in nn_msg.layers)


def compiled(spec, *, keep: bool = True) -> Net:
    """The compiled :class:`Net` of an NN spec (cached; rebuilt if the layers change).
    ``keep=False`` (shape inference on a throwaway probe model) uses a cached net but
    does not cache a new one, so the cache does not keep the spec alive."""
    nn_msg = _spec.require_nn(spec, "run")
    key = id(nn_msg)
    hit = _CACHE.get(key)
    fp = _fingerprint(nn_msg)
    if hit is not None and hit[0] is nn_msg and hit[1] == fp and hit[2] is spec:
        _CACHE.move_to_end(key)
        return hit[3]
    rank5 = _is_rank5(nn_msg)
    net = Net(nn_msg, rank5=rank5)   # unsupported layers are reported when it runs
    if not keep:
        return net
    _CACHE[key] = (nn_msg, fp, spec, net)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return net


def clear_cache() -> None:
    """Forget compiled networks, decoded weights and the models loaded from paths
    (after editing weights in place, or to release their memory)."""
    _CACHE.clear()
    _SOURCES.clear()


def _is_rank5(nn_msg) -> bool:
    return nn_msg.arrayInputShapeMapping == 0


def _image_rank5(nn_msg) -> bool:
    return nn_msg.imageInputShapeMapping == 0


# --------------------------------------------------------------------------- inputs

def _load_image(value, ft, name, strict=True):
    """PIL image, path or uint8 array -> float32 [C, H, W] in the model's channel order."""
    img_t = ft.imageType
    gray = img_t.colorSpace in GRAY_SPACES
    arr = None
    if isinstance(value, (str, os.PathLike)):
        from PIL import Image

        try:
            with Image.open(value) as im:
                value = im.convert("L" if gray else "RGB")
                value.load()
        except OSError as exc:
            raise SpecSurgeryError(f"input {name!r}: cannot read image {value}: {exc}") from None
    if hasattr(value, "convert") and hasattr(value, "size"):   # PIL image
        value = value.convert("L" if gray else "RGB")
        arr = np.asarray(value)
    else:
        arr = np.asarray(value)
    if gray:
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = (arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        if arr.ndim != 2:
            raise SpecSurgeryError(f"input {name!r}: a grayscale image input takes an HxW array, "
                                   f"got shape {tuple(arr.shape)}")
        planes = arr.astype(np.float32)[None]
    else:
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise SpecSurgeryError(f"input {name!r}: a colour image input takes an HxWx3 array (RGB), "
                                   f"a PIL image or an image file, got shape {tuple(arr.shape)}")
        planes = arr[..., :3].astype(np.float32).transpose(2, 0, 1)
        if img_t.colorSpace == BGR:
            planes = planes[::-1]
    h, w = planes.shape[1:]
    if strict and _spec.is_flexible(ft):
        check_image_size(ft, name, w, h)
    if strict and not _spec.is_flexible(ft) and (img_t.height, img_t.width) != (0, 0) \
            and (h, w) != (img_t.height, img_t.width):
        raise SpecSurgeryError(f"input {name!r}: image is {w}x{h}, the model takes "
                               f"{img_t.width}x{img_t.height} (width x height); resize it first")
    return np.ascontiguousarray(planes)


def _preprocess(nn_msg, name, planes, colorspace):
    for pre in nn_msg.preprocessing:
        if pre.featureName not in (name, "") or (pre.featureName == "" and len(nn_msg.preprocessing) > 1):
            continue
        kind = pre.WhichOneof("preprocessor")
        if kind == "scaler":
            s = pre.scaler
            if planes.shape[0] == 1:
                bias = np.array([s.grayBias], np.float32)
            elif colorspace == BGR:
                bias = np.array([s.blueBias, s.greenBias, s.redBias], np.float32)
            else:
                bias = np.array([s.redBias, s.greenBias, s.blueBias], np.float32)
            planes = planes * np.float32(s.channelScale) + bias[:, None, None]
        elif kind == "meanImage":
            mean = np.asarray(pre.meanImage.meanImage, np.float32)
            if mean.size != planes.size:
                raise SpecSurgeryError(f"input {name!r}: mean image has {mean.size} values, the image "
                                       f"has {planes.size} (C*H*W)")
            planes = planes - mean.reshape(planes.shape)
    return planes.astype(np.float32)


def _array_input(value, ft, name, rank5, strict=True):
    arr = np.asarray(value)
    if arr.dtype == object:
        raise SpecSurgeryError(f"input {name!r}: expected a numeric array")
    arr = arr.astype(np.float32)
    shape = _spec.feature_shape(ft)
    if rank5 and arr.ndim == 5 and shape and len(shape) in (1, 3):
        # legacy networks may be fed [Seq, Batch, C, H, W] directly
        tail = tuple(shape) + (1, 1) if len(shape) == 1 else tuple(shape)
        if tuple(arr.shape[2:]) == tail or not strict:
            return arr
    if not strict:
        pass
    elif _spec.is_flexible(ft):
        check_array_shape(ft, name, arr.shape)   # before any layer runs
    elif shape and tuple(arr.shape) != tuple(shape):
        # only size-1 axes may differ (e.g. a missing batch axis); a same-size array of
        # another layout (HWC for CHW) is an error, never silently reshaped
        if [d for d in arr.shape if d != 1] == [d for d in shape if d != 1]:
            arr = arr.reshape(shape)
        else:
            raise SpecSurgeryError(f"input {name!r}: array has shape {tuple(arr.shape)}, the model "
                                   f"takes {tuple(shape)}")
    if rank5:
        if arr.ndim == 1:
            arr = arr.reshape(1, 1, -1, 1, 1)
        elif arr.ndim == 3:
            arr = arr.reshape((1, 1) + arr.shape)
        elif arr.ndim == 2:        # [Seq, C] (legacy sequence input)
            arr = arr.reshape(arr.shape[0], 1, arr.shape[1], 1, 1)
        elif arr.ndim == 4:
            arr = arr.reshape((1,) + arr.shape)
    return arr


def feed(spec, nn_msg, inputs: Mapping, strict: bool = True) -> dict:
    """Model inputs -> blobs as the network holds them."""
    blobs = {}
    described = {f.name: f for f in spec.description.input}
    missing = [n for n, f in described.items() if n not in inputs and not f.type.isOptional]
    if missing:
        parts = []
        for name in missing:
            close = near_matches(name, [k for k in inputs if k not in described])
            parts.append(repr(name) + (f" (given as {', '.join(map(repr, close))}?)" if close else ""))
        raise NotFoundError(f"missing input{'s' if len(missing) > 1 else ''} " + ", ".join(parts)
                            + f"; the model takes {', '.join(map(repr, described))}, given: "
                            + (", ".join(map(repr, inputs)) or "nothing"))
    rank5 = _is_rank5(nn_msg)
    for name, f in described.items():
        if name not in inputs:
            continue
        value = inputs[name]
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            planes = _load_image(value, f.type, name, strict)
            planes = _preprocess(nn_msg, name, planes, f.type.imageType.colorSpace)
            blobs[name] = planes.reshape(((1, 1) if _image_rank5(nn_msg) else (1,)) + planes.shape)
        elif kind == "multiArrayType":
            blobs[name] = _array_input(value, f.type, name, rank5, strict)
        elif kind in ("int64Type", "doubleType"):
            blobs[name] = np.asarray(value, np.float32).reshape(1)
        else:
            raise UnsupportedError(f"input {name!r} of type {kind} cannot feed a neural network")
    return blobs


# --------------------------------------------------------------------------- outputs

def _array_output(arr, ft, rank5):
    shape = _spec.feature_shape(ft)
    dtype = {FeatureTypes_pb2.ArrayFeatureType.DOUBLE: np.float64,
             FeatureTypes_pb2.ArrayFeatureType.INT32: np.int32}.get(ft.multiArrayType.dataType, np.float32)
    out = np.asarray(arr)
    if shape and not _spec.is_flexible(ft) and out.size == int(np.prod(shape)):
        out = out.reshape(shape)
    elif rank5 and out.ndim == 5 and out.shape[1] == 1 and out.shape[0] == 1:
        out = out.reshape(out.shape[2:])
    if dtype is np.int32:
        return np.rint(out).astype(np.int32)
    return out.astype(dtype)


def _image_output(arr, ft):
    a = np.asarray(arr, np.float32)
    a = a.reshape(a.shape[-3:]) if a.ndim > 3 else a
    a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.shape[0] == 1:
        return a[0]
    if ft.imageType.colorSpace == BGR:
        a = a[::-1]
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def probability_blob(nn_msg) -> str:
    """The blob a neural-network classifier reads its class probabilities from:
    ``labelProbabilityLayerName``, else the last layer's output."""
    if nn_msg.labelProbabilityLayerName:
        return nn_msg.labelProbabilityLayerName
    last = nn_msg.layers[len(nn_msg.layers) - 1].output if len(nn_msg.layers) else ()
    if not len(last):
        raise SpecSurgeryError("classifier: labelProbabilityLayerName is empty and the last layer writes "
                               "no blob, so there are no class probabilities; set labelProbabilityLayerName")
    return last[0]


def collect(spec, nn_msg, blobs, net) -> dict:
    kind = _spec.model_type(spec)
    desc = spec.description
    out = {}
    rank5 = _is_rank5(nn_msg)
    if kind == "neuralNetworkClassifier":
        labels = _spec.class_labels(spec)
        prob_blob = probability_blob(nn_msg)
        if prob_blob not in blobs:
            raise NotFoundError(f"classifier probability blob {prob_blob!r} was not produced")
        probs = np.asarray(blobs[prob_blob], np.float64).reshape(-1)
        if probs.size != len(labels):
            raise SpecSurgeryError(f"classifier: blob {prob_blob!r} holds {probs.size} values for "
                                   f"{len(labels)} class labels")
        top = labels[int(np.argmax(probs))]
        pred_name = desc.predictedFeatureName
        prob_name = desc.predictedProbabilitiesName
        for f in desc.output:
            if f.name == pred_name:
                out[f.name] = top
            elif f.name == prob_name and f.type.WhichOneof("Type") == "dictionaryType":
                out[f.name] = {lab: float(p) for lab, p in zip(labels, probs)}
        if pred_name and pred_name not in out:
            out[pred_name] = top
    for f in desc.output:
        if f.name in out:
            continue
        if f.name not in blobs:
            raise NotFoundError(f"output {f.name!r} was not produced by any layer")
        t = f.type.WhichOneof("Type")
        v = blobs[f.name]
        if t == "multiArrayType":
            out[f.name] = _array_output(v, f.type, rank5)
        elif t == "imageType":
            out[f.name] = _image_output(v, f.type)
        elif t == "doubleType":
            out[f.name] = float(np.asarray(v).reshape(-1)[0])
        elif t == "int64Type":
            out[f.name] = int(np.asarray(v).reshape(-1)[0])
        else:
            out[f.name] = np.asarray(v)
    return out


# --------------------------------------------------------------------------- dispatch

def predict(model, inputs: Mapping, *, search_path: Optional[str] = None, bundle=None,
            bundle_ids: Optional[Mapping] = None, function: Optional[str] = None,
            base_dir=None, strict: bool = True) -> dict:
    """Run ``model`` on ``inputs`` and return its outputs by feature name.

    ``model``: a path (its folder is ``.`` for linked stubs), a spec, an
    MLPackage or a coremltools MLModel.  Multiarray outputs are numpy arrays,
    a classifier's label a str/int and its probabilities a ``{label: p}`` dict.
    ``strict=False`` accepts input shapes other than the declared ones (e.g. a
    small image for a fully convolutional model); Core ML itself would refuse.
    """
    src = source(model, base_dir)
    bundle = Path(bundle) if bundle is not None else src.base_dir
    return _run(src.spec, src.package, dict(inputs), src.base_dir, search_path, bundle,
                bundle_ids or {}, function, where="", strict=strict)


def _run(spec, package, inputs, base_dir, search_path, bundle, bundle_ids, function, where,
         strict=True, trace: Optional[dict] = None):
    """``trace``, when given, receives every intermediate value as
    ``{"<stage path>/<blob>": array}`` (the top model's blobs without a prefix)."""
    kind = _spec.model_type(spec)
    if kind in _spec.NN_TYPES:
        nn_msg = _spec.nn_of(spec)
        net = compiled(spec)
        blobs = feed(spec, nn_msg, inputs, strict)
        keep = {f.name for f in spec.description.output}
        if _spec.model_type(spec) == "neuralNetworkClassifier":
            keep.add(probability_blob(nn_msg))
        record = None
        if trace is not None:
            def record(blob, value):
                trace[where + blob] = np.array(value, copy=True)
        net.run(blobs, keep=keep, trace=record)
        return collect(spec, nn_msg, blobs, net)
    if kind in _spec.PIPELINE_TYPES:
        pipe = _spec.pipeline_of(spec)
        names = _spec.stage_names(pipe)
        table = dict(inputs)
        optional = {f.name for f in spec.description.input if f.type.isOptional}
        for stage_name, stage in zip(names, pipe.models):
            sub_where = f"{where}{stage_name}"
            stage_inputs = {f.name: table[f.name] for f in stage.description.input if f.name in table}
            stage_inputs.update(undeclared_threshold_inputs(stage, table))   # NMS reads them by name
            missing = [f.name for f in stage.description.input   # an optional pipeline input may be absent
                       if f.name not in table and not f.type.isOptional and f.name not in optional]
            if missing:
                raise NotFoundError(missing_message("feature", missing, list(table),
                                                    f"the features available to stage {sub_where!r}"))
            res = _run(stage, package, stage_inputs, base_dir, search_path, bundle, bundle_ids,
                       None, sub_where + "/", strict, trace)
            table.update(res)
        outs = {}
        for f in spec.description.output:
            if f.name not in table:
                raise NotFoundError(f"pipeline output {f.name!r} is produced by no stage")
            outs[f.name] = table[f.name]
        return outs
    if kind == "linkedModel":
        from ..linked import require_linked

        target = require_linked(spec, search_path=search_path, base_dir=base_dir, bundle=bundle,
                                bundle_ids=bundle_ids, where=f"linked model {where.rstrip('/') or '(top)'}")
        src = source(str(target))
        res = _run(src.spec, src.package, inputs, src.base_dir, None, bundle, bundle_ids, function,
                   where, strict, trace)
        return {f.name: res[f.name] for f in spec.description.output if f.name in res} or res
    if kind == "mlProgram":
        try:
            from .mil import predict_program
        except ImportError:
            raise UnsupportedError("ML Program execution (specsurgery.runtime.mil) is not available "
                                   "in this build") from None
        return predict_program(spec, package, inputs, function=function, trace=trace, where=where)
    from .classic import RUNNERS, run_classic    # GLM, trees, SVM, feature engineering

    if kind in RUNNERS:
        return run_classic(spec, inputs, where)
    raise UnsupportedError(
        f"model {where.rstrip('/') or '(top)'} has type {kind!r}, which the reference runtime does not "
        "run; it runs neuralNetwork, neuralNetworkClassifier, neuralNetworkRegressor, pipelines, "
        "linkedModel stubs, mlProgram and the classic types " + ", ".join(RUNNERS))
