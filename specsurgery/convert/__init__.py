"""Entry stage: convert PyTorch modules to Core ML with the known pitfalls handled.

``from_torch`` is the one entry point (see :mod:`specsurgery.convert.pytorch`).
Importing this package is cheap: torch and coremltools load on first use.
"""

from .pytorch import (
    ConvertError,
    ConvertWarning,
    Enumerated,
    Range,
    from_torch,
    private_tempdir,
)

__all__ = ["ConvertError", "ConvertWarning", "Enumerated", "Range", "from_torch", "private_tempdir"]
