"""Layer semantics checked against torch / independent numpy formulas, on
hand-built specs (exact-rank mapping unless a test says legacy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specsurgery._proto import Model_pb2, NeuralNetwork_pb2
from specsurgery.errors import UnsupportedError
from specsurgery.runtime import infer_shapes, predict
from specsurgery.runtime.nn import LayerError

RNG = np.random.default_rng(0)


def net(inputs: dict, build, outputs=("y",), legacy=False):
    """spec with array inputs {name: shape}; ``build(nn)`` adds layers."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    for name, shape in inputs.items():
        f = spec.description.input.add()
        f.name = name
        f.type.multiArrayType.dataType = f.type.multiArrayType.FLOAT32
        f.type.multiArrayType.shape.extend(shape)
    for name in outputs:
        f = spec.description.output.add()
        f.name = name
        f.type.multiArrayType.dataType = f.type.multiArrayType.FLOAT32
    nn = spec.neuralNetwork
    if not legacy:
        nn.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
    build(nn)
    return spec


def layer(nn, kind, inputs, outputs, name=None):
    l = nn.layers.add()
    l.name = name or f"{kind}_{len(nn.layers)}"
    l.input.extend(inputs if isinstance(inputs, (list, tuple)) else [inputs])
    l.output.extend(outputs if isinstance(outputs, (list, tuple)) else [outputs])
    p = getattr(l, kind)
    p.SetInParent()
    return p


def run1(spec, **inputs):
    return predict(spec, inputs)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _conv_weights(p, w, b=None):
    p.weights.floatValue.extend(w.reshape(-1).tolist())
    if b is not None:
        p.hasBias = True
        p.bias.floatValue.extend(b.tolist())


# --------------------------------------------------------------------------- convolution

@pytest.mark.parametrize("mode", [0, 1])
def test_conv_same_padding_asymmetry(mode):
    x = RNG.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 4, 4)).astype(np.float32)

    def build(nn):
        p = layer(nn, "convolution", "x", "y")
        p.outputChannels, p.kernelChannels = 3, 2
        p.kernelSize.extend([4, 4])
        p.stride.extend([2, 2])
        p.same.asymmetryMode = mode
        _conv_weights(p, w)
    y = run1(net({"x": [1, 2, 7, 6]}, build), x=x)["y"]
    # total pad: H 7 -> out 4: (4-1)*2+4-7 = 3 ; W 6 -> out 3: (3-1)*2+4-6 = 2
    pads = (1, 1, 1, 2) if mode == 0 else (1, 1, 2, 1)   # (left, right, top, bottom)
    ref = F.conv2d(F.pad(torch.from_numpy(x), pads), torch.from_numpy(w), stride=2).numpy()
    close(y, ref)


def test_deconv_same_and_output_shape():
    x = RNG.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(2).astype(np.float32)

    def build(nn):
        p = layer(nn, "convolution", "x", "y")
        p.outputChannels, p.kernelChannels, p.isDeconvolution = 2, 3, True
        p.kernelSize.extend([3, 3])
        p.stride.extend([2, 2])
        p.valid.paddingAmounts.borderAmounts.add(startEdgeSize=1, endEdgeSize=1)
        p.valid.paddingAmounts.borderAmounts.add(startEdgeSize=1, endEdgeSize=1)
        p.outputShape.extend([10, 10])
        _conv_weights(p, w, b)
    y = run1(net({"x": [1, 3, 5, 5]}, build), x=x)["y"]
    ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2,
                             padding=1, output_padding=1).numpy()
    close(y, ref)


def test_conv_channel_mismatch_names_the_layer():
    def build(nn):
        p = layer(nn, "convolution", "x", "y", name="badconv")
        p.outputChannels, p.kernelChannels = 2, 5
        p.kernelSize.extend([1, 1])
        p.valid.SetInParent()
        _conv_weights(p, np.ones(10, np.float32))
    with pytest.raises(LayerError, match=r"'badconv' \(convolution\).*kernelChannels 5"):
        run1(net({"x": [1, 3, 4, 4]}, build), x=np.zeros((1, 3, 4, 4), np.float32))


# --------------------------------------------------------------------------- pooling

