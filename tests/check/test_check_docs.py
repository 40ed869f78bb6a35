"""Every rule id the checker can emit is documented in docs/check.md and in the
rule table of specsurgery/check/rules.py (which `check --explain` prints), and
neither lists a rule the code does not have."""

from __future__ import annotations

import re
from pathlib import Path

from specsurgery.check.rules import RULES, markdown_table

REPO = Path(__file__).resolve().parents[2]
AREAS = ("version model feature array image dictionary sequence state interface multifunction "
         "metadata nn weights preprocessing classifier regressor pipeline linked package "
         "tree knn glm vectorizer scaler onehot vision audio text").split()
PATTERN = r"(?:%s)\.[a-z0-9-]+" % "|".join(AREAS)


def _code_rules() -> set:
    code = set()
    for path in (REPO / "specsurgery" / "check").glob("*.py"):
        if path.name in ("mlprogram.py", "rules.py"):
            continue
        code |= set(re.findall(r'"(%s)"' % PATTERN, path.read_text()))
    code.discard("pipeline.names")  # a path, not a rule
    return code


def test_rule_ids_documented():
    code = _code_rules()
    docs = set(re.findall(r"`(%s)`" % PATTERN, (REPO / "docs" / "check.md").read_text()))
    assert len(code) > 100
    assert code - docs == set()
    assert docs - code == set()


def test_rule_table_matches_the_code():
    table = {r for r in RULES if not r.startswith("mlprogram.")}
    assert _code_rules() == table
    for rule in RULES.values():
        assert rule.severity in ("error", "warning", "info")
        assert rule.what and rule.source
        assert rule.ours_only or rule.source.startswith("mlmodel/src/"), rule.id


def test_docs_carry_the_generated_table():
    docs = (REPO / "docs" / "check.md").read_text()
    assert markdown_table() in docs, "regenerate the table in docs/check.md from rules.markdown_table()"
