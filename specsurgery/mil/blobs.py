"""MIL blob storage v2 (``weight.bin``): read and write it directly.

Layout (all little-endian, everything 64-byte aligned):

* a 64-byte file header: ``uint32 count``, ``uint32 version = 2``, 56 zero bytes;
* per blob a 64-byte metadata record: ``uint32 sentinel = 0xDEADBEEF``,
  ``uint32 dtype``, ``uint64 sizeInBytes``, ``uint64 offset`` (absolute offset
  of the data), ``uint64 padding_size_in_bits`` (unused bits in the last byte of
  sub-byte data), 32 reserved bytes;
* the raw data right after, padded with zeros to the next 64-byte boundary.

A ``BlobFileValue.offset`` in the program is the offset of a blob's metadata
record, not of its data.  Sub-byte data (int4, uint1..uint6) is packed starting
at the least significant bit of each byte.

Reading goes through :class:`specsurgery.io.WeightFile` (a lazy memmap), so a
large weight file is never read whole.  :class:`BlobWriter` builds a new file
holding exactly the blobs added to it, once each: blobs with the same dtype,
padding and bytes share one record (content hash), which is how a split or a
dedupe writes each package with only the weights it uses.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Union

import numpy as np

from .._proto import MIL_pb2
from ..errors import LoadError, UnsupportedError
from ..io import WEIGHT_FILE_NAME, MLPackage, WeightFile, weight_key

HEADER_SIZE = 64
RECORD_SIZE = 64
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
VERSION = 2

_HEADER = struct.Struct("<II")
_RECORD = struct.Struct("<IIQQQ")

# blob dtype code -> (name, numpy dtype of one stored element, bits per element)
BLOB_DTYPES: dict[int, tuple[str, object, int]] = {
    1: ("float16", np.float16, 16),
    2: ("float32", np.float32, 32),
    3: ("uint8", np.uint8, 8),
    4: ("int8", np.int8, 8),
    5: ("bfloat16", np.uint16, 16),   # raw bits; numpy has no bfloat16
    6: ("int16", np.int16, 16),
    7: ("uint16", np.uint16, 16),
    8: ("int4", np.int8, 4),
    9: ("uint1", np.uint8, 1),
    10: ("uint2", np.uint8, 2),
    11: ("uint4", np.uint8, 4),
    12: ("uint3", np.uint8, 3),
    13: ("uint6", np.uint8, 6),
    14: ("int32", np.int32, 32),
    15: ("uint32", np.uint32, 32),
    16: ("float8e4m3fn", np.uint8, 8),  # raw bits
    17: ("float8e5m2", np.uint8, 8),    # raw bits
}

# MIL_pb2.DataType -> blob dtype code
_DT = MIL_pb2
MIL_TO_BLOB: dict[int, int] = {
    _DT.FLOAT16: 1, _DT.FLOAT32: 2, _DT.UINT8: 3, _DT.INT8: 4, _DT.BFLOAT16: 5,
    _DT.INT16: 6, _DT.UINT16: 7, _DT.INT4: 8, _DT.UINT1: 9, _DT.UINT2: 10, _DT.UINT4: 11,
    _DT.UINT3: 12, _DT.UINT6: 13, _DT.INT32: 14, _DT.UINT32: 15,
    _DT.FLOAT8E4M3FN: 16, _DT.FLOAT8E5M2: 17,
}
BLOB_TO_MIL = {v: k for k, v in MIL_TO_BLOB.items()}


class BlobError(LoadError):
    """A blob reference or a weight file that does not hold what it should."""


def align(n: int, to: int = ALIGNMENT) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class BlobRecord:
    """One metadata record of a weight file."""

    offset: int          # offset of the metadata record (what BlobFileValue.offset holds)
    dtype: int           # blob dtype code (see BLOB_DTYPES)
    size: int            # sizeInBytes of the data
    data_offset: int     # absolute offset of the data
    padding_bits: int    # unused bits in the last byte (sub-byte types)
    sentinel: int = SENTINEL

    @property
    def dtype_name(self) -> str:
        return BLOB_DTYPES.get(self.dtype, (f"code{self.dtype}",))[0]

    @property
    def bits(self) -> int:
        return BLOB_DTYPES[self.dtype][2]

    @property
    def count(self) -> int:
        """Number of elements stored."""
        return (self.size * 8 - self.padding_bits) // self.bits


def _data_of(source) -> tuple[np.ndarray, str]:
    if isinstance(source, WeightFile):
        where = str(source.path) if source.path is not None else "<memory weight file>"
        if source.missing:
            raise BlobError(f"weight file {where} is missing; the package's weights folder does not "
                            "hold it (rebuild the package with its weights)")
        return source.data, where
    if isinstance(source, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(source), dtype=np.uint8), "<bytes>"
    return np.asarray(source).reshape(-1).view(np.uint8), "<array>"


def read_header(source) -> tuple[int, int]:
    """(blob count, version) of a weight file."""
    data, where = _data_of(source)
    if data.size < HEADER_SIZE:
        raise BlobError(f"weight file {where} is {data.size} bytes, shorter than the "
                        f"{HEADER_SIZE}-byte header")
    count, version = _HEADER.unpack_from(bytes(data[:8]))
    return count, version


def read_record(source, offset: int, *, validate: bool = True) -> BlobRecord:
    """The metadata record at ``offset``; with ``validate`` an error names the
    file, the offset and the size when the record or its data are not there."""
    data, where = _data_of(source)
    offset = int(offset)
    if offset < 0 or offset + RECORD_SIZE > data.size:
        raise BlobError(f"weight file {where} ({data.size} bytes) is too short for the blob "
                        f"metadata at offset {offset} (needs {offset + RECORD_SIZE} bytes)")
    sentinel, dtype, size, data_offset, padding = _RECORD.unpack_from(bytes(data[offset:offset + 32]))
    rec = BlobRecord(offset, dtype, size, data_offset, padding, sentinel)
    if validate:
        if sentinel != SENTINEL:
            raise BlobError(f"weight file {where}: no blob at offset {offset} (sentinel "
                            f"0x{sentinel:08X}, expected 0xDEADBEEF); the offset does not point "
                            "at a blob metadata record")
        if dtype not in BLOB_DTYPES:
            raise BlobError(f"weight file {where}: blob at offset {offset} has unknown dtype code "
                            f"{dtype} (known: {sorted(BLOB_DTYPES)})")
        if data_offset + size > data.size:
            raise BlobError(f"weight file {where} ({data.size} bytes) is too short for the blob at "
                            f"offset {offset}: its {size} bytes of data at {data_offset} end at "
                            f"{data_offset + size}")
    return rec


def iter_records(source) -> Iterator[BlobRecord]:
    """Every record of a weight file, in file order (walks the chain of records)."""
    data, where = _data_of(source)
    count, _ = read_header(source)
    offset = HEADER_SIZE
    for _ in range(count):
        rec = read_record(source, offset)
        yield rec
        offset = align(rec.data_offset + rec.size)


def raw_bytes(source, offset: int) -> tuple[BlobRecord, np.ndarray]:
    """(record, raw data as a uint8 view) of the blob at ``offset``."""
    data, _ = _data_of(source)
    rec = read_record(source, offset)
    return rec, data[rec.data_offset:rec.data_offset + rec.size]


def unpack_subbyte(raw: np.ndarray, bits: int, count: int, signed: bool = False) -> np.ndarray:
    """Elements of ``bits`` bits packed LSB first -> one uint8 (int8 if signed) each."""
    bitarr = np.unpackbits(np.asarray(raw, dtype=np.uint8), bitorder="little")[: count * bits]
    bitarr = bitarr.reshape(count, bits).astype(np.uint8)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    values = (bitarr.astype(np.uint16) * weights).sum(axis=1).astype(np.int16)
    if signed:
        values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


def pack_subbyte(values: np.ndarray, bits: int) -> tuple[bytes, int]:
    """(packed bytes, padding bits) for integer ``values`` of ``bits`` bits, LSB first."""
    v = np.asarray(values).reshape(-1).astype(np.int64) & ((1 << bits) - 1)
    bitarr = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    packed = np.packbits(bitarr, bitorder="little")
    padding = packed.size * 8 - bitarr.size
    return packed.tobytes(), int(padding)


def decode(rec: BlobRecord, raw: np.ndarray) -> np.ndarray:
    """Flat array of the blob's elements (sub-byte types unpacked, one per byte)."""
    name, np_dtype, bits = BLOB_DTYPES[rec.dtype]
    if bits < 8:
        return unpack_subbyte(raw, bits, rec.count, signed=name == "int4")
    itemsize = np.dtype(np_dtype).itemsize
    usable = rec.size // itemsize * itemsize
    if isinstance(raw, np.memmap) and not raw.flags.writeable and raw.flags.c_contiguous:
        # a read-only memory map of the weight file: a view, not a second copy of the weights
        return raw[:usable].view(np_dtype)
    return np.frombuffer(np.ascontiguousarray(raw[:usable]).tobytes(), dtype=np_dtype)


