"""Benchmark: specsurgery compress against coremltools on one ResNet-50, in the same run.

    python benchmarks/bench_compress.py [--slow] [--smoke]

A plain-torch ResNet-50 (random weights, seed 0) is converted once to a
neuralNetwork .mlmodel and an mlProgram .mlpackage (cached in the temp
folder).  Every job then runs in a fresh process (load, compress, save: the
CLI's work) and is measured for wall time and peak RSS:

* fp16 and 8-bit linear of the neuralNetwork model: ``specsurgery compress``
  against ``quantize_weights(model, 16)`` / ``quantize_weights(model, 8, "linear")``;
* 4-bit palettization of the mlProgram: ``specsurgery compress --palettize 4``
  (coremltools' pass with our k-means as ``lut_function``) against
  ``ct.optimize.coreml.palettize_weights(mode="kmeans", nbits=4)``;
* 4-bit palettization of the neuralNetwork model: ours alone by default;
  with ``--slow`` also coremltools' k-means (scikit-learn) through
  ``quantize_weights(model, 4, "custom_lut", lut_function=...)`` with the
  table flattened (``quantize_weights(model, 4, "kmeans")`` itself crashes in
  coremltools 9.0 with protobuf 7: its table comes back with shape (16, 1)),
  about a minute more, and the weight SSE of both over the same layers;
* one 2.4M-weight tensor: our k-means against scikit-learn's KMeans as
  coremltools configures it (in-process).

Both weight thresholds are 2048 values (the CLI's --min-weights and
coremltools' weight_threshold defaults).  scikit-learn is needed by the
coremltools k-means jobs only (``pip install .[bench]``; they are skipped
without it); the library never imports it.

``--smoke``: a 0.1 MB network (the ML Program only when torch is installed),
to check that the benchmark runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _bench

CT_NN = """
import coremltools as ct
from coremltools.models.neural_network import quantization_utils as qu
import numpy as np
m = ct.models.MLModel({src!r}, skip_model_load=True)
def ct_kmeans_lut(nbits, wp):
    lut, qw = qu._get_kmeans_lookup_table_and_weight(nbits, wp)
    return np.asarray(lut).reshape(-1), qw
args = {args!r}
kwargs = {{"lut_function": ct_kmeans_lut}} if "custom_lut" in args else {{}}
q = qu.quantize_weights(m, *args, **kwargs)
ct.utils.save_spec(q.get_spec() if hasattr(q, "get_spec") else q, {out!r})
"""

CT_ML = """
import coremltools as ct
m = ct.models.MLModel({src!r}, skip_model_load=True)
cfg = ct.optimize.coreml.OptimizationConfig(
    global_config=ct.optimize.coreml.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=2048))
