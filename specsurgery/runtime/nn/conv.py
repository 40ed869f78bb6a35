"""Convolution kernels: ``convolution`` (and deconvolution) and ``convolution3d``."""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from .. import _kernels as K
from ._base import F32, _as4, _f, _hw, _lead_fold, _positive, _zeros, op


# --------------------------------------------------------------------------- convolution

def _conv_geometry(p, x_hw, kh, kw, sh, sw, dh, dw):
    h, w = x_hw
    pad = p.WhichOneof("ConvolutionPaddingType")
    if pad == "same":
        tl = p.same.asymmetryMode == 1
        ho, pt, pb = K.same_pads(h, dh * (kh - 1) + 1, sh, tl)
        wo, pl, pr = K.same_pads(w, dw * (kw - 1) + 1, sw, tl)
        return (pt, pb, pl, pr), (ho, wo)
    b = p.valid.paddingAmounts.borderAmounts if pad == "valid" else []
    pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
    pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
    ho = K.valid_out(h, dh * (kh - 1) + 1, sh, pt, pb)
    wo = K.valid_out(w, dw * (kw - 1) + 1, sw, pl, pr)
    return (pt, pb, pl, pr), (ho, wo)


@op("convolution")
def _convolution(ctx, p, ins):
    x = ins[0]
    x4, lead = _as4(x)
    n, c, h, w = x4.shape
    kh, kw = _positive(ctx, "kernelSize", _hw(p.kernelSize, (3, 3)))
    sh, sw = _positive(ctx, "stride", _hw(p.stride, (1, 1)))
    groups = int(p.nGroups) or 1
    o = int(p.outputChannels)
    if o <= 0 or groups <= 0 or int(p.kernelChannels) <= 0:
        ctx.fail(f"outputChannels {o}, kernelChannels {int(p.kernelChannels)} and nGroups {groups} "
                 "must be positive")
    kc = int(p.kernelChannels)
    if p.isDeconvolution:
        dh = dw = 1
        if kc != c:
            ctx.fail(f"deconvolution kernelChannels {kc} does not match the input's {c} channels")
        pad = p.WhichOneof("ConvolutionPaddingType")
        hf, wf = (h - 1) * sh + kh, (w - 1) * sw + kw
        if pad == "same":
            ho, wo = h * sh, w * sw
            th, tw = max(0, hf - ho), max(0, wf - wo)
            tl = p.same.asymmetryMode == 1
            top = th - th // 2 if tl else th // 2
            left = tw - tw // 2 if tl else tw // 2
        else:
            b = p.valid.paddingAmounts.borderAmounts if pad == "valid" else []
            pt, pb = (int(b[0].startEdgeSize), int(b[0].endEdgeSize)) if len(b) > 0 else (0, 0)
            pl, pr = (int(b[1].startEdgeSize), int(b[1].endEdgeSize)) if len(b) > 1 else (0, 0)
            top, left = pt, pl
            ho, wo = hf - pt - pb, wf - pl - pr
        if len(p.outputShape) == 2:
            ho, wo = int(p.outputShape[0]), int(p.outputShape[1])
        out_shape = ctx.room(lead + (o, ho, wo))
        if ctx.shape_only:
            return _zeros(out_shape)
        if len(ins) > 1:
            wt = _f(ins[1]).reshape(kc, o // groups, kh, kw)
            bias = None
        else:
            wt = ctx.weight("weights")
            bias = ctx.weight("bias", optional=True) if p.hasBias else None
        ctx.work(n * c * h * w * (o // groups) * kh * kw)
        y = K.deconv2d(_f(x4), wt, bias, (sh, sw), groups, (top, left), (ho, wo))
        return y.reshape(out_shape)
    dh, dw = _positive(ctx, "dilationFactor", _hw(p.dilationFactor, (1, 1)))
    if kc * groups != c:
        ctx.fail(f"kernelChannels {kc} x nGroups {groups} does not match the input's {c} channels "
                 f"(input shape {tuple(x.shape)})")
    pads, (ho, wo) = _conv_geometry(p, (h, w), kh, kw, sh, sw, dh, dw)
    if ho <= 0 or wo <= 0:
        ctx.fail(f"output would be empty ({ho}x{wo}) for input {h}x{w}")
    out_shape = ctx.room(lead + (o, ho, wo))
    ctx.room((n, c, h + max(pads[0], 0) + max(pads[1], 0), w + max(pads[2], 0) + max(pads[3], 0)),
             "padded input")
    if ctx.shape_only:
        return _zeros(out_shape)
    if len(ins) > 1:
        wt = _f(ins[1]).reshape(o, kc, kh, kw)
        bias = None
    else:
        wt = ctx.weight("weights")
        bias = ctx.weight("bias", optional=True) if p.hasBias else None
    ctx.work(n * o * ho * wo * kc * kh * kw)
    y = K.conv2d(_f(x4), wt, bias, (sh, sw), (dh, dw), pads, groups)
    return y.reshape(out_shape)


# --------------------------------------------------------------------------- 3-d layers

def _pads3(p, in_dhw, k, s, d=(1, 1, 1)):
    """[(before, after)] * 3 and output sizes for CUSTOM / VALID / SAME padding."""
    pads, outs = [], []
    custom = ((p.customPaddingFront, p.customPaddingBack), (p.customPaddingTop, p.customPaddingBottom),
              (p.customPaddingLeft, p.customPaddingRight))
    for i in range(3):
        keff = d[i] * (k[i] - 1) + 1
        if p.paddingType == 2:       # SAME: extra padding at the back/bottom/right
            o, b, a = K.same_pads(in_dhw[i], keff, s[i])
        elif p.paddingType == 1:     # VALID
            b = a = 0
            o = (in_dhw[i] - keff) // s[i] + 1
        else:
            b, a = int(custom[i][0]), int(custom[i][1])
            o = (in_dhw[i] + b + a - keff) // s[i] + 1
        pads.append((b, a))
        outs.append(o)
    return pads, outs


def _windows3(xp, k, s, d, outs):
    """Yield (kernel index, strided view [N, C, Do, Ho, Wo]) for every kernel tap."""
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                yield (a, b, c), xp[:, :, a * d[0]: a * d[0] + s[0] * (outs[0] - 1) + 1: s[0],
                                    b * d[1]: b * d[1] + s[1] * (outs[1] - 1) + 1: s[1],
                                    c * d[2]: c * d[2] + s[2] * (outs[2] - 1) + 1: s[2]]


@op("convolution3d")
def _conv3d(ctx, p, ins):
    if p.isDeconvolution:
        raise UnsupportedError(f"layer {ctx.name!r} (convolution3d): 3-d deconvolution is not "
                               "supported by the reference runtime")
    x = _f(ins[0])
    x5, lead = _lead_fold(x, 4)
    n, c = x5.shape[:2]
    o, cin, g = int(p.outputChannels), int(p.inputChannels), int(p.nGroups) or 1
    k = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    s = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    d = (int(p.dilationDepth) or 1, int(p.dilationHeight) or 1, int(p.dilationWidth) or 1)
    if c != cin:
        ctx.fail(f"input has {c} channels, inputChannels is {cin}")
    pads, outs = _pads3(p, x5.shape[2:], k, s, d)
    if min(outs) <= 0:
        ctx.fail(f"output would be empty ({outs}) for input {tuple(x5.shape[2:])}")
    out_shape = ctx.room(lead + (o, *outs))
    if ctx.shape_only:
        return _zeros(out_shape)
    w = ctx.weight("weights")
    ctx.work(n * o * np.prod(outs, dtype=np.float64) * (cin // g) * np.prod(k, dtype=np.float64))
    xp = np.pad(x5, [(0, 0), (0, 0)] + pads)
    cg, og = cin // g, o // g
    y = np.empty((n, o) + tuple(outs), F32)
    for gi in range(g):
        cols = np.empty((n, cg) + k + tuple(outs), F32)
        for (a, b, cc), view in _windows3(xp[:, gi * cg:(gi + 1) * cg], k, s, d, outs):
            cols[:, :, a, b, cc] = view
        cols = cols.reshape(n, cg * k[0] * k[1] * k[2], -1)
        wm = w[gi * og:(gi + 1) * og].reshape(og, -1)
        y[:, gi * og:(gi + 1) * og] = np.matmul(wm, cols).reshape((n, og) + tuple(outs))
    if p.hasBias:
        y += ctx.weight("bias").reshape(1, -1, 1, 1, 1)
    return y.reshape(out_shape)
