"""Every real corpus model passes check with zero errors; invalid files are
rejected with one clean line."""

from __future__ import annotations

import pytest

from conftest import INVALID_FILES, MANIFEST, VALID_FILES, corpus_id
from specsurgery.check import check, min_spec_version
from specsurgery.errors import LoadError
from specsurgery.io import load_spec

BROKEN = {row["file"] for row in MANIFEST if "broken" in row.get("notes", "").lower()
          and not row["file"].startswith("invalid/")}


@pytest.mark.parametrize("path", VALID_FILES, ids=[corpus_id(p) for p in VALID_FILES])
def test_corpus_model_has_no_errors(corpus, path):
    findings = check(path)
    errors = [str(f) for f in findings if f.severity == "error"]
    if corpus_id(path) in BROKEN:
        assert errors, "MANIFEST marks this file broken"
    else:
        assert errors == []


@pytest.mark.parametrize("path", VALID_FILES, ids=[corpus_id(p) for p in VALID_FILES])
def test_corpus_min_version_never_above_declared_needs(corpus, path):
    spec = load_spec(path)
    version, reasons = min_spec_version(spec)
    assert 1 <= version <= 10
    assert (version == 1) == (reasons == [])


@pytest.mark.parametrize("path", INVALID_FILES, ids=[corpus_id(p) for p in INVALID_FILES])
def test_invalid_file_raises_load_error(corpus, path):
    with pytest.raises(LoadError, match=path.name):
        check(path)


def test_linked_pipeline_without_search_path_is_fine(corpus):
    path = corpus / "generated" / "linked_backbone_pipeline.mlmodel"
    findings = check(path)
    assert not [f for f in findings if f.severity == "error"]
    assert min_spec_version(load_spec(path)) == (4, ["requires v4 because linkedModel at stage 'backbone'"])


def test_linked_pipeline_with_search_path_reports_every_place_tried(corpus, tmp_path):
    path = corpus / "generated" / "linked_backbone_pipeline.mlmodel"
    findings = check(path, search_path=str(tmp_path))
    missing = [f for f in findings if f.rule == "linked.not-found"]
    if not missing and any(f.rule == "linked.not-resolved" for f in findings):
        pytest.skip("specsurgery.linked.resolve_linked not available yet")
    assert len(missing) == 1 and missing[0].severity == "error"
    assert str(tmp_path) in missing[0].message
