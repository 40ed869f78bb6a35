"""``extract``: the part of a model between given names, as a model of its own.

Like ``onnx.utils.extract_model``: give the names that become inputs and the
names that become outputs; the result holds exactly what is needed to compute
the outputs from the inputs.

* NeuralNetwork (:mod:`.nn`): the sub-network between blobs; interface types
  from the original where a blob is an original feature, else MultiArray with
  shapes from the runtime's shape inference.
* ML Program (:mod:`.mlprogram`): the sub-program between values, typed from
  the program's value types, in a package holding exactly the weights it uses.
"""

from __future__ import annotations

from ... import spec as S
from ...io import load
from .. import _nn
from .mlprogram import extract_program
from .nn import _names, classifier_prob_blob, extract_network, interface_targets, typed_features

__all__ = ["extract", "classifier_prob_blob", "interface_targets", "typed_features", "_names"]


def extract(spec, inputs, outputs, *, shapes=None, inplace: bool = False):
    """The part of ``spec`` computing ``outputs`` from ``inputs`` (names, a
    list or "a,b").

    A neural network gives a neuralNetwork model (a classifier/regressor when
    the outputs include the original's predicted feature); ``shapes`` ({blob:
    declared shape}) types blobs that shape inference cannot (after custom
    layers).  An ML Program gives an MLPackage of one function whose inputs
    and outputs are the given values; it refuses ``shapes`` (program values
    are typed already).
    """
    model = load(spec)
    root = getattr(model, "spec", model)
    inputs, outputs = _nn.name_list(inputs), _nn.name_list(outputs)
    if S.model_type(root) == "mlProgram":
        return extract_program(model, inputs, outputs, shapes=shapes, inplace=inplace)
    return extract_network(root, inputs, outputs, shapes=shapes, inplace=inplace)


from ..._callable import make_callable  # noqa: E402

make_callable(__name__, "extract")
