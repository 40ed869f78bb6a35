"""Helpers over an ML Program (``MIL_pb2.Program``): functions, blocks, ops,
value types, const values, producers and consumers.

These are read-only views of the proto; nothing here keeps a second copy of
the model.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterator, Optional

import numpy as np

from .._proto import MIL_pb2
from ..errors import NotFoundError, UnsupportedError, missing_message
from . import blobs

DT = MIL_pb2.DataType
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_@]*$")

# MIL dtype -> numpy dtype used to hold one element in memory
NP_DTYPES = {
    MIL_pb2.BOOL: np.bool_, MIL_pb2.FLOAT16: np.float16, MIL_pb2.FLOAT32: np.float32,
    MIL_pb2.FLOAT64: np.float64, MIL_pb2.INT8: np.int8, MIL_pb2.INT16: np.int16,
    MIL_pb2.INT32: np.int32, MIL_pb2.INT64: np.int64, MIL_pb2.INT4: np.int8,
    MIL_pb2.UINT8: np.uint8, MIL_pb2.UINT16: np.uint16, MIL_pb2.UINT32: np.uint32,
    MIL_pb2.UINT64: np.uint64, MIL_pb2.UINT4: np.uint8, MIL_pb2.UINT2: np.uint8,
    MIL_pb2.UINT1: np.uint8, MIL_pb2.UINT6: np.uint8, MIL_pb2.UINT3: np.uint8,
    MIL_pb2.STRING: object,
}
SUBBYTE_BITS = {MIL_pb2.INT4: 4, MIL_pb2.UINT4: 4, MIL_pb2.UINT2: 2, MIL_pb2.UINT1: 1,
                MIL_pb2.UINT6: 6, MIL_pb2.UINT3: 3}
# numpy dtype name -> MIL dtype
NP_TO_MIL = {"bool": MIL_pb2.BOOL, "float16": MIL_pb2.FLOAT16, "float32": MIL_pb2.FLOAT32,
             "float64": MIL_pb2.FLOAT64, "int8": MIL_pb2.INT8, "int16": MIL_pb2.INT16,
             "int32": MIL_pb2.INT32, "int64": MIL_pb2.INT64, "uint8": MIL_pb2.UINT8,
             "uint16": MIL_pb2.UINT16, "uint32": MIL_pb2.UINT32}


def dtype_name(dt: int) -> str:
    try:
        return DT.Name(dt).lower()
    except ValueError:
        return f"dtype{dt}"


# --------------------------------------------------------------------------- functions and blocks

def program_of(spec):
    if spec.WhichOneof("Type") != "mlProgram":
        raise UnsupportedError(f"expected an mlProgram model, got {spec.WhichOneof('Type') or 'no model type'}")
    return spec.mlProgram


def function_names(spec) -> list[str]:
    return list(program_of(spec).functions.keys())


def default_function(spec) -> str:
    prog = program_of(spec)
    name = spec.description.defaultFunctionName or "main"
    if name not in prog.functions and len(prog.functions) == 1:
        name = next(iter(prog.functions))
    return name


def get_function(spec, function: Optional[str] = None):
    """(name, MIL_pb2.Function); ``function`` None means the default (``main``)."""
    prog = program_of(spec)
    name = function or default_function(spec)
    if name not in prog.functions:
        raise NotFoundError(missing_message("function", [name], prog.functions.keys(), "the ML Program")
                            + f"; functions: {', '.join(prog.functions)}")
    return name, prog.functions[name]


def single_function(spec, verb: str, option: str):
    """``get_function`` for a verb that edits one function: a multifunction
    program is refused, naming the verb and its ``option``."""
    names = function_names(spec)
    if len(names) > 1:
        raise UnsupportedError(
            f"{verb}: this ML Program has {len(names)} functions ({', '.join(names)}); {verb} on a "
            f"multifunction program is not supported (option {option!r} on backend mlProgram): run "
            f"{verb} on each function's model before the functions are merged")
    return get_function(spec)


def fresh_name(base: str, taken: set, sep: str = "_", first: int = 2) -> str:
    """``base``, or ``base<sep><first>``, ``base<sep><first + 1>``... whichever
    ``taken`` lacks (then added to it)."""
    name, k = base, first - 1
    while name in taken:
        k += 1
        name = f"{base}{sep}{k}"
    taken.add(name)
    return name


def main_block(function):
    """The block a function runs: the one specialised for its opset."""
    if function.opset in function.block_specializations:
        return function.block_specializations[function.opset]
    if len(function.block_specializations) == 1:
        return next(iter(function.block_specializations.values()))
    raise NotFoundError(f"function has no block for its opset {function.opset!r} "
                        f"(blocks: {sorted(function.block_specializations)})")


def iter_ops(block, recursive: bool = True) -> Iterator:
    for op in block.operations:
        yield op
        if recursive:
            for sub in op.blocks:
                yield from iter_ops(sub, True)


def iter_functions(spec):
    prog = program_of(spec)
    for name, fn in prog.functions.items():
        yield name, fn


def op_name(op) -> str:
    """An op's name (its ``name`` attribute), else its first output's name."""
    attr = op.attributes.get("name") if "name" in op.attributes else None
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return attr.immediateValue.tensor.strings.values[0]
    return op.outputs[0].name if op.outputs else op.type


def input_names(op) -> list[tuple[str, str]]:
    """(argument, value name) for every name-bound input of ``op``."""
    out = []
    for arg, argument in op.inputs.items():
        for binding in argument.arguments:
            if binding.WhichOneof("binding") == "name":
                out.append((arg, binding.name))
    return out


def producers(block) -> dict[str, object]:
    """value name -> the op (top level of ``block``) that defines it."""
    return {o.name: op for op in block.operations for o in op.outputs}


def consumers(block) -> dict[str, list]:
    """value name -> ops of ``block`` that read it (nested blocks count for their parent op)."""
    out: dict[str, list] = defaultdict(list)
    for op in block.operations:
        names = {n for _, n in input_names(op)}
        for sub in op.blocks:
            names |= {n for inner in iter_ops(sub) for _, n in input_names(inner)}
        for n in names:
            out[n].append(op)
    return dict(out)


# --------------------------------------------------------------------------- types

def tensor_shape(value_type) -> Optional[tuple]:
    """Shape of a tensor ValueType (None for an unknown dimension), or None if not a tensor."""
    if value_type.WhichOneof("type") != "tensorType":
        return None
    tt = value_type.tensorType
    return tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None
                 for d in tt.dimensions)


def tensor_dtype(value_type) -> Optional[int]:
    if value_type.WhichOneof("type") == "tensorType":
        return value_type.tensorType.dataType
    if value_type.WhichOneof("type") == "stateType":
        return value_type.stateType.wrappedType.tensorType.dataType
    return None


def describe_value_type(value_type) -> str:
    kind = value_type.WhichOneof("type")
    if kind == "tensorType":
        shape = tensor_shape(value_type)
        dims = ",".join("?" if d is None else str(d) for d in shape)
        return f"tensor<{dtype_name(value_type.tensorType.dataType)},[{dims}]>"
    if kind == "stateType":
        return "state<" + describe_value_type(value_type.stateType.wrappedType) + ">"
    return kind or "untyped"


def tensor_type(dtype: int, shape) -> "MIL_pb2.ValueType":
    vt = MIL_pb2.ValueType()
    tt = vt.tensorType
    tt.dataType = dtype
    tt.rank = len(shape)
    for d in shape:
        dim = tt.dimensions.add()
        if d is None or d < 0:
            dim.unknown.variadic = False
        else:
            dim.constant.size = int(d)
    return vt


#: MIL tensor dtype -> (ArrayFeatureType dataType, first spec version a feature may carry it)
FEATURE_DTYPES = {MIL_pb2.FLOAT32: (65568, 1), MIL_pb2.FLOAT64: (65600, 1), MIL_pb2.INT32: (131104, 1),
                  MIL_pb2.FLOAT16: (65552, 7)}


def feature_problem(value_type, version: int) -> str:
    """Why a value of this type cannot be a model feature at ``version`` ('' when it can)."""
    dt, shape = tensor_dtype(value_type), tensor_shape(value_type)
    entry = FEATURE_DTYPES.get(dt) if value_type.WhichOneof("type") == "tensorType" else None
    if entry is None:
        return "Core ML features carry float32, float16, float64 or int32 tensors"
    if not shape:
        return "a scalar has no MultiArray form"
    if entry[1] > version:
        return f"a float16 feature needs spec version 7 (this model is {version})"
    return ""


def array_feature_type(value_type, default_shape=None):
    """The MultiArray FeatureType of a tensor value: its dtype and shape; dims the
    program leaves unknown get a 1..unbounded range, with their size in
    ``default_shape`` (else 1) as the default shape.  Check
    :func:`feature_problem` first."""
    from .._proto import FeatureTypes_pb2

    ft = FeatureTypes_pb2.FeatureType()
    ma = ft.multiArrayType
    ma.dataType = FEATURE_DTYPES[tensor_dtype(value_type)][0]
    shape = tensor_shape(value_type)
    ma.shape.extend(d if d is not None else (default_shape[k] if default_shape else 1)
                    for k, d in enumerate(shape))
    if None in shape:
        for d in shape:
            r = ma.shapeRange.sizeRanges.add()
            r.lowerBound, r.upperBound = (1, -1) if d is None else (d, d)
    return ft


# --------------------------------------------------------------------------- values

def immediate_to_numpy(value) -> np.ndarray:
    """The array an ``immediateValue`` holds, typed and shaped per ``value.type``."""
    vt = value.type
    if value.immediateValue.WhichOneof("value") == "list":
        items = [immediate_to_numpy(v) for v in value.immediateValue.list.values]
        if items and all(i.dtype == object for i in items):
            return np.array([i.reshape(-1)[0] if i.size == 1 else i for i in items], dtype=object)
        return np.array(items)
    if vt.WhichOneof("type") != "tensorType":
        kind = value.immediateValue.WhichOneof("value")
        raise UnsupportedError(f"immediate value of type {vt.WhichOneof('type') or kind} is not supported")
    dt = vt.tensorType.dataType
    shape = tensor_shape(vt)
    tv = value.immediateValue.tensor
    which = tv.WhichOneof("value")
    if which == "bytes":
        raw = bytes(tv.bytes.values)
        if dt in SUBBYTE_BITS:
            count = int(np.prod([d or 0 for d in shape])) if shape else 1
            arr = blobs.unpack_subbyte(np.frombuffer(raw, np.uint8), SUBBYTE_BITS[dt], count,
                                       signed=dt == MIL_pb2.INT4)
        else:
            arr = np.frombuffer(raw, dtype=NP_DTYPES[dt])
    elif which is None:
        arr = np.zeros(0, dtype=NP_DTYPES.get(dt, np.float32))
    else:
        vals = list(getattr(tv, which).values)
        if dt == MIL_pb2.STRING:
            arr = np.array(vals, dtype=object)
        else:
            arr = np.array(vals).astype(NP_DTYPES.get(dt, np.float32))
    if shape is None or any(d is None for d in shape):
        return arr
    if len(shape) == 0:
        return arr.reshape(()) if arr.size == 1 else arr
    return arr.reshape(shape)


def blob_to_numpy(value, package) -> np.ndarray:
    vt = value.type
    bfv = value.blobFileValue
    src = blobs.blob_source(package, bfv.fileName)
    rec, raw = blobs.raw_bytes(src, bfv.offset)
    dt = tensor_dtype(vt)
    expected = blobs.MIL_TO_BLOB.get(dt)
    if expected is not None and expected != rec.dtype:
        raise blobs.BlobError(
            f"blob at offset {bfv.offset} of {bfv.fileName} holds {rec.dtype_name} data but the "
            f"value is typed {dtype_name(dt)}")
    arr = blobs.decode(rec, raw)
    if dt in NP_DTYPES and dt not in SUBBYTE_BITS and arr.dtype != NP_DTYPES[dt]:
        arr = arr.view(NP_DTYPES[dt])
    shape = tensor_shape(vt)
    if shape is not None and all(d is not None for d in shape):
        n = int(np.prod(shape)) if shape else 1
        arr = arr[:n].reshape(shape)
    return arr


def value_to_numpy(value, package=None) -> np.ndarray:
    """A ``MIL_pb2.Value`` as numpy (immediate, or read from the blob file)."""
    which = value.WhichOneof("value")
    if which == "immediateValue":
        return immediate_to_numpy(value)
    if which == "blobFileValue":
        return blob_to_numpy(value, package)
    raise UnsupportedError("MIL value without immediateValue or blobFileValue")


def numpy_to_value(array, dtype: Optional[int] = None) -> "MIL_pb2.Value":
    """An immediate ``MIL_pb2.Value`` holding ``array``."""
    array = np.asarray(array)
    if dtype is None:
        if array.dtype.kind in "US" or array.dtype == object:
            dtype = MIL_pb2.STRING
        else:
            dtype = NP_TO_MIL[array.dtype.name]
    value = MIL_pb2.Value()
    value.type.CopyFrom(tensor_type(dtype, array.shape))
    tv = value.immediateValue.tensor
    flat = array.reshape(-1)
    if dtype == MIL_pb2.STRING:
        tv.strings.values.extend(str(x) for x in flat)
    elif dtype == MIL_pb2.FLOAT32:
        tv.floats.values.extend(flat.astype(np.float32).tolist())
    elif dtype == MIL_pb2.FLOAT64:
        tv.doubles.values.extend(flat.astype(np.float64).tolist())
    elif dtype == MIL_pb2.BOOL:
        tv.bools.values.extend(bool(x) for x in flat)
    elif dtype == MIL_pb2.INT32:
        tv.ints.values.extend(int(x) for x in flat)
    elif dtype == MIL_pb2.INT64:
        tv.longInts.values.extend(int(x) for x in flat)
    else:
        tv.bytes.values = flat.astype(NP_DTYPES[dtype]).tobytes()
    return value


def const_value(op, package=None) -> np.ndarray:
    """The value of a ``const`` op."""
    if "val" not in op.attributes:
        raise UnsupportedError(f"const op {op_name(op)!r} has no 'val' attribute")
    return value_to_numpy(op.attributes["val"], package)


def blob_refs(spec):
    """(function, op, attribute/argument name, Value) for every blobFileValue,
    in a stable order (functions by name, ops in order, keys sorted)."""
    prog = program_of(spec)
    for fname in sorted(prog.functions):
        fn = prog.functions[fname]
        for opset in sorted(fn.block_specializations):
            for op in iter_ops(fn.block_specializations[opset]):
                for key in sorted(op.attributes):
                    value = op.attributes[key]
                    if value.WhichOneof("value") == "blobFileValue":
                        yield fname, op, key, value
                for key in sorted(op.inputs):
                    for b in op.inputs[key].arguments:
                        if b.WhichOneof("binding") == "value" and b.value.WhichOneof("value") == "blobFileValue":
                            yield fname, op, key, b.value


__all__ = [
    "IDENTIFIER", "NP_DTYPES", "NP_TO_MIL", "SUBBYTE_BITS", "dtype_name", "program_of",
    "function_names", "default_function", "get_function", "main_block", "iter_ops",
    "iter_functions", "op_name", "input_names", "producers", "consumers", "tensor_shape",
    "tensor_dtype", "describe_value_type", "tensor_type", "immediate_to_numpy", "blob_to_numpy",
    "value_to_numpy", "numpy_to_value", "const_value", "blob_refs",
]
