"""Elementwise kernels: legacy add/multiply/average/max/min, the broadcastable binary
and comparison ops, logic, unary functions, ``clip``, ``scale``, ``bias``, ``dot``."""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ._base import F32, OPS, _as4, _chan_bcast, _f, op
from .activation import _erf


# --------------------------------------------------------------------------- elementwise

def _legacy_bcast(ctx, ins):
    try:
        np.broadcast_shapes(*[a.shape for a in ins])
    except ValueError:
        ctx.fail("inputs of shapes " + ", ".join(str(tuple(a.shape)) for a in ins)
                 + " do not broadcast")


@op("add")
def _add(ctx, p, ins):
    if len(ins) == 1:
        return _f(ins[0] + p.alpha)
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y + a
    return _f(y)


@op("multiply")
def _multiply(ctx, p, ins):
    if len(ins) == 1:
        return _f(ins[0] * p.alpha)
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y * a
    return _f(y)


@op("average")
def _average(ctx, p, ins):
    _legacy_bcast(ctx, ins)
    y = _f(ins[0])
    for a in ins[1:]:
        y = y + a
    return _f(y / len(ins))


@op("max", "min")
def _max_min(ctx, p, ins):
    pick = np.maximum if ctx.kind == "max" else np.minimum
    y = _f(ins[0])
    for a in ins[1:]:
        y = pick(y, a)
    return _f(y)


_BINARY = {
    "addBroadcastable": np.add,
    "subtractBroadcastable": np.subtract,
    "multiplyBroadcastable": np.multiply,
    "divideBroadcastable": np.divide,
    "maxBroadcastable": np.maximum,
    "minBroadcastable": np.minimum,
    "modBroadcastable": np.mod,
    "floorDivBroadcastable": lambda a, b: np.floor(a / b),
    "powBroadcastable": np.power,
}


def _make_binary(fn):
    def run(ctx, p, ins):
        if len(ins) == 1:
            return _f(ins[0])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = fn(_f(ins[0]), _f(ins[1]))
            for a in ins[2:]:
                y = fn(y, _f(a))
        return _f(y)
    return run


for _k, _fn in _BINARY.items():
    OPS[_k] = _make_binary(_fn)

_COMPARE = {
    "equal": np.equal, "notEqual": np.not_equal, "lessThan": np.less, "lessEqual": np.less_equal,
    "greaterThan": np.greater, "greaterEqual": np.greater_equal,
}


def _make_compare(fn):
    def run(ctx, p, ins):
        b = ins[1] if len(ins) > 1 else F32(p.alpha)
        return fn(ins[0], b).astype(F32)
    return run


for _k, _fn in _COMPARE.items():
    OPS[_k] = _make_compare(_fn)


@op("logicalAnd")
def _land(ctx, p, ins):
    return np.logical_and(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalOr")
def _lor(ctx, p, ins):
    return np.logical_or(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalXor")
def _lxor(ctx, p, ins):
    return np.logical_xor(ins[0] != 0, ins[1] != 0).astype(F32)


@op("logicalNot")
def _lnot(ctx, p, ins):
    return (ins[0] == 0).astype(F32)


_UNARY_ND = {
    "ceil": np.ceil, "floor": np.floor, "sign": np.sign, "round": np.round, "exp2": np.exp2,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "erf": lambda x: _erf(x),
}


def _make_unary(fn):
    def run(ctx, p, ins):
        with np.errstate(all="ignore"):
            return _f(fn(_f(ins[0])))
    return run


for _k, _fn in _UNARY_ND.items():
    OPS[_k] = _make_unary(_fn)


@op("unary")
def _unary(ctx, p, ins):
    scale = p.scale if p.scale != 0 else 1.0
    x = ins[0].astype(np.float64) * scale + p.shift
    t = p.type
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    with np.errstate(all="ignore"):
        if t == 0:
            y = np.sqrt(x)
        elif t == 1:
            y = 1 / np.sqrt(x + eps)
        elif t == 2:
            y = 1 / (x + eps)
        elif t == 3:
            y = np.power(x, p.alpha)
        elif t == 4:
            y = np.exp(x)
        elif t == 5:
            y = np.log(x + eps)
        elif t == 6:
            y = np.abs(x)
        elif t == 7:
            y = np.maximum(x, p.alpha)
        else:
            raise UnsupportedError(f"layer {ctx.name!r} (unary): operation {t} is not supported")
    return _f(y)


@op("clip")
def _clip(ctx, p, ins):
    return _f(np.clip(ins[0], p.minVal, p.maxVal))


@op("scale")
def _scale(ctx, p, ins):
    x = _f(ins[0])
    y = x * _shape_param(ctx.weight("scale"), x)
    if p.hasBias:
        y = y + _shape_param(ctx.weight("bias"), x)
    return _f(y)


def _shape_param(v, x):
    """A [1], [C] or [C,H,W] parameter aligned on x's trailing C, H, W axes."""
    if v.ndim == 1 and v.size > 1:
        return _chan_bcast(v, x)
    if v.ndim == 1:
        return v.reshape(())
    return v


@op("bias")
def _bias(ctx, p, ins):
    x = _f(ins[0])
    return _f(x + _shape_param(ctx.weight("bias"), x))


@op("dot")
def _dot(ctx, p, ins):
    a, b = _f(ins[0]), _f(ins[1])
    a4, lead = _as4(a)
    b4, _ = _as4(b)
    a2 = a4.reshape(a4.shape[0], -1)
    b2 = b4.reshape(b4.shape[0], -1)
    y = (a2 * b2).sum(axis=1)
    if p.cosineSimilarity:
        y = y / np.maximum(np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1), 1e-12)
    return _f(y).reshape(lead + (1, 1, 1))