def read_blob(source, offset: int) -> np.ndarray:
    """Flat decoded array of the blob at ``offset``."""
    rec, raw = raw_bytes(source, offset)
    return decode(rec, raw)


# --------------------------------------------------------------------------- writer

class BlobWriter:
    """Builds a weight file; identical blobs (dtype, padding, bytes) are stored once.

    ``add_raw`` / ``add_array`` return the metadata offset to put in
    ``BlobFileValue.offset``.  ``to_bytes()`` gives the finished file.
    """

    def __init__(self):
        self._chunks: list[bytes] = [b""]  # placeholder for the header
        self._size = HEADER_SIZE
        self._by_hash: dict[bytes, int] = {}
        self.count = 0
        self.bytes_added = 0      # data bytes requested (before dedupe)
        self.bytes_stored = 0     # data bytes written

    @staticmethod
    def key(dtype: int, padding_bits: int, raw) -> bytes:
        h = hashlib.sha256()
        h.update(struct.pack("<IQ", dtype, padding_bits))
        h.update(memoryview(np.ascontiguousarray(raw)).cast("B") if isinstance(raw, np.ndarray) else raw)
        return h.digest()

    def add_raw(self, dtype: int, raw, padding_bits: int = 0, *, digest: Optional[bytes] = None) -> int:
        if dtype not in BLOB_DTYPES:
            raise UnsupportedError(f"blob dtype code {dtype} is not one of {sorted(BLOB_DTYPES)}")
        raw_b = raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)
        self.bytes_added += len(raw_b)
        digest = digest or self.key(dtype, padding_bits, raw_b)
        if digest in self._by_hash:
            return self._by_hash[digest]
        offset = self._size
        data_offset = offset + RECORD_SIZE
        record = _RECORD.pack(SENTINEL, dtype, len(raw_b), data_offset, padding_bits) + bytes(32)
        pad = align(data_offset + len(raw_b)) - (data_offset + len(raw_b))
        self._chunks += [record, raw_b, bytes(pad)]
        self._size = data_offset + len(raw_b) + pad
        self._by_hash[digest] = offset
        self.count += 1
        self.bytes_stored += len(raw_b)
        return offset

    def add_array(self, array: np.ndarray, mil_dtype: Optional[int] = None) -> int:
        """Store a numpy array; ``mil_dtype`` (MIL_pb2.DataType) picks sub-byte packing."""
        array = np.asarray(array)
        if mil_dtype is None:
            mil_dtype = NUMPY_TO_MIL.get(array.dtype.name)
            if mil_dtype is None:
                raise UnsupportedError(f"cannot store a {array.dtype} array in a blob file")
        code = MIL_TO_BLOB[mil_dtype]
        name, np_dtype, bits = BLOB_DTYPES[code]
        if bits < 8:
            raw, padding = pack_subbyte(array, bits)
            return self.add_raw(code, raw, padding)
        return self.add_raw(code, np.ascontiguousarray(array.astype(np_dtype, copy=False)).reshape(-1), 0)

    @property
    def size(self) -> int:
        return self._size

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(self.count, VERSION) + bytes(HEADER_SIZE - 8)
        return header + b"".join(self._chunks[1:])

    def to_weight_file(self) -> WeightFile:
        return WeightFile(None, self.to_bytes())