ct.optimize.coreml.palettize_weights(m, cfg).save({out!r})
"""


def weight_sse(reference_spec, spec, layer_names) -> float:
    """Sum of squared errors of the main weights of ``layer_names``."""
    from specsurgery.ops.compress.nn import layer_fields
    from specsurgery.spec import nn_of
    from specsurgery.weights import decode

    ref = {l.name: l for l in nn_of(reference_spec).layers}
    total = 0.0
    for layer in nn_of(spec).layers:
        if layer.name not in layer_names:
            continue
        for f_ref, f in zip(layer_fields(ref[layer.name]), layer_fields(layer)):
            if not f.main:
                continue
            a = decode(f_ref.wp, shape=f_ref.shape, channel_axis=f_ref.axis).astype(np.float64)
            b = decode(f.wp, shape=f.shape, channel_axis=f.axis).astype(np.float64)
            total += float(np.sum((a - b) ** 2))
    return total


def _lut_layers(spec) -> set:
    from specsurgery.ops.compress.nn import layer_fields
    from specsurgery.spec import nn_of
    from specsurgery.weights import storage_kind

    return {l.name for l in nn_of(spec).layers
            if any(f.main and storage_kind(f.wp).startswith("lut") for f in layer_fields(l))}


def bench_kmeans(smoke: bool) -> str:
    from sklearn.cluster import KMeans

    from specsurgery.ops.compress.kmeans import kmeans1d, sse_of

    n = 20_000 if smoke else 2_400_000
    w = (np.random.default_rng(0).standard_normal(n) * 0.02).astype(np.float32)
    kmeans1d(w[:10000], 16)  # warm up
    t = time.perf_counter()
    r = kmeans1d(w, 16)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    km = KMeans(16, init="k-means++", tol=1e-2, n_init=1, random_state=0).fit(w.reshape(-1, 1))
    t_sk = time.perf_counter() - t
    sse_sk = sse_of(w, km.cluster_centers_.reshape(-1), km.labels_)
    return (f"k-means of {n:,} weights, 16 clusters (in-process): ours {t_ours:.2f} s (SSE {r.sse:.6g}), "
            f"scikit-learn {t_sk:.2f} s (SSE {sse_sk:.6g}): {t_sk / t_ours:.1f}x faster, "
            f"error {r.sse / sse_sk:.4f}x scikit-learn's")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true",
                        help="also coremltools' k-means on the neuralNetwork model (about a minute more)")
    parser.add_argument("--smoke", action="store_true", help="a tiny network: checks that the benchmark runs")
    args = parser.parse_args(argv)
    have_ct, have_sk = _bench.has("coremltools"), _bench.has("sklearn")
    with tempfile.TemporaryDirectory(prefix="bench_compress_") as tmp:
        tmp = Path(tmp)
        if args.smoke:
            nn_path = _bench.conv_net_nn(tmp / "small.mlmodel")
            ml_path = _bench.conv_net_ml(tmp / "small.mlpackage") if _bench.has("torch") and have_ct else None
        else:
            nn_path, ml_path = _bench.resnet50_nn(), _bench.resnet50_ml()
        rows, notes = [], []

        def pair(what, flags, ct_code, src, suffix, ct_args=None, need_sk=False, in_smoke=True):
            out = tmp / f"ours_{len(rows)}{suffix}"
            ours = _bench.job("specsurgery", _bench.cli("compress", src, *flags, "-o", out))
            theirs = None
            if ct_code is not None and args.smoke and not in_smoke:
                pass  # --smoke: each kind of coremltools job once (its import alone takes seconds)
            elif ct_code is not None and have_ct and (have_sk or not need_sk):
                theirs_out = tmp / f"ct_{len(rows)}{suffix}"
                theirs = _bench.job(ct_code[0], ct_code[1].format(src=str(src), out=str(theirs_out),
                                                                  args=ct_args))
            elif ct_code is not None:
                notes.append(f"{what}: coremltools side skipped ("
                             + ("coremltools" if not have_ct else "scikit-learn") + " is not installed)")
            rows.append((what, ours, theirs))
            return out

        pair("neuralNetwork fp16", ["--fp16"], ("quantize_weights(16)", CT_NN), nn_path, ".mlmodel", (16,))
        pair("neuralNetwork linear 8-bit", ["--linear", "8"], ("quantize_weights(8, linear)", CT_NN),
             nn_path, ".mlmodel", (8, "linear"), in_smoke=False)
        slow_ct = ("quantize_weights(4, custom_lut k-means)", CT_NN) if args.slow else None
        ours_pal = pair("neuralNetwork palettize 4-bit", ["--palettize", "4"], slow_ct, nn_path, ".mlmodel",
                        (4, "custom_lut"), need_sk=True)
        if ml_path is not None:
            pair("mlProgram palettize 4-bit", ["--palettize", "4"], ("palettize_weights(kmeans, 4)", CT_ML),
                 ml_path, ".mlpackage", need_sk=True)
        else:
            notes.append("mlProgram: skipped (building the small ML Program needs torch and coremltools)")
        print(f"models: {nn_path.name} ({nn_path.stat().st_size / 2**20:.1f} MiB)"
              + (f", {ml_path.name}" if ml_path is not None else ""))
        print(_bench.table(rows, "compress: load, compress, save (one process per job)"))
        pal_ct = rows[2][2]
        if pal_ct is not None:
            from specsurgery import io as ssio

            ref = ssio.load_spec(nn_path)
            ours_spec, ct_spec = ssio.load_spec(ours_pal), ssio.load_spec(tmp / "ct_2.mlmodel")
            common = _lut_layers(ours_spec) & _lut_layers(ct_spec)
            sse_o, sse_c = weight_sse(ref, ours_spec, common), weight_sse(ref, ct_spec, common)
            print(f"\nneuralNetwork 4-bit weight SSE over {len(common)} common layers: ours {sse_o:.6g}, "
                  f"coremltools {sse_c:.6g} ({sse_o / sse_c:.4f}x)")
        if have_sk:
            print("\n" + bench_kmeans(args.smoke))
        else:
            notes.append("k-means vs scikit-learn: skipped (scikit-learn is not installed)")
        for note in notes:
            print(f"note: {note}")
        print(f"machine: {_bench.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
