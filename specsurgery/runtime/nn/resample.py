"""Resampling kernels: ``upsample``, ``resizeBilinear``."""

from __future__ import annotations

import math

from .. import _kernels as K
from ._base import _as4, _f, _hw, _positive, _zeros, op


# --------------------------------------------------------------------------- resampling

@op("upsample")
def _upsample(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    h, w = x4.shape[-2:]
    if len(p.fractionalScalingFactor):
        fh, fw = float(p.fractionalScalingFactor[0]), float(p.fractionalScalingFactor[1])
    else:
        fh, fw = _hw(p.scalingFactor, (1, 1))
    if not (fh > 0 and fw > 0 and math.isfinite(fh) and math.isfinite(fw)):
        ctx.fail(f"scaling factors {fh} x {fw} must be positive numbers")
    ho, wo = int(math.floor(h * fh)), int(math.floor(w * fw))
    ctx.room(lead + (x4.shape[1], ho, wo))
    if ctx.shape_only:
        return _zeros(lead + (x4.shape[1], ho, wo))
    if p.mode == 0:
        y = K.upsample_nearest(x4, fh, fw)
    else:
        method = {0: "default", 1: "corners_true", 2: "corners_false"}[p.linearUpsampleMode]
        y = K.bilinear(x4, K.grid_points(h, ho, method), K.grid_points(w, wo, method))
    return y.reshape(lead + y.shape[1:])


@op("resizeBilinear")
def _resize_bilinear(ctx, p, ins):
    x = _f(ins[0])
    x4, lead = _as4(x)
    h, w = x4.shape[-2:]
    ho, wo = _positive(ctx, "targetSize", _hw(p.targetSize, (1, 1)))
    ctx.room(lead + (x4.shape[1], ho, wo))
    if ctx.shape_only:
        return _zeros(lead + (x4.shape[1], ho, wo))
    method = {0: "strict_align", 1: "align", 2: "upsample", 3: "roi_align"}[p.mode.samplingMethod]
    y = K.bilinear(x4, K.grid_points(h, ho, method), K.grid_points(w, wo, method))
    return y.reshape(lead + y.shape[1:])
