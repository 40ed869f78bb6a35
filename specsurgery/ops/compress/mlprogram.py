"""compress for ML Programs (``.mlpackage``, and ML Program stages of pipeline
packages).

Per-tensor palettization with 1, 2, 4, 6 or 8 bits on iOS 15 to iOS 17
programs is written directly: weight consts become iOS 16
``constexpr_lut_to_dense`` ops and the weight file is rewritten.  Linear
quantization, pruning, 3-bit and grouped-channel tables and iOS 18 programs go
through ``coremltools.optimize.coreml``, with our k-means as the palettizer's
``lut_function`` (coremltools' own k-means needs scikit-learn).  Options this
backend cannot honour (float16, pruning combined with another mode) are
refused by name.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from ... import budget
from ... import io as ssio
from ..._quiet import quiet_coremltools
from ..._tempdirs import private_tempdir
from ...errors import SpecSurgeryError, UnsupportedError
from ...weights import pack_bits
from .kmeans import lut_quantize
from .options import Options, Selector
from .report import CompressReport, LayerReport, Skipped, explain_nothing_done, snr_db

def compress_stage(info, pkg, opts: Options, selector: Selector, report: CompressReport, known: list,
                   new_weights: dict, progress: Optional[Callable] = None):
    """Compress an ML Program stage of a pipeline package in place.

    The stage is lifted into a package of its own (its weight file renamed to
    ``weights/weight.bin``), compressed through coremltools, and put back
    under its original weight-file name.  Returns True when compressed, None
    when there was nothing to do, False when the stage cannot be handled."""
    where = info.path
    names = {v.blobFileValue.fileName for v in ssio.iter_blob_values(info.model.mlProgram)}
    if pkg is None:
        report.notes.append(f"stage {where!r} is an ML Program without its weights: load the "
                            ".mlpackage that holds it")
        return False
    if len(names) > 1:
        report.notes.append(f"stage {where!r} reads {len(names)} weight files; compress needs one per stage")
        return False
    original = next(iter(names)) if names else ssio.WEIGHT_FILE_NAME
    stage_spec = ssio.copy_spec(info.model)
    _rename_blob_files(stage_spec, ssio.WEIGHT_FILE_NAME)
    wf = pkg.weight_file(original)
    if wf.missing and names:
        report.notes.append(f"stage {where!r}: its weight file {original} is missing")
        return False
    sub = ssio.MLPackage(stage_spec, {"weights/weight.bin": wf} if names else {}, None, {})
    out = compress_package(sub, opts, selector, report, stage=where, known_out=known, final=False,
                           progress=progress)
    if out is None:
        return None
    _rename_blob_files(out.spec, original)
    info.model.CopyFrom(out.spec)
    if "weights/weight.bin" in out.weights:
        new_weights[ssio.weight_key(original)] = out.weights["weights/weight.bin"]
    return True


def _rename_blob_files(spec, file_name: str) -> None:
    for value in ssio.iter_blob_values(spec.mlProgram):
        value.blobFileValue.fileName = file_name




#: Bit widths coremltools' palettizer writes (MIL has uint1/2/3/4/6/8 indices).
MIL_LUT_BITS = (1, 2, 3, 4, 6, 8)
_MIL_FLOAT_DTYPES = {10: "float16", 11: "float32"}


def _blob_size(pkg, value) -> int:
    """sizeInBytes of the blob a ``blobFileValue`` points to (0 if unreadable)."""
    bfv = value.blobFileValue
    wf = pkg.weight_file(bfv.fileName)
    if wf.missing:
        return 0
    data = wf.data
    off = int(bfv.offset)
    if off + 64 > data.size:
        return 0
    head = np.frombuffer(bytes(data[off:off + 16]), dtype="<u4")
    if int(head[0]) != 0xDEADBEEF:
        return 0
    return int(np.frombuffer(bytes(data[off + 8:off + 16]), dtype="<u8")[0])


def _op_name(op) -> str:
    attr = op.attributes.get("name") if "name" in op.attributes else None
    if attr is not None and attr.WhichOneof("value") == "immediateValue":
        vals = attr.immediateValue.tensor.strings.values
        if len(vals):
            return vals[0]
    return op.outputs[0].name if len(op.outputs) else op.type


def count_weights(pkg) -> int:
    """How many weight consts of an ML Program compress may touch (rank 2 or
    more, not yet compressed): a progress total."""
    consts, _, _ = _program_inventory(pkg)
    return sum(1 for info in consts.values() if len(info["shape"]) > 1)


def _program_inventory(pkg):
    """Weights of an ML Program: {const output: info} and already-compressed ops."""
    consts, compressed, consumers = {}, {}, {}

    def walk(block):
        for op in block.operations:
            if op.type == "const" and "val" in op.attributes and \
                    op.attributes["val"].WhichOneof("value") == "blobFileValue":
                out = op.outputs[0]
                dims = [int(d.constant.size) for d in out.type.tensorType.dimensions]
                consts[out.name] = {"dtype": out.type.tensorType.dataType, "shape": dims,
                                    "bytes": _blob_size(pkg, op.attributes["val"]),
                                    "value": op.attributes["val"]}
            elif op.type.startswith("constexpr_"):
                nbytes = sum(_blob_size(pkg, v) for v in op.attributes.values()
                             if v.WhichOneof("value") == "blobFileValue")
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        if b.WhichOneof("binding") == "value" and b.value.WhichOneof("value") == "blobFileValue":
                            nbytes += _blob_size(pkg, b.value)
                out = op.outputs[0]
                dims = [int(d.constant.size) for d in out.type.tensorType.dimensions]
                compressed[out.name] = {"type": op.type, "shape": dims, "bytes": nbytes,
                                        "inputs": [b.name for a in op.inputs.values() for b in a.arguments
                                                   if b.WhichOneof("binding") == "name"]}
            else:
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        if b.WhichOneof("binding") == "name":
                            consumers.setdefault(b.name, []).append((op.type, _op_name(op)))
            for sub in op.blocks:
                walk(sub)

    for fn in pkg.spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    # Inputs of constexpr ops (their indices, tables) are not weights of their own.
    inner = {n for c in compressed.values() for n in c["inputs"]}
    for n in inner:
        consts.pop(n, None)
    return consts, compressed, consumers


def _opset_version(spec) -> int:
    best = 0
    for fn in spec.mlProgram.functions.values():
        for key in list(fn.block_specializations) + [fn.opset]:
            if key.startswith("CoreML") and key[6:].isdigit():
                best = max(best, int(key[6:]))
    return best


def compress_package(pkg, opts: Options, selector: Selector, report: CompressReport, stage: str = "",
                     known_out=None, final: bool = True, progress: Optional[Callable] = None):
    """Compress one ML Program package (``stage`` names it inside a pipeline);
    ``progress(name)`` after each compressed weight."""
    out = _compress_program(pkg, opts, selector, report, stage, known_out, final)
    if progress is not None and out is not None:
        for row in report.layers:
            if row.stage == stage:
                progress(row.name)
    return out


def _compress_program(pkg, opts, selector, report, stage: str = "", known_out=None, final: bool = True):
    """Compress one ML Program package through coremltools.optimize.coreml.

    ``stage`` names it inside a pipeline.  With ``final`` False (a pipeline
    stage) a program with nothing to compress returns None instead of raising,
    and layer names go to ``known_out`` for the caller's pattern check."""
    mode, nbits, sparsity = opts.mode, opts.nbits, opts.sparsity
    consts, already, consumers = _program_inventory(pkg)
    opset = _opset_version(pkg.spec)   # CoreML5 = iOS 15, CoreML8 = iOS 18
    for name, info in already.items():
        user = consumers.get(name, [("?", name)])[0]
        report.skipped.append(Skipped(stage, user[1], user[0],
                                      f"already compressed ({info['type']}): never quantized twice"))
    known = sorted({c[1] for n in consts for c in consumers.get(n, [])} |
                   {c[1] for n in already for c in consumers.get(n, [])})
    if sparsity and mode != "prune":
        raise UnsupportedError(
            f"compress: sparsity (--prune) with mode {mode!r}: pruning combined with another mode is done "
            "on neuralNetwork models only; for an ML Program use coremltools' joint compression (iOS 18) "
            "or compress in one mode")
    if mode == "fp16":
        f32 = [n for n, c in consts.items() if c["dtype"] == 11]
        if not f32:
            for n, c in consts.items():
                user = consumers.get(n, [("?", n)])[0]
                report.skipped.append(Skipped(stage, user[1], user[0], "already float16"))
            if not final:
                return None
            explain_nothing_done(report)
        raise UnsupportedError(
            "compress: mode 'fp16' (--fp16) is not available for ML Programs: float16 for an ML Program "
            "is chosen at conversion: convert again with "
            "compute_precision=coremltools.precision.FLOAT16 (the default for mlprogram)")
    if opts.granularity == "per_grouped_channel" and opset < 8:
        raise UnsupportedError(
            f"compress: per-grouped-channel tables need iOS 18 (opset CoreML8, spec v9); this program "
            f"uses CoreML{opset or '?'}. Convert with minimum_deployment_target=coremltools.target.iOS18")
    if mode == "palettize" and nbits not in MIL_LUT_BITS:
        raise SpecSurgeryError(f"compress: ML Program look-up tables take {MIL_LUT_BITS} bits, not {nbits}")
    if mode == "palettize" and nbits not in DIRECT_LUT_BITS and opset < 8:
        # iOS 16/17 constexpr_lut_to_dense holds 2, 4, 16, 64 or 256 entries (coremltools failed mid-pass)
        raise UnsupportedError(
            f"compress: {nbits}-bit look-up tables need iOS 18 (opset CoreML8); this program uses "
            f"CoreML{opset or '?'}: use {', '.join(map(str, DIRECT_LUT_BITS))} bits, or convert with "
            "minimum_deployment_target=coremltools.target.iOS18")
    if mode == "linear" and not (nbits == 8 or (nbits == 4 and opset >= 8)):
        raise SpecSurgeryError(
            f"compress: ML Program linear quantization writes 8-bit codes (4-bit needs iOS 18); got {nbits}")

    # Which weight consts the selection keeps, named by the op that reads them.
    op_names = {}
    selected = set()
    for name, info in consts.items():
        users = consumers.get(name, [])
        if not users:
            continue
        kind, op = users[0]
        why = selector.wants(stage, op)
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if why is not None:
            if not why.startswith("not selected") and len(info["shape"]) > 1:
                report.skipped.append(Skipped(stage, op, kind, why))
            op_names[op] = False
            continue
        if len(info["shape"]) <= 1:
            continue    # biases and scalars: coremltools leaves rank-1 consts alone
        if count < opts.min_weights:
            report.skipped.append(Skipped(stage, op, kind, f"{count} weights < min_weights {opts.min_weights}"))
            continue
        op_names[op] = True
        selected.add(name)
    if final:
        selector.check_all_used(known)
    else:
        known_out.extend(f"{stage}/{k}" if stage else k for k in known)
    if not any(op_names.values()):
        if not final:
            return None
        explain_nothing_done(report)

    if (mode == "palettize" and opts.granularity == "per_tensor" and nbits in DIRECT_LUT_BITS
            and opset <= 7):
        # Fast path: write iOS 16 constexpr_lut_to_dense ops ourselves.
        out = _palettize_program_direct(pkg, consts, consumers, selected, nbits, opts, report, stage)
        if final:
            explain_nothing_done(report)
        return out

    calls: list = []        # (shape, SNR) of each table our k-means made for coremltools
    _check_values(pkg, consts, consumers, selected, stage)
    with quiet_coremltools():   # coremltools' import notes and tqdm bars stay off stderr
        out = _through_coremltools(pkg, opts, selector, op_names, stage, calls)

    # Report: every weight that became a constexpr op.
    _, after, _ = _program_inventory(out)
    shape_snr = list(calls)
    for out_name, info in after.items():
        if out_name in already:
            continue
        # coremltools names the new op after the const it replaces plus a
        # suffix (``_palettized``, ``_quantized``, ...).
        name = max((n for n in consts if out_name == n or out_name.startswith(n + "_")),
                   key=len, default=None)
        if name is None:
            continue
        before = consts[name]
        kind, op = consumers.get(name, [("?", name)])[0]
        count = int(np.prod(before["shape"])) if before["shape"] else 1
        snr = None
        for i, (shape, value) in enumerate(shape_snr):
            if list(shape) == list(before["shape"]):
                snr = value
                shape_snr.pop(i)
                break
        if mode == "palettize" and opts.granularity != "per_tensor":
            snr = None
        bits_b = 8.0 * before["bytes"] / count
        report.layers.append(LayerReport(
            stage, op, kind, [name], count, _MIL_FLOAT_DTYPES.get(before["dtype"], str(before["dtype"])),
            info["type"], bits_b, 8.0 * info["bytes"] / count, before["bytes"], info["bytes"], snr,
            float(sparsity) if mode == "prune" else None))
    if opts.granularity == "per_grouped_channel":
        report.notes.append(f"one table per {opts.group_size} output channels (iOS 18)")
    if out.spec.specificationVersion != pkg.spec.specificationVersion:
        report.versions[stage] = (pkg.spec.specificationVersion, out.spec.specificationVersion)
    if final:
        explain_nothing_done(report)
    return out


