"""Numeric kernels of the reference runtime: convolution, pooling, resampling.

Every kernel takes a 4-d ``[N, C, H, W]`` float32 array (callers fold any
leading batch dimensions into N) and works with plain numpy: convolutions are
im2col + one matrix product per group, depthwise convolutions and pooling are
k*k strided slice updates, deconvolutions are a matrix product followed by a
col2im scatter-add.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


# --------------------------------------------------------------------------- padding rules

def same_pads(size: int, k_eff: int, stride: int, top_left_heavy: bool = False) -> tuple[int, int, int]:
    """(out, pad_before, pad_after) for SAME padding."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + k_eff - size)
    small = total // 2
    if top_left_heavy:
        return out, total - small, small
    return out, small, total - small


def valid_out(size: int, k_eff: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - k_eff) // stride + 1


def pad_hw(x: np.ndarray, pt: int, pb: int, pl: int, pr: int, value: float = 0.0) -> np.ndarray:
    if not (pt or pb or pl or pr):
        return x
    if min(pt, pb, pl, pr) < 0:       # negative padding crops
        h, w = x.shape[-2:]
        x = x[..., max(0, -pt): h - max(0, -pb), max(0, -pl): w - max(0, -pr)]
        pt, pb, pl, pr = max(pt, 0), max(pb, 0), max(pl, 0), max(pr, 0)
    n, c, h, w = x.shape
    out = np.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    out[:, :, pt: pt + h, pl: pl + w] = x
    return out


# --------------------------------------------------------------------------- convolution