def test_pooling_include_last_pixel_and_exclude_padding():
    x = RNG.standard_normal((1, 2, 7, 7)).astype(np.float32)

    def build(nn):
        for name, kind in (("mx", 0), ("av", 1)):
            p = layer(nn, "pooling", "x", name)
            p.type = kind
            p.kernelSize.extend([3, 3])
            p.stride.extend([2, 2])
            p.includeLastPixel.paddingAmounts.extend([1, 1])
            p.avgPoolExcludePadding = True
    out = predict(net({"x": [1, 2, 7, 7]}, build, outputs=("mx", "av")), {"x": x})
    t = torch.from_numpy(x)
    close(out["mx"], F.max_pool2d(t, 3, 2, 1, ceil_mode=True).numpy())
    close(out["av"], F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False).numpy())


def test_global_and_l2_pooling():
    x = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)

    def build(nn):
        p = layer(nn, "pooling", "x", "g")
        p.type, p.globalPooling = 1, True
        p = layer(nn, "pooling", "x", "l2")
        p.type = 2
        p.kernelSize.extend([2, 2])
        p.stride.extend([2, 2])
        p.valid.SetInParent()
    out = predict(net({"x": [1, 3, 4, 5]}, build, outputs=("g", "l2")), {"x": x})
    close(out["g"], x.mean(axis=(2, 3), keepdims=True))
    close(out["l2"], np.sqrt(F.avg_pool2d(torch.from_numpy(x ** 2), 2).numpy() * 4))


# --------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("mode,align", [(1, True), (2, False)])
def test_upsample_bilinear_modes(mode, align):
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)

    def build(nn):
        p = layer(nn, "upsample", "x", "y")
        p.scalingFactor.extend([2, 3])
        p.mode = 1
        p.linearUpsampleMode = mode
    y = run1(net({"x": [1, 2, 3, 4]}, build), x=x)["y"]
    ref = F.interpolate(torch.from_numpy(x), scale_factor=(2, 3), mode="bilinear", align_corners=align)
    close(y, ref.numpy())


def test_upsample_fractional_nearest():
    x = RNG.standard_normal((1, 1, 4, 4)).astype(np.float32)

    def build(nn):
        p = layer(nn, "upsample", "x", "y")
        p.fractionalScalingFactor.extend([1.5, 2.5])
    y = run1(net({"x": [1, 1, 4, 4]}, build), x=x)["y"]
    assert y.shape == (1, 1, 6, 10)
    close(y[0, 0, :, 0], x[0, 0, [0, 0, 1, 2, 2, 3], 0])


