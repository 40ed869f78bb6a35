"""Offline validator (placeholder until the full rule set lands)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CheckError


@dataclass
class Finding:
    severity: str
    path: str
    rule: str
    message: str


def check(model, search_path=None) -> list[Finding]:
    from ..io import load_spec

    spec = load_spec(model)
    out = []
    if spec.specificationVersion == 0:
        out.append(Finding("error", "", "version.missing", "specificationVersion is 0"))
    if spec.WhichOneof("Type") is None:
        out.append(Finding("error", "", "model.no-type", "no model type set"))
    return out


def assert_valid(model, search_path=None, where=None):
    errors = [f for f in check(model, search_path=search_path) if f.severity == "error"]
    if errors:
        raise CheckError(f"{where or 'model'}: " + "; ".join(f.message for f in errors), errors)
