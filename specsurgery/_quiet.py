"""Silence coremltools while specsurgery calls into it.

A bottom-level module (it imports nothing of specsurgery), so both the
converters (``convert``) and the operations (``ops.compress``) can use it
without ``ops`` importing ``convert``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging

#: Module-level tqdm names coremltools draws its progress bars with.
_TQDM_NAMES = (("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
               ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"),
               ("coremltools.converters.mil.backend.nn.op_mapping", "_tqdm"),
               ("coremltools.optimize.coreml._quantization_passes", "tqdm"),
               ("coremltools.optimize.coreml._post_training_quantization", "tqdm"))


@contextlib.contextmanager
def quiet_coremltools(enabled: bool = True):
    """Silence coremltools' progress bars and info/warning logs for one call.

    coremltools prints a tqdm bar per conversion or optimization stage and
    logs notes such as "Tuple detected at graph output"; the CLI and the
    examples print their own summary instead.  The bars are module-level
    ``tqdm`` names, swapped for a disabled one and put back on exit; errors
    still propagate.
    """
    if not enabled:
        yield
        return
    logger = logging.getLogger("coremltools")  # also quiets the import-time notes
    level = logger.level
    logger.setLevel(logging.ERROR)
    patched = []
    try:
        for mod_name, attr in _TQDM_NAMES:
            try:
                mod = importlib.import_module(mod_name)
                original = getattr(mod, attr)
            except (ImportError, AttributeError):
                continue
            setattr(mod, attr, functools.partial(original, disable=True))
            patched.append((mod, attr, original))
        yield
    finally:
        logger.setLevel(level)
        for mod, attr, original in patched:
            setattr(mod, attr, original)


__all__ = ["quiet_coremltools"]
