"""``split_at`` for ML Programs: cut at values into a backbone and a head.

The backbone holds every op needed to compute the cut values from the
function inputs (so the image scale/bias ops ct.convert writes stay with it);
its outputs are the cut values.  The head holds the ops that compute the
program's outputs from the cut values (and any original input it reads).
Consts (and compile-time ``constexpr_*`` ops) are copied to whichever side
reads them; each side's package gets a weight file written by
:class:`~specsurgery.mil.blobs.BlobWriter` with exactly the blobs it uses.

Interface features are typed from the MIL value types: a FLOAT32/INT32 value
becomes a MultiArray of that type and shape.  A FLOAT16 value (fp16 programs)
crosses the interface as FLOAT32: the backbone casts it up and the head casts
it back down, which is exact and keeps the spec version at 6 (FLOAT16
multiarray features need 7).  A classifier's ``classify`` op stays in the head,
so the head keeps the classifier semantics and the backbone is a plain program.

Options: every value of a program has a declared type, so ``shapes`` can only
fill the dims the program leaves unknown (the default shape of a flexible cut
feature); Core ML trains neural networks only, so ``drop_updatable`` is a
no-op on a program that is not marked updatable and ``freeze_backbone`` (which
keeps a head trainable on device) is refused by name.

The helpers here that read a program (:func:`as_package`,
:func:`single_function`, :func:`closure`, :func:`is_const`, :func:`reads`) are
shared with ``suggest_cuts`` (:mod:`specsurgery.ops.cuts.mlprogram`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..._proto import MIL_pb2, Model_pb2
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import MLPackage, load, split_model
from ...mil import blobs as B
from ...mil import program as P
from .. import _nn
from ..rename.mlprogram import rename_block

CONST_OPS = {"const"}
MIL_TO_ARRAY = {MIL_pb2.FLOAT32: 65568, MIL_pb2.FLOAT16: 65552, MIL_pb2.FLOAT64: 65600,
                MIL_pb2.INT32: 131104}
FP16_SUFFIX = "__fp16"


def is_const(op) -> bool:
    return op.type in CONST_OPS or op.type.startswith("constexpr_")


def as_package(model) -> MLPackage:
    loaded = load(model)
    spec, pkg = split_model(loaded)
    if P.program_of(spec) is None:  # pragma: no cover - program_of raises
        raise UnsupportedError("not an ML Program")
    return pkg if pkg is not None else MLPackage(spec)


def single_function(spec, what):
    prog = spec.mlProgram
    if len(prog.functions) != 1 and not spec.description.defaultFunctionName:
        raise UnsupportedError(f"{what}: the program has {len(prog.functions)} functions; split works on "
                               "single-function ML Programs (extract one function first)")
    return P.get_function(spec)


def closure(ops, producer_idx, targets, stop: set) -> set:
    """Indexes of ops needed to compute ``targets``, not crossing ``stop`` values."""
    need, todo = set(), [t for t in targets if t not in stop]
    while todo:
        name = todo.pop()
        i = producer_idx.get(name)
        if i is None or i in need:
            continue
        need.add(i)
        op = ops[i]
        reads = [n for _, n in P.input_names(op)]
        for sub in op.blocks:
            reads += [n for inner in P.iter_ops(sub) for _, n in P.input_names(inner)]
        todo.extend(n for n in reads if n not in stop)
    return need


def _feature_for(name, value_type, where, default=None) -> "Model_pb2.FeatureDescription":
    """A MultiArray feature for a value; dims the program leaves unknown get a
    1..unbounded range and their size in ``default`` (else 1) as default shape."""
    fd = Model_pb2.FeatureDescription()
    fd.name = name
    dt = P.tensor_dtype(value_type)
    shape = P.tensor_shape(value_type)
    if dt not in MIL_TO_ARRAY or shape is None:
        raise UnsupportedError(f"{where}: cut value {name!r} is {P.describe_value_type(value_type)}; a cut "
                               "value must be a float32, float16 or int32 tensor")
    ma = fd.type.multiArrayType
    ma.dataType = MIL_TO_ARRAY[dt]
    if None in shape:
        for k, d in enumerate(shape):
            r = ma.shapeRange.sizeRanges.add()
            r.lowerBound, r.upperBound = (1, -1) if d is None else (d, d)
            ma.shape.append(d if d is not None else default[k] if default else 1)
    else:
        ma.shape.extend(shape)
    return fd


def _cast_op(x: str, out_name: str, dtype: str, out_type) -> "MIL_pb2.Operation":
    op = MIL_pb2.Operation()
    op.type = "cast"
    op.inputs["x"].arguments.add().name = x
    op.inputs["dtype"].arguments.add().value.CopyFrom(P.numpy_to_value(np.array(dtype)))
    o = op.outputs.add()
    o.name = out_name
    o.type.CopyFrom(out_type)
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(out_name)))
    return op


_IFACE_DTYPE = {MIL_pb2.FLOAT16: MIL_pb2.FLOAT32, MIL_pb2.BOOL: MIL_pb2.INT32,
                MIL_pb2.INT64: MIL_pb2.INT32, MIL_pb2.INT8: MIL_pb2.INT32, MIL_pb2.INT16: MIL_pb2.INT32,
                MIL_pb2.UINT8: MIL_pb2.INT32, MIL_pb2.UINT16: MIL_pb2.INT32}
_CAST_NAME = {MIL_pb2.FLOAT16: "fp16", MIL_pb2.FLOAT32: "fp32", MIL_pb2.BOOL: "bool",
              MIL_pb2.INT32: "int32", MIL_pb2.INT64: "int64", MIL_pb2.INT8: "int8",
              MIL_pb2.INT16: "int16", MIL_pb2.UINT8: "uint8", MIL_pb2.UINT16: "uint16"}


def _interface_type(vt, where, name):
    """The type a cut value has as a feature: float32/int32 arrays of rank >= 1
    (fp16 crosses as fp32, bool and small ints as int32, a scalar as [1])."""
    dt, shape = P.tensor_dtype(vt), P.tensor_shape(vt)
    if dt is None or shape is None or vt.WhichOneof("type") != "tensorType":
        raise UnsupportedError(f"{where}: cut value {name!r} is {P.describe_value_type(vt)}; a cut value "
                               "must be a tensor")
    if dt not in MIL_TO_ARRAY and dt not in _IFACE_DTYPE:
        raise UnsupportedError(f"{where}: cut value {name!r} is {P.describe_value_type(vt)}; Core ML "
                               "features cannot carry that dtype")
    return P.tensor_type(_IFACE_DTYPE.get(dt, dt), shape if len(shape) else (1,))


def _reshape_op(x: str, out_name: str, shape, out_type) -> "MIL_pb2.Operation":
    op = MIL_pb2.Operation()
    op.type = "reshape"
    op.inputs["x"].arguments.add().name = x
    op.inputs["shape"].arguments.add().value.CopyFrom(P.numpy_to_value(np.array(shape, dtype=np.int32)))
    o = op.outputs.add()
    o.name = out_name
    o.type.CopyFrom(out_type)
    op.attributes["name"].CopyFrom(P.numpy_to_value(np.array(out_name)))
    return op


def _adapters(src: str, dst: str, from_t, to_t, taken: set) -> list:
    """Ops turning value ``src`` of type ``from_t`` into ``dst`` of type ``to_t``
    (a cast and/or a reshape between a scalar and [1]); exact both ways."""
    ops, cur = [], src
    fdt, tdt = P.tensor_dtype(from_t), P.tensor_dtype(to_t)
    fshape, tshape = P.tensor_shape(from_t), P.tensor_shape(to_t)
    need_reshape = len(fshape) != len(tshape)
    if fdt != tdt:
        out = _fresh(dst + "__cast", taken) if need_reshape else dst
        ops.append(_cast_op(cur, out, _CAST_NAME[tdt], P.tensor_type(tdt, fshape)))
        cur = out
    if need_reshape:
        ops.append(_reshape_op(cur, dst, [d if d is not None else -1 for d in tshape] if tshape else [],
                               to_t))
    return ops


def _fresh(name: str, taken: set) -> str:
    return P.fresh_name(name, taken, first=1)


def _new_program_spec(spec, fname, fn, ops, inputs, outputs, *, keep_classifier: bool):
    """A copy of ``spec`` whose program has one function ``fname`` made of ``ops``."""
    out = Model_pb2.Model()
    out.specificationVersion = spec.specificationVersion
    out.description.metadata.CopyFrom(spec.description.metadata)
    out.mlProgram.version = spec.mlProgram.version
    for k, v in spec.mlProgram.attributes.items():
        out.mlProgram.attributes[k].CopyFrom(v)
    nf = out.mlProgram.functions[fname]
    nf.opset = fn.opset
    for k, v in fn.attributes.items():
        nf.attributes[k].CopyFrom(v)
    for nvt in inputs:
        nf.inputs.add().CopyFrom(nvt)
    block = nf.block_specializations[fn.opset]
    for op in ops:
        block.operations.add().CopyFrom(op)
    block.outputs.extend(outputs)
    if keep_classifier:
        out.description.predictedFeatureName = spec.description.predictedFeatureName
        out.description.predictedProbabilitiesName = spec.description.predictedProbabilitiesName
    return out


def split_at(model, cuts: Sequence[str], *, shapes=None, freeze_backbone: bool = False,
             drop_updatable: bool = False) -> tuple[MLPackage, MLPackage]:
    """(backbone, head) MLPackages of an ML Program cut at the values ``cuts``
    (see :func:`specsurgery.ops.split.split_at`); ``model`` is not edited."""
    if freeze_backbone:
        raise UnsupportedError(
            "split_at: option 'freeze_backbone' (--freeze-backbone) is not supported for ML Programs: it "
            "keeps the head trainable on device, and Core ML trains neural networks only (an ML Program "
            "has no updatable layers to freeze); leave the option out")
    src = as_package(model)
    if src.spec.isUpdatable:
        if not drop_updatable:
            raise UnsupportedError(
                "split_at: the ML Program is marked updatable, which Core ML supports for neural networks "
                "only, and neither half can keep the mark; pass drop_updatable=True (--drop-updatable) to "
                "make both halves plain prediction models")
        _nn.note("split: dropped the updatable mark of the ML Program (Core ML trains neural networks "
                 "only); predictions are unchanged")
    return split_program(src, cuts, shapes=shapes)


def _given_shapes(values, value_types, shapes) -> dict:
    """{value: default shape} from ``shapes``, which may only fill the dims
    the program leaves unknown."""
    out = {}
    for v in values:
        if not shapes or v not in shapes:
            continue
        declared = P.tensor_shape(_interface_type(value_types[v], "split", v))
        given = [int(d) for d in shapes[v]]
        if not given and declared == (1,):
            given = [1]          # a scalar crosses the cut as [1]
        if len(given) != len(declared) or any(g < 1 for g in given) \
                or any(d is not None and d != g for d, g in zip(declared, given)):
            raise SpecSurgeryError(
                f"split: shapes gives cut value {v!r} the shape {given}, but the ML Program declares it "
                f"{P.describe_value_type(value_types[v])}; the program types every value, so a shape can "
                "only fill the dims it leaves unknown ('?'): give the declared dims as they are")
        out[v] = given
    return out


def split_program(model, values: Sequence[str], *, shapes=None) -> tuple[MLPackage, MLPackage]:
    """(backbone, head) MLPackages of an ML Program cut at ``values`` (value names);
    ``shapes`` ({value: dims}) gives the default shape of cut values with unknown dims."""
    src = as_package(model)
    spec = src.spec
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise SpecSurgeryError("split: give at least one blob to cut at")
    fname, fn = single_function(spec, "split")
    block = P.main_block(fn)
    ops = list(block.operations)
    producer_idx = {o.name: i for i, op in enumerate(ops) for o in op.outputs}
    fn_inputs = {i.name: i for i in fn.inputs}
    missing = [v for v in values if v not in producer_idx and v not in fn_inputs]
    if missing:
        raise NotFoundError(missing_message("value", missing,
                                            [n for n in producer_idx if not is_const(ops[producer_idx[n]])],
                                            "the ML Program"))
    at_input = [v for v in values if v in fn_inputs]
    if at_input:
        raise SpecSurgeryError(f"split: {', '.join(map(repr, at_input))} "
                               f"{'are function inputs' if len(at_input) > 1 else 'is a function input'}; "
                               "cut at a value some op computes")
    at_const = [v for v in values if is_const(ops[producer_idx[v]])]
    if at_const:
        raise SpecSurgeryError(f"split: {', '.join(map(repr, at_const))} "
                               f"{'are consts' if len(at_const) > 1 else 'is a const'}; cut at a computed value")
    outputs = list(block.outputs)
    stop = set(values) | set(fn_inputs)
    bb_idx = closure(ops, producer_idx, values, set(fn_inputs))
    head_idx = closure(ops, producer_idx, outputs, stop)
    shared = sorted(i for i in bb_idx & head_idx if not is_const(ops[i]))
    if shared:
        op = ops[shared[0]]
        out = next((o for o in outputs if shared[0] in closure(ops, producer_idx, [o], stop)), outputs[0])
        raise SpecSurgeryError(
            f"split: the cut {', '.join(values)} does not separate the program: {op.type} "
            f"{P.op_name(op)!r} (producing {op.outputs[0].name!r}) is needed by the backbone and, bypassing "
            f"the cut, by output {out!r}; add {op.outputs[0].name!r} (or a later value on that path) to the cut")
    head_real = [i for i in head_idx if not is_const(ops[i])]
    if not head_real:
        raise SpecSurgeryError(f"split: cutting at {', '.join(values)} leaves the head empty (the cut values "
                               "are the outputs); cut earlier")
    bb_outputs_missing = [o for o in outputs if o in producer_idx and producer_idx[o] in bb_idx
                          and o not in values]
    if bb_outputs_missing:
        raise SpecSurgeryError(f"split: output{'s' if len(bb_outputs_missing) > 1 else ''} "
                               f"{', '.join(map(repr, bb_outputs_missing))} computed before the cut; add "
                               "them to the cut values")
    value_types = {o.name: o.type for op in ops for o in op.outputs}
    defaults = _given_shapes(values, value_types, shapes)
    # --- backbone
    bb_ops = [ops[i] for i in sorted(bb_idx)]
    bb_inputs_used = reads(bb_ops) & set(fn_inputs)
    bb_in = [fn_inputs[n] for n in fn_inputs if n in bb_inputs_used]
    backbone = _new_program_spec(spec, fname, fn, bb_ops, bb_in, values, keep_classifier=False)
    bblock = backbone.mlProgram.functions[fname].block_specializations[fn.opset]
    taken = set(producer_idx) | set(fn_inputs)
    for f in spec.description.input:
        if f.name in bb_inputs_used:
            backbone.description.input.add().CopyFrom(f)
    for v in values:
        vt = value_types[v]
        it = _interface_type(vt, "split", v)
        backbone.description.output.add().CopyFrom(_feature_for(v, it, "split", defaults.get(v)))
        if it == vt:
            continue
        inner = _fresh(v + FP16_SUFFIX, taken)
        rename_block(bblock, v, inner)          # the op computes ``inner``; adapters make ``v`` of it
        bblock.outputs[list(bblock.outputs).index(inner)] = v
        for adapter in _adapters(inner, v, vt, it, taken):
            bblock.operations.add().CopyFrom(adapter)
    # --- head
    head_ops = [ops[i] for i in sorted(head_idx)]
    head_reads = reads(head_ops)
    head_in = []
    pre_ops = []
    for v in values:
        if v not in head_reads:
            continue
        nvt = MIL_pb2.NamedValueType()
        nvt.name = v
        vt = value_types[v]
        it = _interface_type(vt, "split", v)
        nvt.type.CopyFrom(it)
        if it != vt:
            inner = _fresh(v + FP16_SUFFIX, taken)
            pre_ops.append((v, inner, vt, it))
        head_in.append(nvt)
    unused = [v for v in values if v not in head_reads]
    if unused:
        raise SpecSurgeryError(f"split: the head does not read cut value{'s' if len(unused) > 1 else ''} "
                               f"{', '.join(map(repr, unused))}; drop {'them' if len(unused) > 1 else 'it'} "
                               "from the cut")
    head_in += [fn_inputs[n] for n in fn_inputs if n in head_reads]
    is_classifier = bool(spec.description.predictedFeatureName)
    head = _new_program_spec(spec, fname, fn, head_ops, head_in, outputs, keep_classifier=is_classifier)
    hblock = head.mlProgram.functions[fname].block_specializations[fn.opset]
    for v, inner, vt, it in pre_ops:
        rename_block(hblock, v, inner)
        new_ops = _adapters(v, inner, it, vt, taken) + [
            MIL_pb2.Operation.FromString(o.SerializeToString()) for o in hblock.operations]
        del hblock.operations[:]
        for o in new_ops:
            hblock.operations.add().CopyFrom(o)
    for v in values:
        if v in head_reads:
            head.description.input.add().CopyFrom(
                _feature_for(v, _interface_type(value_types[v], "split", v), "split", defaults.get(v)))
    for f in spec.description.input:
        if f.name in head_reads:
            head.description.input.add().CopyFrom(f)
    for f in spec.description.output:
        head.description.output.add().CopyFrom(f)
    return _package(backbone, src), _package(head, src)


def reads(ops) -> set:
    out = set()
    for op in ops:
        out |= {n for _, n in P.input_names(op)}
        for sub in op.blocks:
            out |= {n for inner in P.iter_ops(sub) for _, n in P.input_names(inner)}
    return out


def _package(spec, source: MLPackage) -> MLPackage:
    """``spec`` as a package whose weight file holds exactly the blobs it reads."""
    writer = B.rewrite_blobs(spec, source)
    pkg = MLPackage(spec, {}, None, {})
    if writer.count:
        pkg.weights = {"weights/weight.bin": writer.to_weight_file()}
    return pkg


__all__ = ["split_at", "split_program", "as_package", "single_function", "closure", "is_const", "reads"]
