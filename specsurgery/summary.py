"""What ``specsurgery inspect`` shows, as plain data.

:func:`summarize` walks the spec once (nested stages included) and returns a
JSON-ready dict; :func:`format_summary` turns it into text.  This path is kept
light on purpose: it needs protobuf and numpy only (no coremltools, no torch,
no networkx), so ``inspect`` on a 100 MB model starts in a fraction of a second.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Optional

from .io import MLPackage, load
from .units import human_bytes as _human
from .nn.kinds import layer_facts
from .spec import (
    NN_TYPES, PIPELINE_TYPES, class_labels, feature_to_json, iter_models, model_type, pipeline_of,
    stage_names,
)

_MIL_BITS = {1: ("bool", 8), 2: ("string", 8), 10: ("float16", 16), 11: ("float32", 32),
             12: ("float64", 64), 13: ("bfloat16", 16), 21: ("int8", 8), 22: ("int16", 16),
             23: ("int32", 32), 24: ("int64", 64), 25: ("int4", 4), 31: ("uint8", 8),
             32: ("uint16", 16), 33: ("uint32", 32), 34: ("uint64", 64), 35: ("uint4", 4),
             36: ("uint2", 2), 37: ("uint1", 1), 38: ("uint6", 6), 39: ("uint3", 3),
             40: ("float8e4m3fn", 8), 41: ("float8e5m2", 8)}


def _min_version(spec):
    """(minimum, reasons) from the validator's version rules, or (None, []) if unavailable."""
    try:
        from .check import min_spec_version
    except ImportError:
        try:
            from .check.versions import min_spec_version
        except ImportError:
            return None, []
    try:
        return min_spec_version(spec)
    except Exception as exc:  # a half-finished rule must not break inspect
        return None, [f"could not compute: {type(exc).__name__}: {exc}"]


def _metadata(spec) -> dict:
    md = spec.description.metadata
    out = {}
    for key in ("shortDescription", "versionString", "author", "license"):
        value = getattr(md, key)
        if value:
            out[key] = value
    if len(md.userDefined):
        out["userDefined"] = {k: md.userDefined[k] for k in sorted(md.userDefined)}
    return out


def _resolve(stub_spec, path: str, search_path, bundle, base) -> dict:
    """Resolution of one linked stub through :mod:`specsurgery.linked` (never raises)."""
    lm = stub_spec.linkedModel
    info = {"path": path, "file_name": "", "search_path": "", "resolved": None}
    if lm.WhichOneof("LinkType") == "linkedModelFile":
        info["file_name"] = lm.linkedModelFile.linkedModelFileName.defaultValue
        info["search_path"] = lm.linkedModelFile.linkedModelSearchPath.defaultValue
    try:
        found, tried = resolve_stub(stub_spec, search_path=search_path, base_dir=base, bundle=bundle)
    except Exception as exc:  # a bad search path must not break inspect
        info["note"] = " ".join(str(exc).split())
        return info
    if found is not None:
        info["resolved"] = str(found)
    else:
        info["tried"] = tried
    return info


def resolve_stub(stub_spec, *, search_path=None, base_dir=None, bundle=None):
    """(path or None, places tried) of a linked stub's target (see specsurgery.linked)."""
    from .linked import resolve_linked

    return resolve_linked(stub_spec, search_path=search_path, base_dir=base_dir, bundle=bundle)


