"""add_nms, ML Program part: the shapes of a program's outputs, read from the
value types of its main function (for descriptions that declare none).

The NMS-ready conversion of an ML Program detector's raw outputs is the same
small NeuralNetwork stage as for a network (:func:`.nn.adapter_stage`):
a pipeline may mix ML Program and NeuralNetwork stages (spec version 6+),
and one adapter keeps both backends' detectors identical after the first
stage.  ``make_pipeline`` packs the program's weights (weights/0-weight.bin).
"""

from __future__ import annotations

from ...mil import program as P


def output_shapes(model, names) -> dict:
    """{name: shape} of program outputs (None for a dimension the program leaves open)."""
    _name, fn = P.get_function(model)
    block = P.main_block(fn)
    types = {o.name: o.type for op in P.iter_ops(block) for o in op.outputs}
    for i in fn.inputs:
        types.setdefault(i.name, i.type)
    out = {}
    for n in names:
        vt = types.get(n)
        shape = P.tensor_shape(vt) if vt is not None else None
        if shape is not None:
            out[n] = tuple(-1 if d is None else int(d) for d in shape)
    return out


__all__ = ["output_shapes"]
