"""The runtime and the layer-kind table (specsurgery/nn/kinds.py) agree on the weights.

Every weighted kind runs on a small hand-built layer whose weights are filled as
the table describes them; the kernel must decode exactly the weight fields the
table lists for that layer (no more, no fewer), with the table's shapes, and
produce an output.  A weighted kind the runtime runs but this file does not
cover fails the coverage test, so a new kind cannot slip by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from specsurgery._proto import NeuralNetwork_pb2
from specsurgery.nn.kinds import KINDS, weight_fields
from specsurgery.runtime.nn import OPS, Net

RNG = np.random.default_rng(7)


def _layer(kind, n_in=1, n_out=1):
    layer = NeuralNetwork_pb2.NeuralNetworkLayer()
    layer.name = f"the_{kind}"
    layer.input.extend([f"x{i}" for i in range(n_in)])
    layer.output.extend([f"y{i}" for i in range(n_out)])
    getattr(layer, kind).SetInParent()
    return layer, getattr(layer, kind)


def _conv(deconv=False, bias=True):
    layer, p = _layer("convolution")
    p.outputChannels, p.kernelChannels = 4, 2
    p.kernelSize.extend([3, 3])
    p.isDeconvolution = deconv
    p.hasBias = bias
    p.valid.SetInParent()
    return layer, {"x0": (1, 2, 5, 5)}


def _conv3d():
    layer, p = _layer("convolution3d")
    p.inputChannels, p.outputChannels = 2, 3
    p.kernelDepth = p.kernelHeight = p.kernelWidth = 2
    p.hasBias = True
    return layer, {"x0": (1, 2, 4, 4, 4)}


def _inner_product(bias=True):
    layer, p = _layer("innerProduct")
    p.inputChannels, p.outputChannels, p.hasBias = 3, 2, bias
    return layer, {"x0": (2, 3)}


def _batched_matmul():
    layer, p = _layer("batchedMatmul")
    p.weightMatrixFirstDimension, p.weightMatrixSecondDimension, p.hasBias = 3, 2, True
    return layer, {"x0": (2, 3)}


def _embedding():
    layer, p = _layer("embedding")
    p.inputDim, p.outputChannels, p.hasBias = 5, 3, True
    return layer, {"x0": (2, 1, 1, 1)}


def _embedding_nd():
    layer, p = _layer("embeddingND")
    p.vocabSize, p.embeddingSize, p.hasBias = 5, 3, True
    return layer, {"x0": (2, 1)}


def _batchnorm(compute_mean_var):
    layer, p = _layer("batchnorm")
    p.channels, p.computeMeanVar, p.epsilon = 2, compute_mean_var, 1e-5
    return layer, {"x0": (1, 2, 3, 3)}


def _scale(shape=(2,)):
    layer, p = _layer("scale")
    p.shapeScale.extend(shape)
    p.hasBias = True
    p.shapeBias.extend(shape)
    return layer, {"x0": (1, 2, 3, 3)}


def _bias():
    layer, p = _layer("bias")
    p.shape.extend([2])
    return layer, {"x0": (1, 2, 3, 3)}


def _load_constant():
    layer, p = _layer("loadConstant", n_in=0)
    p.shape.extend([2, 1, 1])
    return layer, {}


def _load_constant_nd():
    layer, p = _layer("loadConstantND", n_in=0)
    p.shape.extend([2, 3])
    return layer, {}


def _layer_norm():
    layer, p = _layer("layerNormalization")
    p.normalizedShape.extend([3])
    p.eps = 1e-5
    return layer, {"x0": (2, 3)}


def _simple_rnn():
    layer, p = _layer("simpleRecurrent", n_in=1, n_out=2)
    p.inputVectorSize, p.outputVectorSize, p.hasBiasVector = 3, 2, True
    p.activation.tanh.SetInParent()
    return layer, {"x0": (4, 1, 3, 1, 1)}


def _gru(bias=True):
    layer, p = _layer("gru", n_in=1, n_out=2)
    p.inputVectorSize, p.outputVectorSize, p.hasBiasVectors = 3, 2, bias
    return layer, {"x0": (4, 1, 3, 1, 1)}


def _uni_lstm(bias=True, peephole=True):
    layer, p = _layer("uniDirectionalLSTM", n_in=1, n_out=3)
    p.inputVectorSize, p.outputVectorSize = 3, 2
    p.params.hasBiasVectors, p.params.hasPeepholeVectors = bias, peephole
    p.weightParams.SetInParent()
    return layer, {"x0": (4, 1, 3, 1, 1)}


def _bi_lstm():
    layer, p = _layer("biDirectionalLSTM", n_in=1, n_out=5)
    p.inputVectorSize, p.outputVectorSize = 3, 2
    p.params.hasBiasVectors = p.params.hasPeepholeVectors = True
    p.weightParams.add()
    p.weightParams.add()
    return layer, {"x0": (4, 1, 3, 1, 1)}


def _activation(which):
    layer, p = _layer("activation")
    getattr(p, which).SetInParent()
    return layer, {"x0": (1, 2, 3, 3)}


CASES = {
    "convolution": _conv, "convolution/no-bias": lambda: _conv(bias=False),
    "convolution/deconv": lambda: _conv(deconv=True),
    "convolution3d": _conv3d,
    "innerProduct": _inner_product, "innerProduct/no-bias": lambda: _inner_product(False),
    "batchedMatmul": _batched_matmul,
    "embedding": _embedding, "embeddingND": _embedding_nd,
    "batchnorm": lambda: _batchnorm(False), "batchnorm/computeMeanVar": lambda: _batchnorm(True),
    "scale": _scale, "scale/CHW": lambda: _scale((2, 3, 3)),
    "bias": _bias,
    "loadConstant": _load_constant, "loadConstantND": _load_constant_nd,
    "layerNormalization": _layer_norm,
    "simpleRecurrent": _simple_rnn,
    "gru": _gru, "gru/no-bias": lambda: _gru(False),
    "uniDirectionalLSTM": _uni_lstm, "uniDirectionalLSTM/plain": lambda: _uni_lstm(False, False),
    "biDirectionalLSTM": _bi_lstm,
    "activation/PReLU": lambda: _activation("PReLU"),
    "activation/parametricSoftplus": lambda: _activation("parametricSoftplus"),
}

#: weighted kinds the reference runtime does not run (custom layers are the app's code)
NOT_RUN = {"custom"}


def _fill(layer, x_shapes):
    """Fill every weight field the table lists with values of the table's count
    (per-channel parameters without a fixed shape get one value per input channel)."""
    for wf in weight_fields(layer):
        n = wf.count if wf.count is not None else x_shapes["x0"][1]
        wf.wp.floatValue.extend((RNG.random(n) + 0.5).astype(np.float32).tolist())


def _inputs(layer, x_shapes):
    out = {}
    for name, shape in x_shapes.items():
        if layer.WhichOneof("layer").startswith("embedding"):
            out[name] = RNG.integers(0, 5, size=shape).astype(np.float32)
        else:
            out[name] = RNG.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_kernel_decodes_exactly_the_tables_weight_fields(case):
    built, x_shapes = CASES[case]()
    msg = NeuralNetwork_pb2.NeuralNetwork()
    msg.layers.add().CopyFrom(built)
    layer = msg.layers[0]
    _fill(layer, x_shapes)
    table = {wf.path: wf for wf in weight_fields(layer)}
    assert table, f"{case}: the table lists no weights for this layer"
    net = Net(msg, rank5=False)
    net.decoded = []
    blobs = net.run(_inputs(layer, x_shapes))
    decoded = [path for _, path in net.decoded]
    assert sorted(set(decoded)) == sorted(table), (
        f"{case}: the runtime decoded {sorted(set(decoded))}, the table lists {sorted(table)}")
    for o in layer.output:
        assert o in blobs and np.all(np.isfinite(blobs[o])), f"{case}: no finite output {o!r}"
    # the decoded arrays carry the table's shapes
    for path, wf in table.items():
        if wf.shape is not None:
            hit = [v for k, v in net.wcache.items()
                   if isinstance(k, tuple) and len(k) == 3 and v[0] is wf.wp]
            assert hit and hit[0][1].shape == wf.shape, f"{case}: {path} not decoded as {wf.shape}"


def test_every_weighted_kind_the_runtime_runs_is_covered():
    weighted = {k for k, v in KINDS.items() if v.has_weights}
    covered = {case.split("/")[0] for case in CASES}
    missing = sorted(k for k in weighted - covered - NOT_RUN if k in OPS)
    assert not missing, f"add a case to tests/runtime/test_runtime_kinds.py for: {missing}"


def test_kernels_decode_weights_only_through_the_table():
    """Only the engine decodes; a kernel that passed its own shape would bypass the table."""
    pkg = Path(__file__).resolve().parents[2] / "specsurgery" / "runtime" / "nn"
    for path in sorted(pkg.glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        for needle in ("_decode(", "_weights.decode", "weights.decode(", "ctx.w("):
            assert needle not in text, f"{path.name} decodes a weight itself ({needle!r}); use ctx.weight(path)"
