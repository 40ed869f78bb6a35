"""Convert a segmentation model whose forward returns a dict, with Xcode preview metadata.

Like torchvision's segmentation models, ``forward`` returns ``{"out": ...,
"aux": ...}``.  ``coremltools.convert`` cannot take a dict output directly;
``from_torch`` wraps the module so the outputs become two tensors named after
the keys.  The model gets the metadata Xcode's preview uses for segmenters
(``com.apple.coreml.model.preview.type`` = ``imageSegmenter`` and
``com.apple.coreml.model.preview.params`` = ``{"labels": [...]}``).  Both
outputs are then checked against torch through specsurgery's numpy reference
runtime on the same uint8 image.

Usage: python run.py [OUTDIR]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import specsurgery as ss
from specsurgery.convert import from_torch

LABELS = ["background", "person", "bicycle", "car", "dog", "cat"]
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]   # one std for all channels: folds into the ImageType
SIZE = 64


def block(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TinyDeepLab(nn.Module):
    """Strided backbone, atrous pyramid head, auxiliary head on mid features."""

    def __init__(self, classes=len(LABELS)):
        super().__init__()
        self.stage1 = nn.Sequential(block(3, 16, 2), block(16, 16))
        self.stage2 = nn.Sequential(block(16, 32, 2), block(32, 32))
        self.aspp = nn.ModuleList([block(32, 16, dilation=d) for d in (1, 2, 4)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1), nn.ReLU())
        self.project = block(64, 32)
        self.head = nn.Conv2d(32, classes, 1)
        self.aux_head = nn.Sequential(block(16, 16), nn.Conv2d(16, classes, 1))

    def forward(self, image):
        size = image.shape[-2:]
        mid = self.stage1(image)
        deep = self.stage2(mid)
        pooled = self.pool(deep).expand(-1, -1, deep.shape[2], deep.shape[3])
        feats = torch.cat([branch(deep) for branch in self.aspp] + [pooled], dim=1)
        out = F.interpolate(self.head(self.project(feats)), size=size, mode="bilinear",
                            align_corners=False)
        aux = F.interpolate(self.aux_head(mid), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


def main(out: Path) -> int:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyDeepLab().eval()

    t0 = time.perf_counter()
    spec = from_torch(
        model, torch.rand(1, 3, SIZE, SIZE), image_input="image", mean=MEAN, std=STD,
        metadata={"author": "specsurgery examples", "license": "BSD-3-Clause",
                  "description": "TinyDeepLab: per-pixel scores for 6 classes",
                  "preview": {"type": "imageSegmenter", "labels": LABELS},
                  "outputs": {"out": "per-pixel class scores", "aux": "auxiliary head scores"}},
        save_to=out / "TinyDeepLab.mlmodel")
    print(f"converted in {time.perf_counter() - t0:.1f} s -> {out / 'TinyDeepLab.mlmodel'}")
    outputs = [o.name for o in spec.description.output]
    meta = spec.description.metadata.userDefined
    print(f"forward returned a dict; Core ML outputs: {outputs}")
    print(f"preview type: {meta['com.apple.coreml.model.preview.type']}, "
          f"params: {meta['com.apple.coreml.model.preview.params']}")
    if outputs != ["out", "aux"] or json.loads(meta["com.apple.coreml.model.preview.params"]) != {"labels": LABELS}:
        print("FAIL: outputs or preview metadata are not as expected")
        return 1

    worst = 0.0
    rng = np.random.default_rng(1)
    for i in range(2):
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = model(x)
        got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
        for name in ("out", "aux"):
            err = float(np.abs(np.asarray(got[name]).reshape(expected[name].shape) -
                               expected[name].numpy()).max())
            worst = max(worst, err)
            print(f"image {i} output {name!r} {list(expected[name].shape)}: max |d| = {err:.2e}")
        agree = float((np.asarray(got["out"]).reshape(expected["out"].shape).argmax(1) ==
                       expected["out"].numpy().argmax(1)).mean())
        print(f"image {i}: per-pixel labels agree on {agree:.1%} of pixels")
    if worst > 1e-4:
        print(f"FAIL: outputs differ by {worst:.2e} > 1e-4")
        return 1
    print(f"OK: Core ML matches torch within {worst:.1e} (limit 1e-4)")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ex04-"))
    sys.exit(main(target))
