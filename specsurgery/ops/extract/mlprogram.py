"""``extract``'s ML Program part: the sub-program between values, as a package of its own.

Give the values that become the function's inputs and the values that become
its block outputs (top-level values of the function's block); the result
holds exactly the ops needed to compute the outputs from the inputs, consts
and ``constexpr_*`` ops included, and a weight file with exactly the blobs
those ops read.

Interface types: a value that is an original function input or output keeps
the original feature description (image inputs stay images, classifier
outputs stay classifier outputs); any other value is declared as a MultiArray
of its MIL type and shape (an unknown dimension becomes a flexible range).
"""

from __future__ import annotations

import numpy as np

from ..._proto import MIL_pb2, Model_pb2
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import WEIGHT_FILE_NAME, MLPackage, split_model, weight_key
from ...mil import blobs as B
from ...mil import program as P
from .. import _nn
from ..rename.mlprogram import rename_block

__all__ = ["extract_program"]

# MIL dtype -> ArrayFeatureType.ArrayDataType, and the spec version that allows it in a feature
_ARRAY_TYPES = {MIL_pb2.FLOAT32: (65568, 1), MIL_pb2.FLOAT64: (65600, 1), MIL_pb2.INT32: (131104, 1),
                MIL_pb2.FLOAT16: (65552, 7)}


def _is_const(op) -> bool:
    return op.type == "const" or op.type.startswith("constexpr_")


def _reads(op) -> list[str]:
    """Values ``op`` reads, its nested blocks' reads included."""
    names = [n for _, n in P.input_names(op)]
    for sub in op.blocks:
        names += [n for inner in P.iter_ops(sub) for _, n in P.input_names(inner)]
        names += list(sub.outputs)
    return names


def _function(spec):
    prog = spec.mlProgram
    if len(prog.functions) > 1 and not spec.description.defaultFunctionName:
        raise UnsupportedError(f"extract: the program has {len(prog.functions)} functions "
                               f"({', '.join(prog.functions)}) and no default function; extract works on "
                               "one function: set defaultFunctionName or keep one function")
    return P.get_function(spec)


def _function_description(spec, fname):
    for fd in spec.description.functions:
        if fd.name == fname:
            return fd
    return spec.description


def _array_feature(name: str, vt, version: int, role: str) -> "Model_pb2.FeatureDescription":
    dt, shape = P.tensor_dtype(vt), P.tensor_shape(vt)
    array = _ARRAY_TYPES.get(dt) if vt.WhichOneof("type") == "tensorType" else None
    if array is None or not shape or array[1] > version:
        why = ("a scalar has no MultiArray form" if array and not shape else
               f"a float16 feature needs spec version 7 (this model is {version})" if array else
               "Core ML features carry float32, float16, float64 or int32 tensors")
        raise UnsupportedError(f"extract: {role} value {name!r} is {P.describe_value_type(vt)}; {why}. "
                               f"Pick a value next to it that has such a type")
    fd = Model_pb2.FeatureDescription()
    fd.name = name
    ma = fd.type.multiArrayType
    ma.dataType = array[0]
    ma.shape.extend(1 if d is None else d for d in shape)
    if None in shape:
        for d in shape:
            r = ma.shapeRange.sizeRanges.add()
            r.lowerBound, r.upperBound = (1, -1) if d is None else (d, d)
    return fd


def _closure(ops, producer: dict, targets, stops: set):
    """(indexes of the ops ``targets`` need, value -> index of the first
    needed op found reading it), not crossing ``stops``."""
    need, parent = set(), {}
    todo = [(t, None) for t in targets]
    while todo:
        name, reader = todo.pop()
        parent.setdefault(name, reader)
        i = producer.get(name)
        if name in stops or i is None or i in need:
            continue
        need.add(i)
        todo.extend((n, i) for n in _reads(ops[i]))
    return need, parent


def _add_state_writes(ops, producer, need: set, parent: dict, fn_inputs, stops: set) -> None:
    """Keep the ops that write a state the kept ops read (``write_state`` has
    no outputs, so no value leads to it), with what they need."""
    states = {n for n, nvt in fn_inputs.items() if nvt.type.WhichOneof("type") == "stateType"}
    while True:
        used = {n for i in need for n in _reads(ops[i]) if n in states}
        more = [i for i, op in enumerate(ops) if i not in need and not op.outputs and used & set(_reads(op))]
        if not more:
            return
        for i in more:
            need.add(i)
            extra, found = _closure(ops, producer, _reads(ops[i]), stops)
            need |= extra
            for k, v in found.items():
                parent.setdefault(k, i if v is None else v)


