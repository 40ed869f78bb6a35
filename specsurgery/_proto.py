"""Fast access to Core ML's protobuf classes.

``import coremltools`` runs its package ``__init__``, which imports torch when
torch is installed (several seconds, hundreds of MiB).  The generated
``*_pb2`` modules themselves only need protobuf.  This module registers the
``coremltools`` package in ``sys.modules`` *without executing* its
``__init__`` so that ``coremltools.proto.Model_pb2`` can be imported on its
own.  The first attribute access on the package (``ct.models``,
``ct.convert``, ...) runs the real ``__init__`` in the same module object, so
a later ``import coremltools`` works as usual and shares the same protobuf
classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_LOCK = threading.RLock()


class _DeferredPackage(types.ModuleType):
    """A package module whose ``__init__`` runs on first unknown attribute."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        _initialise(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(
                f"module {self.__name__!r} has no attribute {name!r}"
            ) from None


def _initialise(module: types.ModuleType) -> None:
    with _LOCK:
        if type(module) is not _DeferredPackage:
            return
        module.__class__ = types.ModuleType
        try:
            module.__spec__.loader.exec_module(module)
        except BaseException:
            module.__class__ = _DeferredPackage
            raise
        if _SubmoduleFinder in sys.meta_path:
            sys.meta_path.remove(_SubmoduleFinder)


class _AlreadyLoaded:
    """Loader that hands back a module the package ``__init__`` already imported."""

    @staticmethod
    def create_module(spec):
        return sys.modules[spec.name]

    @staticmethod
    def exec_module(module):
        return None


class _SubmoduleFinder:
    """Runs the deferred ``__init__`` before any ``coremltools.*`` submodule
    other than ``coremltools.proto`` is imported, so coremltools' own import
    order (and its circular imports) stay as its authors wrote them."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if not fullname.startswith("coremltools.") or fullname.startswith(
            "coremltools.proto"
        ):
            return None
        package = sys.modules.get("coremltools")
        if type(package) is not _DeferredPackage:
            return None
        _initialise(package)
        if fullname in sys.modules:
            return importlib.util.spec_from_loader(fullname, _AlreadyLoaded())
        return None


def _install_deferred_coremltools() -> None:
    if "coremltools" in sys.modules:
        return
    spec = importlib.util.find_spec("coremltools")
    if spec is None:  # pragma: no cover - dependency missing
        from .errors import SpecSurgeryError

        raise SpecSurgeryError(
            "coremltools is not installed; install it with `pip install coremltools`"
        )
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    sys.modules["coremltools"] = module
    sys.meta_path.insert(0, _SubmoduleFinder)


with _LOCK:
    _install_deferred_coremltools()
    from coremltools.proto import (  # noqa: E402
        FeatureTypes_pb2,
        LinkedModel_pb2,
        MIL_pb2,
        Model_pb2,
        NeuralNetwork_pb2,
    )


def coremltools():
    """Return the fully initialised ``coremltools`` package (slow: may import torch)."""
    module = sys.modules["coremltools"]
    if type(module) is _DeferredPackage:
        _initialise(module)
    return module


__all__ = [
    "FeatureTypes_pb2",
    "LinkedModel_pb2",
    "MIL_pb2",
    "Model_pb2",
    "NeuralNetwork_pb2",
    "coremltools",
]
