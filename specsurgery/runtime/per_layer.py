"""``verify --per-layer``: which layer first computes something different.

Both models run on the same inputs with every intermediate value recorded
(``engine._run``'s trace). Values are matched by stage path and blob name; a
layer (NeuralNetwork) or op (ML Program) is a *culprit* when its output
differs while every value it reads matches, so a changed weight names its
own layer and not the ones downstream of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import spec as _spec


@dataclass
class LayerReport:
    key: str                 # "<stage path>/<blob>" as traced
    stage: str
    layer: str
    kind: str
    max_abs: Optional[float]
    ok: bool
    culprit: bool = False
    note: str = ""

    def to_json(self) -> dict:
        return {"stage": self.stage, "layer": self.layer, "kind": self.kind, "blob": self.key.rsplit("/", 1)[-1],
                "max_abs": self.max_abs, "ok": self.ok, "culprit": self.culprit, "note": self.note}


def producers(spec) -> dict:
    """traced key -> (stage, layer name, kind, names it reads)."""
    out = {}
    for info in _spec.iter_models(spec):
        model = info.model
        prefix = info.path + "/" if info.path else ""
        kind = _spec.model_type(model)
        if kind in _spec.NN_TYPES:
            for layer in _spec.nn_of(model).layers:
                for blob in layer.output:
                    out[prefix + blob] = (info.path, layer.name, layer.WhichOneof("layer") or "", list(layer.input))
        elif kind == "mlProgram":
            from ..mil import program as P

            try:
                _, fn = P.get_function(model)
                block = P.main_block(fn)
            except Exception:
                continue
            for op in block.operations:
                reads = [n for _, n in P.input_names(op)]
                for o in op.outputs:
                    out[prefix + o.name] = (info.path, P.op_name(op), op.type, reads)
    return out


def _resolve(name: str, prefix: str, seen: dict) -> Optional[str]:
    """The traced key a read of ``name`` in stage ``prefix`` refers to (None: a model input)."""
    if prefix + name in seen:
        return prefix + name
    for key in reversed(list(seen)):
        if key == name or key.endswith("/" + name):
            return key
    return None


def compare_traces(spec, ref: dict, cand: dict, rtol: float, atol: float) -> list[LayerReport]:
    info = producers(spec)
    status: dict = {}
    rows = []
    for key, a in ref.items():
        if key not in cand:
            continue
        b = cand[key]
        stage, layer, kind, reads = info.get(key, (key.rsplit("/", 1)[0] if "/" in key else "",
                                                   key.rsplit("/", 1)[-1], "", []))
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        note = ""
        if a64.shape != b64.shape:
            if a64.size == b64.size:
                b64 = b64.reshape(a64.shape)
            else:
                rows.append(LayerReport(key, stage, layer, kind, None, False, note=f"shape {a64.shape} vs {b64.shape}"))
                status[key] = False
                continue
        if a64.size:
            diff = np.abs(a64 - b64)
            diff = np.where(np.isnan(a64) & np.isnan(b64), 0.0, diff)
            diff = np.where(np.isnan(diff), np.inf, diff)
            worst = float(diff.max())
            ok = bool((diff <= atol + rtol * np.abs(np.nan_to_num(a64))).all())
        else:
            worst, ok = 0.0, True
        status[key] = ok
        rows.append(LayerReport(key, stage, layer, kind, worst, ok, note=note))
    prefix_of = {r.key: (r.stage + "/" if r.stage else "") for r in rows}
    for row in rows:
        if row.ok:
            continue
        reads = info.get(row.key, (None, None, None, []))[3]
        inputs_ok = True
        for name in reads:
            key = _resolve(name, prefix_of[row.key], {k: None for k in status if k != row.key})
            if key is not None and status.get(key) is False:
                inputs_ok = False
                break
        row.culprit = inputs_ok
    return rows


__all__ = ["LayerReport", "compare_traces", "producers"]
