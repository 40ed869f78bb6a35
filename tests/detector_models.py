"""A classifier and a detector pipeline ([network, nms], built with add_nms)
converted from plain-torch models that share one body, for the tests that
dedupe or split detectors (one conversion per backend, handed out as copies)."""

from __future__ import annotations

import functools

import pytest

from specsurgery import io

DET_LABELS = ["cat", "dog", "bird"]


def classifier_and_detector(backend="neuralnetwork"):
    """A torch classifier and a detector pipeline ([network, nms], add_nms) that share one body
    (built once per backend; copies, so a test may edit them)."""
    pytest.importorskip("torch")
    return tuple(m.copy() if isinstance(m, io.MLPackage) else io.copy_spec(m)
                 for m in _classifier_and_detector(backend))


@functools.lru_cache(maxsize=None)
def _classifier_and_detector(backend):
    import torch
    from specsurgery.convert import from_torch
    from specsurgery.ops.nms import add_nms

    torch.manual_seed(3)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                               torch.nn.ReLU())

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = body, torch.nn.Linear(16, len(DET_LABELS))

        def forward(self, image):
            return torch.softmax(self.fc(self.body(image).mean((2, 3))), -1)

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = body, torch.nn.Conv2d(16, len(DET_LABELS) + 4, 1)

        def forward(self, image):
            y = self.head(self.body(image)).flatten(2).transpose(1, 2)[0]
            return torch.softmax(y[:, :len(DET_LABELS)] * 3, -1), torch.sigmoid(y[:, len(DET_LABELS):])

    ex = torch.rand(1, 3, 16, 16)
    clf = from_torch(Classifier().eval(), ex, image_input="image", class_labels=DET_LABELS, backend=backend)
    raw = from_torch(Detector().eval(), ex, image_input="image", output_names=["scores", "boxes"], backend=backend)
    return clf, add_nms(raw, confidence="scores", coordinates="boxes", labels=DET_LABELS)