NUMPY_TO_MIL = {
    "float16": _DT.FLOAT16, "float32": _DT.FLOAT32, "uint8": _DT.UINT8, "int8": _DT.INT8,
    "int16": _DT.INT16, "uint16": _DT.UINT16, "int32": _DT.INT32, "uint32": _DT.UINT32,
}


# --------------------------------------------------------------------------- package level

def blob_source(package: Optional[MLPackage], file_name: str) -> WeightFile:
    if package is None:
        raise BlobError(f"the program reads blob file {file_name!r} but no package (weights folder) "
                        "was given; load the model from its .mlpackage")
    return package.weight_file(file_name)


def rewrite_blobs(spec, packages: Union[MLPackage, Mapping[int, MLPackage], None],
                  writer: Optional[BlobWriter] = None, *, file_name: str = WEIGHT_FILE_NAME,
                  programs: Optional[Iterable] = None) -> BlobWriter:
    """Copy every blob ``spec``'s programs read into ``writer`` and point the
    program at the new offsets in ``file_name`` (edits ``spec`` in place).

    ``packages`` is the package the blobs come from (one for all programs), or
    a mapping ``id(program) -> package`` when programs come from several
    packages.  Blobs are copied raw (dtype, padding bits and bytes kept), and a
    blob already in ``writer`` (same content) is not stored again.
    """
    from ..spec import iter_models

    writer = writer or BlobWriter()
    if programs is None:
        programs = [i.model.mlProgram for i in iter_models(spec) if i.model.WhichOneof("Type") == "mlProgram"]
    cache: dict[tuple[int, str, int], int] = {}
    for program in programs:
        pkg = packages.get(id(program)) if isinstance(packages, Mapping) else packages
        for value in iter_program_blobs(program):
            bfv = value.blobFileValue
            key = (id(pkg), bfv.fileName, bfv.offset)
            if key not in cache:
                rec, raw = raw_bytes(blob_source(pkg, bfv.fileName), bfv.offset)
                cache[key] = writer.add_raw(rec.dtype, raw, rec.padding_bits)
            bfv.offset = cache[key]
            bfv.fileName = file_name
    return writer


