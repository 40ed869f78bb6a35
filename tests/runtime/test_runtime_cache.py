"""predict(path) keeps the prepared model of an unchanged file: no re-parse, no re-decode."""

from __future__ import annotations

import numpy as np
import pytest

import nnbuild
from specsurgery import io
from specsurgery.runtime import clear_cache, engine, predict


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def parses(monkeypatch):
    calls = []
    real = io._parse

    def counting(data, where):
        calls.append(where)
        return real(data, where)

    monkeypatch.setattr(io, "_parse", counting)
    return calls


def _x():
    return {"x": np.array([1.0, -2.0, 3.0, 0.5], np.float32)}


def _bias_of(spec, value):
    spec.neuralNetwork.layers[0].innerProduct.bias.floatValue[0] = value
    return spec


def test_second_predict_on_same_path_reuses_parse_net_and_weights(tmp_path, parses):
    path = tmp_path / "m.mlmodel"
    io.save(nnbuild.tiny_nn(), path)
    first = predict(str(path), _x())
    net = next(iter(engine._CACHE.values()))[3]
    decoded = dict(net.wcache)
    assert decoded, "the first run decodes the weights"
    second = predict(path, _x())                      # a Path, same file
    assert len(parses) == 1
    np.testing.assert_array_equal(first["y"], second["y"])
    assert len(engine._CACHE) == 1 and next(iter(engine._CACHE.values()))[3] is net
    assert all(net.wcache[k][1] is v[1] for k, v in decoded.items())   # same decoded arrays
    predict(tmp_path / "." / "m.mlmodel", _x())       # another spelling of the same path
    assert len(parses) == 1


def test_edited_file_is_read_again(tmp_path, parses):
    path = tmp_path / "m.mlmodel"
    io.save(nnbuild.tiny_nn(), path)
    before = predict(path, _x())["y"]
    io.save(_bias_of(nnbuild.tiny_nn(), 100.0), path)   # same size, new contents
    after = predict(path, _x())["y"]
    assert len(parses) == 2
    assert after[0] != before[0]
    assert len(engine._SOURCES) == 1                   # the old version was dropped
    assert len(engine._CACHE) == 1                     # with its compiled network


def test_edit_in_place_same_size_is_noticed(tmp_path, parses):
    import os

    path = tmp_path / "m.mlmodel"
    io.save(nnbuild.tiny_nn(), path)
    before = predict(path, _x())["y"]
    data = io.serialize(_bias_of(nnbuild.tiny_nn(), 100.0))
    assert len(data) == path.stat().st_size
    st = path.stat()
    with open(path, "r+b") as fh:                      # same inode, same size
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = predict(path, _x())["y"]
    assert len(parses) == 2 and after[0] != before[0]


def test_cache_is_bounded_and_cleared(tmp_path, parses):
    paths = []
    for i in range(engine._SOURCES_SIZE + 2):
        p = tmp_path / f"m{i}.mlmodel"
        io.save(nnbuild.tiny_nn(seed=i), p)
        paths.append(p)
        predict(p, _x())
    assert len(engine._SOURCES) == engine._SOURCES_SIZE
    assert len(engine._CACHE) == engine._SOURCES_SIZE   # evicted models release their nets
    predict(paths[-1], _x())
    assert len(parses) == len(paths)
    clear_cache()
    assert not engine._SOURCES and not engine._CACHE
    predict(paths[-1], _x())
    assert len(parses) == len(paths) + 1


def test_missing_file_still_reports_not_found(tmp_path):
    from specsurgery.errors import SpecSurgeryError

    with pytest.raises(SpecSurgeryError, match="no such file"):
        predict(tmp_path / "absent.mlmodel", _x())


def test_shape_inference_does_not_keep_its_model_alive():
    import sys

    from specsurgery.runtime import infer_shapes

    spec = nnbuild.tiny_nn()
    before = sys.getrefcount(spec)
    assert infer_shapes(spec)["y"] == (1, 1, 3, 1, 1)   # rank 5, as the legacy network holds it
    assert not engine._CACHE                           # a probe model is not cached
    assert sys.getrefcount(spec) == before
    predict(spec, _x())                                # a run does cache its net
    net = engine.compiled(spec)
    assert engine.compiled(spec, keep=False) is net   # and shape inference reuses it
    assert net.root is net


def test_a_dropped_net_needs_no_cycle_collection():
    import gc
    import weakref

    net = engine.compiled(nnbuild.tiny_nn(), keep=False)
    net.run({"x": np.zeros((1, 1, 4, 1, 1), np.float32)}, shape_only=True)
    assert net.root is net
    ref = weakref.ref(net)
    gc.disable()
    try:
        del net
        assert ref() is None          # freed by reference counting, not left to the collector
    finally:
        gc.enable()
