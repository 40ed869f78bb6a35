"""Benchmark: dedupe 5 models that share a ResNet-50 backbone.

A plain-torch ResNet-50 (random weights, random batch-norm statistics, so it
looks trained) is converted once with ``ct.convert(convert_to="neuralnetwork")``
and cached; five heads are then attached at the spec level (a classifier, a
box regressor, an embedding, a multi-label head and a 1x1-convolution
segmentation head).  The benchmark times ``dedupe_files`` on the five files and
prints: bytes before and after, the saving as a share of the best possible
(every distinct weight stored once), the weight bytes hashed against the
weight bytes held (each weight hashed once), and the wall time next to the
time coremltools needs merely to load the same five specs.  Both run in
fresh processes of this venv (wall time and peak RSS of each).

    python benchmarks/bench_dedupe.py [--size 64] [--keep DIR] [--verify]

Targets: saving >= 99% of the best possible, < 30 s wall time, bytes hashed
== weight bytes held.

    python benchmarks/bench_dedupe.py --memory 2,10 [--layers 16] [--channels 256]

measures peak memory instead (issue 20): bundles of 2, 10... members that share
a 16-layer 256-channel convolution trunk (about 34 MB of weights) and differ in
their last layer, as neuralNetwork models (built at the spec level) and as ML
Programs (converted once each with coremltools, cached); each bundle is deduped
by ``specsurgery dedupe`` in a fresh process, next to coremltools loading the
same members (``load_spec``, in its own process), and a markdown table of peak
RSS, wall time and saving share is printed.  Target: peak RSS grows by less
than 10% from the smallest to the largest bundle.

    python benchmarks/bench_dedupe.py --smoke

the memory mode on bundles of 2 and 3 members of a 0.1 MB network (ML
Programs only when torch and coremltools are installed): checks that the
benchmark runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _bench

REPO = _bench.REPO
CACHE = _bench.CACHE


# --------------------------------------------------------------------------- plain-torch ResNet-50

def resnet50_trunk():
    return _bench.resnet50_module(head=False)


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
    with _bench._quiet():
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
    spec.description.metadata.author = "benchmarks/bench_dedupe.py"
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


# --------------------------------------------------------------------------- memory (issue 20)

LOAD_ALL = """
import coremltools as ct
for p in {paths!r}:
    ct.utils.load_spec(p)
