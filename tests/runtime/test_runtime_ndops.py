"""More layer kinds against numpy formulas (one small network each)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from test_runtime_layers import close, layer, net
from specsurgery.runtime import predict

R = np.random.default_rng(5)
X = R.standard_normal((2, 3, 4)).astype(np.float32)


def one(kind, setup, inputs, extra_inputs=None, n_out=1, legacy=False):
    names = list(inputs)
    outs = [f"y{i}" for i in range(n_out)]

    def build(nn):
        p = layer(nn, kind, names, outs)
        setup(p)
    spec = net({k: list(v.shape) for k, v in inputs.items()}, build, outputs=outs, legacy=legacy)
    res = predict(spec, inputs)
    return [res[o] for o in outs] if n_out > 1 else res["y0"]


def test_activations_all_types():
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    t = torch.from_numpy(x)
    cases = {
        "linear": (lambda a: (setattr(a, "alpha", 2.0), setattr(a, "beta", 1.0)), 2 * x + 1),
        "leakyReLU": (lambda a: setattr(a, "alpha", 0.1), F.leaky_relu(t, 0.1).numpy()),
        "thresholdedReLU": (lambda a: setattr(a, "alpha", 1.0), np.where(x > 1, x, 0)),
        "scaledTanh": (lambda a: (setattr(a, "alpha", 2.0), setattr(a, "beta", 0.5)), 2 * np.tanh(0.5 * x)),
        "sigmoidHard": (lambda a: (setattr(a, "alpha", 0.2), setattr(a, "beta", 0.5)), np.clip(0.2 * x + 0.5, 0, 1)),
        "ELU": (lambda a: setattr(a, "alpha", 1.0), F.elu(t).numpy()),
        "softsign": (lambda a: a.SetInParent(), F.softsign(t).numpy()),
        "softplus": (lambda a: a.SetInParent(), F.softplus(t).numpy()),
        "sigmoid": (lambda a: a.SetInParent(), torch.sigmoid(t).numpy()),
    }
    for kind, (setup, ref) in cases.items():
        got = one("activation", lambda p: setup(getattr(p, kind)), {"x": x})
        close(got, ref)
    # parametricSoftplus per channel on [C, 1, 1]
    xc = R.standard_normal((3, 1, 1)).astype(np.float32)

    def ps(p):
        p.parametricSoftplus.alpha.floatValue.extend([1.0, 2.0, 3.0])
        p.parametricSoftplus.beta.floatValue.extend([0.5, 1.0, 2.0])
    a, b = np.array([1, 2, 3.0])[:, None, None], np.array([0.5, 1, 2.0])[:, None, None]
    close(one("activation", ps, {"x": xc}), a * np.log1p(np.exp(b * xc)))


def test_reduce_legacy_modes():
    x = np.abs(X) + 0.1
    refs = {0: x.sum(axis=(1, 2), keepdims=True), 1: x.mean(axis=(1, 2), keepdims=True),
            2: x.prod(axis=(1, 2), keepdims=True), 6: np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True)),
            7: x.max(axis=(1, 2), keepdims=True)}
    for mode, ref in refs.items():
        def setup(p, mode=mode):
            p.mode, p.axis = mode, 1       # HW
        close(one("reduce", setup, {"x": x}), ref, 1e-4)

    def am(p):
        p.mode, p.axis = 9, 4              # ARGMAX over W
    close(one("reduce", am, {"x": x}), np.argmax(x, axis=-1)[..., None])


def test_shape_ops():
    close(one("tile", lambda p: p.reps.extend([2, 1, 3]), {"x": X}), np.tile(X, (2, 1, 3)))
    close(one("reverse", lambda p: p.reverseDim.extend([True, False, True]), {"x": X}), X[::-1, :, ::-1])
    close(one("flattenTo2D", lambda p: setattr(p, "axis", 2), {"x": X}), X.reshape(6, 4))
    close(one("rankPreservingReshape", lambda p: p.targetShape.extend([0, -1, 2]), {"x": X}), X.reshape(2, 6, 2))
    close(one("expandDims", lambda p: p.axes.extend([0, -1]), {"x": X}), X[None, ..., None])
    close(one("squeeze", lambda p: p.axes.extend([0]), {"x": X[None]}), X)
    close(one("broadcastToStatic", lambda p: p.targetShape.extend([5, 2, 3, 4]), {"x": X}),
          np.broadcast_to(X, (5, 2, 3, 4)))
    close(one("slidingWindows", lambda p: (setattr(p, "axis", 2), setattr(p, "windowSize", 2),
                                           setattr(p, "step", 2)), {"x": X}),
          np.stack([X[:, :, 0:2], X[:, :, 2:4]], axis=2))
    close(one("stack", lambda p: setattr(p, "axis", 1), {"a": X, "b": X + 1}), np.stack([X, X + 1], 1))
    close(one("constantPad", lambda p: (p.padAmounts.extend([0, 0, 1, 2, 0, 1]), setattr(p, "value", 7.0)),
              {"x": X}), np.pad(X, [(0, 0), (1, 2), (0, 1)], constant_values=7))
    close(one("matrixBandPart", lambda p: (setattr(p, "numLower", 1), setattr(p, "numUpper", 0)), {"x": X}),
          np.tril(X) - np.tril(X, -2))
    close(one("rangeStatic", lambda p: (setattr(p, "endValue", 5), setattr(p, "startValue", 1),
                                        setattr(p, "stepSizeValue", 2)), {}), np.arange(1, 5, 2))


def test_padding_modes():
    x = R.standard_normal((1, 2, 4, 5)).astype(np.float32)
    t = torch.from_numpy(x)

    def setup(kind):
        def s(p):
            b = p.paddingAmounts.borderAmounts
            b.add(startEdgeSize=1, endEdgeSize=2)
            b.add(startEdgeSize=2, endEdgeSize=1)
            getattr(p, kind).SetInParent()
        return s
    close(one("padding", setup("reflection"), {"x": x}), F.pad(t, (2, 1, 1, 2), mode="reflect").numpy())
    close(one("padding", setup("replication"), {"x": x}), F.pad(t, (2, 1, 1, 2), mode="replicate").numpy())


def test_gather_scatter_family():
    data = R.standard_normal((4, 3)).astype(np.float32)
    idx_nd = np.array([[0, 1], [3, 2]], np.float32)
    close(one("gatherND", lambda p: None, {"x": data, "i": idx_nd}), data[[0, 3], [1, 2]])
    idx = np.array([[1, 0, 2], [0, 2, 1]], np.float32)
    close(one("gatherAlongAxis", lambda p: setattr(p, "axis", 1), {"x": data[:2], "i": idx}),
          np.take_along_axis(data[:2], idx.astype(int), 1))
    upd = R.standard_normal((2, 3)).astype(np.float32)
    ref = data[:2].copy()
    np.put_along_axis(ref, idx.astype(int), upd, 1)
    close(one("scatterAlongAxis", lambda p: setattr(p, "axis", 1), {"x": data[:2], "i": idx, "u": upd}), ref)
    # scatter along axis 1 with 2-d indices, SCATTER_ADD
    container = np.zeros((2, 5), np.float32)
    sidx = np.array([[0, 4], [4, 1]], np.float32)
    supd = np.ones((2, 2, 2), np.float32)
    ref = container.copy()
    for i in range(2):
        for j in range(2):
            ref[:, int(sidx[i, j])] += supd[:, i, j]

    def sc(p):
        p.axis, p.mode = 1, 1
    close(one("scatter", sc, {"x": container, "i": sidx, "u": supd}), ref)
    nd_idx = np.array([[1, 2], [0, 0]], np.float32)
    ref = data.copy()
    ref[1, 2] = 5
    ref[0, 0] = 6
    close(one("scatterND", lambda p: None, {"x": data, "i": nd_idx, "u": np.array([5, 6], np.float32)}), ref)


def test_one_hot_argsort_argmax():
    ids = np.array([2, 0, 3], np.float32)
    close(one("oneHot", lambda p: (setattr(p, "oneHotVectorSize", 4), setattr(p, "axis", -1),
                                   setattr(p, "onValue", 1.0)), {"x": ids}), np.eye(4)[[2, 0, 3]])
    close(one("argSort", lambda p: (setattr(p, "axis", -1), setattr(p, "descending", True)), {"x": X}),
          np.argsort(-X, axis=-1, kind="stable"))
    close(one("argMax", lambda p: (setattr(p, "axis", 1), setattr(p, "removeDim", True)), {"x": X}),
          np.argmax(X, axis=1))


def test_slice_dynamic_and_sequence_ops():
    begin = np.array([0, 1, 0], np.float32)
    end = np.array([2, 3, 4], np.float32)

    def sd(p):
        p.strides.extend([1, 1, 2])
        p.beginMasks.extend([False] * 3)
        p.endMasks.extend([False] * 3)
    close(one("sliceDynamic", sd, {"x": X, "b": begin, "e": end}), X[0:2, 1:3, 0:4:2])
    x5 = R.standard_normal((2, 1, 3, 1, 1)).astype(np.float32)
    close(one("sequenceRepeat", lambda p: setattr(p, "nRepetitions", 3), {"x": x5}),
          np.concatenate([x5] * 3, axis=0))


def test_legacy_scale_bias_dot_crop():
    x = R.standard_normal((3, 2, 2)).astype(np.float32)

    def sc(p):
        p.shapeScale.extend([3])
        p.scale.floatValue.extend([1.0, 2.0, 3.0])
        p.hasBias = True
        p.shapeBias.extend([3, 2, 2])
        p.bias.floatValue.extend(np.arange(12, dtype=np.float32).tolist())
    got = one("scale", sc, {"x": x}, legacy=True)
    close(got.reshape(3, 2, 2), x * np.array([1, 2, 3.0])[:, None, None] + np.arange(12).reshape(3, 2, 2))
    y = R.standard_normal((3, 2, 2)).astype(np.float32)
    got = one("dot", lambda p: setattr(p, "cosineSimilarity", True), {"a": x, "b": y}, legacy=True)
    ref = (x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)
    close(got.reshape(-1), [ref])

    def cr(p):
        b = p.cropAmounts.borderAmounts
        b.add(startEdgeSize=1, endEdgeSize=0)
        b.add(startEdgeSize=0, endEdgeSize=1)
    close(one("crop", cr, {"x": x}, legacy=True).reshape(3, 1, 1), x[:, 1:, :1])


def test_int8_dynamic_inner_product():
    w = np.array([[1, -2, 3], [4, 5, -6]], np.int8)

    def ip(p):
        p.inputChannels, p.outputChannels = 3, 2
        p.int8DynamicQuantize = True
        p.weights.int8RawValue = w.tobytes()
        p.weights.quantization.numberOfBits = 8
        p.weights.quantization.linearQuantization.scale.append(0.5)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    close(one("innerProduct", ip, {"x": x}), x @ (w.astype(np.float32) * 0.5).T)


def test_non_maximum_suppression():
    # boxes (x_c, y_c, w, h); box 1 overlaps box 0 heavily, box 2 is apart, box 3 scores too low
    boxes = np.array([[[5, 5, 4, 4], [5.5, 5, 4, 4], [20, 20, 4, 4], [30, 30, 2, 2]]], np.float32)
    scores = np.array([[[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.05, 0.01]]], np.float32)

    def setup(p):
        p.iouThreshold, p.scoreThreshold, p.maxBoxes = 0.5, 0.1, 3
    b, s, i, n = one("NonMaximumSuppression", setup, {"b": boxes, "s": scores}, n_out=4)
    assert n.tolist() == [2]
    assert i.tolist() == [[0, 2, -1]]
    close(b[0, :2], boxes[0, [0, 2]])
    close(s[0, 2], [0, 0])
    # per-class suppression keeps box 1 when it belongs to another class
    scores2 = scores.copy()
    scores2[0, 1] = [0.1, 0.8]

    def setup2(p):
        setup(p)
        p.perClassSuppression = True
    _, _, i, n = one("NonMaximumSuppression", setup2, {"b": boxes, "s": scores2}, n_out=4)
    assert n.tolist() == [3] and i.tolist() == [[0, 1, 2]]


def test_categorical_distribution_is_seeded():
    logits = np.log(np.array([[0.0001, 0.9998, 0.0001]], np.float32))

    def setup(p):
        p.seed, p.numSamples, p.isLogits = 3, 20, True
    a = one("categoricalDistribution", setup, {"x": logits})
    assert a.shape == (1, 20) and (a == 1).mean() > 0.8
    np.testing.assert_array_equal(a, one("categoricalDistribution", setup, {"x": logits}))


def test_crop_resize_matches_coremltools_reference_values():
    """Expected values from coremltools' own crop_resize tests (ALIGN_CORNERS)."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 1, 4, 4)
    roi = np.array([1, 1, 2, 2], np.float32).reshape(1, 1, 4, 1, 1)

    def setup(size, method=1, normalized=False):
        def s(p):
            p.targetSize.extend(size)
            p.mode.samplingMethod = method
            p.normalizedCoordinates = normalized
        return s
    close(one("cropResize", setup([2, 2]), {"x": x, "r": roi}).reshape(-1), [6, 7, 10, 11])
    close(one("cropResize", setup([1, 1]), {"x": x, "r": roi}).reshape(-1), [8.5])
    close(one("cropResize", setup([4, 4]), {"x": x, "r": roi})[0, 0, 0, 1],
          [7.333333, 7.666666, 8, 8.333333])
    roi_n = np.array([0, 0, 0, 1 / 3, 1 / 3], np.float32).reshape(1, 1, 5, 1, 1)
    close(one("cropResize", setup([2, 2], normalized=True), {"x": x, "r": roi_n}).reshape(-1), [1, 2, 5, 6])
    roi_inv = np.array([2, 2, 1, 1], np.float32).reshape(1, 1, 4, 1, 1)
    close(one("cropResize", setup([2, 2]), {"x": x, "r": roi_inv}).reshape(-1), [11, 10, 7, 6])
    from specsurgery.errors import UnsupportedError
    import pytest

    with pytest.raises(UnsupportedError, match="ROI_ALIGN"):
        one("cropResize", setup([2, 2], method=3), {"x": x, "r": roi})
