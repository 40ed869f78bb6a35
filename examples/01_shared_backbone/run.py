"""One backbone, two heads: rewrite both models as pipelines that link one shared backbone.

    python examples/01_shared_backbone/run.py [OUTDIR]

Takes the corpus's shared_backbone_classifier.mlmodel and
shared_backbone_segmenter.mlmodel (or two small models built here when the
corpus is not beside the repository), splits both where they stop sharing,
writes the backbone once as Backbone.mlmodel and each model as a pipeline
[linked Backbone.mlmodelc stub, own head] with its original interface, then
checks every file and verifies each pipeline against its original.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import specsurgery as ss
from specsurgery.check import check
from specsurgery.ops import link_stage, make_pipeline, split_at, suggest_cuts

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("SPECSURGERY_SHARED", HERE.parents[1].parent / "shared"))
CORPUS = SHARED / "corpus" / "generated"
SEARCH_PATH = ".:$BUNDLE_MAIN"


def originals(out: Path) -> dict:
    """name -> model path of the two models that share a backbone."""
    pair = {"Classifier": CORPUS / "shared_backbone_classifier.mlmodel",
            "Segmenter": CORPUS / "shared_backbone_segmenter.mlmodel"}
    if all(p.is_file() for p in pair.values()):
        return pair
    print(f"corpus not found at {CORPUS}; building two small models instead")
    return build_small_models(out / "originals")


def build_small_models(folder: Path) -> dict:
    """Two exact-rank networks with the same conv backbone and different heads."""
    import numpy as np
    from specsurgery._proto import Model_pb2

    def weights(name, n):   # the same layer name always gets the same weights
        rng = np.random.default_rng(sum(map(ord, name)))
        return (rng.standard_normal(n) * 0.2).astype(np.float32).tolist()

    def conv(nn, name, inp, out, cin, cout):
        layer = nn.layers.add(name=name, input=[inp], output=[out])
        c = layer.convolution
        c.outputChannels, c.kernelChannels, c.nGroups = cout, cin, 1
        c.kernelSize.extend([3, 3]); c.stride.extend([1, 1]); c.dilationFactor.extend([1, 1])
        c.same.SetInParent()
        c.weights.floatValue.extend(weights(name, cout * cin * 9))

    def model(head: str):
        spec = Model_pb2.Model(specificationVersion=4)
        img = spec.description.input.add(name="image").type.imageType
        img.width = img.height = 32
        img.colorSpace = img.RGB
        nn = spec.neuralNetworkClassifier if head == "cls" else spec.neuralNetwork
        nn.arrayInputShapeMapping = nn.imageInputShapeMapping = 1
        nn.preprocessing.add(featureName="image").scaler.channelScale = 1 / 255.0
        conv(nn, "conv1", "image", "f1", 3, 8)
        nn.layers.add(name="relu1", input=["f1"], output=["features"]).activation.ReLU.SetInParent()
        if head == "cls":
            pool = nn.layers.add(name="pool", input=["features"], output=["pooled"]).pooling
            pool.type, pool.globalPooling = pool.AVERAGE, True
            pool.valid.SetInParent()
            nn.layers.add(name="flat", input=["pooled"], output=["flat"]).flattenTo2D.axis = 1
            fc = nn.layers.add(name="fc", input=["flat"], output=["logits"]).innerProduct
            fc.inputChannels, fc.outputChannels = 8, 3
            fc.weights.floatValue.extend(weights("fc", 24))
            nn.layers.add(name="sm", input=["logits"], output=["probs"]).softmaxND.axis = -1
            nn.stringClassLabels.vector.extend(["cat", "dog", "bird"])
            nn.labelProbabilityLayerName = "probs"
            spec.description.output.add(name="classLabelProbs").type.dictionaryType.stringKeyType.SetInParent()
            spec.description.output.add(name="classLabel").type.stringType.SetInParent()
            spec.description.predictedFeatureName = "classLabel"
            spec.description.predictedProbabilitiesName = "classLabelProbs"
        else:
            conv(nn, "seg", "features", "mask", 8, 2)
            arr = spec.description.output.add(name="mask").type.multiArrayType
            arr.dataType = arr.FLOAT32
        return spec

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"Classifier": folder / "Classifier.mlmodel", "Segmenter": folder / "Segmenter.mlmodel"}
    ss.save(model("cls"), paths["Classifier"])
    ss.save(model("seg"), paths["Segmenter"])
    return paths


def shared_cut(paths: dict) -> str:
    """The deepest blob where every model can be cut and the backbones are the same."""
    cut_lists = [[c.blob for c in suggest_cuts(p)] for p in paths.values()]
    common = [b for b in cut_lists[0] if all(b in cuts for cuts in cut_lists[1:])]
    best = None
    for blob in common:
        backbones = [split_at(p, blob)[0] for p in paths.values()]
        first = backbones[0].neuralNetwork
        if all(b.neuralNetwork.layers == first.layers and b.neuralNetwork.preprocessing == first.preprocessing
               and b.description.input == backbones[0].description.input for b in backbones[1:]):
            best = blob
    if best is None:
        raise SystemExit("the models share no backbone")
    return best


def main(argv) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="shared_backbone_"))
    out.mkdir(parents=True, exist_ok=True)
    paths = originals(out)
    blob = shared_cut(paths)
    print(f"models: {', '.join(f'{n} ({p.name})' for n, p in paths.items())}")
    print(f"shared backbone ends at blob {blob!r}")

    shared = None
    sizes_before = sum(p.stat().st_size for p in paths.values())
    ok = True
    for name, path in paths.items():
        original = ss.load_spec(path)
        backbone, head = split_at(original, blob)
        if shared is None:          # the first model's backbone is the one written (and linked)
            shared = backbone
            shared.description.metadata.shortDescription = "Shared feature extractor"
            ss.save(shared, out / "Backbone.mlmodel")
            print(f"wrote Backbone.mlmodel: {len(shared.neuralNetwork.layers)} layers, "
                  f"spec version {shared.specificationVersion}")
        assert backbone.neuralNetwork.layers == shared.neuralNetwork.layers
        pipe = make_pipeline([shared, head], names=["backbone", "head"], interface=original)
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            pipe = link_stage(pipe, "backbone", file_name="Backbone.mlmodelc", search_path=SEARCH_PATH)
        for n in notes:
            print(f"  note: {n.message}")
        target = out / f"{name}.mlmodel"
        ss.save(pipe, target, search_path=str(out))
        stub = ss.load_spec(target).WhichOneof("Type")
        pipeline = getattr(ss.load_spec(target), stub)
        stage = (pipeline if stub == "pipeline" else pipeline.pipeline).models[0]
        link = stage.linkedModel.linkedModelFile
        findings = [f for f in check(target, search_path=str(out)) if f.severity == "error"]
        report = ss.verify(path, target, search_path=str(out))
        print(f"wrote {target.name}: {stub} [linkedModel {link.linkedModelFileName.defaultValue} "
              f"({link.linkedModelSearchPath.defaultValue}), {head.WhichOneof('Type')}], "
              f"spec version {ss.load_spec(target).specificationVersion}; "
              f"check: {len(findings)} errors; verify vs {path.name}: {'OK' if report.ok else 'FAILED'}")
        if not report.ok:
            print(report.summary())
        assert stage.specificationVersion == 4 and link.linkedModelFileName.defaultValue == "Backbone.mlmodelc"
        assert link.linkedModelSearchPath.defaultValue == SEARCH_PATH
        ok = ok and report.ok and not findings
    sizes_after = sum((out / n).stat().st_size for n in ["Backbone.mlmodel"] + [f"{k}.mlmodel" for k in paths])
    print(f"bytes: {sizes_before} in {len(paths)} models -> {sizes_after} "
          f"({100 * (1 - sizes_after / sizes_before):.0f}% smaller)")
    print(f"outputs in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
