"""Convert a small image classifier to Core ML with ImageType normalisation and labels.

The torch side normalises the way torchvision pipelines do: pixels / 255, then
(x - mean) / std with the ImageNet mean and std.  ``from_torch`` turns that into
the ImageType's scale and per-channel bias (plus an exact per-channel 1/std,
since an ImageType has one scale for all channels), so the Core ML model takes
a plain RGB image.  The converted classifier is run through specsurgery's numpy
reference runtime on the same uint8 image torch sees, and the probabilities
must match within 1e-4.

Usage: python run.py [OUTDIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import specsurgery as ss
from specsurgery.convert import from_torch

MEAN = [0.485, 0.456, 0.406]  # ImageNet, on 0..1 pixel values
STD = [0.229, 0.224, 0.225]
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIZE = 64


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, stride=1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = ConvBNReLU(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.b(self.a(x)))


class TinyResNet(nn.Module):
    """Stem, two residual stages, global average pool, linear head, softmax."""

    def __init__(self, classes=len(LABELS)):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(3, 16, stride=2), Residual(16),
            ConvBNReLU(16, 32, stride=2), Residual(32),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, image):
        return torch.softmax(self.classifier(self.features(image)), dim=1)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give the batch norms non-trivial running statistics (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def main(out: Path) -> int:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyResNet()
    randomise_batchnorm(model)
    model.eval()

    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    t0 = time.perf_counter()
    spec = from_torch(
        model, torch.rand(1, 3, SIZE, SIZE),
        image_input="image", mean=MEAN, std=STD,          # torch normalisation, on 0..1 pixels
        class_labels=out / "labels.txt",
        metadata={"author": "specsurgery examples", "license": "BSD-3-Clause", "version": "1.0",
                  "description": "TinyResNet on 64x64 RGB images (10 classes)",
                  "inputs": {"image": "RGB image, 64 x 64"},
                  "outputs": {"classLabelProbs": "probability of each class",
                              "classLabel": "most likely class"}},
        save_to=out / "TinyResNet.mlmodel")
    print(f"converted in {time.perf_counter() - t0:.1f} s -> {out / 'TinyResNet.mlmodel'}")
    image_type = spec.description.input[0].type.imageType
    nn_spec = spec.neuralNetworkClassifier
    pre = nn_spec.preprocessing[0].scaler
    print(f"input 'image': {image_type.width}x{image_type.height} "
          f"{type(image_type).ColorSpace.Name(image_type.colorSpace)}, scale {pre.channelScale:.6f}, "
          f"bias R/G/B {pre.redBias:.4f} {pre.greenBias:.4f} {pre.blueBias:.4f}")
    print(f"classifier: {len(spec.neuralNetworkClassifier.stringClassLabels.vector)} labels, "
          f"outputs {[o.name for o in spec.description.output]}")

    # The same uint8 image for both: torch gets the normalised tensor, Core ML the image.
    worst = 0.0
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = ss.predict(spec, {"image": Image.fromarray(pixels, "RGB")})
        probs = np.array([got["classLabelProbs"][label] for label in LABELS])
        err = float(np.abs(probs - expected).max())
        worst = max(worst, err)
        same = got["classLabel"] == LABELS[int(expected.argmax())]
        print(f"image {i}: torch says {LABELS[int(expected.argmax())]!r}, Core ML (reference runtime) "
              f"says {got['classLabel']!r}; max |dp| = {err:.2e}")
        if not same:
            print("FAIL: the predicted labels differ")
            return 1
    if worst > 1e-4:
        print(f"FAIL: probabilities differ by {worst:.2e} > 1e-4")
        return 1
    print(f"OK: Core ML matches torch within {worst:.1e} (limit 1e-4)")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ex03-"))
    sys.exit(main(target))