@pytest.mark.parametrize("method", [0, 1, 2, 3])
def test_resize_bilinear_sampling_modes(method):
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)

    def build(nn):
        p = layer(nn, "resizeBilinear", "x", "y")
        p.targetSize.extend([7, 3])
        p.mode.samplingMethod = method
    y = run1(net({"x": [1, 2, 4, 5]}, build), x=x)["y"]

    def grid(n_in, n_out):
        i = np.arange(n_out, dtype=np.float64)
        if method in (0, 1):
            return i * (n_in - 1) / (n_out - 1)
        if method == 2:
            return np.minimum(n_in - 1, i * (n_in - n_in / n_out) / (n_out - 1))
        sp = max(1, n_in - 1) / n_out
        return np.minimum(n_in - 1, 0.5 * sp + i * sp)
    ys, xs = grid(4, 7), grid(5, 3)
    ref = np.zeros((1, 2, 7, 3))
    for a, yy in enumerate(ys):
        for b, xx in enumerate(xs):
            y0, x0 = int(math.floor(yy)), int(math.floor(xx))
            y1, x1 = min(y0 + 1, 3), min(x0 + 1, 4)
            fy, fx = yy - y0, xx - x0
            ref[..., a, b] = ((1 - fy) * ((1 - fx) * x[..., y0, x0] + fx * x[..., y0, x1])
                              + fy * ((1 - fx) * x[..., y1, x0] + fx * x[..., y1, x1]))
    close(y, ref)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_reorganize_data(mode):
    x = RNG.standard_normal((1, 8, 4, 4)).astype(np.float32)

    def build(nn):
        p = layer(nn, "reorganizeData", "x", "y")
        p.mode, p.blockSize = mode, 2
    y = run1(net({"x": [1, 8, 4, 4]}, build), x=x)["y"]
    t = torch.from_numpy(x)
    if mode == 0:      # space to depth (TF order: block offsets outermost)
        ref = t.reshape(1, 8, 2, 2, 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(1, 32, 2, 2)
    elif mode == 1:
        ref = t.reshape(1, 2, 2, 2, 4, 4).permute(0, 3, 4, 1, 5, 2).reshape(1, 2, 8, 8)
    else:
        ref = F.pixel_shuffle(t, 2)
    close(y, ref.numpy())


# --------------------------------------------------------------------------- recurrent

def _lstm_weights(p, lstm, suffix=""):
    W = getattr(lstm, "weight_ih_l0" + suffix).detach().numpy()
    R = getattr(lstm, "weight_hh_l0" + suffix).detach().numpy()
    b = (getattr(lstm, "bias_ih_l0" + suffix) + getattr(lstm, "bias_hh_l0" + suffix)).detach().numpy()
    H = R.shape[1]
    names = ("inputGate", "forgetGate", "blockInput", "outputGate")   # torch order i, f, g, o
    for k, n in enumerate(names):
        getattr(p, n + "WeightMatrix").floatValue.extend(W[k * H:(k + 1) * H].reshape(-1).tolist())
        getattr(p, n + "RecursionMatrix").floatValue.extend(R[k * H:(k + 1) * H].reshape(-1).tolist())
        getattr(p, n + "BiasVector").floatValue.extend(b[k * H:(k + 1) * H].tolist())


def test_bidirectional_lstm_matches_torch():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    x = RNG.standard_normal((5, 1, 3)).astype(np.float32)

    def build(nn):
        p = layer(nn, "biDirectionalLSTM", "x", ["y", "hf", "cf", "hb", "cb"])
        p.inputVectorSize, p.outputVectorSize = 3, 4
        p.params.sequenceOutput = True
        p.params.hasBiasVectors = True
        _lstm_weights(p.weightParams.add(), lstm)
        _lstm_weights(p.weightParams.add(), lstm, "_reverse")
    out = predict(net({"x": [5, 1, 3, 1, 1]}, build, outputs=("y", "hf", "hb")),
                  {"x": x.reshape(5, 1, 3, 1, 1)})
    ref, (h, c) = lstm(torch.from_numpy(x))
    close(out["y"].reshape(5, 8), ref.detach().numpy().reshape(5, 8))
    close(out["hf"].reshape(4), h[0, 0].detach().numpy())
    close(out["hb"].reshape(4), h[1, 0].detach().numpy())


def test_gru_layer_follows_the_proto_equations():
    """Core ML's GRU applies R_o to (r * h) (NeuralNetwork.proto), unlike torch's
    r * (W_hn h + b_hn); the reference below is the proto's equations."""
    torch.manual_seed(1)
    gru = torch.nn.GRU(3, 4)
    x = RNG.standard_normal((6, 1, 3)).astype(np.float32)
    Wi, Wh = gru.weight_ih_l0.detach().numpy(), gru.weight_hh_l0.detach().numpy()
    bi, bh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()

    def build(nn):
        p = layer(nn, "gru", "x", ["y", "h"])
        p.inputVectorSize, p.outputVectorSize = 3, 4
        p.sequenceOutput = True
        p.hasBiasVectors = True
        # torch order r, z, n; Core ML: update z, reset r, output o.  Core ML's o uses R_o (r*h):
        # torch's n uses r * (W_hn h + b_hn), equal when b_hn = 0
        for k, n in ((1, "updateGate"), (0, "resetGate"), (2, "outputGate")):
            getattr(p, n + "WeightMatrix").floatValue.extend(Wi[k * 4:(k + 1) * 4].reshape(-1).tolist())
            getattr(p, n + "RecursionMatrix").floatValue.extend(Wh[k * 4:(k + 1) * 4].reshape(-1).tolist())
            bias = bi[k * 4:(k + 1) * 4] + (bh[k * 4:(k + 1) * 4] if k < 2 else 0)
            getattr(p, n + "BiasVector").floatValue.extend(bias.tolist())
    out = predict(net({"x": [6, 1, 3, 1, 1]}, build), {"x": x.reshape(6, 1, 3, 1, 1)})
    sig = lambda v: 1 / (1 + np.exp(-v))
    h = np.zeros(4)
    ref = []
    for t in range(6):
        xt = x[t, 0]
        z = sig(Wi[4:8] @ xt + Wh[4:8] @ h + bi[4:8] + bh[4:8])
        r = sig(Wi[0:4] @ xt + Wh[0:4] @ h + bi[0:4] + bh[0:4])
        o = np.tanh(Wi[8:] @ xt + Wh[8:] @ (r * h) + bi[8:])
        h = (1 - z) * o + z * h
        ref.append(h)
    close(out["y"].reshape(6, 4), np.array(ref))


# --------------------------------------------------------------------------- legacy rank-5 layers

def test_legacy_flatten_reshape_permute():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)

    def build(nn):
        layer(nn, "flatten", "x", "f").mode = 1                           # channel last
        p = layer(nn, "reshape", "x", "r")
        p.targetShape.extend([4, 3, 2])
        p = layer(nn, "permute", "x", "p")
        p.axis.extend([0, 2, 3, 1])                                       # [S,B,H,W,C]
    out = predict(net({"x": [2, 3, 4]}, build, outputs=("f", "r", "p"), legacy=True), {"x": x})
    close(out["f"].reshape(-1), x.transpose(1, 2, 0).reshape(-1))
    close(out["r"].reshape(4, 3, 2), x.reshape(4, 3, 2))
    close(out["p"].reshape(3, 4, 2), x.transpose(1, 2, 0))
    shapes = infer_shapes(net({"x": [2, 3, 4]}, build, outputs=("f", "r", "p"), legacy=True))
    assert shapes["x"] == (1, 1, 2, 3, 4) and shapes["f"] == (1, 1, 24, 1, 1)
    assert shapes["p"] == (1, 1, 3, 4, 2)


