"""The bundled end-to-end demo: the job specsurgery was built for.

Two app models share one feature extractor.  The demo converts both from
PyTorch, splits one at the backbone, links the backbone, assembles a
pipeline, dedupes the pair into one shared backbone plus two small
pipelines, compresses the backbone, renders the result, and proves with the
reference runtime that every rewritten model computes what its original did.

Everything is built here from plain torch modules with seeded random weights;
nothing is downloaded.
"""

from __future__ import annotations

import time
from pathlib import Path

LABELS = ["cat", "dog", "bird", "fish", "horse"]
SIZE = 64


def _torch_models():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.layers = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1),
                                        Block(64, 128, 2), Block(128, 128, 1))

        def forward(self, x):
            return self.layers(self.stem(x))

    class Classifier(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.fc = nn.Linear(128, len(LABELS))

        def forward(self, x):
            f = self.backbone(x)
            return torch.softmax(self.fc(f.mean(dim=(2, 3))), dim=1)

    class Segmenter(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.head = nn.Conv2d(128, 3, 1)

        def forward(self, x):
            return nn.functional.interpolate(self.head(self.backbone(x)), scale_factor=8,
                                             mode="bilinear", align_corners=False)

    backbone = Backbone()
    for m in backbone.modules():  # give batch norms non-trivial statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return Classifier(backbone).eval(), Segmenter(backbone).eval()


class _Log:
    def __init__(self, steps: int):
        self.steps, self.n, self.t0 = steps, 0, time.perf_counter()

    def step(self, verb: str, text: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.steps}] {verb:<9} {text}", flush=True)

    def info(self, text: str) -> None:
        print(f"            {text}", flush=True)


def run_demo(out_dir) -> bool:
    """Run the demo into ``out_dir``; returns True when every verify holds."""
    import warnings

    import torch

    from . import io
    from .check import check
    from .units import human_bytes
    from .convert import from_torch
    from .ops.compress import compress
    from .ops.cuts import suggest_cuts
    from .ops.dedupe import dedupe_files
    from .ops.link import link_stage
    from .ops.pipeline import make_pipeline
    from .ops.split import split_at
    from .render import render
    from .runtime import verify

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    apps, split_dir, bundle = out / "app-models", out / "split", out / "bundle"
    for d in (apps, split_dir, bundle):
        d.mkdir(exist_ok=True)
    log = _Log(8)
    ok = True
    warnings.simplefilter("ignore")

    # 1. convert -----------------------------------------------------------
    classifier, segmenter = _torch_models()
    example = torch.rand(1, 3, SIZE, SIZE)
    common = dict(image_input="image", mean=[0.485, 0.456, 0.406], std=[0.229, 0.229, 0.229],
                  inputs=["image"], metadata={"author": "specsurgery demo", "license": "CC0-1.0"})
    cls_path, seg_path = apps / "Classifier.mlmodel", apps / "Segmenter.mlmodel"
    from_torch(classifier, example, class_labels=LABELS, save_to=cls_path,
               **common | {"metadata": common["metadata"] | {"description": "5-way image classifier"}})
    from_torch(segmenter, example, output_names=["mask"], save_to=seg_path,
               **common | {"metadata": common["metadata"] | {"description": "3-class segmenter"}})
    log.step("convert", f"2 PyTorch models with one shared backbone -> {cls_path.name} "
                        f"({human_bytes(io.file_size(cls_path))}), {seg_path.name} "
                        f"({human_bytes(io.file_size(seg_path))})")

    # 2. split -------------------------------------------------------------
    spec = io.load_spec(cls_path)
    # the last cut that is still a feature map: the end of the shared backbone
    cut = [c for c in suggest_cuts(spec) if c.shape is not None and len(c.shape) >= 3][-1]
    backbone, head = split_at(spec, [cut.blob])
    io.save(backbone, split_dir / "Backbone.mlmodel")
    io.save(head, split_dir / "ClassifierHead.mlmodel")
    log.step("split", f"Classifier at blob {cut.blob!r} {cut.shape}: backbone holds "
                      f"{cut.weight_share:.1%} of the weight bytes")

    # 3. pipeline ----------------------------------------------------------
    pipe = make_pipeline([backbone, head], names=["backbone", "head"])
    io.save(pipe, split_dir / "ClassifierPipeline.mlmodel")
    log.step("pipeline", f"[backbone, head] as a {pipe.WhichOneof('Type')} "
                         f"(spec version {pipe.specificationVersion})")

    # 4. link --------------------------------------------------------------
    linked = link_stage(pipe, "backbone", file_name="Backbone.mlmodelc", search_path=".:$BUNDLE_MAIN")
    linked_path = io.save(linked, split_dir / "Classifier.mlmodel")
    report = verify(cls_path, linked_path, samples=2, rtol=1e-4, atol=1e-5)
    ok &= report.ok
    stub = linked.pipelineClassifier.pipeline.models[0].linkedModel.linkedModelFile
    log.step("link", f"backbone stage -> linkedModel {stub.linkedModelFileName.defaultValue} on "
                     f"{stub.linkedModelSearchPath.defaultValue!r}: "
                     f"{human_bytes(io.file_size(linked_path))}; verify {'ok' if report.ok else 'FAILED'}")

    # 5. dedupe ------------------------------------------------------------
    rep = dedupe_files([cls_path, seg_path], bundle, backbone_name="Backbone")
    print(rep["table"])
    totals = rep.get("totals", {})
    before = sum(io.file_size(p) for p in (cls_path, seg_path))
    after = sum(io.file_size(p) for p in bundle.glob("*.mlmodel"))
    strict = [verify(p, bundle / p.name, samples=2, rtol=1e-4, atol=1e-5) for p in (cls_path, seg_path)]
    ok &= all(r.ok for r in strict)
    log.step("dedupe", f"bundle {human_bytes(before)} -> {human_bytes(after)}: "
                       f"{human_bytes(before - after)} saved ({(before - after) / before:.1%})"
             + (f", {totals['share_of_best']:.1%} of the best possible" if "share_of_best" in totals else "")
             + "; verify through the linked backbone (1e-5): "
             + ", ".join(f"{p.stem} {'ok' if r.ok else 'MISMATCH'}" for p, r in zip((cls_path, seg_path), strict)))

    # 6. compress ----------------------------------------------------------
    bb_path = bundle / "Backbone.mlmodel"
    small, creport = compress(bb_path, mode="palettize", nbits=6, return_report=True)
    io.save(small, bb_path)
    after_c = sum(io.file_size(p) for p in bundle.glob("*.mlmodel"))
    log.step("compress", f"Backbone 6-bit palettized: {creport.summary().splitlines()[0]}")
    log.info(f"bundle now {human_bytes(after_c)} (was {human_bytes(before)} as two full models)")

    # 7. render ------------------------------------------------------------
    try:
        img = render(bundle / "Classifier.mlmodel", out / "Classifier.svg", expand_linked=True,
                     search_path=str(bundle), rankdir="TB")
        log.step("render", f"{img} (linked backbone expanded)")
    except Exception as exc:  # dot missing: say how to get it, keep going
        render(bundle / "Classifier.mlmodel", out / "Classifier.dot")
        log.step("render", f"{out / 'Classifier.dot'} ({exc})")

    # 8. check + verify -----------------------------------------------------
    errors = [f for p in sorted(bundle.glob("*.mlmodel")) for f in check(p, search_path=str(bundle))
              if f.severity == "error"]
    ok &= not errors
    results = []
    for original in (cls_path, seg_path):
        r = verify(original, bundle / original.name, samples=3, rtol=1e-2, atol=1e-2)
        ok &= r.ok
        worst = max((o.max_abs for o in r.outputs if o.kind != "label"), default=0.0)
        results.append(f"{original.stem} {'ok' if r.ok else 'MISMATCH'} (max abs err {worst:.2g})")
    log.step("verify", f"check: {len(errors)} errors; " + "; ".join(results)
             + " [6-bit backbone vs float originals, rtol/atol 1e-2]")
    print(f"\nbytes saved: {before - after_c} of {before} ({(before - after_c) / before:.1%}); "
          f"verify: {'PASS' if ok else 'FAIL'}; outputs in {out}")
    return bool(ok)
