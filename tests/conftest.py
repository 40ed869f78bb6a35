"""Shared fixtures.  ../shared is resolved from the repository root (CI keeps it
read-only beside the clone); tests only ever write to temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECSURGERY_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


def read_manifest() -> list[dict]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


MANIFEST = read_manifest()
CORPUS_FILES = [CORPUS / row["file"] for row in MANIFEST]
VALID_FILES = [p for p, row in zip(CORPUS_FILES, MANIFEST) if not row["file"].startswith("invalid/")]
INVALID_FILES = [p for p, row in zip(CORPUS_FILES, MANIFEST) if row["file"].startswith("invalid/")]


def corpus_id(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


HAVE_CORPUS = CORPUS.is_dir()
NO_CORPUS = (f"corpus not found at {CORPUS}; set SPECSURGERY_SHARED=/path/to/shared "
             "or place shared/ beside the repository")


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not HAVE_CORPUS:
        pytest.skip(NO_CORPUS)
    return CORPUS


def pytest_collection_modifyitems(config, items):
    """Without the corpus, every test marked ``corpus`` (or using the ``corpus``
    fixture) skips with one reason -- including parametrizations over an empty
    corpus list, which would otherwise say "got empty parameter set"."""
    if HAVE_CORPUS:
        return
    skip = pytest.mark.skip(reason=NO_CORPUS)
    for item in items:
        if item.get_closest_marker("corpus") or "corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(skip, append=False)   # first skip mark wins over the empty-parameter-set one