def test_legacy_embedding_and_softmax_on_channels():
    wt = RNG.standard_normal((5, 7)).astype(np.float32)     # [outputChannels, inputDim]

    def build(nn):
        p = layer(nn, "embedding", "x", "e")
        p.inputDim, p.outputChannels = 7, 5
        p.weights.floatValue.extend(wt.reshape(-1).tolist())
        layer(nn, "softmax", "e", "y")
    y = predict(net({"x": [1]}, build, legacy=True), {"x": np.array([3.0])})["y"]
    ref = np.exp(wt[:, 3]) / np.exp(wt[:, 3]).sum()
    close(y.reshape(-1), ref)


def test_lrn_and_l2normalize():
    x = RNG.standard_normal((1, 6, 3, 3)).astype(np.float32)

    def build(nn):
        p = layer(nn, "lrn", "x", "n")
        p.alpha, p.beta, p.localSize, p.k = 1e-2, 0.75, 3, 2.0
        layer(nn, "l2normalize", "x", "l").epsilon = 1e-6
    out = predict(net({"x": [1, 6, 3, 3]}, build, outputs=("n", "l")), {"x": x})
    close(out["n"], F.local_response_norm(torch.from_numpy(x), 3, 1e-2, 0.75, 2.0).numpy())
    close(out["l"], x / np.sqrt((x ** 2).sum()))


# --------------------------------------------------------------------------- ND layers

