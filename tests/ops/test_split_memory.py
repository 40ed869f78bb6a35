"""split_model from a path keeps only the original's interface once the halves exist
and drops each model once written; the files are those of the spec-based split."""

from __future__ import annotations

import sys

import nnbuild
from specsurgery import io
from specsurgery.ops import split as split_mod
from specsurgery.ops.split import split_at, split_model, split_pipeline


def _two_layer(tmp_path):
    spec = nnbuild.tiny_nn(n_in=4, n_hidden=3)
    nnbuild.add_inner_product(spec.neuralNetwork, "fc2", "y", "z", 3, 2, seed=5)
    spec.description.output[0].name = "z"
    spec.description.output[0].type.multiArrayType.shape[:] = [2]
    spec.description.metadata.shortDescription = "two layers"
    path = tmp_path / "m.mlmodel"
    io.save(spec, path)
    return spec, path


def test_path_split_writes_the_same_files_and_frees_the_original(tmp_path, monkeypatch):
    spec, path = _two_layer(tmp_path)
    refs = []
    real_load = split_mod.load

    def tracking_load(m):
        out = real_load(m)
        if m is path:
            refs.append(out)
        return out

    monkeypatch.setattr(split_mod, "load", tracking_load)
    alive_at_pipeline = []
    real_pipeline = split_mod.split_pipeline

    def tracking_pipeline(original, backbone, head, **kw):
        # held by the test's list (and getrefcount's argument) only: split_model let go of it
        alive_at_pipeline.append(sys.getrefcount(refs[0]) > 2)
        assert not len(original.neuralNetwork.layers)     # the interface only
        return real_pipeline(original, backbone, head, **kw)

    monkeypatch.setattr(split_mod, "split_pipeline", tracking_pipeline)
    paths = split_model(path, "y", tmp_path / "out", name="M")
    assert alive_at_pipeline == [False]
    b, h = split_at(spec, "y")
    p = split_pipeline(spec, b, h)
    assert paths["backbone"].read_bytes() == io.serialize(b)
    assert paths["head"].read_bytes() == io.serialize(h)
    assert paths["pipeline"].read_bytes() == io.serialize(p)
    assert io.load(paths["pipeline"]).description.metadata.shortDescription == "two layers"


def test_spec_split_leaves_the_given_spec_alone(tmp_path):
    spec, _ = _two_layer(tmp_path)
    before = io.serialize(spec)
    split_model(spec, "y", tmp_path / "out", name="M")
    assert io.serialize(spec) == before
