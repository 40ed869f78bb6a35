"""summarize: the stage tree of a pipeline whose stage names are hostile strings."""

from __future__ import annotations

import pytest

import nnbuild as nb
from specsurgery.cli import main
from specsurgery.summary import summarize


@pytest.mark.parametrize("names", [["../../etc/passwd", "a/b"], ["same", "same"], ["", "/"]])
def test_stage_names_with_slashes_or_repeats_keep_the_tree(names, tmp_path, capsys):
    spec = nb.tiny_pipeline()
    spec.pipeline.names[:] = names
    tree = summarize(spec)["tree"]
    assert [n["name"] for n in tree["stages"]] == names
    path = tmp_path / "p.mlmodel"
    path.write_bytes(spec.SerializeToString())
    for verb in (["inspect"], ["inspect", "--json"], ["tree"], ["tree", "--json"]):
        assert main([*verb, str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
