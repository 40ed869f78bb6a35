"""Every rule id the checker can emit is documented in docs/check.md, and the
table lists no rule the code does not have."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AREAS = ("version model feature array image dictionary sequence state interface multifunction "
         "metadata nn weights preprocessing classifier regressor pipeline linked package").split()
PATTERN = r"(?:%s)\.[a-z0-9-]+" % "|".join(AREAS)


def test_rule_ids_documented():
    code = set()
    for path in (REPO / "specsurgery" / "check").glob("*.py"):
        if path.name == "mlprogram.py":
            continue
        code |= set(re.findall(r'"(%s)"' % PATTERN, path.read_text()))
    code.discard("pipeline.names")  # a path, not a rule
    docs = set(re.findall(r"`(%s)`" % PATTERN, (REPO / "docs" / "check.md").read_text()))
    assert len(code) > 100
    assert code - docs == set()
    assert docs - code == set()
