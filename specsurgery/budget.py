"""One budget for the sizes a model file declares.

A model names its own tensor shapes, weight counts and loop counts; a hostile or
broken file can name sizes no machine holds.  Before allocating something whose
size comes from the file (a declared input, a layer output computed from its
parameters, a decoded weight), the runtime, shape inference and compress call
:func:`check`, which refuses it with an error naming the culprit and the shape.
Loops and recurrent sequences call :func:`check_iterations`; the heavy kernels
(convolutions, matrix products, recurrent layers) add their multiply-adds to a
per-prediction count that :func:`check_work` holds under a cap, so a file that
declares a huge image cannot keep the numpy runtime busy for minutes.

The memory limit defaults to a quarter of physical memory (or of the process's
address-space or cgroup limit, when lower).  ``--max-memory`` on
the CLI (:func:`set_limit`) or the environment variable ``SPECSURGERY_MAX_MEMORY``
(e.g. ``8G``, ``512M``, ``1.5GiB``, a plain byte count) sets it; the iteration cap
(default 10,000) is set by ``SPECSURGERY_MAX_ITERATIONS`` and the work cap (default
20 billion multiply-adds per prediction: 5 ResNet-50 passes, some 5-20 s of numpy) by
``SPECSURGERY_MAX_WORK`` (e.g. ``1e12``).
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterable, Iterator, Optional, Union

from .errors import SpecSurgeryError
from .units import human_bytes

ENV_MEMORY = "SPECSURGERY_MAX_MEMORY"
ENV_ITERATIONS = "SPECSURGERY_MAX_ITERATIONS"
DEFAULT_FRACTION = 4                 # default limit: physical memory / 4
DEFAULT_ITERATIONS = 10_000
ENV_WORK = "SPECSURGERY_MAX_WORK"
DEFAULT_WORK = 20e9                  # multiply-adds per prediction (5 ResNet-50 passes)
_FALLBACK_MEMORY = 8 << 30           # when the platform does not say


class BudgetError(SpecSurgeryError):
    """A size a model declares is over the memory budget or the iteration cap."""


_override: Optional[int] = None
_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: Union[str, int]) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"64k"`` or ``"1000000"`` -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgtb]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
        if m is None:
            raise BudgetError(f"memory size {text!r}: expected a number with an optional unit "
                              "K, M, G or T (e.g. 8G, 512M, 1.5GiB, 1000000)")
        value = int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    if value <= 0:
        raise BudgetError(f"memory size {text!r}: must be more than 0 bytes (e.g. 8G)")
    return value


def physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY


@lru_cache(maxsize=1)
def available_memory() -> int:
    """Physical memory, or less when the process is held to less: its address-space
    limit (``ulimit -v``) or its cgroup's memory limit (containers)."""
    sizes = [physical_memory()]
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            sizes.append(int(soft))
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            sizes.append(int(text))
    except OSError:
        pass
    return min(sizes)


def limit() -> int:
    """The memory budget in bytes: :func:`set_limit`, else ``SPECSURGERY_MAX_MEMORY``,
    else a quarter of the memory available (:func:`available_memory`)."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_MEMORY)
    if env:
        try:
            return parse_size(env)
        except BudgetError as exc:
            raise BudgetError(f"{ENV_MEMORY}: {exc}") from None
    return available_memory() // DEFAULT_FRACTION


def set_limit(size: Union[str, int, None]) -> None:
    """Set the memory budget for this process (None: back to the default)."""
    global _override
    _override = None if size is None else parse_size(size)


@contextmanager
def limited(size: Union[str, int, None]) -> Iterator[None]:
    """Run a block under another memory budget."""
    global _override
    saved = _override
    set_limit(size)
    try:
        yield
    finally:
        _override = saved


def _positive_env(name: str, cast, default, example: str):
    """The positive number environment variable ``name`` holds, else ``default``."""
    env = os.environ.get(name)
    if not env:
        return default
    try:
        value = cast(env)
    except ValueError:
        value = 0
    if not value > 0:
        raise BudgetError(f"{name}={env!r}: expected {example}")
    return value


def max_iterations() -> int:
    return _positive_env(ENV_ITERATIONS, int, DEFAULT_ITERATIONS, "a positive whole number")


def max_work() -> float:
    return _positive_env(ENV_WORK, float, DEFAULT_WORK, "a positive number of multiply-adds (e.g. 1e12)")


def check_work(total: float, *, what: str) -> None:
    """Refuse a prediction whose multiply-adds so far (``total``) pass the work cap."""
    cap = max_work()
    if total > cap:
        raise BudgetError(f"{what}: the prediction needs {total:.3g} multiply-adds so far, over the "
                          f"cap of {cap:.3g} for the numpy reference runtime; if meant (it may take "
                          f"minutes), raise it with {ENV_WORK} (e.g. {ENV_WORK}={cap * 10:.0e})")


def nbytes(shape: Iterable, itemsize: int = 4) -> int:
    """Bytes of a dense array of ``shape`` (exact, no overflow; negative sizes count as 0)."""
    return math.prod(max(int(s), 0) for s in shape) * int(itemsize)


def _hint() -> str:
    return (f"the budget is {human_bytes(limit())} (a quarter of the memory available unless set); "
            f"if the size is meant, raise it with --max-memory or {ENV_MEMORY} (e.g. 16G)")


def check(shape: Iterable, itemsize: int = 4, *, what: str) -> int:
    """Refuse an allocation of ``shape`` x ``itemsize`` bytes over the budget.

    ``what`` names the culprit, e.g. ``"layer 'conv1' (pooling) output"``.
    Returns the byte count.
    """
    shape = tuple(int(s) for s in shape)
    n = nbytes(shape, itemsize)
    if n > limit():
        raise BudgetError(f"{what}: shape {list(shape)} needs {human_bytes(n)}, over the memory "
                          f"budget; {_hint()}")
    # an empty array whose other dimensions multiply past what an index can hold
    # (numpy: "array is too big") is as hostile as a huge one
    span = math.prod(max(int(s), 1) for s in shape) * int(itemsize)
    if span >= 1 << 62:
        raise BudgetError(f"{what}: shape {list(shape)} has dimensions whose product ({span:.3g} bytes) "
                          "no array index can hold, even though one of them is 0; a declared shape "
                          "this large is a broken model")
    return n


def check_bytes(n: int, *, what: str) -> int:
    """Refuse ``n`` bytes over the budget (for sizes that are not one array's shape)."""
    if int(n) > limit():
        raise BudgetError(f"{what} needs {human_bytes(int(n))}, over the memory budget; {_hint()}")
    return int(n)


def check_iterations(n: int, *, what: str) -> int:
    """Refuse a loop or sequence of ``n`` steps over the iteration cap."""
    cap = max_iterations()
    if int(n) > cap:
        raise BudgetError(f"{what}: {int(n):,} iterations, over the cap of {cap:,}; if meant, "
                          f"raise it with {ENV_ITERATIONS} (e.g. {ENV_ITERATIONS}={10 * cap})")
    return int(n)
