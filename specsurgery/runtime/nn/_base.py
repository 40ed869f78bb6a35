"""What every NeuralNetwork kernel module shares: the ``OPS`` registry and its ``op``
decorator, :class:`LayerError`, the loop signals and the small array helpers.

Kernel modules import this module only (and each other), never the package, so the
package ``__init__`` can import them all without a cycle."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import SpecSurgeryError
from .. import _kernels as K

F32 = np.float32


class LayerError(SpecSurgeryError):
    """A layer failed on its inputs (shape mismatch, bad parameter...)."""


class _LoopBreak(Exception):
    pass


class _LoopContinue(Exception):
    pass


# --------------------------------------------------------------------------- registry

OPS: dict[str, Callable]
OPS, op = K.registry()


def supported_kinds() -> list[str]:
    return sorted(OPS)


# --------------------------------------------------------------------------- helpers

def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def _lead_fold(x: np.ndarray, tail: int):
    """Reshape x to [N, *last tail dims] (rank below tail is left-padded with 1s)."""
    if x.ndim < tail:
        x = x.reshape((1,) * (tail - x.ndim) + x.shape)
    lead = x.shape[:-tail]
    return x.reshape((-1,) + x.shape[-tail:]), lead


def _as4(x: np.ndarray):
    """[..., C, H, W] -> ([N, C, H, W], leading shape)."""
    return _lead_fold(x, 3)


def _axis_c(x) -> int:
    return -3 if x.ndim >= 3 else -1


def _hw(values, default):
    vals = list(values)
    return tuple(int(v) for v in vals) if len(vals) == 2 else default


def _chan_bcast(vec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-channel vector shaped to broadcast on x's channel axis (-3)."""
    if x.ndim >= 3:
        return vec.reshape(-1, 1, 1)
    return vec


def _zeros(shape) -> np.ndarray:
    """Shape-mode placeholder: a read-only zero view that allocates nothing."""
    return np.broadcast_to(F32(0), tuple(int(s) for s in shape))


def _positive(ctx, field: str, values) -> tuple:
    """``values`` (a stride, dilation, kernel or block size) as ints, refused with the
    layer's name when an entry is 0 or negative (it would divide by zero or loop forever)."""
    vals = tuple(int(v) for v in values)
    if any(v <= 0 for v in vals):
        ctx.fail(f"{field} {list(vals)} must be positive in every entry (Core ML rejects 0); "
                 f"fix the layer's {field}")
    return vals


def _ints(x) -> np.ndarray:
    return np.asarray(np.rint(np.asarray(x, dtype=np.float64)), dtype=np.int64)


def _norm_axis(axis: int, rank: int, ctx=None) -> int:
    a = int(axis)
    if a < 0:
        a += rank
    if not 0 <= a < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return a
