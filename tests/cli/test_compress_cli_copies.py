"""compress (CLI) edits the model it loaded in place (no second copy of the weights in
memory) and writes the same bytes as the library's copying compress."""

from __future__ import annotations

import pytest

import nnbuild
from specsurgery import io
from specsurgery.cli import main
from specsurgery.ops.compress import compress


@pytest.mark.parametrize("flags, kw", [(["--fp16"], dict(mode="fp16")),
                                       (["--palettize", "2"], dict(mode="palettize", nbits=2)),
                                       (["--linear", "8"], dict(mode="linear", nbits=8))])
def test_cli_output_equals_library_copying_compress(tmp_path, flags, kw, monkeypatch):
    spec = nnbuild.tiny_conv(c_in=16, c_out=16)
    src = tmp_path / "m.mlmodel"
    io.save(spec, src)
    seen = []
    import specsurgery.ops.compress as comp

    real = comp.compress
    monkeypatch.setattr(comp, "compress", lambda *a, **k: seen.append(k.get("inplace")) or real(*a, **k))
    out = tmp_path / "c.mlmodel"
    assert main(["compress", str(src), *flags, "--min-weights", "1", "-o", str(out), "--quiet"]) == 0
    assert seen == [True]
    want = compress(io.load(src), min_weights=1, **kw)
    assert out.read_bytes() == io.serialize(want)
    # --verify still compares against the untouched original
    seen.clear()
    assert main(["compress", str(src), *flags, "--min-weights", "1", "-o", str(out), "--quiet",
                 "--verify"]) == 0
    assert seen == [False]
    assert out.read_bytes() == io.serialize(want)
