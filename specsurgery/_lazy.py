"""The one lazy-import mechanism: a package's public names, imported on first use.

``__getattr__, __dir__ = lazy_exports(__name__, globals(), {"name": "submodule"})``
in a package ``__init__`` makes ``package.name`` import ``package.submodule``
the first time it is read, so importing the package itself stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, namespace: dict, table: Mapping[str, str]) -> tuple[Callable, Callable]:
    def __getattr__(name):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
