"""Every test that reads ../shared/corpus is marked ``corpus`` (or takes the ``corpus``
fixture), so a clone without the corpus skips it with one reason instead of failing.

Found statically: a test function that names CORPUS / VALID_FILES / INVALID_FILES /
CORPUS_FILES / MANIFEST, or a module-level name or helper built from them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ROOTS = {"CORPUS", "VALID_FILES", "INVALID_FILES", "CORPUS_FILES", "MANIFEST", "SHARED"}
# tests that name the corpus but pass without it (they test a missing file, or look first)
PASS_WITHOUT = {
    "tests/cli/test_main.py::test_bad_input_is_one_line_exit_1",     # a missing file is one line too
    "tests/cli/test_main.py::test_debug_shows_traceback",
    "tests/render/test_render.py::test_bad_options",                 # `if program.exists()`
}


def _names(node) -> set:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments) for a in n.args}


def unmarked() -> list[str]:
    out = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        if any("pytestmark" in ast.unparse(n) and "corpus" in ast.unparse(n)
               for n in tree.body if isinstance(n, ast.Assign)):
            continue
        derived = set(ROOTS)
        for _ in range(3):   # module names and helpers built from the corpus, and from those
            for node in tree.body:
                if isinstance(node, ast.Assign) and _names(node.value) & derived:
                    derived |= {t.id for t in node.targets if isinstance(t, ast.Name)}
                elif isinstance(node, ast.FunctionDef) and not node.name.startswith("test") \
                        and _names(node) & derived:
                    derived.add(node.name)
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            if not _names(node) & derived and not any(_names(d) & derived for d in node.decorator_list):
                continue
            marked = any("mark.corpus" in ast.unparse(d) for d in node.decorator_list)
            ident = f"{path.relative_to(REPO).as_posix()}::{node.name}"
            if not marked and "corpus" not in [a.arg for a in node.args.args] and ident not in PASS_WITHOUT:
                out.append(ident)
    return out


def test_every_corpus_test_is_marked():
    missing = unmarked()
    assert not missing, ("these tests read the corpus but are not marked; add @pytest.mark.corpus "
                         "(or pytestmark = pytest.mark.corpus for a whole module):\n  " + "\n  ".join(missing))
