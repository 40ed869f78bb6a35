"""Every neuralNetwork model of the corpus runs on random inputs; quantized
variants of the generated ResNet agree with the float32 one."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from conftest import CORPUS, REPO, VALID_FILES, corpus_id
from specsurgery import io, spec as sp
from specsurgery.errors import NotFoundError, UnsupportedError
from specsurgery.runtime import infer_shapes, predict, random_inputs, verify

pytestmark = pytest.mark.corpus


def _nn_files():
    out = []
    for path in VALID_FILES:
        try:
            s = io.load_spec(path)
        except Exception:
            continue
        if any(info.model.WhichOneof("Type") in sp.NN_TYPES for info in sp.iter_models(s)):
            out.append(path)
    return out


NN_FILES = _nn_files()

# What a corpus file needs beyond random inputs drawn from its description.
SPECIAL = {
    # a Keras sequence model: the legacy rank-5 input carries Seq = 4 words
    "real/TestGloVe_model.mlmodel": "sequence",
    # custom layers (an app-provided class) cannot run anywhere but in that app
    "real/FastStyleTransferVanGoghStarryNight.mlmodel": "custom",
    # the linked Backbone.mlmodelc is not shipped with the corpus
    "generated/linked_backbone_pipeline.mlmodel": "linked",
    # 3x1000x1000 -> 3x2000x2000 super-resolution: minutes and ~2.8 GB (SPECSURGERY_SLOW=1)
    "real/carn.mlmodel": "huge",
}


@pytest.mark.parametrize("path", NN_FILES, ids=corpus_id)
def test_corpus_nn_runs(path):
    cid = corpus_id(path)
    kind = SPECIAL.get(cid)
    if kind == "custom":
        with pytest.raises(UnsupportedError, match=r"'res_crop_0' \(custom, class 'ResCropBlockLambda'\)"):
            predict(path, random_inputs(path))
        return
    if kind == "linked":
        with pytest.raises(NotFoundError, match=r"Backbone\.mlmodelc.*tried: .*Backbone\.mlmodel"):
            predict(path, random_inputs(path))
        return
    if kind == "huge" and not os.environ.get("SPECSURGERY_SLOW"):
        shapes = infer_shapes(path)       # cheap: shape mode runs no convolution
        assert shapes["168"] == (1, 1, 3, 2000, 2000)
        return
    inputs = random_inputs(path, seed=3)
    if kind == "sequence":
        inputs = {"input1": np.array([3, 1, 4, 1], np.float32).reshape(4, 1, 1, 1, 1)}
    out = predict(path, inputs)
    s = io.load_spec(path)
    assert set(out) == {f.name for f in s.description.output}
    for name, value in out.items():
        if isinstance(value, np.ndarray):
            assert np.isfinite(value.astype(np.float64)).all(), name
        if isinstance(value, dict):
            assert abs(sum(value.values()) - 1) < 1e-4


def test_custom_layers_are_counted_in_docs():
    """docs/runtime.md lists the corpus's unsupported layer kinds with counts."""
    counts = Counter()
    for path in NN_FILES:
        for info in sp.iter_models(io.load_spec(path)):
            nn = sp.nn_of(info.model)
            if nn is None:
                continue
            from specsurgery.runtime.nn import OPS

            counts.update(l.WhichOneof("layer") for l in nn.layers if l.WhichOneof("layer") not in OPS)
    assert set(counts) <= {"custom"}
    text = (REPO / "docs" / "runtime.md").read_text()
    for kind, n in counts.items():
        assert f"`{kind}` | {n}" in text


RESNET = CORPUS / "generated" / "resnet_classifier_nn.mlmodel"


@pytest.mark.parametrize("variant,rtol", [("fp16", 2e-3), ("int8", 2e-2), ("lut4", 1e-1)])
def test_quantized_variants_agree_with_fp32(variant, rtol):
    """Also checks the MSB-first bit unpacking of weights.py: LUT-4 codes read in
    the wrong bit order would scramble every weight and these would not agree."""
    cand = RESNET.with_name(f"resnet_classifier_nn_{variant}.mlmodel")
    if not cand.exists():
        pytest.skip(f"{cand} not in the corpus")
    report = verify(RESNET, cand, samples=3, rtol=rtol, atol=rtol / 10)
    assert report.ok, report.summary()
    probs = report.outputs[0]
    assert probs.kind == "dict"
    assert probs.max_abs > 0          # quantization changes something


def test_lut4_with_wrong_bit_order_would_disagree():
    from specsurgery import weights

    spec = io.load_spec(RESNET.with_name("resnet_classifier_nn_lut4.mlmodel"))
    if spec is None:
        pytest.skip("no lut4 model")
    ref = io.load_spec(RESNET)
    # re-pack every LUT weight LSB-first: the model must then disagree with fp32
    for layer in spec.neuralNetworkClassifier.layers:
        for _, wp in weights.layer_weights(layer):
            if weights.storage_kind(wp).startswith("lut"):
                nbits = wp.quantization.numberOfBits
                n = len(wp.rawValue) * 8 // nbits
                codes = weights.unpack_bits(wp.rawValue, nbits, n)
                swapped = np.zeros_like(codes)
                for b in range(nbits):
                    swapped |= ((codes >> b) & 1) << (nbits - 1 - b)
                wp.rawValue = weights.pack_bits(swapped, nbits)
    report = verify(ref, spec, samples=2, rtol=1e-1, atol=1e-2)
    assert not report.ok


def test_ml_program_is_delegated_and_agrees_with_its_nn_twin():
    """The same torch model converted both ways computes the same segmentation."""
    nn_path = CORPUS / "generated" / "shared_backbone_segmenter.mlmodel"
    pkg = CORPUS / "generated" / "shared_backbone_segmenter.mlpackage"
    if not (nn_path.exists() and pkg.exists()):
        pytest.skip("corpus files missing")
    report = verify(nn_path, pkg, samples=1, rtol=1e-3, atol=1e-3)
    seg = report.output("segmentation")
    assert seg.ok, report.summary()
    # the NN output declares no shape, the ML Program [1,5,64,64]: an interface difference
    assert any("segmentation" in d for d in report.interface) and not report.ok
