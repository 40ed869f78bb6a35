"""How close a compressed model's outputs stay to the original's, on seeded
random inputs through the reference runtime (both backends)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .report import CompressReport, snr_from_sums


def verify_outputs(original, compressed, report: Optional[CompressReport] = None, *, seed: int = 0,
                   samples: int = 1, search_path=None) -> dict:
    """SNR in dB of each output of ``compressed`` against ``original`` on seeded
    random inputs, run through the reference runtime (``inf``: identical).
    Non-numeric outputs (labels) count as exact when equal, else -inf."""
    from ...runtime import predict, random_inputs

    signal: dict = {}
    noise: dict = {}
    for i in range(samples):
        inputs = random_inputs(original, seed=seed + i)
        a = predict(original, inputs, search_path=search_path)
        b = predict(compressed, inputs, search_path=search_path)
        for name, va in a.items():
            vb = b.get(name)
            if isinstance(va, dict) and isinstance(vb, dict) and va.keys() == vb.keys():
                keys = sorted(va, key=str)    # class probabilities: compare as a vector
                va = np.array([float(va[k]) for k in keys])
                vb = np.array([float(vb[k]) for k in keys])
            if isinstance(va, dict) or isinstance(va, str) or not isinstance(va, np.ndarray) \
                    or not np.issubdtype(np.asarray(va).dtype, np.number):
                same = _same_value(va, vb)
                signal.setdefault(name, 1.0)
                noise[name] = noise.get(name, 0.0) + (0.0 if same else math.inf)
                continue
            va64 = np.asarray(va, dtype=np.float64).reshape(-1)
            vb64 = np.asarray(vb, dtype=np.float64).reshape(-1)
            signal[name] = signal.get(name, 0.0) + float(va64 @ va64)
            d = va64 - vb64
            noise[name] = noise.get(name, 0.0) + float(d @ d)
    out = {name: snr_from_sums(signal[name], noise[name]) for name in signal}
    if report is not None:
        report.outputs.update(out)
    return out


def _same_value(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(abs(float(a[k]) - float(b[k])) < 1e-6 for k in a)
    return a == b


__all__ = ["verify_outputs"]
