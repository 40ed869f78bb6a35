"""MIL blob storage v2: reading the corpus packages, writing, repacking, bad files."""

import shutil

import numpy as np
import pytest

from conftest import CORPUS
from specsurgery import io
from specsurgery.mil import blobs as B
from specsurgery.mil import program as P

PACKAGES = ["shared_backbone_classifier", "shared_backbone_classifier_palettized", "shared_backbone_segmenter"]


def _pkg(name):
    return io.load(CORPUS / "generated" / f"{name}.mlpackage")


@pytest.mark.corpus
@pytest.mark.parametrize("name", PACKAGES)
def test_records_walk_and_match_coremltools_reader(name):
    from coremltools.libmilstoragepython import _BlobStorageReader

    pkg = _pkg(name)
    wf = pkg.weights["weights/weight.bin"]
    count, version = B.read_header(wf)
    records = list(B.iter_records(wf))
    assert version == 2 and len(records) == count > 0
    assert all(r.offset % 64 == 0 and r.data_offset == r.offset + 64 for r in records)
    reader = _BlobStorageReader(str(wf.path))
    refs = list(P.blob_refs(pkg.spec))
    assert refs
    for _, op, key, value in refs:
        mine = P.value_to_numpy(value, pkg).reshape(-1)
        dt = P.tensor_dtype(value.type)
        off = value.blobFileValue.offset
        theirs = {10: lambda: reader.read_fp16_data(off).view(np.float16),
                  11: lambda: reader.read_float_data(off),
                  31: lambda: reader.read_uint8_data(off)}[dt]()
        np.testing.assert_array_equal(mine, theirs.reshape(-1))


@pytest.mark.corpus
@pytest.mark.parametrize("name", PACKAGES)
def test_repack_reproduces_coremltools_file_byte_for_byte(name):
    pkg = _pkg(name)
    out = B.repack(pkg)
    assert bytes(out.weights["weights/weight.bin"].data) == bytes(pkg.weights["weights/weight.bin"].data)


def test_writer_dedupes_by_content_and_coremltools_reads_it(tmp_path):
    from coremltools.libmilstoragepython import _BlobStorageReader

    w = B.BlobWriter()
    a = np.arange(10, dtype=np.float32)
    o1 = w.add_array(a)
    o2 = w.add_array(a.copy())
    o3 = w.add_array(a.astype(np.float16))
    o4 = w.add_array(np.array([1, 0, 3, 2, 1], dtype=np.uint8), mil_dtype=P.MIL_pb2.UINT2)
    assert o1 == o2 == 64 and o3 != o1 and w.count == 3
    assert w.bytes_added == 40 + 40 + 20 + 2 and w.bytes_stored == 40 + 20 + 2
    (tmp_path / "w.bin").write_bytes(w.to_bytes())
    r = _BlobStorageReader(str(tmp_path / "w.bin"))
    np.testing.assert_array_equal(r.read_float_data(o1), a)
    np.testing.assert_array_equal(r.read_fp16_data(o3).view(np.float16), a.astype(np.float16))
    np.testing.assert_array_equal(r.read_uint2_data(o4), [1, 0, 3, 2, 1])
    rec = B.read_record(w.to_bytes(), o4)
    assert rec.dtype_name == "uint2" and rec.padding_bits == 6 and rec.count == 5
    assert len(w.to_bytes()) % 64 == 0 and B.read_header(w.to_bytes()) == (3, 2)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6])
def test_subbyte_pack_unpack_round_trip(bits):
    vals = np.random.RandomState(bits).randint(0, 2 ** bits, size=37)
    raw, pad = B.pack_subbyte(vals, bits)
    assert pad == len(raw) * 8 - 37 * bits
    np.testing.assert_array_equal(B.unpack_subbyte(np.frombuffer(raw, np.uint8), bits, 37), vals)
    signed = vals - 2 ** (bits - 1)
    raw, _ = B.pack_subbyte(signed, bits)
    np.testing.assert_array_equal(B.unpack_subbyte(np.frombuffer(raw, np.uint8), bits, 37, signed=True), signed)


@pytest.mark.corpus
def test_rewrite_blobs_merges_two_packages_without_copying_twice():
    a, b = _pkg("shared_backbone_classifier"), _pkg("shared_backbone_segmenter")
    writer = B.BlobWriter()
    sa, sb = io.copy_spec(a.spec), io.copy_spec(b.spec)
    B.rewrite_blobs(sa, a, writer)
    B.rewrite_blobs(sb, b, writer)
    # the shared backbone's blobs are stored once
    assert writer.bytes_stored < writer.bytes_added
    merged = io.MLPackage(sa, {"weights/weight.bin": writer.to_weight_file()})
    for (_, _, _, v1), (_, _, _, v0) in zip(P.blob_refs(sa), P.blob_refs(a.spec)):
        np.testing.assert_array_equal(P.value_to_numpy(v1, merged), P.value_to_numpy(v0, a))


@pytest.mark.corpus
def test_truncated_and_missing_weight_files_name_file_offset_size(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    dst = tmp_path / "t.mlpackage"
    shutil.copytree(src, dst)
    wfile = dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = wfile.read_bytes()
    wfile.write_bytes(data[:1000])
    pkg = io.load(dst)
    last = max(P.blob_refs(pkg.spec), key=lambda r: r[3].blobFileValue.offset)[3]
    with pytest.raises(B.BlobError, match=rf"weight.bin \(1000 bytes\) is too short .*offset {last.blobFileValue.offset}"):
        P.value_to_numpy(last, pkg)
    wfile.unlink()
    pkg = io.load(dst)
    with pytest.raises(B.BlobError, match="weight.bin is missing"):
        P.value_to_numpy(last, pkg)


@pytest.mark.corpus
def test_bad_offset_reports_sentinel():
    pkg = _pkg("shared_backbone_classifier")
    with pytest.raises(B.BlobError, match="sentinel .*expected 0xDEADBEEF"):
        B.read_record(pkg.weights["weights/weight.bin"], 128)
