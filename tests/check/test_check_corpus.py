"""Every real corpus model passes check with zero errors; invalid files are
rejected with one clean line."""

from __future__ import annotations

import pytest

from conftest import INVALID_FILES, MANIFEST, VALID_FILES, corpus_id
from specsurgery.check import check, min_spec_version
from specsurgery.errors import LoadError
from specsurgery.io import load_spec

pytestmark = pytest.mark.corpus

BROKEN = {row["file"] for row in MANIFEST if "broken" in row.get("notes", "").lower()
          and not row["file"].startswith("invalid/")}

#: Corpus files that break a rule of Core ML's own validator (apple/coremltools
#: mlmodel/src at e0e2f42b), with the rules that catch them.  Reported to the
#: lead to be marked broken in MANIFEST.tsv; until then they are pinned here so
#: that any *other* error on them, or any error on the rest, still fails.
KNOWN_INVALID = {
    # PipelineValidator compares stage inputs with isEquivalent, whose array
    # comparison starts with the dataType: the linked stub outputs FLOAT32
    # 'features', the head stage declares DOUBLE 'features' -> TYPE_MISMATCH.
    "generated/linked_backbone_pipeline.mlmodel": {"pipeline.type-mismatch"},
    # Model::validateGeneric: "Model specification version for an updatable model
    # must be '4' or above" (declares v1); the updatable-NN validator then wants
    # a loss layer and training inputs, which the file lacks.
    "real/newcoreml.mlmodel": {"version.below-minimum", "nn.update-loss", "nn.training-input"},
}


@pytest.mark.parametrize("path", VALID_FILES, ids=[corpus_id(p) for p in VALID_FILES])
def test_corpus_model_has_no_errors(corpus, path):
    findings = check(path)
    errors = [str(f) for f in findings if f.severity == "error"]
    cid = corpus_id(path)
    if cid in KNOWN_INVALID:
        assert {f.rule for f in findings if f.severity == "error"} == KNOWN_INVALID[cid]
    elif cid in BROKEN:
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


def test_linked_pipeline_without_search_path_needs_no_target(corpus):
    path = corpus / "generated" / "linked_backbone_pipeline.mlmodel"
    findings = check(path)
    # no error: the target need not be there; a warning says its interface was not compared
    linked = [f for f in findings if f.rule.startswith("linked.")]
    assert [(f.rule, f.severity) for f in linked] == [("linked.target-not-checked", "warning")]
    assert min_spec_version(load_spec(path)) == (4, ["requires v4 because linkedModel at stage 'backbone'"])


def test_linked_pipeline_with_search_path_reports_every_place_tried(corpus, tmp_path):
    path = corpus / "generated" / "linked_backbone_pipeline.mlmodel"
    findings = check(path, search_path=str(tmp_path))
    missing = [f for f in findings if f.rule == "linked.not-found"]
    assert len(missing) == 1 and missing[0].severity == "error"
    assert str(tmp_path) in missing[0].message
