"""expose, ML Program part: a value of the default function's main block
becomes a block output and a model output, typed from the program.

A float16 value of a model below spec version 7 (where features cannot be
float16) is exposed through a ``cast`` to float32, the way converters give
fp16 programs float32 outputs.
"""

from __future__ import annotations

import numpy as np

from ..._proto import MIL_pb2, Model_pb2
from ...errors import SpecSurgeryError, UnsupportedError
from ...mil import program as P


def produced_names(model) -> tuple[list, dict]:
    _, fn = P.get_function(model)
    block = P.main_block(fn)
    top = [o.name for op in block.operations for o in op.outputs]
    inner = {}
    for op in block.operations:
        for sub in op.blocks:
            for inner_op in P.iter_ops(sub):
                for o in inner_op.outputs:
                    inner[o.name] = (f"it is computed inside the {op.type} op {P.op_name(op)!r}; only "
                                     "values of the function's main block can be outputs")
    return top, inner


def _rename_reads(block, old: str, new: str) -> None:
    for op in P.iter_ops(block):
        for arg in op.inputs.values():
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "name" and binding.name == old:
                    binding.name = new
    for i, name in enumerate(block.outputs):
        if name == old:
            block.outputs[i] = new


def _cast_to_fp32(block, name: str, vt) -> "MIL_pb2.ValueType":
    """Rename value ``name`` and recompute it as a float32 ``cast`` named ``name``."""
    taken = {o.name for op in P.iter_ops(block) for o in op.outputs}
    src = P.fresh_name(f"{name}_fp16", taken)
    for op in block.operations:
        for o in op.outputs:
            if o.name == name:
                o.name = src
    _rename_reads(block, name, src)
    out_type = P.tensor_type(MIL_pb2.FLOAT32, P.tensor_shape(vt))
    op = block.operations.add()
    op.type = "cast"
    op.inputs["x"].arguments.add().name = src
    op.inputs["dtype"].arguments.add().value.CopyFrom(P.numpy_to_value(np.array("fp32")))
    out = op.outputs.add()
    out.name = name
    out.type.CopyFrom(out_type)
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(name)))
    return out_type


def add_outputs(model, names, *, shapes=None, version=None) -> list:
    _, fn = P.single_function(model, "expose", "blobs")
    block = P.main_block(fn)
    version = version or model.specificationVersion
    types = {o.name: o.type for op in block.operations for o in op.outputs}
    problems = []
    plan = []
    for name in names:
        vt = types[name]
        why = P.feature_problem(vt, version)
        cast = False
        if why.startswith("a float16 feature"):
            why, cast = "", True
        if why:
            problems.append(f"{name!r} is {P.describe_value_type(vt)}: {why}")
        plan.append((name, vt, cast))
    if problems:
        raise UnsupportedError("expose: " + "; ".join(problems) + "; expose a value next to it that has "
                               "such a type")
    feats = []
    for name, vt, cast in plan:
        if cast:
            vt = _cast_to_fp32(block, name, vt)
        block.outputs.append(name)
        fd = Model_pb2.FeatureDescription()
        fd.name = name
        default = (shapes or {}).get(name)
        shape = P.tensor_shape(vt)
        if default is not None and len(default) != len(shape):
            raise SpecSurgeryError(f"expose: shapes[{name!r}] has {len(default)} dims but the value has "
                                   f"{len(shape)}: {P.describe_value_type(vt)}")
        fd.type.CopyFrom(P.array_feature_type(vt, default))
        model.description.output.add().CopyFrom(fd)
        feats.append(fd)
    return feats
