"""retype, ML Program part.

An ML Program's image input carries no preprocessing message: Core ML hands
the function a float32 ``[1,C,H,W]`` tensor of 0..255 pixels in the
description's colour order, and the scale and bias are ``mul`` / ``add``
ops after the input (named ``<input>__scaled__`` / ``<input>__biased__``, as
converters name them).  Turning the image back into an array removes those
two ops again.
"""

from __future__ import annotations

import numpy as np

from ..._proto import MIL_pb2
from ...errors import SpecSurgeryError, UnsupportedError
from ...mil import program as P
from .types import ARRAY, array_chw, image_channels, make_array_type, make_image_type


def _taken(block) -> set:
    return {o.name for op in P.iter_ops(block) for o in op.outputs}


def _const(name: str, array: np.ndarray):
    op = MIL_pb2.Operation()
    op.type = "const"
    val = P.numpy_to_value(array.astype(np.float32), MIL_pb2.FLOAT32)
    op.attributes["val"].CopyFrom(val)
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(name)))
    out = op.outputs.add()
    out.name = name
    out.type.CopyFrom(P.tensor_type(MIL_pb2.FLOAT32, array.shape))
    return op


def _binary(kind: str, name: str, x: str, y: str, vt):
    op = MIL_pb2.Operation()
    op.type = kind
    op.inputs["x"].arguments.add().name = x
    op.inputs["y"].arguments.add().name = y
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(name)))
    out = op.outputs.add()
    out.name = name
    out.type.CopyFrom(vt)
    return op


def _rename_reads(block, old: str, new: str, skip=()) -> None:
    for op in P.iter_ops(block):
        if any(op is s for s in skip):
            continue
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name" and b.name == old:
                    b.name = new
    for i, n in enumerate(block.outputs):
        if n == old:
            block.outputs[i] = new


def _prepend(block, ops) -> None:
    old = [MIL_pb2.Operation() for _ in block.operations]
    for copy, op in zip(old, block.operations):
        copy.CopyFrom(op)
    block.ClearField("operations")
    for op in list(ops) + old:
        block.operations.add().CopyFrom(op)


def _to_image(spec, fn, block, name: str, want) -> None:
    f = next(x for x in spec.description.input if x.name == name)
    flag = f"--input {name}"
    c, h, w, has_batch = array_chw(name, f.type, want, flag)
    inp = next(i for i in fn.inputs if i.name == name)
    vt = inp.type
    shape = P.tensor_shape(vt)
    if shape is None or len(shape) != 4:
        raise UnsupportedError(f"retype: function input {name!r} is {P.describe_value_type(vt)}; an ML "
                               "Program image input is a rank-4 [1,C,H,W] tensor (option 'types' on backend "
                               "mlProgram): convert the model with a batch axis")
    if P.tensor_dtype(vt) != MIL_pb2.FLOAT32:
        raise UnsupportedError(f"retype: function input {name!r} is {P.describe_value_type(vt)}; an image "
                               "feeds float32 pixels, so the input must be float32 (option 'types' on backend "
                               "mlProgram): convert the model with a float32 input")
    make_image_type(f.type, want, h, w, has_batch)
    biases = want.biases()
    if want.color == "BGR":
        biases = biases[::-1]          # the tensor's channels are in B, G, R order
    taken = _taken(block) | {i.name for i in fn.inputs}
    ops, current = [], name
    if want.scale != 1.0:
        out = P.fresh_name(f"{name}__scaled__", taken)
        k = P.fresh_name(f"{out}_y_0", taken)
        ops += [_const(k, np.array(want.scale, np.float32)), _binary("mul", out, current, k, vt)]
        current = out
    if any(biases):
        out = P.fresh_name(f"{name}__biased__", taken)
        k = P.fresh_name(f"{out}_y_0", taken)
        ops += [_const(k, np.array(biases, np.float32).reshape(1, len(biases), 1, 1)),
                _binary("add", out, current, k, vt)]
        current = out
    if current != name:
        _rename_reads(block, name, current)
        _prepend(block, ops)


def _const_operand(block, op, other_key: str):
    consts = {o.name: c for c in block.operations if c.type == "const" for o in c.outputs}
    args = op.inputs.get(other_key)
    if args is None or len(args.arguments) != 1:
        return None
    b = args.arguments[0]
    if b.WhichOneof("binding") == "value":
        return b
    return consts.get(b.name) if b.WhichOneof("binding") == "name" else None


def _fold_away(block, name: str) -> list:
    """Remove the mul/add preprocessing ops right after input ``name``; their kinds."""
    removed = []
    current = name
    for kind in ("mul", "add"):
        readers = [op for op in block.operations
                   if any(n == current for _, n in P.input_names(op))]
        if len(readers) != 1 or readers[0].type != kind or current in block.outputs:
            continue
        op = readers[0]
        out = op.outputs[0].name
        if not out.startswith(name + "__"):
            continue
        keys = [k for k, v in op.inputs.items() if any(b.WhichOneof("binding") == "name" and b.name == current
                                                         for b in v.arguments)]
        other = {"x": "y", "y": "x"}.get(keys[0]) if len(keys) == 1 else None
        if other is None or _const_operand(block, op, other) is None:
            continue
        const_names = [b.name for b in op.inputs[other].arguments if b.WhichOneof("binding") == "name"]
        _drop(block, op)
        _rename_reads(block, out, current)
        for cn in const_names:
            if not any(n == cn for o in P.iter_ops(block) for _, n in P.input_names(o)) \
                    and cn not in block.outputs:
                _drop(block, next(c for c in block.operations if any(o.name == cn for o in c.outputs)))
        removed.append(kind)
    return removed


def _drop(block, target) -> None:
    for i, op in enumerate(block.operations):
        if op is target or op == target:
            del block.operations[i]
            return


def _to_array(spec, fn, block, name: str) -> None:
    f = next(x for x in spec.description.input if x.name == name)
    img = f.type.imageType
    c = image_channels(img)
    inp = next(i for i in fn.inputs if i.name == name)
    if P.tensor_dtype(inp.type) == MIL_pb2.FLOAT16:
        raise UnsupportedError(f"retype: function input {name!r} is {P.describe_value_type(inp.type)} (a "
                               "GRAYSCALE_FLOAT16 image); a float16 MultiArray input needs spec version 7 "
                               "(option 'types' on backend mlProgram)")
    removed = _fold_away(block, name)
    if removed:
        from .._nn import note

        note(f"retype: the image preprocessing of {name!r} ({' and '.join(removed)}) is folded away: feed the "
             "array the values the image gave after it (pixels * scale + bias)")
    make_array_type(f.type, [1, c])


def retype_program(spec, plan: dict) -> None:
    fname, fn = P.single_function(spec, "retype", "types")
    block = P.main_block(fn)
    inputs = [i.name for i in fn.inputs]
    unfed = [name for name in plan if name not in inputs]
    if unfed:
        raise SpecSurgeryError(
            f"retype: {', '.join(map(repr, unfed))} is an input of the description but not of the "
            f"program's function {fname!r} (its inputs: {', '.join(inputs) or 'none'}); the package is "
            "inconsistent: rebuild it, or rename the feature to the function input it stands for")
    for name, want in plan.items():
        if want == ARRAY:
            _to_array(spec, fn, block, name)
        else:
            _to_image(spec, fn, block, name, want)
