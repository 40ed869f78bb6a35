"""Linked stubs: search paths that leave the bundle, targets that are no model."""

from __future__ import annotations

import pytest

from nnbuild import tiny_linked
from specsurgery.check import check


def _stub(search: str, name: str = "Backbone.mlmodelc"):
    return tiny_linked(file_name=name, search_path=search)


def _rules(findings, rule):
    return [f for f in findings if f.rule == rule]


@pytest.mark.parametrize("search", [".", ".:$BUNDLE_MAIN", "models", "a/../b", "$BUNDLE_IDENTIFIER(com.x)"])
def test_search_paths_inside_the_bundle_raise_no_warning(search):
    assert not _rules(check(_stub(search)), "linked.leaves-bundle")


@pytest.mark.parametrize("search, why", [("../../outside", "leads above"), (".:/opt/models", "absolute"),
                                         ("a/../../b", "leads above")])
def test_search_paths_leaving_the_bundle_warn(search, why):
    found = _rules(check(_stub(search)), "linked.leaves-bundle")
    assert len(found) == 1 and found[0].severity == "warning"
    assert why in found[0].message and "sandbox" in found[0].message


def test_a_target_that_is_not_a_model_is_an_error(tmp_path):
    (tmp_path / "Backbone.mlmodel").write_bytes(b"this is not a model")
    found = _rules(check(_stub("."), search_path=str(tmp_path)), "linked.target-not-a-model")
    assert len(found) == 1 and found[0].severity == "error"
    assert "Backbone.mlmodel" in found[0].message
