"""split --stage on an ML Program detector: [mlProgram, nms] cut in its first stage gives
[detector_backbone, detector_head, nms] (the backbone optionally a linked stub) with the
detector's interface, labels and metadata; it checks and verifies against the detector."""

from __future__ import annotations

import warnings

import pytest

from specsurgery import io
from specsurgery import spec as S
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import UnsupportedError
from specsurgery.ops._nn import SurgeryNote
from specsurgery.ops.split import split_at, split_model
from specsurgery.runtime import verify

LABELS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def detector():
    """A plain-torch tiny detector converted to an ML Program, with add_nms on top."""
    torch = pytest.importorskip("torch")
    from specsurgery.convert import from_torch
    from specsurgery.ops.nms import add_nms

    class TinyDetector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU())
            self.head = torch.nn.Conv2d(16, len(LABELS) + 4, 1)

        def forward(self, image):
            y = self.head(self.body(image)).flatten(2).transpose(1, 2)[0]
            return torch.softmax(y[:, :len(LABELS)] * 3, -1), torch.sigmoid(y[:, len(LABELS):])

    torch.manual_seed(1)
    raw = from_torch(TinyDetector().eval(), torch.rand(1, 3, 16, 16), image_input="image",
                     output_names=["scores", "boxes"], backend="mlprogram")
    return add_nms(raw, confidence="scores", coordinates="boxes", labels=LABELS)


def _trunk_end(det):
    """The value after the body's last relu (a 1x16x4x4 cut)."""
    from specsurgery.ops import suggest_cuts

    cuts = [c for c in suggest_cuts(det, "detector") if list(c.shape or []) == [1, 16, 4, 4]]
    assert cuts
    return cuts[-1].blob


@pytest.mark.parametrize("link", [False, True])
def test_split_the_program_stage_of_a_detector(detector, tmp_path, link):
    blob = _trunk_end(detector)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SurgeryNote)
        paths = split_model(detector, blob, tmp_path, name="D", stage="detector", link=link)
    assert {p.suffix for p in paths.values()} == {".mlpackage"}
    pipe = io.load(paths["pipeline"])
    stages = S.pipeline_of(pipe.spec)
    assert list(stages.names) == ["detector_backbone", "detector_head", "nms"]
    assert [m.WhichOneof("Type") for m in stages.models] == [
        "linkedModel" if link else "mlProgram", "mlProgram", "nonMaximumSuppression"]
    assert stages.models[2] == detector.spec.pipeline.models[1]
    for field in ("input", "output"):
        assert list(getattr(pipe.spec.description, field)) == list(getattr(detector.spec.description, field))
    assert pipe.spec.description.metadata == detector.spec.description.metadata
    # the pipeline stores the head's weights, and the backbone's only when it is not linked
    head_bytes = io.load(paths["head"]).weight_bytes
    assert pipe.weight_bytes == head_bytes if link else pipe.weight_bytes > head_bytes
    for p in paths.values():
        assert [f for f in check(p, search_path=str(tmp_path)) if f.severity == "error"] == []
    report = verify(detector, paths["pipeline"], search_path=str(tmp_path), samples=2)
    assert report.ok, report.summary()


def test_split_at_a_program_stage_and_refusals(detector, tmp_path, capsys):
    blob = _trunk_end(detector)
    backbone, head = split_at(detector, blob, stage="detector")
    assert [f.name for f in backbone.spec.description.output] == [blob]
    assert [f.name for f in head.spec.description.output] == ["scores", "boxes"]
    with pytest.raises(UnsupportedError, match="option 'freeze_backbone'"):
        split_at(detector, blob, stage="detector", freeze_backbone=True)
    with pytest.raises(UnsupportedError, match="--stage detector"):
        split_at(detector, blob)
    src = io.save(detector, tmp_path / "Det.mlpackage")
    out = tmp_path / "out"
    assert main(["split", str(src), "--at", blob, "--stage", "detector", "-o", str(out)]) == 0
    capsys.readouterr()
    assert verify(src, out / "Det.mlpackage", samples=1).ok
