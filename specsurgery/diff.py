"""What changed between two models: interface, metadata, spec version,
stages, and layers (NeuralNetwork layers and ML Program operations), with the
largest weight difference of each changed layer.

Layers are matched by stage path and name (an ML Program operation by the
name of its first output), so a rewritten pipeline whose stages keep their
names diffs layer by layer.  ``diff`` reads; it never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import io
from .errors import SpecSurgeryError
from .nn.kinds import iter_layers
from .spec import NN_TYPES, class_labels, describe_type, iter_models, model_type


@dataclass
class LayerChange:
    name: str
    stage: str
    what: list
    max_abs: Optional[float] = None
    kind: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "stage": self.stage, "kind": self.kind, "what": list(self.what),
                "max_abs": self.max_abs}


@dataclass
class Diff:
    interface: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    spec_version: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    added: list = field(default_factory=list)      # [{"name", "stage", "kind"}]
    removed: list = field(default_factory=list)
    changed: list = field(default_factory=list)    # [LayerChange]
    other: list = field(default_factory=list)      # model-level differences outside layers

    @property
    def same(self) -> bool:
        return not (self.interface or self.metadata or self.spec_version[0] != self.spec_version[1]
                    or self.stages or self.added or self.removed or self.changed or self.other)

    def to_json(self) -> dict:
        return {
            "same": self.same,
            "interface": self.interface,
            "metadata": self.metadata,
            "spec_version": list(self.spec_version),
            "layers": {"added": self.added, "removed": self.removed,
                       "changed": [c.to_json() for c in self.changed]},
            "stages": self.stages,
            "other": self.other,
        }


# --------------------------------------------------------------------------- interface and metadata

def _features(desc, role) -> dict:
    return {f.name: f for f in getattr(desc, role)}


def _interface(a, b) -> dict:
    out: dict = {}
    for role in ("input", "output"):
        fa, fb = _features(a.description, role), _features(b.description, role)
        entry = {}
        added = sorted(set(fb) - set(fa))
        removed = sorted(set(fa) - set(fb))
        changed = {name: [describe_type(fa[name].type), describe_type(fb[name].type)]
                   for name in sorted(set(fa) & set(fb)) if fa[name].type != fb[name].type}
        if added:
            entry["added"] = added
        if removed:
            entry["removed"] = removed
        if changed:
            entry["changed"] = changed
        if [f.name for f in getattr(a.description, role)] != [f.name for f in getattr(b.description, role)] \
                and not added and not removed:
            entry["order"] = [[f.name for f in getattr(x.description, role)] for x in (a, b)]
        if entry:
            out[role + "s"] = entry
    for attr in ("predictedFeatureName", "predictedProbabilitiesName"):
        va, vb = getattr(a.description, attr), getattr(b.description, attr)
        if va != vb:
            out[attr] = [va, vb]
    la, lb = class_labels(a), class_labels(b)
    if la != lb:
        out["class_labels"] = {"count": [len(la or []), len(lb or [])],
                               "first_difference": _first_difference(la or [], lb or [])}
    return out


def _first_difference(xs, ys):
    for i, (x, y) in enumerate(zip(xs, ys)):
        if x != y:
            return {"index": i, "a": x, "b": y}
    if len(xs) != len(ys):
        i = min(len(xs), len(ys))
        return {"index": i, "a": xs[i] if i < len(xs) else None, "b": ys[i] if i < len(ys) else None}
    return None


def _metadata(a, b) -> dict:
    out: dict = {}
    ma, mb = a.description.metadata, b.description.metadata
    for attr in ("shortDescription", "author", "license", "versionString"):
        va, vb = getattr(ma, attr), getattr(mb, attr)
        if va != vb:
            out[attr] = [va, vb]
    ua, ub = dict(ma.userDefined), dict(mb.userDefined)
    user = {k: [ua.get(k), ub.get(k)] for k in sorted(set(ua) | set(ub)) if ua.get(k) != ub.get(k)}
    if user:
        out["userDefined"] = user
    descs = {}
    for role in ("input", "output"):
        fa, fb = _features(a.description, role), _features(b.description, role)
        for name in sorted(set(fa) & set(fb)):
            if fa[name].shortDescription != fb[name].shortDescription:
                descs[name] = [fa[name].shortDescription, fb[name].shortDescription]
    if descs:
        out["feature_descriptions"] = descs
    return out


# --------------------------------------------------------------------------- NeuralNetwork layers

def _nn_of(model):
    return getattr(model, model.WhichOneof("Type")) if model.WhichOneof("Type") in NN_TYPES else None


def _without_weights(layer):
    """The layer with its weights, nested layers (compared on their own), name and
    blobs cleared: what is left are its parameters."""
    from .nn.kinds import sub_networks
    from .weights import layer_weights

    bare = type(layer)()
    bare.CopyFrom(layer)
    for _, wp in layer_weights(bare):
        wp.Clear()
    for _, sub in sub_networks(bare):
        del sub.layers[:]
    bare.name = ""
    del bare.input[:]
    del bare.output[:]
    return bare


def _nn_weights(layer) -> dict:
    """path -> (storage, float32 values or None when they cannot be decoded, the message)."""
    from .nn.kinds import own_weights, weight_fields
    from .weights import decode, storage_kind

    out = {}
    try:
        fields = {f.path: f for f in weight_fields(layer)}
    except SpecSurgeryError:
        fields = {}
    for path, wp in own_weights(layer):      # a loop's body layers are diffed on their own
        storage = storage_kind(wp)
        f = fields.get(path)
        try:
            values = decode(wp, count=f.count if f else None, shape=f.shape if f else None,
                            channel_axis=f.channel_axis if f else 0, where=path).reshape(-1)
        except (SpecSurgeryError, ValueError):
            values = None
        out[path] = (storage, values, wp)
    return out


def _max_abs(wa: dict, wb: dict) -> tuple[bool, bool, Optional[float]]:
    """(values differ, storage differs, largest |a - b| over comparable fields)."""
    differ, storage, worst = False, False, None
    for path in sorted(set(wa) | set(wb)):
        sa, va, ma = wa.get(path, ("empty", None, None))
        sb, vb, mb = wb.get(path, ("empty", None, None))
        storage |= sa != sb
        if va is None or vb is None or va.shape != vb.shape:
            # values that cannot be decoded (a broken quantization) are compared as stored
            if not (va is None and vb is None and (ma == mb or sa == sb == "empty")):
                differ = True
            continue
        if va.size == 0:
            continue
        d = float(np.max(np.abs(va.astype(np.float64) - vb.astype(np.float64))))
        if d != 0.0 or np.any(np.isnan(va) != np.isnan(vb)):
            differ = True
        worst = d if worst is None else max(worst, d)
    return differ, storage, worst


def _layer_change(la, lb) -> tuple[list, Optional[float]]:
    what = []
    if la.WhichOneof("layer") != lb.WhichOneof("layer"):
        return ["kind"], None
    if list(la.input) != list(lb.input):
        what.append("inputs")
    if list(la.output) != list(lb.output):
        what.append("outputs")
    if _without_weights(la) != _without_weights(lb):
        what.append("params")
    differ, storage, worst = _max_abs(_nn_weights(la), _nn_weights(lb))
    if differ:
        what.append("weights")
    if storage:
        what.append("storage")
    return what, (worst if (differ or storage) else None)


# --------------------------------------------------------------------------- ML Program operations

def _ops(model, package):
    from .mil.program import iter_functions, iter_ops, main_block, op_name

    out = {}
    for fname, function in iter_functions(model):
        block = main_block(function)
        for op in iter_ops(block):
            key = f"{fname}:{op_name(op)}" if fname != "main" else op_name(op)
            out[key] = op
    return out


def _op_values(op, package) -> Optional[np.ndarray]:
    from .mil.program import const_value

    if not op.type.startswith("const"):
        return None
    try:
        return np.asarray(const_value(op, package), dtype=np.float64).reshape(-1)
    except Exception:       # a sub-byte or compressed constant we cannot decode: compare the message
        return None


def _op_change(oa, pa, ob, pb) -> tuple[list, Optional[float]]:
    if oa.type != ob.type:
        return ["kind"], None
    what = []
    ins_a = {k: list(v.arguments) for k, v in oa.inputs.items()}
    ins_b = {k: list(v.arguments) for k, v in ob.inputs.items()}
    if ins_a != ins_b:
        what.append("inputs")
    if [o.name for o in oa.outputs] != [o.name for o in ob.outputs] or \
            [o.type for o in oa.outputs] != [o.type for o in ob.outputs]:
        what.append("outputs")
    va, vb = _op_values(oa, pa), _op_values(ob, pb)
    worst = None
    if va is not None and vb is not None:
        if va.shape != vb.shape:
            what.append("weights")
        elif va.size:
            worst = float(np.max(np.abs(va - vb)))
            if worst != 0.0:
                what.append("weights")
        if {k: v for k, v in oa.attributes.items() if k != "val"} != \
                {k: v for k, v in ob.attributes.items() if k != "val"}:
            what.append("params")
    elif dict(oa.attributes) != dict(ob.attributes):
        what.append("weights" if oa.type.startswith("const") else "params")
    return what, worst


# --------------------------------------------------------------------------- top level

def _kind_of_model(model) -> str:
    kind = model_type(model) or "(none)"
    if kind == "linkedModel":
        return f"linkedModel({model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue})"
    return kind


def _stage_table(spec) -> dict:
    return {info.path: info for info in iter_models(spec)}


def diff(a, b) -> Diff:
    """The differences between models ``a`` and ``b`` (specs, paths, packages)."""
    ma, mb = io.load(a), io.load(b)
    sa, pa = io.split_model(ma)
    sb, pb = io.split_model(mb)
    out = Diff(interface=_interface(sa, sb), metadata=_metadata(sa, sb),
               spec_version=[int(sa.specificationVersion), int(sb.specificationVersion)])
    ta, tb = _stage_table(sa), _stage_table(sb)
    stages: dict = {}
    added = [p for p in tb if p not in ta]
    removed = [p for p in ta if p not in tb]
    if added:
        stages["added"] = [{"stage": p, "type": _kind_of_model(tb[p].model)} for p in added]
    if removed:
        stages["removed"] = [{"stage": p, "type": _kind_of_model(ta[p].model)} for p in removed]
    changed_stages = []
    for path in (p for p in ta if p in tb):
        xa, xb = ta[path].model, tb[path].model
        what = []
        if _kind_of_model(xa) != _kind_of_model(xb):
            what.append(f"type {_kind_of_model(xa)} -> {_kind_of_model(xb)}")
        elif xa.WhichOneof("Type") == "linkedModel" and xa.linkedModel != xb.linkedModel:
            what.append("link")
        if path and (_interface(xa, xb) or xa.specificationVersion != xb.specificationVersion):
            what.append("interface")
        if what:
            changed_stages.append({"stage": path or "(top)", "what": what})
        _diff_layers(out, path, xa, pa, xb, pb)
    if changed_stages:
        stages["changed"] = changed_stages
    out.stages = stages
    if sa.isUpdatable != sb.isUpdatable:
        out.other.append(f"isUpdatable {sa.isUpdatable} -> {sb.isUpdatable}")
    return out


def _diff_layers(out: Diff, stage: str, xa, pa, xb, pb) -> None:
    na, nb = _nn_of(xa), _nn_of(xb)
    if na is not None and nb is not None:
        la, lb = dict(iter_layers(na)), dict(iter_layers(nb))
        for name in lb:
            if name not in la:
                out.added.append({"name": name, "stage": stage, "kind": lb[name].WhichOneof("layer")})
        for name, layer in la.items():
            if name not in lb:
                out.removed.append({"name": name, "stage": stage, "kind": layer.WhichOneof("layer")})
                continue
            what, worst = _layer_change(layer, lb[name])
            if what:
                out.changed.append(LayerChange(name, stage, what, worst, layer.WhichOneof("layer") or ""))
        if [n for n in la if n in lb] != [n for n in lb if n in la]:
            out.other.append(f"layer order differs{' in ' + stage if stage else ''}")
        for attr in ("preprocessing", "arrayInputShapeMapping", "imageInputShapeMapping", "updateParams"):
            if getattr(na, attr) != getattr(nb, attr):
                out.other.append(f"{attr} differs{' in ' + stage if stage else ''}")
        return
    if xa.WhichOneof("Type") == "mlProgram" and xb.WhichOneof("Type") == "mlProgram":
        oa, ob = _ops(xa, pa), _ops(xb, pb)
        for name in ob:
            if name not in oa:
                out.added.append({"name": name, "stage": stage, "kind": ob[name].type})
        for name, op in oa.items():
            if name not in ob:
                out.removed.append({"name": name, "stage": stage, "kind": op.type})
                continue
            what, worst = _op_change(op, pa, ob[name], pb)
            if what:
                out.changed.append(LayerChange(name, stage, what, worst, op.type))
        return
    kind_a, kind_b = xa.WhichOneof("Type"), xb.WhichOneof("Type")
    if kind_a is not None and kind_a == kind_b and kind_a not in ("pipeline", "pipelineClassifier",
                                                                  "pipelineRegressor") \
            and getattr(xa, kind_a) != getattr(xb, kind_b):
        out.other.append(f"{kind_a} parameters differ{' in ' + stage if stage else ''}")


__all__ = ["diff", "Diff", "LayerChange"]