def iter_program_blobs(program):
    """Every blobFileValue of a program in a deterministic order: functions by
    name, ops in block order, attributes then inputs by sorted key (protobuf
    map order is not stable, and the file layout should be)."""
    def walk(block):
        for op in block.operations:
            for key in sorted(op.attributes):
                if op.attributes[key].WhichOneof("value") == "blobFileValue":
                    yield op.attributes[key]
            for key in sorted(op.inputs):
                for b in op.inputs[key].arguments:
                    if b.WhichOneof("binding") == "value" and b.value.WhichOneof("value") == "blobFileValue":
                        yield b.value
            for sub in op.blocks:
                yield from walk(sub)

    for name in sorted(program.functions):
        fn = program.functions[name]
        for opset in sorted(fn.block_specializations):
            yield from walk(fn.block_specializations[opset])


def repack(package: MLPackage, *, file_name: str = WEIGHT_FILE_NAME) -> MLPackage:
    """A copy of ``package`` whose weight file holds exactly the blobs its
    program reads, once each (unused blobs dropped, duplicates merged)."""
    out = package.copy()
    writer = rewrite_blobs(out.spec, package, file_name=file_name)
    out.weights = {weight_key(file_name): writer.to_weight_file()}
    return out


__all__ = [
    "BLOB_DTYPES", "MIL_TO_BLOB", "BLOB_TO_MIL", "BlobError", "BlobRecord", "BlobWriter",
    "read_header", "read_record", "iter_records", "raw_bytes", "read_blob", "decode",
    "pack_subbyte", "unpack_subbyte", "rewrite_blobs", "repack", "align", "blob_source",
]
