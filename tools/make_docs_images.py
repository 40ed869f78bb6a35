"""Regenerate the images in docs/img/ (deterministic specs built in code; no corpus needed).

* ``linked_backbone.png``: a small residual classifier split at ``x1`` with
  ``split_model(link=True)``: a pipeline whose backbone stage is a linked stub
  (``ClassifierBackbone.mlmodelc`` on ``.:$BUNDLE_MAIN``), drawn with
  ``expand_linked=True`` so the stub's target is drawn inside its stage.
* ``linked_backbone_stub.png``: the same pipeline without expansion.
* ``cut_preview.png``: ``render(..., cut="x1")`` on the unsplit classifier.

    python tools/make_docs_images.py [OUTDIR]      (default: docs/img)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_nets


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    from specsurgery.io import save
    from specsurgery.ops.split import split_model
    from specsurgery.render import render
    from synthetic_nets import residual_network

    with tempfile.TemporaryDirectory(prefix="docs_images_") as tmp:
        tmp = Path(tmp)
        model = tmp / "Classifier.mlmodel"
        save(residual_network(blocks=2, channels=8, size=32, classes=4, image=True), model)
        (tmp / "app").mkdir()
        paths = split_model(model, "x1", tmp / "app", name="Classifier", link=True)
        for name, kw in (("linked_backbone.png", {"expand_linked": True}),
                         ("linked_backbone_stub.png", {})):
            written = render(paths["pipeline"], out / name, **kw)
            print(f"wrote {written}")
        written = render(model, out / "cut_preview.png", cut="x1")
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