def _through_coremltools(pkg, opts, selector, op_names, stage, calls):
    """The package compressed by ``coremltools.optimize.coreml`` in a private
    temporary folder, read back into memory; ``calls`` collects the SNR of
    the tables our k-means makes for coremltools' palettizer."""
    mode, nbits, sparsity = opts.mode, opts.nbits, opts.sparsity
    ct = _proto_coremltools()
    cto = ct.optimize.coreml
    threshold = max(0, int(opts.min_weights) - 1)

    def lut_function(val):
        flat = np.asarray(val, dtype=np.float32).reshape(-1)
        table, codes = lut_quantize(flat, nbits, seed=opts.seed)
        approx = table[codes]
        calls.append((tuple(np.shape(val)), snr_db(flat, approx)))
        return table.astype(np.asarray(val).dtype), codes.reshape(-1).astype(np.uint8)

    if mode == "palettize":
        kw = {}
        if opts.granularity == "per_grouped_channel":
            kw = {"granularity": "per_grouped_channel", "group_size": int(opts.group_size)}
        op_cfg = cto.OpPalettizerConfig(mode="custom", lut_function=lut_function,
                                        weight_threshold=threshold, **kw)
        run = cto.palettize_weights
    elif mode == "linear":
        op_cfg = cto.OpLinearQuantizerConfig(
            mode="linear", dtype="int8" if nbits == 8 else "int4",
            granularity="per_channel" if opts.per_channel else "per_tensor",
            weight_threshold=threshold)
        run = cto.linear_quantize_weights
    else:
        op_cfg = cto.OpMagnitudePrunerConfig(target_sparsity=float(sparsity), weight_threshold=threshold)
        run = cto.prune_weights
    if selector.layers or selector.exclude:
        config = cto.OptimizationConfig(
            global_config=None if selector.layers else op_cfg,
            op_name_configs={op: (op_cfg if keep else None) for op, keep in op_names.items()})
    else:
        config = cto.OptimizationConfig(global_config=op_cfg)

    with private_tempdir("specsurgery-compress-") as tmp:
        src = tmp / "in.mlpackage"
        ssio.save(pkg, src, check=False)
        try:
            mlmodel = ct.models.MLModel(str(src), skip_model_load=True)
            result = run(mlmodel, config)
        except SpecSurgeryError:
            raise
        except Exception as exc:     # coremltools' own faults on a program it cannot read
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            where = f" (stage {stage!r})" if stage else ""
            raise SpecSurgeryError(
                f"compress: coremltools.optimize failed on this ML Program{where} "
                f"({type(exc).__name__}: {first}); run 'specsurgery check' on it") from exc
        dst = tmp / "out.mlpackage"
        result.save(str(dst))
        loaded = ssio.load(dst)
        # Read the weights into memory: the temp folder goes away on exit.
        weights = {k: ssio.WeightFile(None, np.array(v.data)) for k, v in loaded.weights.items()}
        out = ssio.MLPackage(loaded.spec, weights, None, dict(pkg.metadata))
        del mlmodel, result
    return out


