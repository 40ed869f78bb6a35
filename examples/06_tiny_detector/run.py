"""Convert a plain-torch tiny object detector into a Core ML detector pipeline with labels.

The detector (no torchvision) predicts, for each cell of a 4x4 grid, class
scores and a box (centre x, centre y, width, height, all 0..1).  One call turns
it into what Create ML and Turi Create ship:

    add_nms(from_torch(model, ...), confidence="scores", coordinates="boxes", labels=LABELS)

a pipeline [detector, nonMaximumSuppression] with the class labels, optional
iouThreshold / confidenceThreshold inputs, flexible confidence / coordinates
outputs and the metadata Xcode's preview and Vision expect.  The script then
runs the pipeline in specsurgery's numpy reference runtime and checks that its
boxes are exactly torch's boxes after a plain-Python non-maximum suppression.

Usage: python run.py [OUTDIR]
"""

from __future__ import annotations

import sys
from collections import Counter
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import specsurgery as ss
from specsurgery.convert import from_torch
from specsurgery.ops.nms import add_nms

LABELS = ["circle", "square", "triangle"]
SIZE = 32
IOU, CONFIDENCE = 0.45, 0.3


class TinyDetector(nn.Module):
    """A 3-layer backbone and a 1x1 head: per grid cell, class scores and a box."""

    def __init__(self, classes: int = len(LABELS)):
        super().__init__()
        self.classes = classes
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())               # 32 x 4 x 4 for a 32 x 32 image
        self.head = nn.Conv2d(32, classes + 4, 1)
        cells = [[float(i % 4), float(i // 4)] for i in range(16)]   # (column, row) of each cell
        self.register_buffer("grid", torch.tensor(cells))

    def forward(self, image):
        y = self.head(self.backbone(image))                     # 1 x (classes + 4) x 4 x 4
        y = y.flatten(2).transpose(1, 2)[0]                     # 16 cells x (classes + 4)
        scores = torch.softmax(y[:, :self.classes] * 20, dim=1)  # [boxes, classes]
        centre = (self.grid + torch.sigmoid(y[:, self.classes:self.classes + 2])) / 4
        size = torch.sigmoid(y[:, self.classes + 2:]) * 1.5
        return scores, torch.cat([centre, size], dim=1)         # [boxes, 4] as cx, cy, w, h


def reference_nms(scores, boxes, iou_t, conf_t):
    """Greedy non-maximum suppression in plain Python (corners, loops)."""
    def iou(a, b):
        ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
        bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
        inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    best = scores.max(1)
    keep = []
    for i in sorted(range(len(best)), key=lambda i: -best[i]):
        if best[i] >= conf_t and all(iou(boxes[i], boxes[k]) <= iou_t for k in keep):
            keep.append(i)
    return keep


def main(out: Path) -> int:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyDetector().eval()
    with torch.no_grad():                       # an "untrained" head that still varies from cell to cell
        model.head.weight.normal_(0.0, 0.5)
        model.head.bias.zero_()
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")

    # The one call: convert, then wrap in non-maximum suppression with labels.
    detector = add_nms(
        from_torch(model, torch.rand(1, 3, SIZE, SIZE), image_input="image", mean=0.0, std=1.0,
                   output_names=["scores", "boxes"],
                   metadata={"author": "specsurgery examples", "license": "BSD-3-Clause",
                             "description": "TinyDetector: shapes on 32x32 RGB images"}),
        confidence="scores", coordinates="boxes", labels=LABELS,
        iou_threshold=IOU, confidence_threshold=CONFIDENCE)
    path = ss.save(detector, out / "TinyDetector.mlmodel")       # save runs check first
    print(f"wrote {path}")
    pipe = detector.pipeline
    print("stages:", ", ".join(f"{n} ({m.WhichOneof('Type')})" for n, m in zip(pipe.names, pipe.models)))
    print("inputs:", ", ".join(f"{f.name}{'?' if f.type.isOptional else ''}" for f in detector.description.input))
    print("outputs:", ", ".join(f.name for f in detector.description.output))
    print("preview:", detector.description.metadata.userDefined["com.apple.coreml.model.preview.type"])

    rng = np.random.default_rng(0)
    boxes_seen = 0
    for i in range(3):
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)          # a few coloured blocks on black
        for _ in range(4):
            (y0, x0), (h, w) = rng.integers(0, SIZE - 8, 2), rng.integers(6, 14, 2)
            pixels[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            scores, boxes = (t.double().numpy() for t in model(x))
        keep = reference_nms(scores, boxes, IOU, CONFIDENCE)
        got = ss.predict(path, {"image": Image.fromarray(pixels, "RGB")})
        if got["coordinates"].shape != (len(keep), 4):
            print(f"FAIL: image {i}: {got['coordinates'].shape[0]} boxes, the reference keeps {len(keep)}")
            return 1
        err = max(float(np.abs(got["coordinates"] - boxes[keep]).max(initial=0)),
                  float(np.abs(got["confidence"] - scores[keep]).max(initial=0)))
        found = Counter(LABELS[int(j)] for j in got["confidence"].argmax(1))
        print(f"image {i}: {len(keep)} of 16 boxes kept ({', '.join(f'{n} {k}' for k, n in sorted(found.items()))});"
              f" max |d| vs torch + reference NMS = {err:.1e}")
        if err > 1e-4:
            print("FAIL: boxes or confidences differ from torch + reference NMS by more than 1e-4")
            return 1
        boxes_seen += len(keep)
    if not boxes_seen:
        print("FAIL: no box survived on any image")
        return 1
    print("OK: the detector pipeline matches torch followed by a reference NMS")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ex06-"))
    sys.exit(main(target))
