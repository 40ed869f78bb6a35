"""The numpy ML Program runtime against torch (H3's zoo and the op mix in
mil_models), the compressed weight forms, and bad input."""

import collections
import shutil

import numpy as np
import pytest

import mil_models as M
import zoo
from conftest import CORPUS
from specsurgery import io
from specsurgery.check import check
from specsurgery.errors import UnsupportedError
from specsurgery.mil import program as P
from specsurgery.runtime import predict
from specsurgery.runtime.mil import predict_program

RTOL = {"fp32": 1e-4, "fp16": 1e-2}


def _close(out, ref, rtol):
    """rtol relative to the output's range (fp16 rounding is relative to magnitude)."""
    if isinstance(ref, dict):
        assert set(out) == set(ref)
        for k in ref:
            assert abs(out[k] - ref[k]) <= rtol * max(1.0, abs(ref[k])) + 1e-6, k
        return
    if isinstance(ref, str):
        assert out == ref
        return
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * float(np.abs(ref).max()))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(zoo.ARCHS))
def test_zoo_matches_torch(name, precision):
    path = M.zoo_converted(name, precision)
    out = predict(path, zoo.coreml_inputs(name, seed=1))
    ref = zoo.torch_outputs(name, seed=1)
    for k, v in ref.items():
        if isinstance(v, str) and precision == "fp16":
            continue  # fp16 may flip a near tie; probabilities are compared below
        _close(out[k], v, RTOL[precision])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", M.NAMES)
def test_op_mix_matches_torch(name, precision):
    pkg = io.load(M.converted(name, precision))
    x = M.example_inputs(name, seed=2)
    out = predict_program(pkg.spec, pkg, x)["out"]
    assert out.dtype == (np.float32 if precision == "fp32" else np.float16)
    _close(out, M.torch_forward(name, x), RTOL[precision])


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["shared_backbone_classifier", "shared_backbone_classifier_palettized",
                                  "shared_backbone_segmenter"])
def test_corpus_packages_run(name):
    img = np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    out = predict(CORPUS / "generated" / f"{name}.mlpackage", {"image": img})
    if "classifier" in name:
        assert out["classLabel"] in out["classLabel_probs"]
        assert abs(sum(out["classLabel_probs"].values()) - 1) < 1e-2
    else:
        assert out["segmentation"].shape == (1, 5, 64, 64) and np.isfinite(out["segmentation"]).all()


@pytest.mark.corpus
def test_palettized_corpus_model_is_close_to_its_float_original():
    img = np.random.RandomState(3).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    a = predict(CORPUS / "generated" / "shared_backbone_classifier.mlpackage", {"image": img})
    b = predict(CORPUS / "generated" / "shared_backbone_classifier_palettized.mlpackage", {"image": img})
    for k in a["classLabel_probs"]:
        assert abs(a["classLabel_probs"][k] - b["classLabel_probs"][k]) < 0.02


def _compress_cases():
    cases = [("iOS16", "palettize", dict(mode="uniform", nbits=4)),
             ("iOS16", "linear", dict(mode="linear")),
             ("iOS16", "prune", dict(target_sparsity=0.5)),
             ("iOS18", "palettize", dict(mode="uniform", nbits=4)),
             ("iOS18", "palettize", dict(mode="uniform", nbits=2, granularity="per_grouped_channel", group_size=4)),
             ("iOS18", "linear", dict(mode="linear")),
             ("iOS18", "linear", dict(mode="linear", dtype="int4", granularity="per_block", block_size=4)),
             ("iOS18", "prune", dict(target_sparsity=0.5))]
    return [pytest.param(*c, id=f"{c[0]}-{c[1]}-{i}") for i, c in enumerate(cases)]


@pytest.mark.parametrize("deployment,kind,params", _compress_cases())
def test_compressed_weight_forms_decode_exactly(tmp_path, monkeypatch, deployment, kind, params):
    """A ct.optimize-compressed model runs like its ct-decompressed twin."""
    import tempfile

    from specsurgery._proto import coremltools

    src = M.converted("resnet", "fp32", deployment)
    (tmp_path / "ct").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "ct"))  # ct's temp packages stay ours

    ct = coremltools()
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(src), skip_model_load=True)
    fn, cfg = {"palettize": (cto.palettize_weights, cto.OpPalettizerConfig),
               "linear": (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig),
               "prune": (cto.prune_weights, cto.OpMagnitudePrunerConfig)}[kind]
    compressed = fn(model, cto.OptimizationConfig(global_config=cfg(weight_threshold=0, **params)))
    compressed.save(str(tmp_path / "c.mlpackage"))
    reloaded = ct.models.MLModel(str(tmp_path / "c.mlpackage"), skip_model_load=True)
    cto.decompress_weights(reloaded).save(str(tmp_path / "d.mlpackage"))
    c, d = io.load(tmp_path / "c.mlpackage"), io.load(tmp_path / "d.mlpackage")
    ops = collections.Counter(o.type for o in P.main_block(P.get_function(c.spec)[1]).operations)
    assert any(t.startswith("constexpr_") for t in ops), ops
    x = M.example_inputs("resnet", seed=4)
    a = predict_program(c.spec, c, x)["out"]
    b = predict_program(d.spec, d, x)["out"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_op_is_named_with_its_count(tmp_path):
    pkg = io.load(M.converted("resnet", "fp32"))
    spec = io.copy_spec(pkg.spec)
    block = P.main_block(P.get_function(spec)[1])
    relus = [op for op in block.operations if op.type == "relu"]
    for op in relus:
        op.type = "frobnicate"
    with pytest.raises(UnsupportedError, match=rf"'frobnicate' \(x{len(relus)}\)"):
        predict_program(spec, pkg, M.example_inputs("resnet"))


def test_missing_input_and_missing_weights(tmp_path):
    dst = tmp_path / "m.mlpackage"
    shutil.copytree(M.converted("resnet", "fp32"), dst)
    pkg = io.load(dst)
    with pytest.raises(Exception, match="missing input 'x'"):
        predict_program(pkg.spec, pkg, {})
    (dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    pkg = io.load(dst)
    with pytest.raises(Exception, match="weight.bin is missing"):
        predict_program(pkg.spec, pkg, M.example_inputs("resnet"))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ios18_fused_attention(precision):
    path = M.converted("attention", precision, "iOS18")
    pkg = io.load(path)
    ops = {o.type for o in P.main_block(P.get_function(pkg.spec)[1]).operations}
    assert "scaled_dot_product_attention" in ops
    x = M.example_inputs("attention", seed=5)
    _close(predict_program(pkg.spec, pkg, x)["out"], M.torch_forward("attention", x), RTOL[precision])


def test_stateful_model_reads_and_writes_its_state():
    import torch

    path, module = M.stateful_converted()
    pkg = io.load(path)
    assert [f for f in check(pkg) if f.severity == "error"] == []
    x = np.random.RandomState(6).randn(1, 4).astype(np.float32)
    start = np.full((1, 4), 0.5, np.float32)
    out = predict_program(pkg.spec, pkg, {"x": x, "acc": start})["y"]
    with torch.no_grad():
        expected = 2 * (torch.from_numpy(start) + module.fc(torch.from_numpy(x))).numpy()
    _close(out, expected, RTOL["fp16"])
    zero = predict_program(pkg.spec, pkg, {"x": x})["y"]   # a state left out starts at zeros
    _close(zero, expected - 2 * start, RTOL["fp16"])
