"""ML Program rules the open validator skips (docs/mlprogram.md lists them).

``check_program(spec, package, path) -> list[Finding]`` is called by
``specsurgery.check.check`` for every mlProgram model (pipeline stages too).
``package`` is the :class:`~specsurgery.io.MLPackage` holding the weight files
(None for a bare spec: blob references are then reported as unresolvable).

Rule ids (all under ``mlprogram.``): ``no-functions``, ``function-missing``,
``identifier``, ``interface-state``, ``opset``, ``opset-version``, ``multifunction-version``,
``no-block``, ``undefined-value``, ``duplicate-value``, ``untyped-output``,
``const-type``, ``cast-type``, ``block-output``, ``interface-input``,
``interface-output``, ``blob-file-missing``, ``blob-no-package``, ``blob-bad``,
``blob-dtype``, ``blob-size``, ``blob-count``, ``blob-unused`` (info).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

from .._proto import MIL_pb2
from ..errors import SpecSurgeryError
from ..mil import blobs as B
from ..mil import program as P
from .findings import Findings, join

OPSET_VERSIONS = {"CoreML3": 4, "CoreML4": 5, "CoreML5": 6, "CoreML6": 7, "CoreML7": 8,
                  "CoreML8": 9, "CoreML9": 10}

# FeatureTypes ArrayDataType -> MIL dtype
ARRAY_TO_MIL = {65552: MIL_pb2.FLOAT16, 65568: MIL_pb2.FLOAT32, 65600: MIL_pb2.FLOAT64,
                131104: MIL_pb2.INT32, 131080: MIL_pb2.INT8}
_CAST_NAMES = {"fp16": MIL_pb2.FLOAT16, "fp32": MIL_pb2.FLOAT32, "fp64": MIL_pb2.FLOAT64,
               "int32": MIL_pb2.INT32, "int64": MIL_pb2.INT64, "int16": MIL_pb2.INT16,
               "int8": MIL_pb2.INT8, "uint8": MIL_pb2.UINT8, "uint16": MIL_pb2.UINT16,
               "bool": MIL_pb2.BOOL}


def check_program(spec, package, path: str = "") -> list:
    out = Findings(path)
    prog = spec.mlProgram
    version = spec.specificationVersion
    if len(prog.functions) == 0:
        out.error("mlProgram", "mlprogram.no-functions",
                  "the ML Program has no functions; it needs at least 'main'")
        return list(out)
    desc = spec.description
    multifunction = len(desc.functions) > 0 or bool(desc.defaultFunctionName)
    if len(prog.functions) > 1 or multifunction:
        if version and version < 9:
            out.error("mlProgram", "mlprogram.multifunction-version",
                      f"a multifunction ML Program ({len(prog.functions)} functions: "
                      f"{', '.join(prog.functions)}) needs specificationVersion 9 (iOS 18, macOS 15) "
                      f"or later, but declares {version}; raise it to 9 or keep one function")
        if not multifunction:
            out.error("mlProgram", "mlprogram.function-missing",
                      f"the program has {len(prog.functions)} functions but the description lists no "
                      "functions; set description.functions and defaultFunctionName")
    elif "main" not in prog.functions:
        out.error("mlProgram", "mlprogram.function-missing",
                  f"a single-function ML Program must name its function 'main' (found "
                  f"{', '.join(prog.functions)})")
    for fname, fn in prog.functions.items():
        _check_function(spec, package, fname, fn, version, multifunction, out)
    _check_blobs(spec, package, out)
    return list(out)


def _identifier(name, where, out):
    if not P.IDENTIFIER.match(name or ""):
        out.error(where, "mlprogram.identifier",
                  f"{name!r} is not a valid MIL identifier ([A-Za-z_][A-Za-z0-9_@]*); rename it")


def _check_function(spec, package, fname, fn, version, multifunction, out):
    where = f"function:{fname}"
    _identifier(fname, where, out)
    need = OPSET_VERSIONS.get(fn.opset)
    if need is None:
        out.error(where, "mlprogram.opset",
                  f"function {fname!r} has opset {fn.opset!r}; known opsets: {', '.join(OPSET_VERSIONS)}")
    elif version and version < need:
        out.error(where, "mlprogram.opset-version",
                  f"function {fname!r} uses opset {fn.opset}, which needs specificationVersion "
                  f"{need}, but the model declares {version}; raise it to {need}")
    if not fn.block_specializations:
        out.error(where, "mlprogram.no-block", f"function {fname!r} has no block")
        return
    if fn.opset not in fn.block_specializations:
        out.error(where, "mlprogram.no-block",
                  f"function {fname!r} has no block for its opset {fn.opset!r} (blocks: "
                  f"{', '.join(fn.block_specializations)})")
    types: dict[str, object] = {}
    for inp in fn.inputs:
        _identifier(inp.name, join(where, f"input:{inp.name}"), out)
        types[inp.name] = inp.type
    for opset, block in fn.block_specializations.items():
        _check_block(block, dict(types), join(where, f"block:{opset}"), out)
    block = fn.block_specializations.get(fn.opset) or next(iter(fn.block_specializations.values()))
    _check_interface(spec, fname, fn, block, multifunction, where, out)


def _check_block(block, types: dict, where: str, out):
    defined = set(types)
    for inp in block.inputs:
        defined.add(inp.name)
        types[inp.name] = inp.type
    undefined: dict[str, list[str]] = {}
    for op in block.operations:
        opname = P.op_name(op)
        for arg, name in P.input_names(op):
            if name not in defined:
                undefined.setdefault(name, []).append(f"{op.type} {opname!r}.{arg}")
        for sub in op.blocks:
            _check_block(sub, dict(types), join(where, f"op:{opname}/block"), out)
        for o in op.outputs:
            _identifier(o.name, join(where, f"op:{opname}"), out)
            if o.name in defined:
                out.error(join(where, f"op:{opname}"), "mlprogram.duplicate-value",
                          f"value {o.name!r} is defined twice (second time by {op.type} {opname!r}); "
                          "every value needs one producer")
            defined.add(o.name)
            types[o.name] = o.type
            if o.type.WhichOneof("type") is None:
                out.error(join(where, f"op:{opname}"), "mlprogram.untyped-output",
                          f"output {o.name!r} of {op.type} {opname!r} has no type")
        _check_op_types(op, opname, where, out)
    for name, users in undefined.items():
        later = " (it is defined later: ops must be in topological order)" if name in defined else ""
        out.error(where, "mlprogram.undefined-value",
                  f"value {name!r} is used before it is defined by {', '.join(users)}{later}")
    for name in block.outputs:
        if name not in defined:
            out.error(where, "mlprogram.block-output",
                      f"block output {name!r} is not produced by any op or input"
                      + _hint(name, defined))


def _hint(name, known):
    from ..errors import near_matches

    close = near_matches(name, known)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _check_op_types(op, opname, where, out):
    if op.type == "const" and op.outputs and "val" in op.attributes:
        val_t, out_t = op.attributes["val"].type, op.outputs[0].type
        if val_t.WhichOneof("type") == "tensorType" and out_t.WhichOneof("type") == "tensorType":
            if (P.tensor_dtype(val_t) != P.tensor_dtype(out_t)
                    or P.tensor_shape(val_t) != P.tensor_shape(out_t)):
                out.error(join(where, f"op:{opname}"), "mlprogram.const-type",
                          f"const {opname!r} declares {P.describe_value_type(out_t)} but its value is "
                          f"{P.describe_value_type(val_t)}")
    if op.type == "cast" and op.outputs and "dtype" in op.inputs:
        b = op.inputs["dtype"].arguments
        if b and b[0].WhichOneof("binding") == "value":
            try:
                target = str(P.immediate_to_numpy(b[0].value).reshape(-1)[0])
            except Exception:
                return
            want = _CAST_NAMES.get(target)
            got = P.tensor_dtype(op.outputs[0].type)
            if want is not None and got is not None and want != got:
                out.error(join(where, f"op:{opname}"), "mlprogram.cast-type",
                          f"cast {opname!r} to {target} declares output dtype {P.dtype_name(got)}")


def _expected_tensor(feature):
    """(MIL dtype, shape or None) the program should see for a description feature."""
    t = feature.type
    kind = t.WhichOneof("Type")
    if kind == "multiArrayType":
        ma = t.multiArrayType
        flexible = ma.WhichOneof("ShapeFlexibility") is not None
        return ARRAY_TO_MIL.get(ma.dataType), (None if flexible else tuple(ma.shape))
    if kind == "imageType":
        img = t.imageType
        channels = 1 if img.colorSpace in (10, 40) else 3
        dtype = MIL_pb2.FLOAT16 if img.colorSpace == 40 else MIL_pb2.FLOAT32
        flexible = img.WhichOneof("SizeFlexibility") is not None
        return dtype, (None if flexible else (1, channels, img.height, img.width))
    return None, None


def _features_for(spec, fname, multifunction):
    if multifunction:
        for f in spec.description.functions:
            if f.name == fname:
                return f
        return None
    return spec.description


def _check_interface(spec, fname, fn, block, multifunction, where, out):
    desc = _features_for(spec, fname, multifunction)
    if desc is None:
        return  # features.py reports functions missing from the description
    fn_inputs = {i.name: i for i in fn.inputs if i.type.WhichOneof("type") != "stateType"}
    feat_inputs = {f.name: f for f in desc.input}
    fn_states = {i.name for i in fn.inputs if i.type.WhichOneof("type") == "stateType"}
    desc_states = {f.name for f in desc.state}
    if fn_states != desc_states:
        out.error(where, "mlprogram.interface-state",
                  f"function {fname!r} states {sorted(fn_states)} do not match the description's "
                  f"state features {sorted(desc_states)}")
    missing_prog = [n for n in feat_inputs if n not in fn_inputs]
    missing_desc = [n for n in fn_inputs if n not in feat_inputs]
    if missing_prog:
        out.error(where, "mlprogram.interface-input",
                  f"description input{'s' if len(missing_prog) > 1 else ''} "
                  f"{', '.join(map(repr, missing_prog))} {'are' if len(missing_prog) > 1 else 'is'} not "
                  f"an input of function {fname!r} (its inputs: {', '.join(fn_inputs) or 'none'})")
    if missing_desc:
        out.error(where, "mlprogram.interface-input",
                  f"function {fname!r} input{'s' if len(missing_desc) > 1 else ''} "
                  f"{', '.join(map(repr, missing_desc))} missing from the model description")
    for name in fn_inputs.keys() & feat_inputs.keys():
        dtype, shape = _expected_tensor(feat_inputs[name])
        vt = fn_inputs[name].type
        got_dt, got_shape = P.tensor_dtype(vt), P.tensor_shape(vt)
        if dtype is not None and got_dt is not None and dtype != got_dt:
            out.error(join(where, f"input:{name}"), "mlprogram.interface-input",
                      f"input {name!r} is {P.dtype_name(dtype)} in the description but "
                      f"{P.dtype_name(got_dt)} in function {fname!r}")
        if shape is not None and got_shape is not None and None not in got_shape \
                and tuple(shape) != tuple(got_shape):
            out.error(join(where, f"input:{name}"), "mlprogram.interface-input",
                      f"input {name!r} has shape {list(shape)} in the description but "
                      f"{list(got_shape)} in function {fname!r}")
    produced = list(block.outputs)
    feat_out = [f.name for f in desc.output]
    missing = [n for n in feat_out if n not in produced]
    if missing:
        out.error(where, "mlprogram.interface-output",
                  f"description output{'s' if len(missing) > 1 else ''} "
                  + ", ".join(repr(m) + _hint(m, produced) for m in missing)
                  + f" not produced by function {fname!r} (its outputs: {', '.join(produced)})")
    extra = [n for n in produced if n not in feat_out]
    if extra:
        out.error(where, "mlprogram.interface-output",
                  f"function {fname!r} output{'s' if len(extra) > 1 else ''} "
                  f"{', '.join(map(repr, extra))} missing from the model description")
    types = {o.name: o.type for op in block.operations for o in op.outputs}
    for f in desc.output:
        if f.name in types and f.type.WhichOneof("Type") == "multiArrayType":
            want = ARRAY_TO_MIL.get(f.type.multiArrayType.dataType)
            got = P.tensor_dtype(types[f.name])
            if want is not None and got is not None and want != got:
                out.error(join(where, f"output:{f.name}"), "mlprogram.interface-output",
                          f"output {f.name!r} is {P.dtype_name(want)} in the description but "
                          f"{P.dtype_name(got)} in function {fname!r}; add a cast or fix the description")


def _nbytes(vt) -> Optional[int]:
    shape = P.tensor_shape(vt)
    dt = P.tensor_dtype(vt)
    if shape is None or None in shape or dt is None:
        return None
    code = B.MIL_TO_BLOB.get(dt)
    if code is None:
        return None
    count = int(np.prod(shape)) if shape else 1
    return (count * B.BLOB_DTYPES[code][2] + 7) // 8


def _check_blobs(spec, package, out):
    refs = list(P.blob_refs(spec))
    if not refs:
        return
    if package is None:
        names = sorted({v.blobFileValue.fileName for _, _, _, v in refs})
        # a bare spec (e.g. pkg.spec): the blobs cannot be checked, which is not
        # by itself an error (io.save refuses to write such a spec as .mlmodel)
        out.warning("mlProgram", "mlprogram.blob-no-package",
                    f"the program reads {len(refs)} blob(s) from {', '.join(names)} but no weight files "
                    "came with this spec, so they were not checked; check the .mlpackage instead")
        return
    by_file: dict[str, list] = {}
    for ref in refs:
        by_file.setdefault(ref[3].blobFileValue.fileName, []).append(ref)
    for file_name, items in by_file.items():
        try:
            wf = package.weight_file(file_name)
        except SpecSurgeryError as exc:   # a name that leads outside the package
            out.error(f"weights:{file_name}", "mlprogram.blob-file-outside",
                      f"{exc}; {len(items)} value(s) read from it, e.g. {P.op_name(items[0][1])!r}")
            continue
        where_file = str(wf.path) if wf.path is not None else file_name
        if wf.missing:
            out.error(f"weights:{file_name}", "mlprogram.blob-file-missing",
                      f"weight file {where_file} ({file_name}) is missing; {len(items)} value(s) read "
                      f"from it, e.g. {P.op_name(items[0][1])!r} at offset {items[0][3].blobFileValue.offset}; "
                      "rebuild the package with its weights folder")
            continue
        count = None
        try:
            count, ver = B.read_header(wf)
            if ver != B.VERSION:
                out.error(f"weights:{file_name}", "mlprogram.blob-bad",
                          f"weight file {where_file}: storage version {ver}, expected 2")
        except B.BlobError as exc:
            out.error(f"weights:{file_name}", "mlprogram.blob-bad", str(exc))
            continue
        try:
            offsets = [r.offset for r in B.iter_records(wf)]
            records = len(offsets)
            unused = set(offsets) - {v.blobFileValue.offset for _, _, _, v in items}
            if unused and not _read_elsewhere(spec, package, file_name):
                out.info(f"weights:{file_name}", "mlprogram.blob-unused",
                         f"weight file {where_file}: {len(unused)} of its {records} blobs are not read by "
                         "this program (repack the package to drop them)")
            if count is not None and records != count:
                out.error(f"weights:{file_name}", "mlprogram.blob-count",
                          f"weight file {where_file}: header says {count} blobs, {records} found")
        except B.BlobError as exc:
            out.error(f"weights:{file_name}", "mlprogram.blob-count",
                      f"weight file {where_file}: header says {count} blobs but walking them fails: {exc}")
        seen = set()
        for fname, op, key, value in items:
            offset = value.blobFileValue.offset
            where = f"function:{fname}/op:{P.op_name(op)}.{key}"
            try:
                rec = B.read_record(wf, offset)
            except B.BlobError as exc:
                out.error(where, "mlprogram.blob-bad", f"{P.op_name(op)!r}.{key}: {exc}")
                continue
            want = B.MIL_TO_BLOB.get(P.tensor_dtype(value.type))
            if want is not None and want != rec.dtype:
                out.error(where, "mlprogram.blob-dtype",
                          f"{P.op_name(op)!r}.{key} is typed {P.dtype_name(P.tensor_dtype(value.type))} "
                          f"but the blob at offset {offset} of {where_file} holds {rec.dtype_name}")
            need = _nbytes(value.type)
            if need is not None and need != rec.size and (file_name, offset) not in seen:
                out.error(where, "mlprogram.blob-size",
                          f"{P.op_name(op)!r}.{key} is {P.describe_value_type(value.type)} ({need} bytes) "
                          f"but the blob at offset {offset} of {where_file} holds {rec.size} bytes")
            seen.add((file_name, offset))


def _read_elsewhere(spec, package, file_name) -> bool:
    """True when the file may be read by other models of the package (pipeline stages)."""
    root = getattr(package, "spec", None)
    return root is not None and root is not spec and root.WhichOneof("Type") != "mlProgram"


def unknown_ops(spec) -> Counter:
    """Op types the numpy runtime cannot run (for an info finding by callers)."""
    from ..runtime.mil import OPS

    return Counter(op.type for _, fn in P.iter_functions(spec)
                   for block in fn.block_specializations.values()
                   for op in P.iter_ops(block) if op.type not in OPS)


__all__ = ["check_program", "unknown_ops"]
