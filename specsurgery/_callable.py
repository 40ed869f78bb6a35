"""Modules that share their name with their main function.

``specsurgery.check`` is both a package and the function ``check``; once the
module is imported, Python sets the parent's attribute to the module, so
``ss.check`` or ``from specsurgery.ops import dedupe`` would hand out a module.
Making such a module callable keeps ``ss.check(model)`` working either way,
while ``from specsurgery.check import Finding`` still reaches the module.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return getattr(self, self.__dict__["__call_target__"])(*args, **kwargs)


def make_callable(module_name: str, function_name: str) -> None:
    module = sys.modules[module_name]
    module.__call_target__ = function_name
    module.__class__ = _CallableModule
