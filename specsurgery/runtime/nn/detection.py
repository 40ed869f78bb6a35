"""Detection kernels: ``NonMaximumSuppression``, ``cropResize``."""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from .. import _kernels as K
from ._base import F32, _f, _hw, _positive, _zeros, op


# --------------------------------------------------------------------------- detection, sampling

def _iou_center(a, b):
    """IoU of boxes given as (x_center, y_center, width, height)."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@op("NonMaximumSuppression")
def _nms(ctx, p, ins):
    boxes, scores = _f(ins[0]), _f(ins[1])
    iou_t = float(ins[2].reshape(-1)[0]) if len(ins) > 2 else p.iouThreshold
    score_t = float(ins[3].reshape(-1)[0]) if len(ins) > 3 else p.scoreThreshold
    max_boxes = int(ins[4].reshape(-1)[0]) if len(ins) > 4 else int(p.maxBoxes)
    b, n, c = scores.shape
    out_boxes = np.zeros((b, max_boxes, 4), F32)
    out_scores = np.zeros((b, max_boxes, c), F32)
    out_idx = np.full((b, max_boxes), -1, F32)
    out_n = np.zeros(b, F32)
    for bi in range(b):
        best = scores[bi].max(axis=1)
        cls = scores[bi].argmax(axis=1)
        order = np.argsort(-best, kind="stable")
        kept: list[int] = []
        for i in order:
            if len(kept) >= max_boxes:
                break
            if best[i] < score_t:
                break
            if all(_iou_center(boxes[bi, i], boxes[bi, j]) <= iou_t
                   for j in kept if not p.perClassSuppression or cls[j] == cls[i]):
                kept.append(int(i))
        if not kept and n:
            kept = [int(order[0])]      # never an empty result (NeuralNetwork.proto)
        for k, i in enumerate(kept):
            out_boxes[bi, k] = boxes[bi, i]
            out_scores[bi, k] = scores[bi, i]
            out_idx[bi, k] = i
        out_n[bi] = len(kept)
    return [out_boxes, out_scores, out_idx, out_n]


@op("cropResize")
def _crop_resize(ctx, p, ins):
    """Crop boxes and resize them bilinearly.  Only the endpoint-aligned sampling
    modes run (their semantics are pinned down by coremltools' reference tests);
    UPSAMPLE_MODE and ROI_ALIGN_MODE raise rather than guess."""
    x, roi = _f(ins[0]), _f(ins[1])
    method = p.mode.samplingMethod
    if method not in (0, 1):
        raise UnsupportedError(f"layer {ctx.name!r} (cropResize): sampling mode "
                               f"{['STRICT_ALIGN_ENDPOINTS', 'ALIGN_ENDPOINTS', 'UPSAMPLE', 'ROI_ALIGN'][method]}"
                               " is not supported by the reference runtime")
    x5 = x.reshape((1,) * (5 - x.ndim) + x.shape) if x.ndim < 5 else x
    _, b, c, h, w = x5.shape
    th, tw = _hw(p.targetSize, (1, 1))
    boxes = roi.reshape(roi.shape[0], -1)
    with_index = boxes.shape[1] == 5
    if boxes.shape[1] not in (4, 5):
        ctx.fail(f"RoI input must be [N,1,4,1,1] or [N,1,5,1,1], got {tuple(roi.shape)}")
    n = boxes.shape[0]
    out_b = 1 if with_index else b
    th, tw = _positive(ctx, "targetSize", (th, tw))
    ctx.room((n, out_b, c, th, tw))
    if ctx.shape_only:
        return _zeros((n, out_b, c, th, tw))
    scale = p.spatialScale or 1.0
    out = np.zeros((n, out_b, c, th, tw), F32)
    for i in range(n):
        v = boxes[i, 1:] if with_index else boxes[i]
        mode = p.boxIndicesMode.boxMode
        if mode == 0:
            hs, ws, he, we = v
        elif mode == 1:
            ws, hs, we, he = v
        else:
            if mode == 2:
                hc, wc, bh, bw = v
            else:
                wc, hc, bw, bh = v
            hs, he, ws, we = hc - bh / 2, hc + bh / 2, wc - bw / 2, wc + bw / 2
        if p.normalizedCoordinates:
            hs, he, ws, we = hs * (h - 1), he * (h - 1), ws * (w - 1), we * (w - 1)
        hs, he, ws, we = hs * scale, he * scale, ws * scale, we * scale

        def grid(s, e, k):
            if k == 1:
                return np.array([s if method == 0 else (s + e) / 2.0])
            return np.linspace(s, e, k)
        src = x5[0, int(boxes[i, 0])][None] if with_index else x5[0]
        out[i] = K.bilinear(src, grid(hs, he, th), grid(ws, we, tw))
    return out
