"""WeightParams of neural-network layers: find, classify, decode and encode.

Core ML stores a layer weight in exactly one of ``floatValue`` (float32),
``float16Value`` (IEEE half, little-endian bytes), ``rawValue`` with
``quantization`` (n-bit unsigned codes packed most-significant-bit first, read
through a linear scale/bias or a look-up table), or ``int8RawValue`` with
linear quantization (the int8 dynamic-quantized kinds: ``int8_dynamic`` in nn/kinds.py).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from ._proto import NeuralNetwork_pb2
from .errors import SpecSurgeryError, UnsupportedError

WeightParams = NeuralNetwork_pb2.WeightParams


def _is_repeated(field) -> bool:
    # protobuf >= 6 (upb) dropped FieldDescriptor.label in favour of is_repeated.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def iter_weight_params(message, prefix: str = "") -> Iterator[tuple[str, "WeightParams"]]:
    """(field path, WeightParams) for every weight set inside ``message``.

    Walks the message by its descriptor, so every layer kind (LSTM weight
    groups, PReLU alphas, ...) is covered without a per-kind list.
    """
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{prefix}{field.name}"
        if _is_repeated(field):
            if field.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(value):
                if isinstance(item, WeightParams):
                    yield f"{name}[{i}]", item
                else:
                    yield from iter_weight_params(item, f"{name}[{i}].")
        elif isinstance(value, WeightParams):
            yield name, value
        else:
            yield from iter_weight_params(value, name + ".")


def layer_weights(layer) -> list[tuple[str, "WeightParams"]]:
    """The weights of a NeuralNetworkLayer (paths relative to the layer's oneof member)."""
    kind = layer.WhichOneof("layer")
    if kind is None:
        return []
    return list(iter_weight_params(getattr(layer, kind)))


def storage_kind(wp: "WeightParams") -> str:
    """One of float32, float16, linear<n>, lut<n>, int8, empty, invalid."""
    filled = [bool(len(wp.floatValue)), bool(len(wp.float16Value)), bool(len(wp.rawValue)),
              bool(len(wp.int8RawValue))]
    if sum(filled) > 1:
        return "invalid"
    if filled[0]:
        return "float32"
    if filled[1]:
        return "float16"
    if filled[2] or filled[3]:
        if not wp.HasField("quantization"):
            return "empty"
        q = wp.quantization
        if filled[3]:
            return "int8"
        which = q.WhichOneof("QuantizationType")
        if which == "linearQuantization":
            return f"linear{q.numberOfBits}"
        if which == "lookupTableQuantization":
            return f"lut{q.numberOfBits}"
        return "invalid"
    return "empty"


def stored_bits(wp: "WeightParams") -> Optional[int]:
    kind = storage_kind(wp)
    if kind == "float32":
        return 32
    if kind == "float16":
        return 16
    if kind == "int8":
        return 8
    if kind.startswith(("linear", "lut")):
        return int(wp.quantization.numberOfBits)
    return None


def weight_nbytes(wp: "WeightParams") -> int:
    """Bytes the weight occupies in the spec (data plus quantization tables)."""
    n = 4 * len(wp.floatValue) + len(wp.float16Value) + len(wp.rawValue) + len(wp.int8RawValue)
    if wp.HasField("quantization"):
        q = wp.quantization
        which = q.WhichOneof("QuantizationType")
        if which == "linearQuantization":
            n += 4 * (len(q.linearQuantization.scale) + len(q.linearQuantization.bias))
        elif which == "lookupTableQuantization":
            n += 4 * len(q.lookupTableQuantization.floatValue)
    return n


def weight_count(wp: "WeightParams", expected: Optional[int] = None) -> int:
    """Number of elements; for n-bit codes the ``expected`` count if known."""
    kind = storage_kind(wp)
    if kind == "float32":
        return len(wp.floatValue)
    if kind == "float16":
        return len(wp.float16Value) // 2
    if kind == "int8":
        return len(wp.int8RawValue)
    if kind.startswith(("linear", "lut")):
        if expected is not None:
            return expected
        return (len(wp.rawValue) * 8) // max(1, int(wp.quantization.numberOfBits))
    return 0


def pack_bits(codes: np.ndarray, nbits: int, *, lsb_first: bool = False) -> bytes:
    """n-bit unsigned codes -> bytes, zero padded: most significant bit first
    (neuralNetwork ``rawValue``), or with ``lsb_first`` least significant bit
    first (the order of ML Program sub-byte blobs)."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if nbits == 8:
        return codes.tobytes()
    if not 1 <= nbits <= 8:
        raise SpecSurgeryError(f"numberOfBits {nbits} is outside 1..8")
    if nbits in (1, 2, 4):
        # Whole codes per byte: combine them with shifts (first code highest,
        # or lowest with lsb_first).
        per = 8 // nbits
        padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
        padded[: codes.size] = codes
        groups = padded.reshape(-1, per)
        out = np.zeros(groups.shape[0], dtype=np.uint8)
        for i in range(per):
            shift = nbits * i if lsb_first else 8 - nbits * (i + 1)
            out |= (groups[:, i] & ((1 << nbits) - 1)) << np.uint8(shift)
        return out.tobytes()
    shifts = np.arange(nbits, dtype=np.uint8)
    if not lsb_first:
        shifts = shifts[::-1]
    bits = ((codes[:, None] >> shifts[None, :]) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little" if lsb_first else "big").tobytes()


def unpack_bits(data: bytes, nbits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint8."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if nbits == 8:
        if raw.size < count:
            raise SpecSurgeryError(f"rawValue holds {raw.size} bytes, {count} 8-bit codes need {count}")
        return raw[:count].copy()
    need = (count * nbits + 7) // 8
    if raw.size < need:
        raise SpecSurgeryError(f"rawValue holds {raw.size} bytes, {count} {nbits}-bit codes need {need}")
    if nbits in (1, 2, 4):
        per = 8 // nbits
        parts = [(raw[:need] >> np.uint8(8 - nbits * (i + 1))) & np.uint8((1 << nbits) - 1)
                 for i in range(per)]
        return np.stack(parts, axis=1).reshape(-1)[:count].copy()
    bits = np.unpackbits(raw[:need])[: count * nbits].reshape(count, nbits)
    weights = (1 << np.arange(nbits - 1, -1, -1)).astype(np.uint16)
    return (bits.astype(np.uint16) @ weights).astype(np.uint8)


def decode(wp: "WeightParams", count: Optional[int] = None, *, channel_axis: int = 0,
           shape: Optional[tuple] = None, where: str = "weight") -> np.ndarray:
    """The float32 values of a weight, dequantized; reshaped to ``shape`` if given.

    ``channel_axis`` says along which axis of ``shape`` per-channel linear
    scales apply (0 for most layers, 1 for deconvolution weights).
    """
    kind = storage_kind(wp)
    if shape is not None and count is None:
        count = int(np.prod(shape))
    if kind == "float32":
        out = np.asarray(wp.floatValue, dtype=np.float32)
    elif kind == "float16":
        out = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float32)
    elif kind == "empty":
        out = np.zeros(0, dtype=np.float32)
    elif kind == "int8":
        q = wp.quantization.linearQuantization
        codes = np.frombuffer(wp.int8RawValue, dtype=np.int8).astype(np.float32)
        scale = np.asarray(q.scale, dtype=np.float32)
        bias = np.asarray(q.bias, dtype=np.float32) if len(q.bias) else np.zeros(1, np.float32)
        out = codes * scale[0] + bias[0] if scale.size == 1 else codes
        if scale.size != 1:
            out = _per_channel(codes, scale, bias, shape, channel_axis, where)
    elif kind.startswith(("linear", "lut")):
        nbits = int(wp.quantization.numberOfBits)
        if count is None:
            count = (len(wp.rawValue) * 8) // nbits
        codes = unpack_bits(wp.rawValue, nbits, count)
        if kind.startswith("lut"):
            table = np.asarray(wp.quantization.lookupTableQuantization.floatValue, dtype=np.float32)
            if table.size < (1 << nbits) and codes.size and codes.max() >= table.size:
                raise SpecSurgeryError(f"{where}: look-up table has {table.size} entries, codes reach {codes.max()}")
            out = table[codes]
        else:
            q = wp.quantization.linearQuantization
            scale = np.asarray(q.scale, dtype=np.float32)
            bias = np.asarray(q.bias, dtype=np.float32) if len(q.bias) else np.zeros_like(scale)
            out = _per_channel(codes.astype(np.float32), scale, bias, shape, channel_axis, where)
    else:
        raise UnsupportedError(f"{where}: weight storage is invalid (more than one of floatValue, "
                               "float16Value, rawValue, int8RawValue is set)")
    if count is not None and out.size != count:
        raise SpecSurgeryError(f"{where}: holds {out.size} values, the layer needs {count}")
    if shape is not None:
        out = out.reshape(shape)
    return out


def _per_channel(codes, scale, bias, shape, channel_axis, where):
    if scale.size == 0:
        raise SpecSurgeryError(f"{where}: linear quantization without a scale; store one scale (per "
                               "tensor) or one per output channel")
    if scale.size == 1:
        return codes * scale[0] + (bias[0] if bias.size else 0.0)
    n = scale.size
    if shape is not None and len(shape) > channel_axis and shape[channel_axis] == n:
        arr = codes.reshape(shape)
        bshape = [1] * len(shape)
        bshape[channel_axis] = n
        out = arr * scale.reshape(bshape) + (bias.reshape(bshape) if bias.size else 0.0)
        return out.reshape(-1)
    if codes.size % n:
        raise SpecSurgeryError(f"{where}: {n} per-channel scales do not divide {codes.size} values")
    arr = codes.reshape(n, -1)
    out = arr * scale[:, None] + (bias[:, None] if bias.size else 0.0)
    return out.reshape(-1)


# --------------------------------------------------------------------------- encode

def set_float32(wp: "WeightParams", values) -> None:
    is_updatable = wp.isUpdatable
    wp.Clear()
    wp.floatValue.extend(np.asarray(values, dtype=np.float32).reshape(-1).tolist())
    wp.isUpdatable = is_updatable


def set_float16(wp: "WeightParams", values) -> None:
    wp.Clear()
    wp.float16Value = np.asarray(values, dtype=np.float32).reshape(-1).astype("<f2").tobytes()


def set_lut(wp: "WeightParams", codes, table, nbits: int) -> None:
    table = np.asarray(table, dtype=np.float32).reshape(-1)
    if table.size != (1 << nbits):
        padded = np.zeros(1 << nbits, dtype=np.float32)
        padded[: table.size] = table
        table = padded
    wp.Clear()
    wp.rawValue = pack_bits(codes, nbits)
    wp.quantization.numberOfBits = nbits
    wp.quantization.lookupTableQuantization.floatValue.extend(table.tolist())


def set_linear(wp: "WeightParams", codes, scale, bias, nbits: int) -> None:
    wp.Clear()
    wp.rawValue = pack_bits(codes, nbits)
    wp.quantization.numberOfBits = nbits
    lin = wp.quantization.linearQuantization
    lin.scale.extend(np.asarray(scale, dtype=np.float32).reshape(-1).tolist())
    if bias is not None:
        lin.bias.extend(np.asarray(bias, dtype=np.float32).reshape(-1).tolist())