def _check_values(pkg, consts, consumers, selected, stage) -> None:
    """Refuse selected weights that hold NaN or infinity (or a blob that does
    not match the type) before coremltools sees them, naming the weight."""
    from ...mil import blobs as B

    for name in sorted(selected):
        info = consts[name]
        where = f"compress: weight {name!r}" + (f" in stage {stage!r}" if stage else "")
        budget.check(info["shape"], 4, what=where)
        bfv = info["value"].blobFileValue
        try:
            values = B.read_blob(pkg.weight_file(bfv.fileName), bfv.offset)
        except (SpecSurgeryError, ValueError, OSError) as exc:
            raise SpecSurgeryError(f"{where}: its blob cannot be read ({exc})") from None
        if values.size != math.prod(info["shape"]):
            raise SpecSurgeryError(f"{where}: its blob holds {values.size} values, its type "
                                   f"{'x'.join(map(str, info['shape']))} calls for {math.prod(info['shape'])}")
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            reader = consumers[name][0][1]
            raise SpecSurgeryError(f"{where} (read by {reader!r}): holds {bad} NaN or infinite value(s); fix "
                                   f"the weights, or leave it out with --exclude {reader!r}")


#: Bits the iOS 16 ``constexpr_lut_to_dense`` takes (indices packed in a uint8 tensor).
DIRECT_LUT_BITS = (1, 2, 4, 6, 8)


