"""What :func:`~specsurgery.ops.compress.compress` did, for both backends:
one row per compressed layer (or ML Program weight), one per skipped layer
with its reason, notes, and the spec versions raised; the SNR figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ...errors import SpecSurgeryError
from ...units import human_bytes


def snr_from_sums(signal: float, noise: float) -> float:
    """10 log10(signal / noise) in dB: ``inf`` when exact, ``-inf`` when there
    is no signal or the error is infinite, NaN when a sum is NaN (weights that
    hold NaN); never raises."""
    if math.isnan(signal) or math.isnan(noise):
        return math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0 or math.isinf(noise):
        return -math.inf
    if math.isinf(signal):
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal / noise > 0.0 else -math.inf


def snr_db(original, approx) -> Optional[float]:
    """Signal-to-noise ratio in dB of ``approx`` against ``original`` (inf: exact)."""
    a = np.asarray(original, dtype=np.float32).reshape(-1)
    b = np.asarray(approx, dtype=np.float32).reshape(-1)
    d = a - b
    noise = float(np.dot(d, d))          # BLAS float32 dot: plenty for a dB figure
    return snr_from_sums(float(np.dot(a, a)), noise)


def _json_snr(v):
    if v is None:
        return None
    if math.isnan(v):
        return "nan"
    return "inf" if math.isinf(v) and v > 0 else round(float(v), 3)


def _fmt_snr(v) -> str:
    if v is None:
        return "n/a"
    return "inf" if math.isinf(v) and v > 0 else f"{v:.1f}"


def _fmt_bits(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else f"{b:.2f}"


def _where(stage: str, layer: str, parent: str = "") -> str:
    """``stage/layer``, with the loop or branch body that holds a nested layer."""
    name = f"{stage}/{layer}" if stage else layer
    return f"{name} (in {parent})" if parent else name


@dataclass
class LayerReport:
    """One compressed layer."""

    stage: str              # stage path ("" for the top model)
    layer: str
    kind: str
    fields: list            # weight fields written
    count: int              # number of weights written
    storage_before: str
    storage_after: str
    bits_before: float
    bits_after: float       # per weight, tables and scales included
    bytes_before: int
    bytes_after: int
    snr_db: Optional[float]  # of the weights; inf when exact, None when not measured
    sparsity: Optional[float] = None
    parent: str = ""        # the loop or branch body holding the layer ("" at the top level)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.layer}" if self.stage else self.layer

    def to_json(self) -> dict:
        data = {"stage": self.stage, "layer": self.layer, "kind": self.kind, "fields": self.fields,
                "count": self.count, "storage_before": self.storage_before,
                "storage_after": self.storage_after, "bits_before": round(self.bits_before, 4),
                "bits_after": round(self.bits_after, 4), "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after,
                "snr_db": _json_snr(self.snr_db),
                "sparsity": self.sparsity}
        if self.parent:
            data["parent"] = self.parent
        return data


@dataclass
class Skipped:
    stage: str
    layer: str
    kind: str
    reason: str
    parent: str = ""        # the loop or branch body holding the layer

    def to_json(self) -> dict:
        data = self.__dict__.copy()
        if not self.parent:
            del data["parent"]
        return data


@dataclass
class CompressReport:
    """What :func:`compress` did: compressed layers, skipped ones and why, notes."""

    mode: str
    nbits: Optional[int]
    per_channel: bool
    sparsity: Optional[float]
    layers: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)    # stage path -> (before, after)
    outputs: dict = field(default_factory=dict)     # filled by verify_outputs: name -> SNR dB

    @property
    def bytes_before(self) -> int:
        return sum(row.bytes_before for row in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(row.bytes_after for row in self.layers)

    @property
    def ratio(self) -> float:
        before = self.bytes_before
        return self.bytes_after / before if before else 1.0

    def note(self, text: str) -> None:
        """Add a note once."""
        if text not in self.notes:
            self.notes.append(text)

    def to_json(self) -> dict:
        return {"mode": self.mode, "nbits": self.nbits, "per_channel": self.per_channel,
                "sparsity": self.sparsity, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "ratio": round(self.ratio, 6),
                "layers": [row.to_json() for row in self.layers],
                "skipped": [s.to_json() for s in self.skipped], "notes": list(self.notes),
                "spec_versions": {k or "<top>": list(v) for k, v in self.versions.items()},
                "outputs_snr_db": {k: _json_snr(v) for k, v in self.outputs.items()}}

    def summary(self) -> str:
        what = self.mode + (f" {self.nbits}-bit" if self.mode in ("linear", "palettize") else "")
        if self.sparsity and self.mode != "prune":
            what += f" + {self.sparsity:.0%} pruning"
        lines = [f"{what}: {len(self.layers)} layer(s), weights {human_bytes(self.bytes_before)} -> "
                 f"{human_bytes(self.bytes_after)} ({self.ratio:.1%})"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} layer(s): " + "; ".join(
                f"{_where(s.stage, s.layer, s.parent)}: {s.reason}" for s in self.skipped[:8])
                + (" ..." if len(self.skipped) > 8 else ""))
        lines.extend(self.notes)
        return "\n".join(lines)

    def table(self) -> str:
        """The per-layer table (``--report``)."""
        head = ["layer", "kind", "weights", "bits", "bytes before", "bytes after", "SNR dB"]
        rows = []
        for row in self.layers:
            rows.append([_where(row.stage, row.layer, row.parent), row.kind, str(row.count),
                         f"{_fmt_bits(row.bits_before)}->{_fmt_bits(row.bits_after)}",
                         str(row.bytes_before), str(row.bytes_after),
                         _fmt_snr(row.snr_db)])
        rows.append(["total", "", str(sum(row.count for row in self.layers)), "",
                     str(self.bytes_before), str(self.bytes_after), ""])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        out = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
               for r in [head] + rows]
        for s in self.skipped:
            out.append(f"skipped {_where(s.stage, s.layer, s.parent)} ({s.kind}): {s.reason}")
        for name, snr in self.outputs.items():
            out.append(f"output {name}: SNR {_fmt_snr(snr)} dB")
        out.extend(self.notes)
        return "\n".join(out)


def explain_nothing_done(report: CompressReport) -> None:
    """Raise the error that says why no layer was compressed (nothing when one was)."""
    if report.layers:
        return
    if not report.skipped:
        raise SpecSurgeryError("compress: no layer holds weights to compress"
                               + ("; " + "; ".join(report.notes) if report.notes else ""))
    reasons: dict[str, dict] = {}
    for s in report.skipped:
        key = s.reason.split(":")[0] if s.reason.startswith("already") else s.reason
        if "min_weights" in s.reason:
            key = "fewer weights than min_weights"
        reasons.setdefault(key, {})[s.layer] = None      # each name once, in order
    parts = [f"{k} ({', '.join(list(v)[:4])}{' ...' if len(v) > 4 else ''})" for k, v in reasons.items()]
    hint = ""
    if any(s.reason.startswith("already") for s in report.skipped):
        hint = "; never quantize twice: compress the float model instead"
    elif any("min_weights" in s.reason for s in report.skipped):
        hint = "; lower min_weights (--min-weights) to include small layers"
    notes = ("; " + "; ".join(report.notes)) if report.notes else ""
    raise SpecSurgeryError("compress: nothing to compress: " + "; ".join(parts) + hint + notes)


__all__ = ["CompressReport", "LayerReport", "Skipped", "snr_db", "snr_from_sums", "explain_nothing_done"]