def _path(ops, parent: dict, value: str) -> str:
    chain, seen = [value], set()
    i = parent.get(value)
    while i is not None and i not in seen:
        seen.add(i)
        op = ops[i]
        chain.append(f"[{op.type} {P.op_name(op)!r}]")
        if not op.outputs:
            chain[-1] += " (writes a state the outputs read)"
            break
        chain.append(op.outputs[0].name)
        i = parent.get(chain[-1])
    return " -> ".join(chain)


def _check_names(ops, producer, fn_inputs, inputs, outputs) -> None:
    missing = [v for v in inputs + outputs if v not in producer and v not in fn_inputs]
    if missing:
        nested = {o.name: op for op in ops for sub in op.blocks for inner in P.iter_ops(sub)
                  for o in inner.outputs}
        known = list(fn_inputs) + [n for n, i in producer.items() if not _is_const(ops[i])]
        message = missing_message("value", missing, known, "the ML Program") + " (extract)"
        inside = [f"{v!r} is inside the nested blocks of {nested[v].type} {P.op_name(nested[v])!r}"
                  for v in missing if v in nested]
        if inside:
            message += "; " + "; ".join(inside) + ": give the values of the function's own block"
        raise NotFoundError(message)
    consts = [v for v in inputs if v in producer and _is_const(ops[producer[v]])]
    if consts:
        raise SpecSurgeryError(f"extract: input{'s' if len(consts) > 1 else ''} {', '.join(map(repr, consts))} "
                               f"{'are consts' if len(consts) > 1 else 'is a const'}; the sub-program keeps "
                               "its consts: give computed values or function inputs as inputs")
    _nn.refuse_passthrough("extract", inputs, outputs, "a program output must be produced by an op")


def _cast(x: str, out_name: str, dtype: str, vt) -> "MIL_pb2.Operation":
    op = MIL_pb2.Operation(type="cast")
    op.inputs["x"].arguments.add().name = x
    op.inputs["dtype"].arguments.add().value.CopyFrom(P.numpy_to_value(np.array(dtype)))
    op.outputs.add(name=out_name).type.CopyFrom(vt)
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(out_name)))
    return op


def _fresh(name: str, taken: set) -> str:
    k, cand = 0, name
    while cand in taken:
        k += 1
        cand = f"{name}_{k}"
    taken.add(cand)
    return cand


def _narrow_and_widen(block, ins, outs, types, widened, taken: set) -> None:
    """Give the float16 values ``ins`` (now float32 function inputs) and
    ``outs`` (float32 block outputs) a cast on their side of the interface."""
    front, back = [], []
    for name in ins:
        inner = _fresh(f"{name}_to_fp16", taken)
        rename_block(block, name, inner)
        front.append(_cast(name, inner, "fp16", types[name]))
    for name in outs:
        inner = _fresh(f"{name}_fp16", taken)
        rename_block(block, name, inner)
        block.outputs[list(block.outputs).index(inner)] = name
        back.append(_cast(inner, name, "fp32", widened[name]))
    kept = [MIL_pb2.Operation.FromString(op.SerializeToString()) for op in block.operations]
    del block.operations[:]
    block.operations.extend(front + kept + back)


def _shell(spec, fname: str, fn):
    """(model, function, block): a copy of ``spec`` keeping function ``fname``
    and its block with their attributes, but no features, function inputs,
    ops or block outputs; the other functions are dropped."""
    out = Model_pb2.Model()
    out.CopyFrom(spec)
    desc = out.description
    for field in ("input", "output", "state", "trainingInput", "functions", "predictedFeatureName",
                  "predictedProbabilitiesName", "defaultFunctionName"):
        desc.ClearField(field)
    if fname != "main" and spec.description.defaultFunctionName:
        desc.defaultFunctionName = fname
    for other in [n for n in out.mlProgram.functions if n != fname]:
        del out.mlProgram.functions[other]
    nf = out.mlProgram.functions[fname]
    del nf.inputs[:]
    opset = fn.opset if fn.opset in fn.block_specializations else next(iter(fn.block_specializations))
    for other in [k for k in nf.block_specializations if k != opset]:
        del nf.block_specializations[other]
    nb = nf.block_specializations[opset]
    del nb.operations[:]
    del nb.outputs[:]
    return out, nf, nb