def conv2d(x: np.ndarray, w: np.ndarray, bias, stride, dilation, pads, groups: int) -> np.ndarray:
    """x [N,C,H,W], w [O, C/groups, kh, kw], pads (top, bottom, left, right)."""
    n, c, h, wd = x.shape
    o, kc, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    xp = pad_hw(x, *pads)
    hp, wp = xp.shape[-2:]
    ho = (hp - (dh * (kh - 1) + 1)) // sh + 1
    wo = (wp - (dw * (kw - 1) + 1)) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"convolution output would be empty ({ho}x{wo}) for input {h}x{wd}")
    out = np.empty((n, o, ho, wo), dtype=np.float32)
    if groups > 1 and kc == 1 and o == c * (o // c) and groups == c:
        # depthwise (channel multiplier m = o // c): k*k fused multiply-adds
        m = o // c
        for b in range(n):
            acc = np.zeros((o, ho, wo), dtype=np.float32)
            src = xp[b] if m == 1 else np.repeat(xp[b], m, axis=0)
            for i in range(kh):
                for j in range(kw):
                    patch = src[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                                j * dw: j * dw + sw * (wo - 1) + 1: sw]
                    acc += patch * w[:, 0, i, j][:, None, None]
            out[b] = acc
    else:
        og = o // groups
        cg = c // groups
        wm = w.reshape(o, kc * kh * kw)
        pointwise = kh == 1 and kw == 1 and sh == 1 and sw == 1
        # im2col in bands of output rows so the column buffer stays below ~32 MiB
        band = max(1, min(ho, (8 << 20) // max(1, cg * kh * kw * wo)))
        for b in range(n):
            for g in range(groups):
                src = xp[b, g * cg: (g + 1) * cg]
                dst = out[b, g * og: (g + 1) * og]
                wg = wm[g * og: (g + 1) * og]
                if pointwise:
                    np.matmul(wg, src.reshape(cg, ho * wo), out=dst.reshape(og, ho * wo))
                    continue
                for r0 in range(0, ho, band):
                    r1 = min(ho, r0 + band)
                    nr = r1 - r0
                    cols = np.empty((cg, kh, kw, nr, wo), dtype=np.float32)
                    for i in range(kh):
                        top = i * dh + r0 * sh
                        for j in range(kw):
                            cols[:, i, j] = src[:, top: top + sh * (nr - 1) + 1: sh,
                                                j * dw: j * dw + sw * (wo - 1) + 1: sw]
                    if nr == ho:
                        np.matmul(wg, cols.reshape(cg * kh * kw, nr * wo), out=dst.reshape(og, ho * wo))
                    else:
                        dst[:, r0:r1] = (wg @ cols.reshape(cg * kh * kw, nr * wo)).reshape(og, nr, wo)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def deconv2d(x: np.ndarray, w: np.ndarray, bias, stride, groups: int, crop, out_hw) -> np.ndarray:
    """Transposed convolution.  w [C_in, O/groups, kh, kw]; crop (top, left);
    out_hw the output size (rows past the full result are zero before bias)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    sh, sw = stride
    hf = (h - 1) * sh + kh
    wf = (wd - 1) * sw + kw
    o = og * groups
    cg = c // groups
    full = np.zeros((n, o, hf, wf), dtype=np.float32)
    for b in range(n):
        for g in range(groups):
            wg = w[g * cg: (g + 1) * cg].reshape(cg, og * kh * kw)
            cols = (wg.T @ x[b, g * cg: (g + 1) * cg].reshape(cg, h * wd)).reshape(og, kh, kw, h, wd)
            dst = full[b, g * og: (g + 1) * og]
            for i in range(kh):
                for j in range(kw):
                    dst[:, i: i + sh * (h - 1) + 1: sh, j: j + sw * (wd - 1) + 1: sw] += cols[:, i, j]
    top, left = crop
    ho, wo = out_hw
    out = np.zeros((n, o, ho, wo), dtype=np.float32)
    hh = max(0, min(ho, hf - top))
    ww = max(0, min(wo, wf - left))
    out[:, :, :hh, :ww] = full[:, :, top: top + hh, left: left + ww]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


# --------------------------------------------------------------------------- pooling

def pool2d(x: np.ndarray, kind: str, k, stride, pads, exclude_pad: bool, out_hw=None,
           count_limits=None) -> np.ndarray:
    """Max/average/L2 pooling.  pads (top, bottom, left, right) may be extended on
    the bottom/right to reach ``out_hw``; ``count_limits`` (H, W) bounds the region
    that counts toward an average when padding is included."""
    n, c, h, w = x.shape
    kh, kw = k
    sh, sw = stride
    pt, pb, pl, pr = pads
    if out_hw is None:
        ho = (h + pt + pb - kh) // sh + 1
        wo = (w + pl + pr - kw) // sw + 1
    else:
        ho, wo = out_hw
    need_h = (ho - 1) * sh + kh
    need_w = (wo - 1) * sw + kw
    eb = max(0, need_h - (h + pt + pb))
    er = max(0, need_w - (w + pl + pr))
    fill = -np.inf if kind == "max" else 0.0
    src = x if kind != "l2" else x * x
    xp = pad_hw(src, pt, pb + eb, pl, pr + er, fill)
    acc = None
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw]
            if acc is None:
                acc = patch.astype(np.float32, copy=True)
            elif kind == "max":
                np.maximum(acc, patch, out=acc)
            else:
                acc += patch
    if kind == "max":
        return acc
    if kind == "l2":
        return np.sqrt(acc)
    # average: divide by the number of counted positions per window
    if exclude_pad:
        lo_h, hi_h, lo_w, hi_w = pt, pt + h, pl, pl + w
    else:
        lim_h, lim_w = count_limits if count_limits else (h + pt + pb, w + pl + pr)
        lo_h, hi_h, lo_w, hi_w = 0, lim_h, 0, lim_w
    rows = np.arange(ho) * sh
    cols = np.arange(wo) * sw
    cnt_h = np.clip(np.minimum(rows + kh, hi_h) - np.maximum(rows, lo_h), 0, None)
    cnt_w = np.clip(np.minimum(cols + kw, hi_w) - np.maximum(cols, lo_w), 0, None)
    cnt = (cnt_h[:, None] * cnt_w[None, :]).astype(np.float32)
    return acc / np.maximum(cnt, 1.0)


# --------------------------------------------------------------------------- resampling

def grid_points(n_in: int, n_out: int, method: str) -> np.ndarray:
    """Sample coordinates in input space for resizeBilinear / upsample modes."""
    i = np.arange(n_out, dtype=np.float64)
    if method == "strict_align":        # STRICT_ALIGN_ENDPOINTS
        if n_out == 1:
            return np.zeros(1)
        return i * (n_in - 1) / (n_out - 1)
    if method == "align":               # ALIGN_ENDPOINTS
        if n_out == 1:
            return np.full(1, (n_in - 1) / 2.0)
        return i * (n_in - 1) / (n_out - 1)
    if method == "upsample":            # UPSAMPLE_MODE
        if n_out == 1:
            return np.zeros(1)
        return np.minimum(n_in - 1, i * (n_in - n_in / n_out) / (n_out - 1))
    if method == "roi_align":           # ROI_ALIGN_MODE
        spacing = max(1, n_in - 1) / n_out
        return np.minimum(n_in - 1, 0.5 * spacing + i * spacing)
    if method == "default":             # upsample DEFAULT
        if n_out == 1:
            return np.zeros(1)
        spacing = (n_in - n_in / n_out) / (n_out - 1)
        return np.clip(i * spacing, 0, n_in - 1)
    if method == "corners_true":
        spacing = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return np.clip(i * spacing, 0, n_in - 1)
    if method == "corners_false":
        spacing = n_in / n_out
        return np.clip(i * spacing + 0.5 * spacing - 0.5, 0, n_in - 1)
    raise ValueError(method)


def bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample x [..., H, W] at row coordinates ys and column coordinates xs."""
    h, w = x.shape[-2:]
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0).astype(np.float32)[:, None]
    fx = (xs - x0).astype(np.float32)[None, :]
    top = x[..., y0, :]
    bot = x[..., y1, :]
    rows = top * (1 - fy) + bot * fy
    left = rows[..., :, x0]
    right = rows[..., :, x1]
    return (left * (1 - fx) + right * fx).astype(np.float32)


def upsample_nearest(x: np.ndarray, fh, fw) -> np.ndarray:
    h, w = x.shape[-2:]
    if float(fh).is_integer() and float(fw).is_integer():
        return np.repeat(np.repeat(x, int(fh), axis=-2), int(fw), axis=-1)
    ho, wo = int(math.floor(h * fh)), int(math.floor(w * fw))
    ri = np.minimum(h - 1, np.floor(np.arange(ho) / fh).astype(np.int64))
    ci = np.minimum(w - 1, np.floor(np.arange(wo) / fw).astype(np.int64))
    return x[..., ri, :][..., :, ci]


def registry() -> tuple[dict[str, Callable], Callable]:
    """A fresh kernel table and its decorator: ``@op("a", "b")`` files the function
    under each name (the NeuralNetwork and the MIL interpreters each keep one)."""
    table: dict[str, Callable] = {}

    def op(*names):
        def deco(fn):
            for n in names:
                table[n] = fn
            return fn
        return deco
    return table, op