def _program_summary(spec, package: Optional[MLPackage], top: bool = True) -> dict:
    prog = spec.mlProgram
    functions = []
    const_bytes: Counter = Counter()
    blob_refs: Counter = Counter()

    from .graph import block_storages

    def walk(block, counts):
        compressed = block_storages(block)
        for k, op in enumerate(block.operations):
            counts[op.type] += 1
            values = [v for k, v in op.attributes.items()
                      if v.WhichOneof("value") in ("blobFileValue", "immediateValue")]
            values += [b.value for a in op.inputs.values() for b in a.arguments
                       if b.WhichOneof("binding") == "value"]
            for v in values:
                t = v.type
                if t.WhichOneof("type") != "tensorType":
                    continue
                n = 1
                for d in t.tensorType.dimensions:
                    if d.WhichOneof("dimension") == "constant":
                        n *= int(d.constant.size)
                dtype, bits = _MIL_BITS.get(t.tensorType.dataType, (f"dtype{t.tensorType.dataType}", 8))
                nbytes = (n * bits + 7) // 8
                dtype = compressed.get(k, dtype)
                if v.WhichOneof("value") == "blobFileValue":
                    const_bytes[dtype] += nbytes
                    blob_refs[v.blobFileValue.fileName] += 1
                elif op.type.startswith(("const", "constexpr")) and nbytes >= 64:
                    const_bytes[dtype + " (inline)"] += nbytes
            for sub in op.blocks:
                walk(sub, counts)

    for fname in sorted(prog.functions):
        fn = prog.functions[fname]
        counts: Counter = Counter()
        opset = fn.opset or (sorted(fn.block_specializations)[0] if fn.block_specializations else "")
        block = fn.block_specializations.get(opset)
        if block is not None:
            walk(block, counts)
        functions.append({
            "name": fname, "opset": opset, "inputs": [i.name for i in fn.inputs],
            "outputs": list(block.outputs) if block is not None else [],
            "ops": sum(counts.values()), "op_counts": dict(sorted(counts.items())),
        })
    files = []
    if package is not None:
        # the top program owns the package's files; a pipeline stage lists the files it reads
        names = set(package.weights) if top else set()
        for ref in blob_refs:
            from .io import weight_key

            names.add(weight_key(ref))
        for key in sorted(names):
            wf = package.weights.get(key) or package.weight_file(key)
            files.append({"file": key, "size": wf.size, "missing": wf.missing,
                          "references": blob_refs.get("@model_path/" + key, 0)})
    else:
        for ref in sorted(blob_refs):
            files.append({"file": ref, "size": 0, "missing": True, "references": blob_refs[ref]})
    return {"functions": functions, "weight_files": files,
            "const_bytes": dict(sorted(const_bytes.items()))}


def _nn_summary(nn, with_layers: bool, path: str, shapes: Optional[dict]) -> tuple[dict, list]:
    kinds: Counter = Counter()
    storage_bytes: Counter = Counter()
    params = 0
    rows = []
    for layer in nn.layers:
        facts = layer_facts(layer)
        facts["kind"] = facts["kind"] or "(no kind)"
        kinds[facts["kind"]] += 1
        params += facts["parameters"]
        for w in facts["weights"]:
            if w["storage"] != "empty":
                storage_bytes[w["storage"]] += w["nbytes"]
        if with_layers:
            from .graph import key_params

            row = {"stage": path, "name": facts["name"], "kind": facts["kind"],
                   "category": facts["category"], "inputs": facts["inputs"], "outputs": facts["outputs"],
                   "params": key_params(layer), "parameters": facts["parameters"],
                   "weight_bytes": facts["weight_bytes"], "storage": facts["storage"]}
            if shapes:
                row["shapes"] = {b: list(shapes[b]) for b in facts["outputs"] if b in shapes}
            rows.append(row)
    out = {"layers": len(nn.layers), "layer_kinds": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
           "parameters": params, "weight_bytes": dict(sorted(storage_bytes.items()))}
    if len(nn.preprocessing):
        out["preprocessing"] = [p.featureName or "(all images)" for p in nn.preprocessing]
    return out, rows


#: networks whose inputs hold more elements than this are listed without inferred shapes:
#: the reference runtime materialises blobs while inferring (a 3x1000x1000 input means GBs)
MAX_INFER_ELEMENTS = 1 << 20


