"""The one error hierarchy of specsurgery.

Every error a user can cause is a :class:`SpecSurgeryError` (also a
``ValueError``).  Messages name the culprit, the allowed values and the fix;
when several names are missing, all of them are listed.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


class SpecSurgeryError(ValueError):
    """Base class of every error specsurgery raises on purpose."""


class LoadError(SpecSurgeryError):
    """A file or object could not be read as a Core ML model."""


class SaveError(SpecSurgeryError):
    """A model could not be written."""


class NotFoundError(SpecSurgeryError, KeyError):
    """A layer, blob, feature, stage or file that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedError(SpecSurgeryError):
    """A model kind, layer, op or storage specsurgery does not handle (yet)."""


class CheckError(SpecSurgeryError):
    """A model failed the offline validator; ``findings`` holds every error."""

    def __init__(self, message: str, findings: Sequence = ()):
        super().__init__(message)
        self.findings = list(findings)


class VerifyError(SpecSurgeryError):
    """Two models did not compute the same thing."""


def near_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates that look like ``name`` (for "did you mean" hints)."""
    pool = sorted(set(candidates))
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if len(found) < n:
        low = name.lower()
        found += [c for c in pool if low and low in c.lower() and c not in found][: n - len(found)]
    return found


def missing_message(kind: str, missing: Sequence[str], known: Iterable[str], where: str = "") -> str:
    """"unknown blob 'x' (did you mean 'y'?)" for every missing name."""
    known = sorted(known) if isinstance(known, (set, frozenset)) else list(known)
    parts = []
    for name in missing:
        hint = near_matches(name, known)
        part = repr(name)
        if hint:
            part += " (did you mean " + ", ".join(repr(h) for h in hint) + "?)"
        parts.append(part)
    plural = "s" if len(missing) != 1 else ""
    where = f" in {where}" if where else ""
    message = f"unknown {kind}{plural}{where}: " + "; ".join(parts)
    pool = [k for k in dict.fromkeys(known) if k]
    if pool and any(not near_matches(name, pool) for name in missing):
        # No hint for some name: show what is allowed instead (a sample when long).
        shown = ", ".join(repr(k) for k in pool[:_KNOWN_SHOWN])
        more = f" ... ({len(pool)} in all)" if len(pool) > _KNOWN_SHOWN else ""
        message += f"; known: {shown}{more}"
    elif not pool:
        message += f"; there is no {kind} to choose from"
    return message


#: how many known names ``missing_message`` lists when it has no near match
_KNOWN_SHOWN = 12
