"""``retype``: turn a MultiArray input into an image input with its
preprocessing, or an image input back into a MultiArray.

Grammar (the CLI's ``--input NAME=TYPE``, or a string in :func:`retype`'s
mapping): ``image:RGB|BGR|GRAY[,scale=S][,bias=R,G,B]`` (GRAY takes one
bias) or ``array``.

* array -> image: the array must be ``[1,C,H,W]`` or ``[C,H,W]`` with C=3 for
  RGB/BGR and C=1 for GRAY; the image is W x H.  The network then sees
  ``pixel * scale + bias`` (per channel; the bias is given in R,G,B order
  whatever the colour order), so feeding the image equals feeding that
  array.  NeuralNetwork: a ``scaler`` preprocessing; ML Program: ``mul`` and
  ``add`` ops after the input, the way converters write image inputs.
* image -> array: the preprocessing is folded away (removed), so the array
  model computes the same thing when fed the values the image gave after
  scale and bias, in the image's colour order.
"""

from __future__ import annotations

from typing import Mapping, Union

from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError
from ...io import working_copy
from . import mlprogram, nn
from .types import ARRAY, GRAMMAR, ImageInput, as_type, check_plan, parse_type

__all__ = ["retype", "parse_type", "ImageInput", "ARRAY", "GRAMMAR"]


def retype(model, types: Mapping[str, Union[str, ImageInput]], *, inplace: bool = False):
    """``model`` with the inputs named in ``types`` retyped.

    ``types`` maps an input name to ``"image:RGB,scale=0.0039,bias=..."``, an
    :class:`ImageInput` or ``"array"`` (see the module's grammar).  Returns
    the edited spec (an :class:`MLPackage` for ML Programs)."""
    if not types:
        raise SpecSurgeryError("retype: name at least one input and its type (NAME=image:RGB or NAME=array)")
    plan = {name: as_type(value, f"--input {name}") for name, value in types.items()}
    result, spec = working_copy(model, inplace)
    kind = S.model_type(spec)
    if kind in S.NN_TYPES:
        check_plan(spec, plan)
        nn.retype_nn(spec, plan)
    elif kind == "mlProgram":
        check_plan(spec, plan)
        mlprogram.retype_program(spec, plan)
    elif kind in S.PIPELINE_TYPES:
        check_plan(spec, plan)
        nn.retype_pipeline(spec, plan)
    else:
        raise UnsupportedError(f"retype: a {kind or 'model without a type'} model is not supported; "
                               "retype works on neural networks, ML Programs and pipelines of them")
    S.sync_training_inputs(spec, plan)          # an updatable model's training input follows
    return result