def _infer_shapes(spec) -> Optional[dict]:
    from .spec import feature_shape

    for f in spec.description.input:
        n = 1
        for d in feature_shape(f.type) or []:
            n *= max(1, int(d))
        if n > MAX_INFER_ELEMENTS:
            return None
    try:
        from .runtime import infer_shapes
    except ImportError:
        return None
    try:
        return infer_shapes(spec)
    except Exception:  # unsupported layer, flexible input...: listing without shapes
        return None


def summarize(model, *, layers: bool = False, search_path: Optional[str] = None,
              bundle: Optional[str] = None, source: Optional[str] = None) -> dict:
    """A JSON-ready summary of a model (see ``docs/inspect.md`` for the fields).

    ``layers`` adds one row per layer (name, kind, blobs, key parameters,
    weights, inferred output shapes when the runtime can infer them);
    ``search_path`` is used to resolve linked-model stubs.
    """
    if source is None and isinstance(model, (str, os.PathLike)):
        source = str(model)
    loaded = load(model)
    package = loaded if isinstance(loaded, MLPackage) else None
    spec = loaded.spec if package is not None else loaded
    base = None
    if source:
        base = str(Path(source).resolve().parent)
    elif package is not None and package.path is not None:
        base = str(package.path.parent)
    minimum, reasons = _min_version(spec)
    out = {
        "file": source,
        "model_type": model_type(spec),
        "spec_version": {"declared": int(spec.specificationVersion), "minimum": minimum, "reasons": reasons},
        "inputs": [feature_to_json(f) for f in spec.description.input],
        "outputs": [feature_to_json(f) for f in spec.description.output],
        "metadata": _metadata(spec),
    }
    if source and os.path.exists(source):
        from .io import file_size

        out["file_size"] = file_size(source)
    desc = spec.description
    if desc.predictedFeatureName:
        out["predicted_feature"] = desc.predictedFeatureName
    if desc.predictedProbabilitiesName:
        out["predicted_probabilities"] = desc.predictedProbabilitiesName
    labels = class_labels(spec)
    if labels:
        out["class_labels"] = {"count": len(labels), "first": [str(l) for l in labels[:10]]}
    if spec.isUpdatable:
        out["updatable"] = True
    if len(desc.functions):
        out["functions"] = [{"name": f.name, "inputs": [feature_to_json(x) for x in f.input],
                             "outputs": [feature_to_json(x) for x in f.output]} for f in desc.functions]
        out["default_function"] = desc.defaultFunctionName

    total_kinds: Counter = Counter()
    total_bytes: Counter = Counter()
    total_params = 0
    layer_rows = []
    linked = []
    stages = {}
    programs = {}
    for info in iter_models(spec):
        sub = info.model
        kind = model_type(sub)
        # the stage's own name (info.name is the path's last part, wrong for a name holding '/')
        name = stage_names(pipeline_of(info.parent))[info.index[-1]] if info.index else info.name
        node = {"path": info.path, "name": name, "type": kind,
                "spec_version": int(sub.specificationVersion),
                "inputs": [f.name for f in sub.description.input],
                "outputs": [f.name for f in sub.description.output], "stages": []}
        # keyed by stage index, not path: a stage name may hold '/' or repeat a sibling's
        stages[info.index] = node
        if info.index:
            stages[info.index[:-1]]["stages"].append(node)
        if kind in NN_TYPES:
            shapes = _infer_shapes(sub) if layers else None
            nn_out, rows = _nn_summary(getattr(sub, kind), layers, info.path, shapes)
            node.update({"layers": nn_out["layers"], "parameters": nn_out["parameters"]})
            total_kinds.update(nn_out["layer_kinds"])
            total_bytes.update(nn_out["weight_bytes"])
            total_params += nn_out["parameters"]
            layer_rows.extend(rows)
            if "preprocessing" in nn_out:
                node["preprocessing"] = nn_out["preprocessing"]
        elif kind == "linkedModel":
            res = _resolve(sub, info.path, search_path, bundle, base)
            node["linked"] = {k: v for k, v in res.items() if k != "path"}
            linked.append(res)
        elif kind == "mlProgram":
            prog = _program_summary(sub, package, top=info.path == "")
            node["ops"] = sum(f["ops"] for f in prog["functions"])
            programs[info.path] = prog
            for dtype, nbytes in prog["const_bytes"].items():
                total_bytes[dtype] += nbytes
        elif kind == "nonMaximumSuppression":
            from .ops.nms import detector_info

            node["nms"] = detector_info(sub)
        if kind in PIPELINE_TYPES:
            node["stage_names"] = stage_names(pipeline_of(sub))
    out["layers"] = {"count": sum(total_kinds.values()),
                     "by_kind": dict(sorted(total_kinds.items(), key=lambda kv: (-kv[1], kv[0])))}
    out["parameters"] = total_params
    out["weight_bytes"] = dict(sorted(total_bytes.items()))
    out["weight_bytes_total"] = sum(total_bytes.values())
    out["tree"] = stages[()]
    if linked:
        out["linked"] = linked
    if programs:
        out["ml_program"] = programs[""] if list(programs) == [""] else programs
    if layers:
        out["layer_list"] = layer_rows
    return out


