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


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Converted test models (tests/zoo.py, tests/mil/mil_models.py) are cached in
    pytest's own cache folder, <rootdir>/.pytest_cache/d/specsurgery, so runs stay
    fast and the temp folder holds nothing of ours.  Without the cacheprovider
    (-p no:cacheprovider) the same folder is used if the clone is writable, else
    the run's basetemp (removed at the end).  xdist workers inherit the variable."""
    if os.environ.get("SPECSURGERY_TEST_CACHE"):
        return
    cache = getattr(config, "cache", None)
    if cache is not None:
        root = Path(cache.mkdir("specsurgery"))
    else:
        root = REPO / ".pytest_cache" / "d" / "specsurgery"
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root.parents[1] / ".gitignore").write_text("# created by pytest (tests/conftest.py)\n*\n")
        except OSError:
            root = config._tmp_path_factory.getbasetemp() / "specsurgery-cache"
            root.mkdir(exist_ok=True)
    os.environ["SPECSURGERY_TEST_CACHE"] = str(root)
    # torch.export makes $TMPDIR/torchinductor_$USER; keep it with the other caches
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "torchinductor"))


def pytest_unconfigure(config):
    """tmp_path_retention_policy = "none" removes this run's basetemp; the empty
    pytest-of-$USER folder above it goes too (rmdir leaves it if another run uses it)."""
    if hasattr(config, "workerinput"):
        return
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    if basetemp is None or getattr(factory, "_given_basetemp", None) is not None:
        return
    parent = Path(basetemp).parent
    if parent.name.startswith("pytest-of-"):
        current = parent / "pytest-current"
        if current.is_symlink() and not current.exists():
            current.unlink()
        try:
            parent.rmdir()
        except OSError:
            pass


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
