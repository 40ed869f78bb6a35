"""The oracle: every zoo architecture, converted with ct.convert to the
neuralNetwork backend, runs in the numpy runtime like torch's forward."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from specsurgery import io
from specsurgery.runtime import infer_shapes, predict
from specsurgery.runtime.engine import compiled, feed

RTOL, ATOL = 1e-4, 1e-5


def _assert_close(name, got, exp):
    if isinstance(exp, dict):
        assert set(got) == set(exp), name
        for k in exp:
            assert abs(got[k] - exp[k]) <= ATOL + RTOL * abs(exp[k]), (name, k, got[k], exp[k])
        return
    if isinstance(exp, str):
        assert got == exp, name
        return
    got = np.asarray(got).reshape(exp.shape)
    err = np.abs(got - exp)
    bad = err > ATOL + RTOL * np.abs(exp)
    assert not bad.any(), f"{name}: {int(bad.sum())} elements off, max abs err {err.max():.3g}"


@pytest.mark.parametrize("arch", list(zoo.ARCHS))
def test_zoo_matches_torch(arch):
    path = zoo.converted(arch)
    for seed in (0, 1):
        got = predict(path, zoo.coreml_inputs(arch, seed))
        exp = zoo.torch_outputs(arch, seed)
        assert set(exp) <= set(got)
        for name, value in exp.items():
            _assert_close(f"{arch}/{name}", got[name], value)


def test_flexible_input_runs_at_other_sizes():
    path = zoo.converted("flexible")
    for shape in [(1, 3, 16, 40), (1, 3, 64, 8)]:
        got = predict(path, zoo.coreml_inputs("flexible", 3, shape=shape))
        exp = zoo.torch_outputs("flexible", 3, shape=shape)
        assert got["y"].shape == exp["y"].shape
        _assert_close("flexible", got["y"], exp["y"])


@pytest.mark.parametrize("arch", list(zoo.ARCHS))
def test_infer_shapes_matches_a_real_run(arch):
    spec = io.load_spec(zoo.converted(arch))
    shapes = infer_shapes(spec)
    seen = {}
    blobs = feed(spec, spec.WhichOneof("Type") and getattr(spec, spec.WhichOneof("Type")),
                 zoo.coreml_inputs(arch))
    seen.update({k: v.shape for k, v in blobs.items()})
    compiled(spec).run(blobs, trace=lambda name, v: seen.__setitem__(name, np.shape(v)))
    seen = {k: tuple(v) for k, v in seen.items()}
    if zoo.ARCHS[arch].script:
        # shape mode feeds zeros, so a data-dependent branch may take the other arm:
        # the blobs both runs produce agree, and every output has a shape
        assert all(shapes[k] == seen[k] for k in set(shapes) & set(seen))
        assert all(o in shapes for o in zoo.ARCHS[arch].outputs)
    else:
        assert shapes == seen


def test_repeated_predict_reuses_the_compiled_network():
    path = zoo.converted("resnet")
    spec = io.load_spec(path)
    predict(spec, zoo.coreml_inputs("resnet"))
    net = compiled(spec)
    predict(spec, zoo.coreml_inputs("resnet"))
    assert compiled(spec) is net
    assert net.wcache, "decoded weights are cached"


def test_in_place_weight_edits_are_noticed():
    import nnbuild
    from specsurgery import weights

    spec = nnbuild.tiny_nn()
    x = {"x": np.ones(4, np.float32)}
    before = predict(spec, x)["y"].copy()
    wp = spec.neuralNetwork.layers[0].innerProduct.weights
    weights.set_float32(wp, np.asarray(wp.floatValue) * 2)
    bias = spec.neuralNetwork.layers[0].innerProduct.bias
    weights.set_float32(bias, np.asarray(bias.floatValue) * 2)
    after = predict(spec, x)["y"]
    np.testing.assert_allclose(after, before * 2, rtol=1e-6)


@pytest.mark.parametrize("arch", ["resnet", "image_classifier"])
def test_predict_delegates_ml_programs(arch):
    """predict hands an .mlpackage to specsurgery.runtime.mil; at float32 compute
    precision it matches torch like the NN backend does."""
    path = zoo.converted(arch, backend="mlprogram", precision="float32")
    got = predict(path, zoo.coreml_inputs(arch, 2))
    for name, value in zoo.torch_outputs(arch, 2).items():
        _assert_close(f"{arch}/mlprogram/{name}", got[name], value)
