"""Blobs read from a weight file on disk are read-only views of its memory map (no
second copy of the weights); blobs of in-memory data are copies, so nothing aliases it."""

from __future__ import annotations

import numpy as np
import pytest

from specsurgery import io
from specsurgery.mil import blobs as B
from specsurgery.mil import program as P


def _file(tmp_path):
    w = B.BlobWriter()
    a = np.arange(12, dtype=np.float32) - 3.5
    h = (np.arange(7, dtype=np.float16) / 4)
    u = np.array([3, 1, 0, 2, 3], np.uint8)
    offs = (w.add_array(a), w.add_array(h), w.add_array(u, mil_dtype=P.MIL_pb2.UINT2))
    path = tmp_path / "weight.bin"
    path.write_bytes(w.to_bytes())
    return path, offs, (a, h, u)


def test_file_blobs_are_read_only_views_with_the_same_values(tmp_path):
    path, offs, arrays = _file(tmp_path)
    wf = io.WeightFile(path)
    for off, want in zip(offs[:2], arrays[:2]):
        got = B.read_blob(wf, off)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and np.shares_memory(got, wf.data)
        with pytest.raises(ValueError):
            got[0] = 1
    np.testing.assert_array_equal(B.read_blob(wf, offs[2]), arrays[2])   # sub-byte: unpacked


def test_in_memory_blobs_are_copies(tmp_path):
    path, offs, arrays = _file(tmp_path)
    wf = io.WeightFile(data=path.read_bytes())
    got = B.read_blob(wf, offs[0])
    np.testing.assert_array_equal(got, arrays[0])
    assert not np.shares_memory(got, wf.data)