def test_nd_layers_batch():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    idx = np.array([2, 0, 1, 2], np.float32)

    def build(nn):
        layer(nn, "gather", ["x", "i"], "g").axis = -1
        p = layer(nn, "sliceStatic", "x", "s")
        p.beginIds.extend([0, 1, 0]); p.endIds.extend([2, 3, 4]); p.strides.extend([1, 1, 2])
        p.beginMasks.extend([False] * 3); p.endMasks.extend([False] * 3)
        p.squeezeMasks.extend([False, True, False])
        p = layer(nn, "concatND", ["x", "x"], "c")
        p.axis, p.interleave = 1, True
        p = layer(nn, "splitND", "x", ["s1", "s2"])
        p.axis = 2
        p.splitSizes.extend([1, 3])
        layer(nn, "reduceLogSumExp", "x", "lse").axes.extend([1])
        p = layer(nn, "topK", "x", ["tv", "ti"])
        p.axis, p.K = -1, 2
        layer(nn, "cumSum", "x", "cs").axis = 1
        layer(nn, "getShape", "x", "shape")
        p = layer(nn, "fillDynamic", "shape", "fill")
        p.value = 2.5
        p = layer(nn, "whereBroadcastable", ["cond", "x", "fill"], "w")
    outs = ("g", "s", "c", "s1", "s2", "lse", "tv", "ti", "cs", "w")
    spec = net({"x": [2, 3, 4], "i": [4], "cond": [1, 1, 4]}, build, outputs=outs)
    cond = np.array([1, 0, 1, 0], np.float32).reshape(1, 1, 4)
    o = predict(spec, {"x": x, "i": idx, "cond": cond})
    close(o["g"], x[..., [2, 0, 1, 2]])
    close(o["s"], x[0:2, 1, 0:4:2])
    close(o["c"], np.stack([x, x], axis=2).reshape(2, 6, 4))
    close(o["s2"], x[:, :, 1:])
    close(o["lse"], np.log(np.exp(x).sum(axis=1)))
    close(o["tv"], -np.sort(-x, axis=-1)[..., :2])
    close(o["cs"], np.cumsum(x, axis=1))
    close(o["w"], np.where(cond != 0, x, 2.5))
    assert infer_shapes(spec)["c"] == (2, 6, 4)


def test_batched_matmul_with_weights_and_layer_norm():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    W = RNG.standard_normal((4, 5)).astype(np.float32)
    g = RNG.standard_normal(5).astype(np.float32)

    def build(nn):
        p = layer(nn, "batchedMatmul", "x", "m")
        p.weightMatrixFirstDimension, p.weightMatrixSecondDimension = 4, 5
        p.weights.floatValue.extend(W.T.reshape(-1).tolist())     # stored [X2, X1]
        p = layer(nn, "layerNormalization", "m", "y")
        p.normalizedShape.extend([5])
        p.eps = 1e-5
        p.gamma.floatValue.extend(g.tolist())
        p.beta.floatValue.extend([0.0] * 5)
    y = run1(net({"x": [2, 3, 4]}, build), x=x)["y"]
    ref = F.layer_norm(torch.from_numpy(x @ W), (5,), torch.from_numpy(g), eps=1e-5).numpy()
    close(y, ref, 1e-4)


def test_gelu_modes_and_unary():
    x = np.linspace(-4, 4, 50, dtype=np.float32)

    def build(nn):
        layer(nn, "gelu", "x", "exact").mode = 0
        layer(nn, "gelu", "x", "tanh").mode = 1
        p = layer(nn, "unary", "x", "rs")
        p.type, p.shift, p.scale, p.epsilon = 1, 5.0, 1.0, 1e-6
    o = predict(net({"x": [50]}, build, outputs=("exact", "tanh", "rs")), {"x": x})
    t = torch.from_numpy(x)
    close(o["exact"], F.gelu(t).numpy())
    close(o["tanh"], F.gelu(t, approximate="tanh").numpy())
    close(o["rs"], 1 / np.sqrt(x + 5 + 1e-6))


# --------------------------------------------------------------------------- control flow

def test_loop_with_condition_network_and_branch():
    """counter = 0; while counter < 5: counter += 1; then y = counter (branch: if > 3)."""
    def build(nn):
        p = layer(nn, "loadConstantND", [], "counter")
        p.shape.extend([1]); p.data.floatValue.append(0.0)
        lp = layer(nn, "loop", [], [])
        lp.conditionVar = "cond"
        c = lp.conditionNetwork
        cl = c.layers.add(); cl.name = "lt"; cl.input.append("counter"); cl.output.append("cond")
        cl.lessThan.alpha = 5.0
        b = lp.bodyNetwork
        bl = b.layers.add(); bl.name = "inc"; bl.input.append("counter"); bl.output.append("next")
        bl.add.alpha = 1.0
        cp = b.layers.add(); cp.name = "cp"; cp.input.append("next"); cp.output.append("counter")
        cp.copy.SetInParent()
        gt = layer(nn, "greaterThan", "counter", "big")
        gt.alpha = 3.0
        br = layer(nn, "branch", "big", [])
        il = br.ifBranch.layers.add(); il.name = "yes"; il.input.append("counter"); il.output.append("y")
        il.multiply.alpha = 10.0
        el = br.elseBranch.layers.add(); el.name = "no"; el.input.append("counter"); el.output.append("y")
        el.multiply.alpha = -1.0
    spec = net({"x": [1]}, build)
    assert predict(spec, {"x": np.zeros(1)})["y"].tolist() == [50.0]
    assert infer_shapes(spec)["y"] == (1,)


