"""Blob shapes of a neural network without running its heavy layers.

The network runs in *shape mode*: convolutions, pooling, inner products,
matrix products, embeddings, resampling and recurrent layers only compute
their output shape (and hand on zeros); the remaining layers are cheap and
run for real on the zero blobs, so shape-producing layers (``getShape``,
``reshapeDynamic``, ``rangeDynamic``...) see exact shapes.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .. import io as _io
from .. import spec as _spec
from ._inputs import check_declared_size
from .engine import _image_rank5, _is_rank5, compiled


def _default_held_shape(f, nn_msg, override=None) -> tuple:
    t = f.type.WhichOneof("Type")
    if t == "imageType":
        c, h, w = _spec.feature_shape(f.type)
        if override is not None:
            ov = tuple(int(v) for v in override)
            if len(ov) == 2:
                h, w = ov
            else:
                return ov
        return ((1, 1) if _image_rank5(nn_msg) else (1,)) + (c, h, w)
    if t == "multiArrayType":
        if override is not None:
            shape = tuple(int(v) for v in override)
        else:
            shape = tuple(_spec.feature_shape(f.type) or (1,))
        if _is_rank5(nn_msg):
            if len(shape) == 1:
                return (1, 1, shape[0], 1, 1)
            if len(shape) == 3:
                return (1, 1) + shape
            if len(shape) == 2:
                return (shape[0], 1, shape[1], 1, 1)
            if len(shape) == 4:
                return (1,) + shape
        return shape
    return (1,)


def infer_shapes(model, input_shapes: Optional[Mapping] = None, *, partial: bool = False) -> dict:
    """{blob name: shape} for every blob of a neural network (model inputs too),
    as the runtime holds them; pipelines give the union over their NN stages.

    A layer the runtime cannot run (a custom layer) raises ``UnsupportedError``
    naming it; with ``partial=True`` such layers and everything downstream of
    them are left out instead (for listings that show what they can)."""
    spec = _io.load_spec(model)
    shapes: dict = {}
    _infer(spec, dict(input_shapes or {}), shapes, partial)
    return shapes


def _infer(spec, input_shapes, shapes, partial=False):
    kind = _spec.model_type(spec)
    if kind in _spec.NN_TYPES:
        nn_msg = _spec.nn_of(spec)
        net = compiled(spec, keep=False)    # often a probe model made for this call only
        blobs = {}
        for f in spec.description.input:
            shape = _default_held_shape(f, nn_msg, input_shapes.get(f.name))
            check_declared_size(f.name, shape)
            blobs[f.name] = np.zeros(shape, np.float32)
        net.run(blobs, shape_only=True, lenient=partial)
        for name, v in blobs.items():
            shapes[name] = tuple(int(d) for d in np.shape(v))
        return
    pipe = _spec.pipeline_of(spec)
    if pipe is not None:
        for stage in pipe.models:
            stage_in = {}
            for f in stage.description.input:
                if f.name in input_shapes:
                    stage_in[f.name] = input_shapes[f.name]
            _infer(stage, stage_in, shapes, partial)
