"""A package never leads outside itself: escaping Manifest paths, weight file
names and symlinks are refused before the outside file is opened."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import numpy as np
import pytest

from specsurgery import io
from nnbuild import tiny_nn
from specsurgery.cli import main
from specsurgery.errors import LoadError


def _package(folder: Path) -> Path:
    """A package (of a small neural network) built in code."""
    return io.save(tiny_nn(), folder / "M.mlpackage")


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"do not read")
    return path


@pytest.fixture
def opened(monkeypatch):
    seen: list[str] = []
    real_open = builtins.open
    real_memmap = np.memmap

    def spy_open(file, *a, **k):
        seen.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *a, **k)

    def spy_memmap(file, *a, **k):
        seen.append(os.path.realpath(file))
        return real_memmap(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(np, "memmap", spy_memmap)
    return seen


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "Manifest.json").read_text())


def _root_item(manifest: dict) -> dict:
    return manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]


def test_a_built_package_loads(tmp_path):
    assert isinstance(io.load(_package(tmp_path)), io.MLPackage)


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_manifest_root_path_outside_is_refused_unopened(tmp_path, secret, opened, how):
    pkg = _package(tmp_path / "p")
    manifest = _manifest(pkg)
    _root_item(manifest)["path"] = "../../../secret.txt" if how == "dotdot" else str(secret)
    (pkg / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match="leads outside the package"):
        io.load(pkg)
    assert str(secret.resolve()) not in opened


def test_other_manifest_items_outside_are_refused(tmp_path, secret):
    pkg = _package(tmp_path / "p")
    manifest = _manifest(pkg)
    manifest["itemInfoEntries"]["EXTRA"] = {"path": "com.apple.CoreML/../../../secret.txt"}
    (pkg / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match="'EXTRA' path leads outside"):
        io.load(pkg)


def test_symlinked_weight_file_outside_is_refused_unopened(tmp_path, secret, opened):
    pkg = _package(tmp_path / "p")
    weights = pkg / "Data" / "com.apple.CoreML" / "weights"
    weights.mkdir(exist_ok=True)
    os.symlink(secret, weights / "weight.bin")
    with pytest.raises(LoadError, match="symlink that leads outside the package"):
        io.load(pkg)
    assert str(secret.resolve()) not in opened


def test_symlinked_root_model_outside_is_refused(tmp_path):
    pkg = _package(tmp_path / "p")
    root = pkg / "Data" / _root_item(_manifest(pkg))["path"]
    outside = tmp_path / "outside.mlmodel"
    os.replace(root, outside)
    os.symlink(outside, root)
    with pytest.raises(LoadError, match="leads outside the package"):
        io.load(pkg)


def test_symlink_inside_the_package_is_fine(tmp_path):
    pkg = _package(tmp_path / "p")
    weights = pkg / "Data" / "com.apple.CoreML" / "weights"
    weights.mkdir(exist_ok=True)
    (weights / "real.bin").write_bytes(b"\0" * 64)
    os.symlink("real.bin", weights / "weight.bin")
    assert "weights/weight.bin" in io.load(pkg).weights


@pytest.mark.parametrize("name", ["@model_path/../../../secret.txt", "/etc/passwd", "@model_path/weights/../../../x"])
def test_blob_file_name_outside_is_refused(tmp_path, name):
    pkg = io.load(_package(tmp_path / "p"))
    with pytest.raises(LoadError, match="leads outside the package"):
        pkg.weight_file(name)


def test_cli_refuses_an_escaping_package_with_one_line(tmp_path, secret, capsys):
    pkg = _package(tmp_path / "p")
    manifest = _manifest(pkg)
    _root_item(manifest)["path"] = "../../secret.txt"
    (pkg / "Manifest.json").write_text(json.dumps(manifest))
    for verb in ("inspect", "check", "tree"):
        assert main([verb, str(pkg)]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "leads outside the package" in err, err
