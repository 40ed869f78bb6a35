"""Benchmark: dedupe 5 models that share a ResNet-50 backbone.

A plain-torch ResNet-50 (random weights, random batch-norm statistics, so it
looks trained) is converted once with ``ct.convert(convert_to="neuralnetwork")``
and cached; five heads are then attached at the spec level (a classifier, a
box regressor, an embedding, a multi-label head and a 1x1-convolution
segmentation head).  The benchmark times ``dedupe_files`` on the five files and
prints: bytes before and after, the saving as a share of the best possible
(every distinct weight stored once), the weight bytes hashed against the
weight bytes held (each weight hashed once), and the wall time next to the
time coremltools needs merely to load the same five specs.

    python tools/bench_dedupe.py [--size 64] [--keep DIR] [--verify]

Targets: saving >= 99% of the best possible, < 30 s wall time, bytes hashed
== weight bytes held.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CACHE = Path(tempfile.gettempdir()) / "specsurgery-bench-cache"


# --------------------------------------------------------------------------- plain-torch ResNet-50

def resnet50_trunk():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _resnet50 import resnet50

    return resnet50(head=False)


def converted_trunk(size: int):
    """The trunk as a neuralNetwork spec (converted once, cached on disk)."""
    from specsurgery import io

    path = CACHE / f"resnet50-v2_trunk_nn_{size}.mlmodel"
    if path.is_file():
        return io.load_spec(path), 0.0
    import torch
    from specsurgery._proto import coremltools

    ct = coremltools()
    t0 = time.perf_counter()
    model = resnet50_trunk()
    example = torch.rand(1, 3, size, size)
    traced = torch.jit.trace(model, example)
    mlmodel = ct.convert(traced, convert_to="neuralnetwork", source="pytorch",
                         inputs=[ct.ImageType(name="image", shape=example.shape, scale=1 / 255.0,
                                              bias=[-0.485, -0.456, -0.406])],
                         outputs=[ct.TensorType(name="features")])
    spec = mlmodel.get_spec()
    seconds = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    io.save(spec, path, check=False)
    return spec, seconds


# --------------------------------------------------------------------------- heads at the spec level

def _array_output(desc, name):
    from specsurgery._proto import FeatureTypes_pb2

    out = desc.output.add()
    out.name = name
    out.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    return out


def _retype(spec, kind):
    """Move the network into a neuralNetworkClassifier/-Regressor message."""
    if kind == "neuralNetwork":
        return spec
    from specsurgery import io

    out = io.copy_spec(spec)
    out.ClearField("neuralNetwork")
    getattr(out, kind).MergeFrom(_nn_as(spec.neuralNetwork, kind))
    return out


def _nn_as(nn, kind):
    from specsurgery._proto import NeuralNetwork_pb2

    cls = {"neuralNetworkClassifier": NeuralNetwork_pb2.NeuralNetworkClassifier,
           "neuralNetworkRegressor": NeuralNetwork_pb2.NeuralNetworkRegressor}[kind]
    msg = cls()
    msg.ParseFromString(nn.SerializeToString())  # the shared fields have the same numbers
    return msg


def attach_head(trunk, head: str, seed: int):
    """A copy of the trunk spec with one head on its 'features' output."""
    from specsurgery import io

    spec = io.copy_spec(trunk)
    rng = np.random.default_rng(seed)
    nn = spec.neuralNetwork
    del spec.description.output[:]
    spec.description.metadata.shortDescription = f"ResNet-50 backbone + {head} head (bench_dedupe)"
    spec.description.metadata.author = "tools/bench_dedupe.py"
    spec.description.metadata.license = "CC0-1.0 (random weights)"

    def layer(name, inputs, output):
        ly = nn.layers.add()
        ly.name = f"{head}_{name}"
        ly.input.extend(inputs)
        ly.output.append(output)
        return ly

    def pool_flat():
        p = layer("pool", ["features"], f"{head}_pooled").pooling
        p.type, p.globalPooling = p.AVERAGE, True
        p.valid.paddingAmounts.borderAmounts.add()
        p.valid.paddingAmounts.borderAmounts.add()
        layer("flat", [f"{head}_pooled"], f"{head}_flat").reshapeStatic.targetShape.extend([1, 2048])
        return f"{head}_flat"

    def dense(src, cout, out):
        ip = layer("fc", [src], out).innerProduct
        ip.inputChannels, ip.outputChannels, ip.hasBias = 2048, cout, True
        ip.weights.floatValue.extend(rng.normal(0, 0.02, 2048 * cout).astype(np.float32).tolist())
        ip.bias.floatValue.extend(rng.normal(0, 0.02, cout).astype(np.float32).tolist())
        return out

    if head == "classifier":
        logits = dense(pool_flat(), 10, "logits")
        layer("softmax", [logits], "probs").softmaxND.axis = -1
        spec = _retype(spec, "neuralNetworkClassifier")
        nnc = spec.neuralNetworkClassifier
        nnc.stringClassLabels.vector.extend([f"class{i}" for i in range(10)])
        nnc.labelProbabilityLayerName = "probs"
        d = spec.description
        o = d.output.add()
        o.name = "probs"
        o.type.dictionaryType.stringKeyType.SetInParent()
        o = d.output.add()
        o.name = "label"
        o.type.stringType.SetInParent()
        d.predictedFeatureName, d.predictedProbabilitiesName = "label", "probs"
    elif head == "regressor":
        dense(pool_flat(), 4, "box_raw")
        layer("sigmoid", ["box_raw"], "box").activation.sigmoid.SetInParent()
        _array_output(spec.description, "box")
        spec.description.predictedFeatureName = "box"
        spec = _retype(spec, "neuralNetworkRegressor")
    elif head == "embedding":
        dense(pool_flat(), 256, "embedding")
        _array_output(spec.description, "embedding")
    elif head == "multilabel":
        dense(pool_flat(), 20, "tag_logits")
        layer("sigmoid", ["tag_logits"], "tags").activation.sigmoid.SetInParent()
        _array_output(spec.description, "tags")
    elif head == "segmentation":
        conv = layer("conv", ["features"], "segmentation").convolution
        conv.outputChannels, conv.kernelChannels, conv.nGroups = 21, 2048, 1
        conv.kernelSize.extend([1, 1])
        conv.stride.extend([1, 1])
        conv.dilationFactor.extend([1, 1])
        conv.valid.paddingAmounts.borderAmounts.add()
        conv.valid.paddingAmounts.borderAmounts.add()
        conv.hasBias = True
        conv.weights.floatValue.extend(rng.normal(0, 0.02, 21 * 2048).astype(np.float32).tolist())
        conv.bias.floatValue.extend(rng.normal(0, 0.02, 21).astype(np.float32).tolist())
        _array_output(spec.description, "segmentation")
    else:
        raise ValueError(head)
    return spec


HEADS = ("classifier", "regressor", "embedding", "multilabel", "segmentation")


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input image size (weights do not depend on it)")
    ap.add_argument("--keep", metavar="DIR", help="keep the inputs and outputs in DIR")
    ap.add_argument("--verify", action="store_true", help="also verify one rewritten model (slow: numpy ResNet-50)")
    args = ap.parse_args(argv)

    from specsurgery import io
    from specsurgery.ops.dedupe import dedupe_files

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dedupe_"))
    try:
        trunk, convert_s = converted_trunk(args.size)
        print(f"ResNet-50 trunk: {len(trunk.neuralNetwork.layers)} layers"
              + (f", converted in {convert_s:.1f} s" if convert_s else " (cached conversion)"))
        src = work / "bundle"
        src.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, head in enumerate(HEADS):
            spec = attach_head(trunk, head, seed=100 + i)
            path = src / f"ResNet50{head.capitalize()}.mlmodel"
            io.save(spec, path, check=False)
            paths.append(path)
        del trunk
        out = work / "deduped"
        shutil.rmtree(out, ignore_errors=True)

        # the alternative measured in the same run: coremltools merely loading the five specs
        from specsurgery._proto import coremltools

        ct = coremltools()
        t0 = time.perf_counter()
        for p in paths:
            ct.utils.load_spec(str(p))
        ct_load = time.perf_counter() - t0

        t0, c0 = time.perf_counter(), time.process_time()
        report = dedupe_files(paths, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        import resource

        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        print(report["table"])
        totals, hashing = report["totals"], report["hashing"]
        share = totals["saving_share_of_best"]
        once = hashing["bytes_hashed"] == hashing["weight_bytes_total"]
        print()
        print(f"dedupe wall time        {wall:8.2f} s   (target < 30 s)   "
              f"= {wall / ct_load:.1f}x coremltools' load_spec of the same 5 files ({ct_load:.2f} s)")
        print(f"  cpu time              {cpu:8.2f} s   (wall - cpu = waiting for disk or for other processes; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"  read + hash           {hashing['seconds']:8.2f} s")
        print(f"  peak memory           {peak_mib:8.0f} MiB (the process, models included)")
        print(f"weights hashed          {hashing['weights_hashed']:8d}     bytes hashed {hashing['bytes_hashed']:,} "
              f"/ weight bytes held {hashing['weight_bytes_total']:,} = "
              f"{hashing['bytes_hashed'] / hashing['weight_bytes_total']:.3f} ({'each weight hashed once' if once else 'NOT once'})")
        print(f"bundle                  {totals['before']:,} -> {totals['after']:,} bytes "
              f"({totals['before'] / totals['after']:.2f}x smaller)")
        print(f"saving                  {100 * share:.3f}% of the best possible ({totals['best_possible_saving']:,} bytes)"
              f"   (target >= 99%)")
        ok = share >= 0.99 and wall < 30 and once
        if args.verify:
            from specsurgery.runtime import verify

            t0 = time.perf_counter()
            rep = verify(paths[0], out / paths[0].name, search_path=str(out), samples=1)
            print(f"verify {paths[0].name}: {'ok' if rep.ok else 'FAILED'} ({time.perf_counter() - t0:.1f} s)")
            ok = ok and rep.ok
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