"""

DEDUPE = """
from specsurgery.ops.dedupe import dedupe_files
r = dedupe_files({paths!r}, {out!r})
report(totals=r["totals"], hashing=r["hashing"], table=r.get("table", ""))
"""


def memory(counts: list[int], layers: int, channels: int, work: Path, smoke: bool = False) -> int:
    """Peak RSS of ``specsurgery dedupe`` on bundles of ``counts`` members, both backends,
    next to coremltools merely loading the same members."""
    import json

    from specsurgery import io

    have_ct = _bench.has("coremltools")
    makers = [("neuralNetwork", _bench.conv_net_nn, ".mlmodel")]
    if have_ct and _bench.has("torch"):
        makers.append(("ML Program", _bench.conv_net_ml, ".mlpackage"))
    rows = []
    for backend, make, suffix in makers:
        src = work / backend.replace(" ", "")
        src.mkdir(parents=True, exist_ok=True)
        for i in range(max(counts)):
            if not (src / f"m{i}{suffix}").exists():
                make(src / f"m{i}{suffix}", i, layers, channels)
        for n in counts:
            out = work / f"out_{backend.replace(' ', '')}_{n}"
            shutil.rmtree(out, ignore_errors=True)
            members = [str(src / f"m{i}{suffix}") for i in range(n)]
            ours = _bench.job("specsurgery dedupe", _bench.cli("dedupe", *members, "-o", out, "--json"))
            report = json.loads((out / "dedupe-report.json").read_text())
            # --smoke: coremltools' side once (its import alone takes seconds)
            alt = have_ct and not (smoke and rows)
            theirs = _bench.job("coremltools load_spec", LOAD_ALL.format(paths=members)) if alt else None
            rows.append((backend, n, io.file_size(members[0]) / 2**20, ours, theirs,
                         report["totals"]["saving_share_of_best"] if report else None))
    print("| backend | members | model | dedupe: peak RSS | wall | saving vs best possible | "
          "coremltools load_spec of the members: peak RSS | wall | memory ratio ct/ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, n, size, ours, theirs, share in rows:
        alt = (f"{theirs.peak_mib:.0f} MiB | {theirs.wall:.2f} s | {theirs.peak_mib / ours.peak_mib:.2f}x"
               if theirs else "— | | ")
        print(f"| {backend} | {n} | {size:.1f} MiB | {ours.peak_mib:.0f} MiB | {ours.wall:.2f} s | "
              f"{'—' if share is None else f'{100 * share:.2f}%'} | {alt} |")
    if not have_ct:
        print("note: coremltools is not installed: its side and the ML Programs were skipped")
    ok = True
    for backend, _, _ in makers:
        peaks = [r[3].peak_mib for r in rows if r[0] == backend]
        growth = peaks[-1] / peaks[0] - 1
        print(f"{backend}: peak RSS grows {100 * growth:+.1f}% from {counts[0]} to {counts[-1]} members "
              "(target < 10%)")
        ok = ok and growth < 0.10
    print(f"machine: {_bench.machine()}")
    print("PASS" if ok else "FAIL")
    return 0 if ok or smoke else 1   # --smoke checks that it runs, not the figures


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input image size (weights do not depend on it)")
    ap.add_argument("--keep", metavar="DIR", help="keep the inputs and outputs in DIR")
    ap.add_argument("--verify", action="store_true", help="also verify one rewritten model (slow: numpy ResNet-50)")
    ap.add_argument("--memory", metavar="N,N", help="measure peak memory on bundles of these sizes instead")
    ap.add_argument("--layers", type=int, default=16, help="trunk depth of the --memory bundles (default 16)")
    ap.add_argument("--channels", type=int, default=256, help="trunk width of the --memory bundles (default 256)")
    ap.add_argument("--smoke", action="store_true", help="tiny bundles of 2 and 3: checks that the benchmark runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.memory, args.layers, args.channels = "2,3", 4, 32
    if args.memory:
        work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dedupe_memory_"))
        try:
            return memory(sorted(int(n) for n in args.memory.split(",")), args.layers, args.channels, work, args.smoke)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    from specsurgery import io

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
        members = [str(p) for p in paths]
        ct = _bench.job("coremltools load_spec", LOAD_ALL.format(paths=members)) if _bench.has("coremltools") else None
        ours = _bench.job("specsurgery dedupe", DEDUPE.format(paths=members, out=str(out)))
        wall = ours.wall
        print(ours.extra["table"])
        totals, hashing = ours.extra["totals"], ours.extra["hashing"]
        share = totals["saving_share_of_best"]
        once = hashing["bytes_hashed"] == hashing["weight_bytes_total"]
        print(_bench.table([("dedupe 5 members (ours) / load the 5 (coremltools)", ours, ct)],
                           "one process per job"))
        print()
        print(f"dedupe wall time        {wall:8.2f} s   (target < 30 s)"
              + (f"   = {wall / ct.wall:.1f}x coremltools' load_spec of the same 5 files ({ct.wall:.2f} s)"
                 if ct else ""))
        print(f"  read + hash           {hashing['seconds']:8.2f} s")
        print(f"  peak memory           {ours.peak_mib:8.0f} MiB (the process, models included)")
        print(f"weights hashed          {hashing['weights_hashed']:8d}     bytes hashed {hashing['bytes_hashed']:,} "
              f"/ weight bytes held {hashing['weight_bytes_total']:,} = "
              f"{hashing['bytes_hashed'] / hashing['weight_bytes_total']:.3f} ({'each weight hashed once' if once else 'NOT once'})")
        print(f"bundle                  {totals['before']:,} -> {totals['after']:,} bytes "
              f"({totals['before'] / totals['after']:.2f}x smaller)")
        print(f"saving                  {100 * share:.3f}% of the best possible ({totals['best_possible_saving']:,} bytes)"
              f"   (target >= 99%)")
        print(f"machine: {_bench.machine()}")
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
