"""Activation kernels: ``activation`` (every NonlinearityType), ``gelu``, ``clampedReLU``."""

from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedError
from ._base import F32, _chan_bcast, _f, op


# --------------------------------------------------------------------------- activations

def _sigmoid(x):
    return _f(0.5 * (np.tanh(0.5 * x) + 1.0))


def _softplus(x):
    return _f(np.logaddexp(0, x))


@op("activation")
def _activation(ctx, p, ins):
    x = _f(ins[0])
    kind = p.WhichOneof("NonlinearityType")
    a = getattr(p, kind) if kind else None
    if kind == "ReLU":
        return np.maximum(x, 0)
    if kind == "linear":
        return _f(a.alpha * x + a.beta)
    if kind == "leakyReLU":
        return np.where(x >= 0, x, _f(a.alpha * x))
    if kind == "thresholdedReLU":
        return np.where(x > a.alpha, x, F32(0))
    if kind == "tanh":
        return np.tanh(x)
    if kind == "scaledTanh":
        return _f(a.alpha * np.tanh(a.beta * x))
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "sigmoidHard":
        return _f(np.clip(a.alpha * x + a.beta, 0, 1))
    if kind == "ELU":
        return np.where(x >= 0, x, _f(a.alpha * (np.exp(np.minimum(x, 0)) - 1)))
    if kind == "softsign":
        return _f(x / (1 + np.abs(x)))
    if kind == "softplus":
        return _softplus(x)
    if kind == "PReLU":
        alpha = ctx.weight("PReLU.alpha")
        al = alpha if alpha.size == 1 else _chan_bcast(alpha, x)
        return np.where(x >= 0, x, x * al)
    if kind == "parametricSoftplus":
        alpha = ctx.weight("parametricSoftplus.alpha")
        beta = ctx.weight("parametricSoftplus.beta")
        al = alpha if alpha.size == 1 else _chan_bcast(alpha, x)
        be = beta if beta.size == 1 else _chan_bcast(beta, x)
        return _f(al * _softplus(be * x))
    raise UnsupportedError(f"layer {ctx.name!r} (activation): activation type {kind!r} is not supported")


@op("gelu")
def _gelu(ctx, p, ins):
    x = ins[0].astype(np.float64)
    if p.mode == 1:
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    elif p.mode == 2:
        y = x / (1 + np.exp(-1.702 * x))
    else:
        y = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    return _f(y)


def _erf(x):
    """Vectorised erf (math.erf per element is too slow for big tensors)."""
    x = np.asarray(x, dtype=np.float64)
    # Abramowitz-Stegun 7.1.26 is only 1e-7 accurate; use the complementary
    # error function series via math.erf on unique values when small, else a
    # high-accuracy rational approximation (W. J. Cody) through np.vectorize.
    if x.size <= 4096:
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return _erf_cody(x)


def _erf_cody(x):
    # Numerical Recipes erfc with Chebyshev coefficients, relative error < 1.2e-7
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (
        0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (
            1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1 - r, r - 1)


@op("clampedReLU")
def _clamped_relu(ctx, p, ins):
    x = _f(ins[0])
    return _f(np.minimum(np.where(x >= 0, x, p.alpha * x), p.beta))