# --------------------------------------------------------------------------- errors

def test_unsupported_layer_is_named():
    def build(nn):
        p = layer(nn, "custom", "x", "y", name="mystery")
        p.className = "MyLayer"
    with pytest.raises(UnsupportedError, match=r"'mystery' \(custom, class 'MyLayer'\)"):
        run1(net({"x": [2]}, build), x=np.zeros(2))


def test_embedding_index_out_of_vocabulary():
    def build(nn):
        p = layer(nn, "embeddingND", "x", "y", name="emb")
        p.vocabSize, p.embeddingSize = 4, 2
        p.weights.floatValue.extend([0.0] * 8)
    with pytest.raises(LayerError, match=r"'emb'.*outside the vocabulary 0..3"):
        run1(net({"x": [3, 1]}, build), x=np.array([[1], [4], [0]], np.float32))


def test_missing_input_lists_every_name():
    def build(nn):
        layer(nn, "addBroadcastable", ["a", "b"], "y")
    with pytest.raises(Exception, match=r"'a'.*'b'|'b'.*'a'"):
        predict(net({"a": [2], "b": [2]}, build), {})


def test_conv3d_and_pool3d_match_torch():
    x = RNG.standard_normal((1, 4, 5, 6, 7)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3, 3, 2)).astype(np.float32)
    b = RNG.standard_normal(6).astype(np.float32)

    def build(nn):
        p = layer(nn, "convolution3d", "x", "c")
        p.outputChannels, p.inputChannels, p.nGroups = 6, 4, 2
        p.kernelDepth, p.kernelHeight, p.kernelWidth = 3, 3, 2
        p.strideDepth, p.strideHeight, p.strideWidth = 1, 2, 1
        p.dilationDepth, p.dilationHeight, p.dilationWidth = 1, 1, 2
        p.paddingType = 0
        p.customPaddingFront = p.customPaddingBack = 1
        p.customPaddingTop, p.customPaddingBottom = 1, 0
        p.hasBias = True
        p.weights.floatValue.extend(w.reshape(-1).tolist())
        p.bias.floatValue.extend(b.tolist())
        p = layer(nn, "pooling3d", "x", "p")
        p.type = 1
        p.kernelDepth = p.kernelHeight = p.kernelWidth = 2
        p.strideDepth = p.strideHeight = p.strideWidth = 2
        p.paddingType = 2
        p.countExcludePadding = True
        layer(nn, "globalPooling3d", "x", "g").type = 0
    o = predict(net({"x": [1, 4, 5, 6, 7]}, build, outputs=("c", "p", "g")), {"x": x})
    t = torch.from_numpy(x)
    ref = F.conv3d(F.pad(t, (0, 0, 1, 0, 1, 1)), torch.from_numpy(w), torch.from_numpy(b),
                   stride=(1, 2, 1), dilation=(1, 1, 2), groups=2)
    close(o["c"], ref.numpy(), 1e-4)
    # SAME for 5,6,7 with k2 s2: total pads 1,0,1 -> after side
    ref_p = F.avg_pool3d(F.pad(t, (0, 1, 0, 0, 0, 1)), 2, 2).numpy()
    cnt = F.avg_pool3d(F.pad(torch.ones_like(t), (0, 1, 0, 0, 0, 1)), 2, 2).numpy()
    close(o["p"], ref_p / cnt)
    close(o["g"], x.max(axis=(2, 3, 4), keepdims=True))


def test_infer_shapes_skips_what_depends_on_unsupported_layers():
    def build(nn):
        layer(nn, "activation", "x", "a").ReLU.SetInParent()
        layer(nn, "custom", "a", "b", name="mystery").className = "MyLayer"
        layer(nn, "activation", "b", "y").ReLU.SetInParent()
    spec = net({"x": [2, 3]}, build)
    assert infer_shapes(spec, partial=True) == {"x": (2, 3), "a": (2, 3)}
    with pytest.raises(UnsupportedError, match=r"'mystery' \(custom, class 'MyLayer'\)"):
        infer_shapes(spec)
