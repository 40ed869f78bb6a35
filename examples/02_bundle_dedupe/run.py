"""App-bundle dedupe, end to end.

An app ships three models fine-tuned from one feature extractor: an image
classifier, a box regressor and a segmenter (the segmenter saved at a newer
spec version).  This script:

1. takes the three models (the corpus's generated/shared_backbone_*.mlmodel
   when ../shared/corpus is present, otherwise it builds equivalents: one torch
   backbone, three heads, converted with coremltools to neuralnetwork);
2. prints the plan (what is shared, where each model is cut, why);
3. dedupes them into OUTDIR/bundle: Backbone.mlmodel plus the three rewritten
   models (pipelines of [linked Backbone.mlmodelc stub, head]) and
   dedupe-report.json;
4. checks every output and verifies each rewritten model against its original
   through the linked backbone with the numpy reference runtime;
5. prints the bytes the app bundle saves.

    python examples/02_bundle_dedupe/run.py [OUTDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import specsurgery as ss
from specsurgery.check import check
from specsurgery.ops import dedupe_files, plan_dedupe

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("SPECSURGERY_SHARED", HERE.parents[2] / "shared")) / "corpus" / "generated"
NAMES = ("shared_backbone_classifier", "shared_backbone_regressor", "shared_backbone_segmenter")


def corpus_models() -> list[Path]:
    paths = [CORPUS / f"{n}.mlmodel" for n in NAMES]
    return paths if all(p.is_file() for p in paths) else []


def build_models(folder: Path) -> list[Path]:
    """Three heads on one random-weight backbone, converted with coremltools."""
    import torch
    from torch import nn

    from specsurgery._proto import coremltools

    ct = coremltools()
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())
    heads = {
        "shared_backbone_classifier": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 6)),
        "shared_backbone_regressor": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4), nn.Sigmoid()),
        "shared_backbone_segmenter": nn.Sequential(nn.Conv2d(64, 3, 1), nn.Upsample(scale_factor=2, mode="bilinear")),
    }
    image = ct.ImageType(name="image", shape=(1, 3, 64, 64), scale=1 / 255.0, bias=[-0.485, -0.456, -0.406])
    paths = []
    for name, head in heads.items():
        model = nn.Sequential(backbone, head).eval()
        traced = torch.jit.trace(model, torch.rand(1, 3, 64, 64))
        kwargs = {}
        if name.endswith("classifier"):
            kwargs["classifier_config"] = ct.ClassifierConfig([f"class{i}" for i in range(6)])
        mlmodel = ct.convert(traced, convert_to="neuralnetwork", inputs=[image], **kwargs)
        spec = mlmodel.get_spec()
        spec.description.metadata.author = "examples/02_bundle_dedupe"
        spec.description.metadata.license = "CC0-1.0"
        path = folder / f"{name}.mlmodel"
        ss.save(spec, path, check=False)
        paths.append(path)
    return paths


def main(argv) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="bundle_dedupe_"))
    out.mkdir(parents=True, exist_ok=True)
    models = corpus_models()
    if models:
        print(f"using the corpus models in {CORPUS}")
    else:
        print("corpus not found: building three models on one backbone with coremltools")
        src = out / "originals"
        src.mkdir(exist_ok=True)
        models = build_models(src)
    for p in models:
        spec = ss.load_spec(p)
        print(f"  {p.name}: {spec.WhichOneof('Type')}, spec version {spec.specificationVersion}, "
              f"{p.stat().st_size:,} bytes")

    # 1. the plan alone (what --dry-run prints)
    plan = plan_dedupe(models)
    print("\nplan:")
    for group in plan.groups:
        print(f"  {group.name}: {group.why}")

    # 2. dedupe into the bundle folder
    bundle = out / "bundle"
    report = dedupe_files(models, bundle)
    print("\n" + report["table"])
    print("\nbundle folder:")
    for f in sorted(bundle.iterdir()):
        print(f"  {f.name:40s} {f.stat().st_size:>10,} bytes")

    # 3. every output passes check, every rewritten model computes what its original did
    failures = 0
    for f in sorted(bundle.glob("*.mlmodel")):
        errors = [x for x in check(f, search_path=str(bundle)) if x.severity == "error"]
        print(f"check {f.name}: {'ok' if not errors else errors}")
        failures += bool(errors)
    for original in models:
        rewritten = bundle / original.name
        result = ss.verify(original, rewritten, search_path=str(bundle), rtol=1e-5, atol=1e-5)
        print(f"verify {original.name} vs the linked pipeline: {'ok' if result.ok else 'FAILED'}")
        if not result.ok:
            print(result.summary())
            failures += 1

    totals = report["totals"]
    print(f"\nbundle bytes: {totals['before']:,} -> {totals['after']:,}, saved {totals['saving']:,} "
          f"({100 * totals['saving_share_of_best']:.2f}% of the best possible)")
    print("ship: add Backbone.mlmodel to the app target (Xcode compiles it into Backbone.mlmodelc) "
          "and replace each model with its rewritten file")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
