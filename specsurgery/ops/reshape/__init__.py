"""``reshape``: declare flexible input shapes (ranges or enumerated shapes).

Grammar of a shape (the CLI's ``--input NAME=SHAPE``, or a string in
:func:`reshape`'s mapping):

* ``1x3x224x224``: one fixed shape (the input's new size, no flexibility);
* ``1x3x64..512x64..512``: a range per dimension, ``LO..HI``, with ``-1`` as
  an unbounded upper bound (``64..-1``); a plain number is a fixed dimension;
* ``1x3x224x224,1x3x320x320``: enumerated shapes (the first is the default).

A MultiArray input gets ``shapeRange`` / ``enumeratedShapes`` (its default
shape is the lower bounds, or the first enumerated shape); an image input
gets ``imageSizeRange`` / ``enumeratedSizes`` from the last two dimensions
(height, width), and its other dimensions must be its channels (and a batch
of 1).  The network is checked to follow: shape inference (NeuralNetwork) or
a run of the program (ML Program) at the bounds and at every enumerated
shape; a layer or op that pins a size is named.  Outputs whose shape changes
get the matching flexibility.
"""

from __future__ import annotations

from typing import Mapping, Union

from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError
from ...io import MLPackage, working_copy
from . import mlprogram, nn
from .flex import GRAMMAR, FlexShape, as_flex, parse_shape

__all__ = ["reshape", "parse_shape", "FlexShape", "GRAMMAR"]

# --------------------------------------------------------------------------- the operation

def reshape(model, shapes: Mapping[str, Union[str, FlexShape, list]], *, inplace: bool = False):
    """``model`` with new (flexible) shapes on the inputs named in ``shapes``.

    ``shapes`` maps an input name to a shape string (see the module's
    grammar), a :class:`FlexShape` or a list of sizes.  The network is
    checked at every bound and enumerated shape; outputs whose shape follows
    get matching flexibility.  NeuralNetwork models are raised to spec
    version 3 when they become flexible (the first that honours flexible
    shapes).  Returns the edited spec (an :class:`MLPackage` for ML
    Programs)."""
    if not shapes:
        raise SpecSurgeryError("reshape: name at least one input and its shape (NAME=SHAPE)")
    plan = {name: as_flex(value, f"--input {name}") for name, value in shapes.items()}
    result, spec = working_copy(model, inplace)
    kind = S.model_type(spec)
    if kind in S.NN_TYPES:
        nn.reshape_nn(spec, plan)
    elif kind == "mlProgram":
        mlprogram.reshape_program(spec, result if isinstance(result, MLPackage) else None, plan)
    elif kind in S.PIPELINE_TYPES:
        nn.reshape_pipeline(spec, plan)
    else:
        raise UnsupportedError(f"reshape: a {kind or 'model without a type'} model is not supported; "
                               "reshape works on neural networks, ML Programs and pipelines of them")
    S.sync_training_inputs(spec, plan)          # an updatable model's training input follows
    return result