def _palettize_program_direct(pkg, consts, consumers, chosen, nbits, opts, report, stage):
    """Palettize an ML Program without coremltools: every selected weight
    ``const`` becomes an iOS 16 ``constexpr_lut_to_dense`` op (same output
    name and type, so no consumer changes) whose ``indices`` (uint8 tensor,
    codes packed least significant bit first) and ``lut`` (2**nbits entries
    in the weight's own float type) are new blobs; the weight file is
    rewritten with exactly the blobs the program reads.  Functions on opset
    CoreML5 move to CoreML6 (iOS 16), and the spec to version 7 or more."""
    from ...mil import blobs as B
    from ..._proto import MIL_pb2

    out = pkg.copy()
    pending: list = []
    new_name = "@specsurgery-new-blob"
    rows = []

    def blob_value(value, array, mil_dtype):
        value.type.tensorType.dataType = mil_dtype
        value.type.tensorType.rank = 1
        value.type.tensorType.dimensions.add().constant.size = int(array.size if mil_dtype != MIL_pb2.UINT8
                                                                   else len(array))
        value.blobFileValue.fileName = new_name
        value.blobFileValue.offset = len(pending)
        pending.append((array, mil_dtype))

    def walk(block):
        for op in block.operations:
            if op.type == "const" and len(op.outputs) and op.outputs[0].name in chosen:
                name = op.outputs[0].name
                val = op.attributes["val"]
                src = pkg.weight_file(val.blobFileValue.fileName)
                dims = [int(d.constant.size) for d in op.outputs[0].type.tensorType.dimensions]
                where = f"compress: weight {name!r}" + (f" in stage {stage!r}" if stage else "")
                budget.check(dims, 4, what=where)       # the float32 copy k-means works on
                values = B.read_blob(src, val.blobFileValue.offset)
                float_type = op.outputs[0].type.tensorType.dataType
                flat = values.reshape(-1)      # float16 stays float16: k-means counts its bits
                if flat.size != math.prod(dims):
                    raise SpecSurgeryError(f"{where}: its blob holds {flat.size} values, its type "
                                           f"{'x'.join(map(str, dims))} calls for {math.prod(dims)}")
                try:
                    table, codes = lut_quantize(flat, nbits, seed=opts.seed)
                except SpecSurgeryError as exc:     # NaN or infinite values
                    raise SpecSurgeryError(f"{where} (read by {consumers[name][0][1]!r}): {exc}; leave it "
                                           f"out with --exclude {consumers[name][0][1]!r}") from None
                flat = flat.astype(np.float32)
                packed = pack_bits(codes, nbits, lsb_first=True)   # MIL's bit order
                op.type = "constexpr_lut_to_dense"
                del op.attributes["val"]
                np_float = np.float16 if float_type == MIL_pb2.FLOAT16 else np.float32
                lut = table.astype(np_float)
                blob_value(op.attributes["lut"], lut, float_type)
                blob_value(op.attributes["indices"], np.frombuffer(packed, dtype=np.uint8), MIL_pb2.UINT8)
                shape = op.attributes["shape"]
                shape.type.tensorType.dataType = MIL_pb2.UINT32
                shape.type.tensorType.rank = 1
                shape.type.tensorType.dimensions.add().constant.size = len(dims)
                shape.immediateValue.tensor.bytes.values = np.asarray(dims, dtype="<u4").tobytes()
                kind, user = consumers[name][0]
                bytes_before = consts[name]["bytes"]
                bytes_after = len(packed) + lut.nbytes
                count = flat.size
                rows.append(LayerReport(stage, user, kind, [name], count,
                                        _MIL_FLOAT_DTYPES.get(float_type, str(float_type)),
                                        "constexpr_lut_to_dense", 8.0 * bytes_before / count,
                                        8.0 * bytes_after / count, bytes_before, bytes_after,
                                        snr_db(flat, lut.astype(np.float32)[codes])))
            for sub in op.blocks:
                walk(sub)

    for fn in out.spec.mlProgram.functions.values():
        for key in list(fn.block_specializations):
            walk(fn.block_specializations[key])
        for key in list(fn.block_specializations):
            if key.startswith("CoreML") and key[6:].isdigit() and int(key[6:]) < 6:
                block = fn.block_specializations[key]
                fn.block_specializations["CoreML6"].CopyFrom(block)
                del fn.block_specializations[key]
        if fn.opset.startswith("CoreML") and fn.opset[6:].isdigit() and int(fn.opset[6:]) < 6:
            fn.opset = "CoreML6"
    # One new weight file: the blobs the program still reads, then the new ones.
    writer = B.BlobWriter()
    for value in B.iter_program_blobs(out.spec.mlProgram):
        bfv = value.blobFileValue
        if bfv.fileName == new_name:
            array, mil_dtype = pending[bfv.offset]
            bfv.offset = writer.add_array(array, mil_dtype)
        else:
            rec, raw = B.raw_bytes(pkg.weight_file(bfv.fileName), bfv.offset)
            bfv.offset = writer.add_raw(rec.dtype, raw, rec.padding_bits)
        bfv.fileName = ssio.WEIGHT_FILE_NAME
    out.weights = {ssio.weight_key(ssio.WEIGHT_FILE_NAME): writer.to_weight_file()}
    before = out.spec.specificationVersion
    if rows and before < 7:
        out.spec.specificationVersion = 7
        report.versions[stage] = (before, 7)
    report.layers.extend(rows)
    out.path = None
    return out


def _proto_coremltools():
    from ..._proto import coremltools

    return coremltools()


__all__ = ["compress_package", "compress_stage", "count_weights", "DIRECT_LUT_BITS", "MIL_LUT_BITS"]
