"""The layering rules of docs/architecture.md, checked on the source.

Imports are read with ``ast`` from every module of the package, those inside
functions included, so a deferred import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "specsurgery"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """specsurgery modules that module ``name`` imports (anywhere in its body)."""
    path, is_pkg = MODULES[name]
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.append(sub if sub in MODULES else module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            targets = [node.args[0].value]
        for target in targets:
            if not target.startswith("specsurgery"):
                continue
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for name in MODULES:
        g.add_node(name)
        for target in _imports(name):
            g.add_edge(name, target)
    return g


def _library(name: str) -> bool:
    """Everything but the command line (``cli`` and the ``python -m`` entry point)."""
    return not (name.startswith("specsurgery.cli") or name == "specsurgery.__main__")


def test_the_import_walker_sees_deferred_imports(graph):
    # io is the lowest layer that writes; check sits above it and imports it
    assert "specsurgery.io" in graph.successors("specsurgery.check")
    assert "specsurgery.cli._common" in set(graph.successors("specsurgery.cli.check"))


def test_no_import_cycles(graph):
    cycles = sorted((c for c in nx.simple_cycles(graph)), key=len)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:10])


def test_no_library_module_imports_the_cli(graph):
    bad = sorted(f"{a} -> {b}" for a, b in graph.edges if _library(a) and b.startswith("specsurgery.cli"))
    assert not bad, bad


def test_operations_never_import_convert(graph):
    bad = sorted(f"{a} -> {b}" for a, b in graph.edges
                 if a.startswith("specsurgery.ops") and b.startswith("specsurgery.convert"))
    assert not bad, bad


def test_io_knows_nothing_of_check(graph):
    below = nx.descendants(graph, "specsurgery.io")
    assert not any(m.startswith("specsurgery.check") for m in below), sorted(below)


_RENAMES = re.compile(r"\bos\.(replace|rename|renames)\(|\bshutil\.move\(|\.rename\(|\.replace\(\s*[\w.]+\s*\)")


def test_one_module_performs_atomic_renames():
    users = set()
    for name, (path, _) in MODULES.items():
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if re.search(r"\bos\.(replace|rename|renames)\(|\bshutil\.move\(", code):
                users.add(name)
    assert users == {"specsurgery._atomic"}, sorted(users)


WEIGHTED_KINDS = ("innerProduct", "convolution", "batchnorm", "batchedMatmul", "embeddingND")


def test_weighted_layer_kinds_are_named_in_at_most_two_files_outside_the_runtime():
    naming = set()
    for name, (path, _) in MODULES.items():
        if name.startswith("specsurgery.runtime"):
            continue
        text = path.read_text()
        if any(re.search(rf"\b{k}\b", text) for k in WEIGHTED_KINDS):
            naming.add(name)
    assert len(naming) <= 2, sorted(naming)
    assert "specsurgery.nn.kinds" in naming


def test_one_byte_formatter():
    defs = [name for name, (path, _) in MODULES.items()
            if re.search(r"^def (human_bytes|_human)\b", path.read_text(), re.M)]
    assert defs == ["specsurgery.units"], defs
