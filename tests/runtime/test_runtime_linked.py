"""Pipelines and linked stubs: features by name, search paths, bundles."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import nnbuild
from conftest import CORPUS
from specsurgery import io
from specsurgery.errors import NotFoundError, UnsupportedError
from specsurgery.linked import candidate_names, require_linked, resolve_linked, search_dirs
from specsurgery.runtime import predict, verify


def _x(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(4).astype(np.float32)}


def _manual(x):
    """tiny_nn then tiny_head by hand (weights from nnbuild's seeded values)."""
    nn, head = nnbuild.tiny_nn(), nnbuild.tiny_head()
    ip = nn.neuralNetwork.layers[0].innerProduct
    w = np.asarray(ip.weights.floatValue, np.float32).reshape(3, 4)
    h = np.maximum(w @ x + np.asarray(ip.bias.floatValue, np.float32), 0)
    hp = head.neuralNetwork.layers[0].innerProduct
    w2 = np.asarray(hp.weights.floatValue, np.float32).reshape(2, 3)
    return w2 @ h + np.asarray(hp.bias.floatValue, np.float32)


def test_pipeline_passes_features_by_name():
    x = _x()
    out = predict(nnbuild.tiny_pipeline(), x)
    np.testing.assert_allclose(out["z"], _manual(x["x"]), rtol=1e-5, atol=1e-6)


def test_nested_pipeline():
    inner = nnbuild.tiny_pipeline()
    outer = nnbuild.tiny_pipeline(stages=[inner], names=("inner",))
    x = _x(1)
    np.testing.assert_allclose(predict(outer, x)["z"], _manual(x["x"]), rtol=1e-5, atol=1e-6)


def _linked_pipeline(search_path=".:$BUNDLE_MAIN", file_name="Backbone.mlmodelc"):
    stub = nnbuild.tiny_linked(file_name=file_name, search_path=search_path)
    return nnbuild.tiny_pipeline(stages=[stub, nnbuild.tiny_head()])


def test_linked_stub_resolves_to_source_beside_the_file(tmp_path):
    io.save(nnbuild.tiny_nn(), tmp_path / "Backbone.mlmodel", check=False)
    io.save(_linked_pipeline(), tmp_path / "App.mlmodel", check=False)
    x = _x(2)
    out = predict(tmp_path / "App.mlmodel", x)
    np.testing.assert_allclose(out["z"], _manual(x["x"]), rtol=1e-5, atol=1e-6)
    # same result as the inlined pipeline
    assert verify(nnbuild.tiny_pipeline(), tmp_path / "App.mlmodel").ok


def test_linked_stub_in_memory_uses_base_dir_and_bundle(tmp_path):
    (tmp_path / "bundle").mkdir()
    io.save(nnbuild.tiny_nn(), tmp_path / "bundle" / "Backbone.mlmodel", check=False)
    spec = _linked_pipeline(search_path="$BUNDLE_MAIN")
    with pytest.raises(NotFoundError):
        predict(spec, _x(), base_dir=tmp_path)
    out = predict(spec, _x(), bundle=tmp_path / "bundle")
    assert out["z"].shape == (2,)


def test_bundle_identifier_mapping(tmp_path):
    io.save(nnbuild.tiny_nn(), tmp_path / "Backbone.mlmodel", check=False)
    spec = _linked_pipeline(search_path="$BUNDLE_IDENTIFIER(com.example.models)")
    with pytest.raises(NotFoundError, match=r"no folder for this bundle identifier"):
        predict(spec, _x(), base_dir=tmp_path / "elsewhere")
    out = predict(spec, _x(), bundle_ids={"com.example.models": tmp_path})
    assert "z" in out


def test_search_path_override_and_error_lists_every_place(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec = _linked_pipeline(search_path="a:b")
    with pytest.raises(NotFoundError) as err:
        predict(spec, _x(), base_dir=tmp_path)
    msg = str(err.value)
    for where in ("a/Backbone.mlmodelc", "a/Backbone.mlmodel", "a/Backbone.mlpackage",
                  "b/Backbone.mlmodelc", "b/Backbone.mlmodel", "b/Backbone.mlpackage"):
        assert where in msg
    io.save(nnbuild.tiny_nn(), tmp_path / "b" / "Backbone.mlmodel", check=False)
    assert "z" in predict(spec, _x(), base_dir=tmp_path)
    other = tmp_path / "c"
    other.mkdir()
    shutil.move(str(tmp_path / "b" / "Backbone.mlmodel"), other / "Backbone.mlmodel")
    assert "z" in predict(spec, _x(), base_dir=tmp_path, search_path=str(other))


def test_resolve_linked_api(tmp_path):
    stub = nnbuild.tiny_linked(search_path=".:sub:$BUNDLE_MAIN")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Backbone.mlpackage").mkdir()
    path, tried = resolve_linked(stub, base_dir=tmp_path)
    assert path == tmp_path / "sub" / "Backbone.mlpackage"
    assert tried[:3] == [str(tmp_path / n) for n in ("Backbone.mlmodelc", "Backbone.mlmodel",
                                                     "Backbone.mlpackage")]
    # a compiled folder cannot be read: it is tried, then the sources
    (tmp_path / "Backbone.mlmodelc").mkdir()
    path, tried = resolve_linked(stub, base_dir=tmp_path)
    assert path == tmp_path / "sub" / "Backbone.mlpackage"
    assert "cannot be read offline" in tried[0]
    assert candidate_names("X.mlmodelc") == ["X.mlmodelc", "X.mlmodel", "X.mlpackage"]
    assert search_dirs("", base_dir=tmp_path) == [(".", tmp_path / ".")]
    with pytest.raises(NotFoundError, match="tried"):
        require_linked(nnbuild.tiny_linked(search_path="nowhere"), base_dir=tmp_path)


@pytest.mark.corpus
def test_corpus_linked_pipeline_runs_with_a_backbone(tmp_path):
    """The corpus pipeline's stub (image -> features[64,16,16]) resolves to a
    backbone cut from the shared-backbone classifier."""
    src = CORPUS / "generated" / "linked_backbone_pipeline.mlmodel"
    full = CORPUS / "generated" / "shared_backbone_classifier.mlmodel"
    if not src.exists() or not full.exists():
        pytest.skip("corpus files missing")
    spec = io.load_spec(full)
    back = io.copy_spec(spec)
    nn = back.neuralNetwork
    nn.layers.extend(spec.neuralNetworkClassifier.layers)
    nn.preprocessing.extend(spec.neuralNetworkClassifier.preprocessing)
    nn.arrayInputShapeMapping = spec.neuralNetworkClassifier.arrayInputShapeMapping
    nn.imageInputShapeMapping = spec.neuralNetworkClassifier.imageInputShapeMapping
    cut = [i for i, l in enumerate(nn.layers) if l.output[0] == "input.45"][0]
    del nn.layers[cut + 1:]
    nn.layers[cut].output[0] = "features"
    pipe = io.load_spec(src)
    back.description.ClearField("output")
    back.description.output.extend(pipe.pipelineClassifier.pipeline.models[0].description.output)
    back.description.predictedFeatureName = ""
    back.description.predictedProbabilitiesName = ""
    io.save(back, tmp_path / "Backbone.mlmodel", check=False)
    shutil.copy(src, tmp_path / "App.mlmodel")
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = predict(tmp_path / "App.mlmodel", {"image": img})
    assert isinstance(out["classLabel"], str)
    assert abs(sum(out["classLabelProbs"].values()) - 1) < 1e-5


@pytest.mark.corpus
def test_other_model_types_are_refused():
    knn = CORPUS / "generated" / "knn_updatable.mlmodel"
    if not knn.exists():
        pytest.skip("corpus file missing")
    with pytest.raises(UnsupportedError, match="kNearestNeighborsClassifier"):
        predict(knn, {})