def extract_program(model, inputs: list[str], outputs: list[str], *, shapes=None, inplace: bool = False):
    """The sub-program of ``model`` (a loaded spec or MLPackage holding an ML
    Program) computing values ``outputs`` from values ``inputs``, as an
    MLPackage with exactly the weights it reads."""
    if shapes:
        raise UnsupportedError("extract: option shapes is not supported by the ML Program backend (every "
                               "program value has its type already); drop shapes=/--shapes")
    spec, pkg = split_model(model)
    src = pkg if pkg is not None else MLPackage(spec)
    if not outputs:
        raise SpecSurgeryError("extract: give at least one output value")
    fname, fn = _function(spec)
    block = P.main_block(fn)
    ops = list(block.operations)
    producer = {o.name: i for i, op in enumerate(ops) for o in op.outputs}
    fn_inputs = {i.name: i for i in fn.inputs}
    _check_names(ops, producer, fn_inputs, inputs, outputs)
    need, parent = _closure(ops, producer, outputs, set(inputs))
    _add_state_writes(ops, producer, need, parent, fn_inputs, set(inputs))
    read = {n for i in need for n in _reads(ops[i])} | set(outputs)
    leaks = [n for n in fn_inputs if n in read and n not in inputs]
    if leaks:
        raise SpecSurgeryError(
            f"extract: outputs {', '.join(map(repr, outputs))} also depend on {', '.join(map(repr, leaks))}, "
            f"which is not among the inputs {', '.join(map(repr, inputs)) or '(none)'} (path: "
            f"{'; '.join(_path(ops, parent, n) for n in leaks)}); add it to --inputs")

    desc = _function_description(spec, fname)
    originals = {f.name: f for f in list(desc.input) + list(desc.output)}
    types = {o.name: o.type for op in ops for o in op.outputs}
    types.update((n, nvt.type) for n, nvt in fn_inputs.items())
    version = spec.specificationVersion

    out, nf, nb = _shell(spec, fname, fn)
    states = {f.name: f for f in desc.state}
    for name in inputs:
        if name in states:
            out.description.state.add().CopyFrom(states[name])
    # float16 values cross a spec-6 interface as float32 (a cast each way, exact)
    widened = {n: P.tensor_type(MIL_pb2.FLOAT32, P.tensor_shape(types[n])) for n in inputs + outputs
               if n not in originals and version < 7 and P.tensor_dtype(types[n]) == MIL_pb2.FLOAT16
               and types[n].WhichOneof("type") == "tensorType"}
    iface = {**types, **widened}
    for role, names, feats in (("input", [n for n in inputs if n not in states], out.description.input),
                               ("output", outputs, out.description.output)):
        for name in names:
            original = originals.get(name)
            feats.add().CopyFrom(original if original is not None else
                                 _array_feature(name, iface[name], version, role))
    for name in inputs:
        nvt = nf.inputs.add()
        nvt.name = name
        nvt.type.CopyFrom(iface[name])
    for i in sorted(need):
        nb.operations.add().CopyFrom(ops[i])
    nb.outputs.extend(outputs)
    if widened:
        _narrow_and_widen(nb, [n for n in inputs if n in widened], [n for n in outputs if n in widened],
                          types, widened, set(types))
    for field in ("predictedFeatureName", "predictedProbabilitiesName"):
        if getattr(desc, field) in outputs:
            setattr(out.description, field, getattr(desc, field))

    weights = {}
    writer = B.rewrite_blobs(out, MLPackage(out, src.weights, src.path))
    if writer.count:
        weights[weight_key(WEIGHT_FILE_NAME)] = writer.to_weight_file()
    if inplace and pkg is not None:
        pkg.spec, pkg.weights = out, weights
        return pkg
    if inplace:
        spec.CopyFrom(out)
        out = spec
    return MLPackage(out, weights)