# --------------------------------------------------------------------------- text

def nms_text(info: dict) -> str:
    """One line about an NMS stage (``ops.nms.detector_info``): classes, thresholds, override inputs."""
    parts = [f"{len(info['labels'])} classes", f"IoU {info['iou_threshold']:g}",
             f"confidence {info['confidence_threshold']:g}"]
    if info["per_class"]:
        parts.append("per class")
    inputs = [n for n in (info["iou_input"], info["confidence_input"]) if n]
    if inputs:
        parts.append("overridden by " + ", ".join(inputs))
    return ", ".join(parts)


def _tree_lines(node, prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    label = node["name"] or "(top)"
    extra = []
    if "layers" in node:
        extra.append(f"{node['layers']} layers")
    if "ops" in node:
        extra.append(f"{node['ops']} ops")
    if node.get("nms"):
        extra.append(nms_text(node["nms"]))
    if "linked" in node:
        lk = node["linked"]
        state = f"-> {lk['resolved']}" if lk.get("resolved") else "unresolved"
        extra.append(f"linked {lk['file_name']!r} search {lk['search_path'] or '.'!r} {state}")
    text = f"{label}: {node['type']} v{node['spec_version']}" + (f" ({', '.join(extra)})" if extra else "")
    if top:
        lines = [text]
        child_prefix = ""
    else:
        lines = [prefix + ("`-- " if last else "|-- ") + text]
        child_prefix = prefix + ("    " if last else "|   ")
    kids = node.get("stages", [])
    for i, kid in enumerate(kids):
        lines += _tree_lines(kid, child_prefix, i == len(kids) - 1, top=False)
    return lines


def format_summary(s: dict) -> str:
    """Human-readable text of a :func:`summarize` result."""
    lines = []
    title = s.get("file") or "<model>"
    lines.append(f"{title}")
    lines.append(f"  type:          {s['model_type']}")
    sv = s["spec_version"]
    minimum = "?" if sv["minimum"] is None else f"v{sv['minimum']}"
    lines.append(f"  spec version:  v{sv['declared']} declared, {minimum} minimum")
    for r in sv["reasons"][:5]:
        lines.append(f"                 {r}")
    if "file_size" in s:
        lines.append(f"  file size:     {_human(s['file_size'])}")
    if s.get("updatable"):
        lines.append("  updatable:     yes")
    for label, key in (("inputs", "inputs"), ("outputs", "outputs")):
        lines.append(f"  {label}:")
        if not s[key]:
            lines.append("    (none)")
        for f in s[key]:
            desc = f"  {f['description']}" if f.get("description") else ""
            lines.append(f"    {f['name']:<24} {f['type']}{desc}")
    if "functions" in s:
        lines.append(f"  functions (default {s.get('default_function')!r}):")
        for fn in s["functions"]:
            ins = ", ".join(f"{x['name']} {x['type']}" for x in fn["inputs"])
            outs = ", ".join(f"{x['name']} {x['type']}" for x in fn["outputs"])
            lines.append(f"    {fn['name']}: ({ins}) -> ({outs})")
    if "predicted_feature" in s:
        lines.append(f"  predicted:     {s['predicted_feature']}"
                     + (f", probabilities {s['predicted_probabilities']}" if "predicted_probabilities" in s else ""))
    if "class_labels" in s:
        cl = s["class_labels"]
        more = ", ..." if cl["count"] > len(cl["first"]) else ""
        lines.append(f"  class labels:  {cl['count']} ({', '.join(cl['first'])}{more})")
    md = s["metadata"]
    if md:
        lines.append("  metadata:")
        for k, v in md.items():
            if k == "userDefined":
                for uk, uv in v.items():
                    lines.append(f"    userDefined[{uk}] = {uv}")
            else:
                lines.append(f"    {k}: {' '.join(str(v).split())}")
    if s["layers"]["count"]:
        kinds = ", ".join(f"{k} {n}" for k, n in s["layers"]["by_kind"].items())
        lines.append(f"  layers:        {s['layers']['count']} ({kinds})")
        lines.append(f"  parameters:    {s['parameters']:,}")
    if s["weight_bytes"]:
        parts = ", ".join(f"{k} {_human(v)}" for k, v in s["weight_bytes"].items())
        lines.append(f"  weights:       {_human(s['weight_bytes_total'])} ({parts})")
    prog = s.get("ml_program")
    if prog:
        progs = prog if "functions" not in prog else {"": prog}
        for ppath, p in progs.items():
            where = f" ({ppath})" if ppath else ""
            lines.append(f"  ML Program{where}:")
            for fn in p["functions"]:
                top = ", ".join(f"{k} {n}" for k, n in sorted(fn["op_counts"].items(), key=lambda kv: (-kv[1], kv[0]))[:8])
                lines.append(f"    function {fn['name']} [{fn['opset']}]: {fn['ops']} ops ({top})")
            for wf in p["weight_files"]:
                state = "MISSING" if wf["missing"] else _human(wf["size"])
                lines.append(f"    weight file {wf['file']}: {state}")
    tree = s["tree"]
    if tree.get("stages"):
        lines.append("  pipeline:")
        lines += ["    " + line for line in _tree_lines(tree)]
    for lk in s.get("linked", []):
        state = f"resolved to {lk['resolved']}" if lk.get("resolved") else "not resolved"
        note = f" ({lk['note']})" if lk.get("note") else ""
        if lk.get("tried"):
            note = f" (tried {'; '.join(lk['tried'][:6])}{'; ...' if len(lk['tried']) > 6 else ''})"
        lines.append(f"  linked stage {lk['path']!r}: {lk['file_name']} via {lk['search_path'] or '.'!r}: {state}{note}")
    if "layer_list" in s:
        lines.append("  layer list:")
        for row in s["layer_list"]:
            name = f"{row['stage']}/{row['name']}" if row["stage"] else row["name"]
            params = " ".join(f"{k}={v}" for k, v in row["params"].items())
            io = f"{','.join(row['inputs'])} -> {','.join(row['outputs'])}"
            weights = f" {row['parameters']:,} params {_human(row['weight_bytes'])} {row['storage']}" if row["parameters"] else ""
            shape = ""
            if row.get("shapes"):
                shape = " " + " ".join("[" + ",".join(map(str, v)) + "]" for v in row["shapes"].values())
            lines.append(f"    {name:<28} {row['kind']:<16} {io}{(' ' + params) if params else ''}{weights}{shape}")
    return "\n".join(lines)


__all__ = ["summarize", "format_summary", "tree_text"]


# --------------------------------------------------------------------------- tree

_UNICODE = ("├── ", "└── ", "│   ", "    ")
_ASCII = ("|-- ", "`-- ", "|   ", "    ")


def tree_text(model, *, ascii: bool = False, layers: bool = True, title: Optional[str] = None) -> str:
    """The model as a deterministic text tree: pipeline, stages, layers (or ops).

    Needs no binary; the same spec always gives the same text.
    """
    tee, elbow, pipe, blank = _ASCII if ascii else _UNICODE
    loaded = load(model)
    package = loaded if isinstance(loaded, MLPackage) else None
    spec = loaded.spec if package is not None else loaded
    if title is None:
        title = str(model) if isinstance(model, (str, os.PathLike)) else "<model>"

    def head(sub, name):
        kind = model_type(sub)
        label = f"{name}: " if name else ""
        text = f"{label}{kind} v{sub.specificationVersion}"
        if kind == "nonMaximumSuppression":
            from .ops.nms import detector_info

            text += f" [{nms_text(detector_info(sub))}]"
        if kind == "linkedModel":
            lm = sub.linkedModel
            if lm.WhichOneof("LinkType") == "linkedModelFile":
                f = lm.linkedModelFile
                text += (f" -> {f.linkedModelFileName.defaultValue!r} "
                         f"(search path {f.linkedModelSearchPath.defaultValue or '.'!r})")
        return text

    def features(sub):
        ins = ", ".join(f.name for f in sub.description.input) or "-"
        outs = ", ".join(f.name for f in sub.description.output) or "-"
        return f"({ins}) -> ({outs})"

    def children(sub):
        """(label, subtree model or None) pairs below one model."""
        kind = model_type(sub)
        items = []
        pipe_msg = pipeline_of(sub)
        if pipe_msg is not None:
            for sname, stage in zip(stage_names(pipe_msg), pipe_msg.models):
                items.append((sname, stage))
        elif kind in NN_TYPES and layers:
            nn = getattr(sub, kind)
            for p in nn.preprocessing:
                which = p.WhichOneof("preprocessor") or "none"
                items.append((f"[preprocessing {p.featureName or '(all images)'}: {which}]", None))
            for layer in nn.layers:
                k = layer.WhichOneof("layer") or "(no kind)"
                items.append((f"{layer.name} [{k}] {', '.join(layer.input)} -> {', '.join(layer.output)}", None))
        elif kind == "mlProgram" and layers:
            prog = sub.mlProgram
            for fname in sorted(prog.functions):
                items.append((("function", fname, prog.functions[fname]), None))
        return items

    def op_lines(block, prefix):
        ops = list(block.operations)
        out = []
        for i, op in enumerate(ops):
            last = i == len(ops) - 1
            outs = ", ".join(o.name for o in op.outputs)
            ins = ", ".join(b.name for k in sorted(op.inputs) for b in op.inputs[k].arguments
                            if b.WhichOneof("binding") == "name")
            out.append(f"{prefix}{elbow if last else tee}{outs or '-'} = {op.type}({ins})")
            for sub_block in op.blocks:
                out += op_lines(sub_block, prefix + (blank if last else pipe))
        return out

    def walk(sub, prefix):
        out = []
        items = children(sub)
        for i, (label, child) in enumerate(items):
            last = i == len(items) - 1
            branch = elbow if last else tee
            deeper = prefix + (blank if last else pipe)
            if isinstance(label, tuple):
                _, fname, fn = label
                opset = fn.opset or (sorted(fn.block_specializations)[0] if fn.block_specializations else "")
                out.append(f"{prefix}{branch}function {fname} [{opset}]")
                block = fn.block_specializations.get(opset)
                if block is not None:
                    out += op_lines(block, deeper)
            elif child is None:
                out.append(f"{prefix}{branch}{label}")
            else:
                out.append(f"{prefix}{branch}{head(child, label)} {features(child)}")
                out += walk(child, deeper)
        return out

    lines = [f"{title}: {head(spec, '')} {features(spec)}"]
    lines += walk(spec, "")
    return "\n".join(lines)
