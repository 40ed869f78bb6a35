""".mlpackage container rules (format notes §7.1, §8 rule 11); the weight
blobs themselves are checked by ``check_program`` (mlprogram.py)."""

from __future__ import annotations

import re

from ..io import MLPackage, uses_weight_files
from .findings import Findings


def check_package(pkg: MLPackage, out: Findings) -> None:
    manifest = (pkg.metadata or {}).get("manifest")
    if not manifest:
        return  # built in memory: nothing on disk to check yet
    version = manifest.get("fileFormatVersion")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        out.error("Manifest.json", "package.manifest-version",
                  f"fileFormatVersion {version!r} is not major.minor.patch; use \"1.0.0\"")
    elif tuple(int(x) for x in version.split(".")) > (1, 0, 0):
        out.error("Manifest.json", "package.manifest-version",
                  f"fileFormatVersion {version} is newer than 1.0.0, the newest Core ML reads")
    entries = manifest.get("itemInfoEntries") or {}
    for key, entry in entries.items():
        missing = [k for k in ("path", "name", "author", "description") if not (isinstance(entry, dict) and k in entry)]
        if missing:
            out.error("Manifest.json", "package.manifest-entry",
                      f"item {key} lacks {', '.join(missing)}")
        elif pkg.path is not None and not (pkg.path / "Data" / entry["path"]).exists():
            out.error("Manifest.json", "package.manifest-entry",
                      f"item {key} names Data/{entry['path']}, which does not exist")
    if uses_weight_files(pkg.spec):
        has_weights = any(isinstance(e, dict) and e.get("name") == "weights" for e in entries.values())
        if not has_weights:
            out.warning("Manifest.json", "package.no-weights-item",
                        "the ML Program reads weight files but Manifest.json lists no weights item")
