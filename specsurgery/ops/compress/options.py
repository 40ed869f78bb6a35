"""The options of :func:`~specsurgery.ops.compress.compress`, checked once for
both backends, and the glob selection of layers."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ...errors import NotFoundError, SpecSurgeryError, near_matches

MODES = ("fp16", "linear", "palettize", "prune")
GRANULARITIES = ("per_tensor", "per_grouped_channel")
#: Output channels per table with ``granularity="per_grouped_channel"`` when no group_size is given.
DEFAULT_GROUP_SIZE = 32


@dataclass(frozen=True)
class Options:
    """The checked options every backend reads."""

    mode: str
    nbits: Optional[int]        # linear / palettize; None for fp16 and prune
    per_channel: bool
    sparsity: Optional[float]
    min_weights: int
    seed: int
    granularity: str
    group_size: int
    measure: bool               # measure the weights' SNR (only when a report is asked for)


def check_options(mode, nbits, per_channel, sparsity, min_weights, seed, granularity, group_size,
                  measure) -> Options:
    """The options as one checked record, or the error naming the bad one and its allowed values."""
    if mode not in MODES:
        raise SpecSurgeryError(f"compress: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mode in ("linear", "palettize"):
        if nbits is None:
            nbits = 8 if mode == "linear" else 4
        if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 8:
            raise SpecSurgeryError(
                f"compress: nbits {nbits!r} is outside 1..8; Core ML stores 1 to 8-bit codes "
                "(use mode='fp16', --fp16 on the command line, for 16 bits)")
        nbits = int(nbits)
    elif nbits not in (None, 16 if mode == "fp16" else None):
        raise SpecSurgeryError(f"compress: nbits applies to 'linear' and 'palettize', not {mode!r}")
    else:
        nbits = None
    if per_channel and mode != "linear":
        raise SpecSurgeryError(
            f"compress: per_channel (--per-channel) applies to mode 'linear' only, not {mode!r}")
    if mode == "prune" and sparsity is None:
        raise SpecSurgeryError("compress: mode 'prune' needs sparsity (a fraction in [0, 1), e.g. 0.5)")
    if sparsity is not None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
                or not (0.0 <= float(sparsity) < 1.0):
            raise SpecSurgeryError(
                f"compress: sparsity {sparsity!r} is outside [0, 1); it is the fraction of weights "
                "set to zero (0.5 zeroes half)")
    if isinstance(min_weights, bool) or not isinstance(min_weights, (int, np.integer)) or min_weights < 0:
        raise SpecSurgeryError(f"compress: min_weights must be a count >= 0, got {min_weights!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SpecSurgeryError(f"compress: seed must be an integer, got {seed!r}")
    if granularity not in GRANULARITIES:
        raise SpecSurgeryError(
            f"compress: granularity {granularity!r} unknown; use 'per_tensor' or 'per_grouped_channel'")
    if group_size is not None:
        if granularity != "per_grouped_channel":
            raise SpecSurgeryError(
                "compress: group_size (--grouped-channels) applies with granularity='per_grouped_channel' "
                "only (one look-up table per group of output channels)")
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise SpecSurgeryError(f"compress: group_size must be a channel count >= 1, got {group_size!r}")
    if granularity == "per_grouped_channel" and mode != "palettize":
        raise SpecSurgeryError(
            f"compress: granularity 'per_grouped_channel' applies to mode 'palettize' only, not {mode!r}")
    return Options(mode, nbits, bool(per_channel), None if sparsity is None else float(sparsity),
                   int(min_weights), int(seed), granularity,
                   int(group_size) if group_size is not None else DEFAULT_GROUP_SIZE, bool(measure))


class Selector:
    """Glob selection of layers by name or ``stage/layer`` path."""

    def __init__(self, layers, exclude):
        self.layers = [layers] if isinstance(layers, str) else list(layers or [])
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
        self.used = {p: False for p in self.layers + self.exclude}

    @staticmethod
    def _match(pattern, stage, name):
        full = f"{stage}/{name}" if stage else name
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(full, pattern)

    def explicit(self, stage, name) -> bool:
        return any(self._match(p, stage, name) for p in self.layers)

    def wants(self, stage, name) -> Optional[str]:
        """None when selected, else the reason it is not."""
        if self.layers:
            hits = [p for p in self.layers if self._match(p, stage, name)]
            for p in hits:
                self.used[p] = True
            if not hits:
                return "not selected by --layers"
        ex = [p for p in self.exclude if self._match(p, stage, name)]
        for p in ex:
            self.used[p] = True
        if ex:
            return f"excluded by {ex[0]!r}"
        return None

    def check_all_used(self, known: Sequence[str]) -> None:
        missing = [p for p, used in self.used.items() if not used]
        if not missing:
            return
        parts = []
        for p in missing:
            hint = near_matches(p.replace("*", "").replace("?", ""), known) or near_matches(p, known)
            parts.append(repr(p) + (f" (near: {', '.join(repr(h) for h in hint)})" if hint else ""))
        raise NotFoundError("layer pattern(s) match no layer: " + "; ".join(parts)
                            + f". The model has {len(known)} layer(s)"
                            + (": " + ", ".join(list(known)[:12]) + (" ..." if len(known) > 12 else "")
                               if known else ""))


__all__ = ["MODES", "Options", "Selector", "check_options"]
