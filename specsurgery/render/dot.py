"""DOT text of a model's graph: layers, stages, linked stubs, ML Program ops.

The drawing is derived from :func:`specsurgery.graph.build_graph`: nodes that
compute something (layers, preprocessing, classifier steps, linked stubs,
opaque models, ML Program ops and their weight constants) become DOT nodes;
blobs and stage features become edges labelled with the blob name and its
inferred shape.  Pipeline stages are nested clusters titled with stage names.

The output is deterministic: node ids are the graph index's ids, nodes come in
spec order, edges sorted by (source, target) position, attributes sorted.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ..graph import GraphIndex, build_graph, q, weight_shapes
from ..io import MLPackage, load
from ..nn.kinds import KINDS
from ..spec import model_type
from ..units import human_bytes as _human

#: Fill colour per category (layer kinds: nn/kinds.py; ML Program ops: graph.mil_category).
CATEGORY_COLORS = {
    "Layer": "#cfe2f3", "Activation": "#f4cccc", "Pool": "#d9ead3", "Normalization": "#fff2cc",
    "Shape": "#e6e6e6", "Tensor": "#ead1dc", "Elementwise": "#d0e0e3", "Reduce": "#fce5cd",
    "Data": "#d9d2e9", "Control": "#f9cb9c", "Linked": "#b6d7a8", "Model": "#eeeeee",
}

#: node types that are drawn as nodes; everything else is an edge (pass-through)
DRAWN = {"layer", "preprocess", "classifier", "linked", "model", "op"}

CUT_COLORS = {"backbone": ("#1f5fbf", "#eef4fb"), "head": ("#c55a11", "#fdf1e7")}
HIGHLIGHT = "#d62728"
#: above this many drawn nodes, ``layout="auto"`` uses the built-in layered layout
#: (dot 2.43 needs minutes for thousands of nodes; see render/layout.py)
LAYERED_ABOVE = 400
SMALL_CONST_BYTES = 64   # const ops below this many bytes (pad types, strides...) are not drawn


def _quote(text: str) -> str:
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _attrs(d: dict) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in sorted(d.items())) + "]"


def _shape_text(shape) -> str:
    if shape is None:
        return ""
    return "x".join("?" if d is None else str(d) for d in shape)


def _infer(spec) -> dict:
    """Inferred blob shapes of one network; {} when the runtime cannot infer them
    (an unsupported layer, a flexible input, inputs too big to infer cheaply)."""
    from ..summary import _infer_shapes

    shapes = _infer_shapes(spec)
    return {k: tuple(v) for k, v in (shapes or {}).items() if v is not None}



def _nms_line(model) -> str:
    """A second label line for an NMS stage: classes and thresholds (empty for other models)."""
    if model is None or model_type(model) != "nonMaximumSuppression":
        return ""
    from ..ops.nms import detector_info
    from ..summary import nms_text

    return "\n" + nms_text(detector_info(model)).replace(", overridden", "\noverridden")

class _Drawing:
    """Collects nodes, clusters and edges, then prints DOT."""

    def __init__(self, gi: GraphIndex, *, rankdir: str, collapse, highlight, cut, expand_linked: bool,
                 search_path, bundle, base_dir, shapes: bool, title: Optional[str]):
        if rankdir not in ("TB", "LR", "BT", "RL"):
            raise SpecSurgeryError(f"rankdir {rankdir!r} is not one of TB, LR, BT, RL")
        if collapse not in (None, "blocks") and not (isinstance(collapse, int) and collapse >= 0):
            raise SpecSurgeryError(f"collapse {collapse!r}: use None, 'blocks' or a depth (int >= 0)")
        self.gi = gi
        self.rankdir = rankdir
        self.collapse = collapse
        self.title = title
        self.base_dir = base_dir
        self.g = gi.g.copy()                 # a copy: expansion rewires it
        self.models = {p: info.model for p, info in gi.models.items()}
        self.nets = {p: gi.net(p) for p in gi.nn_paths}
        self.linked_info: dict[str, dict] = {}
        self.missing_files = set()
        if gi.package is not None:
            for n, d in gi.g.nodes(data=True):
                for f in d.get("blob_files", ()):
                    if gi.package.weight_file(f).missing:
                        self.missing_files.add(f)
        self._resolve_linked(search_path, bundle, expand_linked)
        self.order = {n: i for i, n in enumerate(self.g.nodes)}
        self.shapes = {p: _infer(self.models[p]) for p in self.nets} if shapes else {}
        self.rep: dict[str, str] = {}        # graph node -> drawn id
        self.extra_nodes: dict[str, dict] = {}  # group / collapsed-stage nodes
        self.node_cluster: dict[str, tuple] = {}
        self.cluster_labels: dict[tuple, tuple] = {}
        self.cut_blobs: set = set()
        self.cut_path: Optional[str] = None
        self.cut_side: dict[str, str] = {}
        self.highlight_nodes: set = set()
        self.highlight_blobs: set = set()
        self._assign()
        if cut:
            self._apply_cut([cut] if isinstance(cut, str) else list(cut))
        if highlight:
            self._apply_highlight([highlight] if isinstance(highlight, str) else list(highlight))

    # ------------------------------------------------------------------ linked stubs
    def _resolve_linked(self, search_path, bundle, expand: bool) -> None:
        from ..summary import resolve_stub

        for nid, d in list(self.g.nodes(data=True)):
            if d.get("type") != "linked":
                continue
            path = d["path"]
            stub = self.models[path]
            try:
                found, tried = resolve_stub(stub, search_path=search_path, base_dir=self.base_dir, bundle=bundle)
            except Exception as exc:
                found, tried = None, [str(exc)]
            self.linked_info[path] = {"resolved": found, "tried": tried}
            if expand and found is not None:
                self._expand(nid, path, found)

    def _expand(self, nid: str, path: str, target_path: Path) -> None:
        """Replace the stub node by its target's graph, prefixed into the stub's stage path."""
        target = load(target_path)
        tg = build_graph(target)
        prefix = path
        g = self.g

        def re_path(p: str) -> str:
            return q(prefix, p) if p else prefix

        mapping = {}
        for n, d in tg.g.nodes(data=True):
            new_id = f"{nid}>{n}"
            mapping[n] = new_id
            attrs = dict(d)
            attrs["path"] = re_path(d.get("path", ""))
            attrs["expanded_from"] = path
            if d.get("type") in ("input", "output") and d.get("path") == "":
                attrs["type"] = "linked_" + d["type"]     # the target's interface: pass-through
            g.add_node(new_id, **attrs)
        for u, v, d in tg.g.edges(data=True):
            g.add_edge(mapping[u], mapping[v], **d)
        for p, info in tg.models.items():
            self.models[re_path(p)] = info.model
        for p in tg.nn_paths:
            self.nets[re_path(p)] = tg.net(p)
        # rewire: stub inputs -> target inputs, target outputs -> stub outputs
        for u, _, d in list(g.in_edges(nid, data=True)):
            target_in = mapping.get(f"input:{d['blob']}")
            if target_in is not None:
                g.add_edge(u, target_in, **d)
        for _, v, d in list(g.out_edges(nid, data=True)):
            target_out = mapping.get(f"output:{d['blob']}")
            if target_out is not None:
                g.add_edge(target_out, v, **d)
        g.remove_node(nid)
        self.linked_info[path]["expanded"] = True

    # ------------------------------------------------------------------ placement
    def _drawn(self, n: str, d: dict) -> bool:
        t = d.get("type")
        if t in ("input", "output"):
            return d.get("path") == ""
        if t == "op":
            if d["kind"].startswith(("const", "constexpr")) and d.get("kind") == "const":
                return d.get("weight_bytes", 0) >= SMALL_CONST_BYTES or d.get("blob_bytes", 0) > 0
            return True
        return t in DRAWN

    def _depth(self, path: str) -> int:
        return 0 if path == "" else path.count("/") + 1

    def _assign(self) -> None:
        g = self.g
        groups = self._block_groups() if self.collapse == "blocks" else {}
        depth_limit = self.collapse if isinstance(self.collapse, int) and not isinstance(self.collapse, bool) else None
        for n, d in g.nodes(data=True):
            if not self._drawn(n, d):
                continue
            path = d.get("path", "")
            if d.get("type") in ("input", "output"):
                self.rep[n] = n
                continue
            if depth_limit is not None and self._depth(path) >= depth_limit:
                # fold the whole model at the limit depth into one node
                parts = path.split("/") if path else []
                top = "/".join(parts[:depth_limit]) if depth_limit else ""
                sid = f"collapsed:{top}"
                if sid not in self.extra_nodes:
                    self.extra_nodes[sid] = {"path": top, "members": []}
                    self.node_cluster[sid] = self._cluster_key(top, None, parent_only=True)
                self.extra_nodes[sid]["members"].append(n)
                self.rep[n] = sid
                continue
            if n in groups:
                gid = groups[n]
                self.rep[n] = gid
                self.node_cluster.setdefault(gid, self._cluster_key(path, d))
                continue
            self.rep[n] = n
            self.node_cluster[n] = self._cluster_key(path, d)

    def _cluster_key(self, path: str, d: Optional[dict], parent_only: bool = False) -> tuple:
        """Cluster chain of a node: stage paths from the top, then function."""
        chain = []
        parts = path.split("/") if path else []
        upto = parts[:-1] if parent_only else parts
        for i in range(1, len(upto) + 1):
            chain.append(("stage", "/".join(upto[:i])))
        if d is not None and d.get("type") == "op":
            chain.append(("function", path, d.get("function", "")))
        return tuple(chain)

    # ------------------------------------------------------------------ collapse blocks
    def _block_groups(self) -> dict:
        """layer node -> group id for runs of identical blocks between articulation blobs."""
        out = {}
        for path, view in self.nets.items():
            if path not in self.gi._nets:   # expanded targets: fold with their own index
                continue
            try:
                order = self.gi.topological_layers(path)
                arts = self.gi.articulation_blobs(path, include_ends=True)
            except SpecSurgeryError:
                continue
            if not arts:
                continue
            art = set(arts)
            segments, current = [], []
            for name in order:
                current.append(name)
                layer = self.gi.layer(name, path)
                if any(o in art for o in layer.output):
                    segments.append(current)
                    current = []
            if current:
                segments.append(current)
            sig = [tuple(self.gi.layer(n, path).WhichOneof("layer") for n in seg) for seg in segments]
            i = 0
            while i < len(segments):
                # the period (in segments) whose repetition from i covers the most segments;
                # a unit must hold a real block (a segment of 2+ layers, i.e. with a branch)
                best_p, best_k = 0, 1
                for p in range(1, 5):
                    unit = sig[i:i + p]
                    if len(unit) < p or not any(len(u) > 1 for u in unit):
                        continue
                    k = 1
                    while sig[i + k * p:i + (k + 1) * p] == unit:
                        k += 1
                    if k >= 2 and k * p > best_k * best_p:
                        best_p, best_k = p, k
                if not best_p:
                    i += 1
                    continue
                run = segments[i:i + best_k * best_p]
                members = [m for seg in run for m in seg]
                gid = f"group:{q(path, members[0])}"
                kinds = tuple(k for u in sig[i:i + best_p] for k in u)
                self.extra_nodes[gid] = {"path": path, "members": [f"layer:{q(path, m)}" for m in members],
                                         "repeat": best_k, "kinds": kinds,
                                         "first": members[0], "last": members[-1]}
                for m in members:
                    out[f"layer:{q(path, m)}"] = gid
                i += best_k * best_p
        return out

    # ------------------------------------------------------------------ cut and highlight
    def _apply_cut(self, cuts: list) -> None:
        if not self.nets:
            kinds = sorted({model_type(m) or "?" for m in self.models.values()})
            raise UnsupportedError(
                f"cut preview needs a neural network; this model has {', '.join(kinds)} "
                "(for ML Programs use `specsurgery split` and render its outputs)")
        by_path: dict[str, list] = {}
        known = [b for v in self.nets.values() for b in v.blob_order]
        missing = [c for c in cuts if c not in known
                   and not ("/" in c and c.rsplit("/", 1)[0] in self.nets)]
        if missing:  # every unknown cut at once, not just the first
            raise NotFoundError(missing_message("blob", missing, known) + "; a cut names a blob of a "
                                "neural network (stage/blob inside pipelines)")
        for c in cuts:
            if "/" in c and c.rsplit("/", 1)[0] in self.nets:
                p, b = c.rsplit("/", 1)
            else:
                holders = [p for p, v in self.nets.items() if c in v.blob_order]
                if len(holders) > 1:
                    raise SpecSurgeryError(f"blob {c!r} exists in stages {', '.join(holders)}; "
                                           f"say which one: {holders[0]}/{c}")
                p, b = holders[0], c
            by_path.setdefault(p, []).append(b)
        if len(by_path) > 1:
            raise SpecSurgeryError(f"cut blobs lie in different networks ({', '.join(sorted(by_path))}); "
                                   "preview one split at a time")
        path, blobs = next(iter(by_path.items()))
        if path not in self.gi._nets:
            raise UnsupportedError(f"cannot preview a cut inside the expanded linked target {path!r}")
        view = self.gi.net(path)
        self.gi._check_blobs(view, blobs)
        backbone = set(self.gi.between(view.inputs, blobs, path))
        # the head must be computable from the cut blobs alone (raises naming the un-cut path)
        self.gi.between(blobs, view.outputs, path)
        self.cut_blobs = set(blobs)
        self.cut_path = path
        sizes = Counter()
        counts = Counter()
        for layer in view.layers:
            side = "backbone" if layer.name in backbone else "head"
            nid = f"layer:{q(path, layer.name)}"
            self.cut_side[nid] = side
            sizes[side] += self.g.nodes[nid]["weight_bytes"]
            counts[side] += 1
        self.cut_summary = {s: (counts[s], sizes[s]) for s in ("backbone", "head")}
        for nid, side in self.cut_side.items():
            if self.rep.get(nid) == nid:
                self.node_cluster[nid] = self.node_cluster[nid] + (("cut", path, side),)
            elif nid in self.rep and self.rep[nid] in self.extra_nodes:
                gid = self.rep[nid]
                base = self.node_cluster[gid]
                if not base or base[-1][0] != "cut":
                    self.node_cluster[gid] = base + (("cut", path, side),)

    def _apply_highlight(self, names: list) -> None:
        missing = []
        known = set()
        for name in names:
            hit = False
            for n, d in self.g.nodes(data=True):
                nm = d.get("name")
                if nm is None:
                    continue
                known.add(nm)
                full = q(d.get("path", ""), nm)
                if name in (nm, full) or (d.get("type") == "stage" and name == d.get("path")):
                    if d.get("type") == "blob":
                        self.highlight_blobs.add(n)
                    elif n in self.rep:
                        self.highlight_nodes.add(self.rep[n])
                    elif d.get("type") == "stage":
                        self.highlight_nodes.update(r for m, r in self.rep.items()
                                                    if self.g.nodes[m].get("path", "").startswith(d["path"]) and d["path"])
                    hit = True
            if not hit:
                missing.append(name)
        if missing:
            raise NotFoundError(missing_message("layer, blob or stage", missing, known))

    # ------------------------------------------------------------------ edges
    def _edges(self) -> dict:
        """(drawn u, drawn v) -> {"labels": [...], "cut": bool, "hl": bool}."""
        g = self.g
        edges: dict = {}
        for u in self.rep:
            ru = self.rep[u]
            for _, first, ed in g.out_edges(u, data=True):
                blob = ed.get("blob", "")
                label_node = first
                hl = first in self.highlight_blobs
                targets = []
                if first in self.rep:
                    targets.append(first)
                else:
                    stack, seen = [first], {first}
                    while stack:
                        x = stack.pop()
                        for y in g.successors(x):
                            if y in seen:
                                continue
                            seen.add(y)
                            if y in self.rep:
                                targets.append(y)
                            else:
                                if y in self.highlight_blobs:
                                    hl = True
                                stack.append(y)
                shape = self._blob_shape(label_node, blob)
                if not shape and g.nodes[u].get("type") in ("input", "output"):
                    shape = _shape_text(g.nodes[u].get("shape"))
                is_cut = self._is_cut(label_node, blob)
                view = self._multi_producer_view(u, label_node, blob)
                for v in targets:
                    rv = self.rep[v]
                    if rv == ru:
                        continue
                    if view is not None and not self._feeds(view, u, v, blob):
                        continue   # a blob written twice (copy, loop): v reads the other version
                    e = edges.setdefault((ru, rv), {"labels": [], "cut": False, "hl": False})
                    text = blob + (f"\n{shape}" if shape else "")
                    if text not in e["labels"]:
                        e["labels"].append(text)
                    e["cut"] = e["cut"] or is_cut
                    e["hl"] = e["hl"] or hl
        return edges

    def _multi_producer_view(self, u: str, blob_node: str, blob: str):
        """The network view when ``u`` is one of several layers writing ``blob``."""
        du, db = self.g.nodes[u], self.g.nodes[blob_node]
        if du.get("type") != "layer" or db.get("type") != "blob":
            return None
        view = self.nets.get(du.get("path", ""))
        if view is None or du.get("path") != db.get("path") or len(view.producers.get(blob, ())) < 2:
            return None
        return view

    def _feeds(self, view, u: str, v: str, blob: str) -> bool:
        dv = self.g.nodes[v]
        if dv.get("type") != "layer" or dv.get("path") != self.g.nodes[u].get("path"):
            return True
        return self.g.nodes[u]["index"] in view.producers_for(blob, dv["index"])

    def _blob_shape(self, node: str, blob: str) -> str:
        d = self.g.nodes[node]
        if d.get("shape") is not None and d.get("type") in ("blob", "input", "output", "linked_input",
                                                            "linked_output"):
            return _shape_text(d["shape"])
        if d.get("type") == "blob":
            shapes = self.shapes.get(d.get("path", ""))
            if shapes and blob in shapes:
                return _shape_text(shapes[blob])
        return ""

    def _is_cut(self, node: str, blob: str) -> bool:
        d = self.g.nodes[node]
        return bool(self.cut_blobs) and d.get("type") == "blob" and d.get("path") == self.cut_path \
            and blob in self.cut_blobs

    # ------------------------------------------------------------------ labels
    def _node_attrs(self, n: str) -> dict:
        if n in self.extra_nodes:
            return self._extra_attrs(n)
        d = self.g.nodes[n]
        t = d["type"]
        attrs = {"style": "rounded,filled"}
        if t == "input":
            attrs = {"shape": "invhouse", "style": "filled", "fillcolor": "#ffffff",
                     "label": f"{d['name']}\n{d.get('feature_type', '')}"}
        elif t == "output":
            attrs = {"shape": "house", "style": "filled", "fillcolor": "#ffffff",
                     "label": f"{d['name']}\n{d.get('feature_type', '')}"}
        elif t == "layer":
            attrs["fillcolor"] = CATEGORY_COLORS.get(d.get("category"), "#ffffff")
            attrs["label"] = self._layer_label(n, d)
            attrs["shape"] = "box"
        elif t == "preprocess":
            sc = d.get("scaler")
            text = "preprocess"
            if sc:
                text += f"\nscale {sc['channelScale']:.4g}"
                bias = [sc[k] for k in ("red", "green", "blue") if sc[k]]
                if bias:
                    text += " bias " + ",".join(f"{b:.3g}" for b in bias)
            elif d.get("mean_image"):
                text += f"\nmean image ({d['mean_image']} values)"
            attrs.update({"shape": "box", "fillcolor": CATEGORY_COLORS["Data"],
                          "label": f"{d['name']}\n{text}"})
        elif t == "classifier":
            attrs.update({"shape": "box", "fillcolor": CATEGORY_COLORS["Activation"],
                          "label": f"classifier\n{d.get('labels', 0)} labels"})
        elif t == "linked":
            info = self.linked_info.get(d["path"], {})
            state = f"resolved: {Path(info['resolved']).name}" if info.get("resolved") else "unresolved"
            attrs.update({"shape": "component", "fillcolor": CATEGORY_COLORS["Linked"],
                          "label": f"{d['name']}\nlinkedModel\n{d.get('file_name') or '(no file name)'}\n"
                                   f"search path: {d.get('search_path') or '.'}\n({state})"})
        elif t == "model":
            attrs.update({"shape": "box", "fillcolor": CATEGORY_COLORS["Model"],
                          "label": f"{d['name'] or 'model'}\n{d['kind']}" + _nms_line(self.models.get(d["path"]))})
        elif t == "op":
            attrs["fillcolor"] = CATEGORY_COLORS.get(d.get("category"), "#ffffff")
            attrs["shape"] = "box"
            lines = [d["name"], d["kind"]]
            if d.get("weight_bytes"):
                shape = ""
                for s in d.get("shapes", {}).values():
                    shape = _shape_text(s)
                    break
                lines.append(f"{shape + ' ' if shape else ''}{_human(d['weight_bytes'])} {d.get('storage', '')}".strip())
            gone = [f for f in d.get("blob_files", ()) if f in self.missing_files]
            if gone:
                lines.append("weights MISSING: " + ", ".join(f.rsplit("/", 1)[-1] for f in gone))
                attrs.update({"color": HIGHLIGHT, "style": "rounded,filled,dashed"})
            attrs["label"] = "\n".join(lines)
        if n in self.highlight_nodes:
            attrs.update({"color": HIGHLIGHT, "penwidth": "3"})
        side = self.cut_side.get(n)
        if side and n not in self.highlight_nodes:
            attrs.update({"color": CUT_COLORS[side][0], "penwidth": "2"})
        return attrs

    def _layer_msg(self, d: dict):
        view = self.nets.get(d["path"])
        if view is None:
            return None
        i = d.get("index")
        return view.layers[i] if i is not None and i < len(view.layers) else None

    def _layer_label(self, n: str, d: dict) -> str:
        lines = [d["name"]]
        kind = d.get("kind") or "?"
        kind = KINDS[kind].label if kind in KINDS else kind
        params = d.get("params") or {}
        bits = []
        if "fn" in params:
            kind = f"{kind} {params['fn']}"
        if "pool" in params:
            kind = f"{kind} {params['pool']}{' global' if params.get('global') else ''}"
        if "kernel" in params:
            bits.append(f"k{params['kernel']}")
        if "stride" in params:
            bits.append(f"s{params['stride']}")
        if "groups" in params:
            bits.append(f"g{params['groups']}")
        if "out_channels" in params:
            bits.append(f"{params.get('in_channels', '?')}->{params['out_channels']}ch")
        elif "channels" in params:
            bits.append(f"{params['channels']}ch")
        lines.append(kind + (" " + " ".join(bits) if bits else ""))
        if d.get("weight_bytes"):
            msg = self._layer_msg(d)
            ws = weight_shapes(msg) if msg is not None else {}
            wtext = ""
            if ws:
                key, shape = next(iter(ws.items()))
                wtext = f"{key[0].upper()} [{','.join(str(s) for s in shape)}] "
            lines.append(f"{wtext}{_human(d['weight_bytes'])} {d.get('storage', '')}".strip())
        return "\n".join(lines)

    def _extra_attrs(self, n: str) -> dict:
        e = self.extra_nodes[n]
        members = [self.g.nodes[m] for m in e["members"]]
        nbytes = sum(m.get("weight_bytes", 0) for m in members)
        storages = sorted({s for m in members for s in (m.get("storage") or "").split(",") if s})
        size = f"{_human(nbytes)} {','.join(storages)}".strip() if nbytes else ""
        if n.startswith("group:"):
            kinds = Counter(e["kinds"])
            text = ", ".join(f"{k}x{c}" if c > 1 else k for k, c in sorted(kinds.items()))
            label = (f"{e['repeat']}x block ({len(e['kinds'])} layers each)\n{text}\n"
                     f"{e['first']} .. {e['last']}" + (f"\n{size}" if size else ""))
            attrs = {"shape": "box3d", "style": "filled", "fillcolor": "#e8e8f8", "label": label}
        else:
            path = e["path"]
            spec = self.models.get(path)
            kind = model_type(spec) if spec is not None else "model"
            layers = sum(1 for m in members if m.get("type") == "layer")
            ops = sum(1 for m in members if m.get("type") == "op")
            count = f"{layers} layers" if layers else (f"{ops} ops" if ops else f"{len(members)} nodes")
            name = path.rsplit("/", 1)[-1] if path else (self.title or "model")
            label = f"{name}\n{kind}\n{count}" + (f"\n{size}" if size else "")
            attrs = {"shape": "box3d", "style": "filled", "fillcolor": CATEGORY_COLORS["Model"], "label": label}
        if n in self.highlight_nodes:
            attrs.update({"color": HIGHLIGHT, "penwidth": "3"})
        sides = {self.cut_side.get(m) for m in e["members"]} - {None}
        if len(sides) == 1 and n not in self.highlight_nodes:
            attrs.update({"color": CUT_COLORS[sides.pop()][0], "penwidth": "2"})
        return attrs

    def _cluster_attrs(self, key: tuple) -> dict:
        kind = key[0]
        if kind == "stage":
            path = key[1]
            spec = self.models.get(path)
            mtype = model_type(spec) if spec is not None else "?"
            name = path.rsplit("/", 1)[-1]
            label = f"{name}: {mtype} v{spec.specificationVersion if spec is not None else '?'}"
            style = {"style": "rounded", "color": "#777777"}
            info = self.linked_info.get(path)
            if info and info.get("expanded"):
                stub = self.gi.models[path].model if path in self.gi.models else None
                fname = stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue if stub is not None else ""
                label = (f"{name}: linkedModel -> {fname}\nexpanded from {Path(info['resolved']).name}")
                style = {"style": "rounded,dashed", "color": "#38761d", "penwidth": "2"}
            return {"label": label, "fontsize": "12", **style}
        if kind == "function":
            return {"label": f"function {key[2]}", "style": "rounded", "color": "#999999", "fontsize": "11"}
        if kind == "cut":
            side = key[2]
            n, nbytes = self.cut_summary[side]
            color, fill = CUT_COLORS[side]
            return {"label": f"{side}: {n} layers, {_human(nbytes)}", "style": "rounded,filled",
                    "color": color, "fillcolor": fill, "fontcolor": color, "fontsize": "12"}
        return {}

    # ------------------------------------------------------------------ output
    def text(self, layout: str = "auto") -> str:
        g = self.g
        drawn = sorted(set(self.rep.values()), key=self._pos)
        n_nodes = len(drawn)
        if layout not in ("auto", "dot", "layered"):
            raise SpecSurgeryError(f"layout {layout!r} is not one of auto, dot, layered")
        layered = layout == "layered" or (layout == "auto" and n_nodes > LAYERED_ABOVE)
        node_attrs = {n: self._node_attrs(n) for n in drawn}
        edges = self._edges()
        edge_order = sorted(edges, key=lambda e: (self._pos(e[0]), self._pos(e[1])))
        lines = ["digraph model {"]
        if layered:
            from .layout import edge_pos, layered_positions, node_size

            sizes = {n: node_size(node_attrs[n].get("label", n), node_attrs[n].get("shape", "box")) for n in drawn}
            pos, routes = layered_positions(drawn, edge_order, sizes, self.rankdir,
                                            edge_labels=any(e["labels"] for e in edges.values()),
                                            clusters={n: self.node_cluster.get(n, ()) for n in drawn})
            for n in drawn:
                x, y = pos[n]
                node_attrs[n]["pos"] = f"{x:.1f},{y:.1f}!"
            edge_extra = {}
            for (u, v) in edge_order:
                text, (lx, ly) = edge_pos(pos[u], routes.get((u, v), []), pos[v], sizes[u], sizes[v],
                                          self.rankdir)
                labels = edges[(u, v)]["labels"]
                width = max((len(line) for t in labels[:3] for line in t.split("\n")), default=0) * 4.6
                edge_extra[(u, v)] = {"pos": text, "lp": f"{lx + width / 2 + 4:.1f},{ly:.1f}"}
            lines.insert(0, "// specsurgery: layered layout (pinned positions); draw with `neato -n2`")
        else:
            edge_extra = {}
        gattrs = {"rankdir": self.rankdir, "fontname": "Helvetica", "compound": "true",
                  "newrank": "true", "nodesep": "0.25", "ranksep": "0.35"}
        title = self.title or ""
        if self.missing_files:
            title += ("\n" if title else "") + "missing weight files: " + ", ".join(sorted(self.missing_files))
        if title:
            gattrs.update({"label": title, "labelloc": "t", "fontsize": "14"})
        if layered:
            gattrs.update({"layout": "neato", "splines": "line", "outputorder": "edgesfirst",
                           "inputscale": "72"})
        lines.append(f"  graph {_attrs(gattrs)};")
        lines.append('  node [fontname="Helvetica", fontsize="10", margin="0.08,0.04"];')
        lines.append('  edge [fontname="Helvetica", fontsize="8", color="#555555", arrowsize="0.6"];')
        # inputs and outputs drawn apart, at the ends
        ins = [n for n in drawn if n in g and g.nodes[n].get("type") == "input"]
        outs = [n for n in drawn if n in g and g.nodes[n].get("type") == "output"]
        if ins:
            lines.append("  { rank=source; " + " ".join(_quote(n) + ";" for n in ins) + " }")
        if outs:
            lines.append("  { rank=sink; " + " ".join(_quote(n) + ";" for n in outs) + " }")
        # build the cluster tree
        tree: dict = {}
        for n in drawn:
            key = self.node_cluster.get(n, ())
            node = tree
            for part in key:
                node = node.setdefault(part, {})
            node.setdefault(None, []).append(n)
        counter = [0]

        def bbox(sub: dict, key) -> tuple:
            """Cluster box for pinned layouts (neato -n2 draws clusters from ``bb``)."""
            boxes = []
            for n in sub.get(None, []):
                x, y = pos[n]
                w, h = sizes[n]
                boxes.append((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
            for k in sub:
                if k is not None:
                    boxes.append(bbox(sub[k], k))
            x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            label = self._cluster_attrs(key).get("label", "")
            title_w = max((len(t) for t in label.split("\n")), default=0) * 6.5
            x1 = max(x1, x0 + title_w)
            return (x0 - 8, y0 - 8, x1 + 8, y1 + 8 + 15 * (label.count("\n") + 1))

        def emit(sub: dict, indent: str):
            for n in sub.get(None, []):
                lines.append(f"{indent}{_quote(n)} {_attrs(node_attrs[n])};")
            for key in sorted((k for k in sub if k is not None), key=lambda k: self._cluster_pos(sub[k])):
                counter[0] += 1
                lines.append(f"{indent}subgraph cluster_{counter[0]} {{")
                cattrs = self._cluster_attrs(key)
                if layered:
                    cattrs["bb"] = ",".join(f"{v:.1f}" for v in bbox(sub[key], key))
                for k, v in sorted(cattrs.items()):
                    lines.append(f"{indent}  {k}={_quote(v)};")
                emit(sub[key], indent + "  ")
                lines.append(f"{indent}}}")

        emit(tree, "  ")
        for (u, v) in edge_order:
            e = edges[(u, v)]
            labels = e["labels"]
            label = "\n".join(labels[:3]) + (f"\n(+{len(labels) - 3} more)" if len(labels) > 3 else "")
            attrs = {"label": label, **edge_extra.get((u, v), {})}
            if e["cut"]:
                attrs.update({"color": HIGHLIGHT, "penwidth": "2", "style": "dashed", "fontcolor": HIGHLIGHT,
                              "label": "cut: " + label})
            elif e["hl"]:
                attrs.update({"color": HIGHLIGHT, "penwidth": "2.5", "fontcolor": HIGHLIGHT})
            lines.append(f"  {_quote(u)} -> {_quote(v)} {_attrs(attrs)};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _pos(self, n: str) -> tuple:
        if n in self.extra_nodes:
            return min(self.order.get(m, 0) for m in self.extra_nodes[n]["members"]), n
        return self.order.get(n, 0), n

    def _cluster_pos(self, sub: dict) -> tuple:
        best = None
        for k, v in sub.items():
            p = min((self._pos(n) for n in v), default=None) if k is None else self._cluster_pos(v)
            if p is not None and (best is None or p < best):
                best = p
        return best or (0, "")


def to_dot(model, *, rankdir: str = "TB", collapse: Union[None, str, int] = None,
           highlight: Union[None, str, Sequence[str]] = None, cut: Union[None, str, Sequence[str]] = None,
           expand_linked: bool = False, search_path: Optional[str] = None, bundle=None,
           shapes: bool = True, title: Optional[str] = None, layout: str = "auto") -> str:
    """The DOT text of ``model`` (a spec, path, MLPackage or MLModel); deterministic.

    ``collapse``: ``"blocks"`` folds runs of identical blocks between
    articulation blobs (ResNet bottlenecks) into one node each; an int folds
    every stage nested at that depth or deeper into one node (0: the whole
    model).  ``highlight``: layer, blob or stage names to draw in red.
    ``cut``: blob(s) where a split would go; backbone and head become
    coloured clusters with their layer counts and weight bytes.
    ``expand_linked``: draw the target of each linked stub that the search
    path resolves (``search_path`` overrides the stubs' own; relative entries
    are relative to the model's folder, ``bundle`` is ``$BUNDLE_MAIN``).
    ``shapes``: label edges with shapes inferred by the reference runtime.
    ``layout``: ``"dot"`` lets Graphviz's dot place the nodes; ``"layered"``
    pins positions from a fast built-in layered layout (drawn by ``neato -n2``);
    ``"auto"`` (default) uses dot up to 400 drawn nodes, layered above.
    """
    base_dir = None
    if isinstance(model, (str, os.PathLike)):
        base_dir = str(Path(model).resolve().parent)
        if title is None:
            title = Path(model).name
    loaded = load(model)
    if isinstance(loaded, MLPackage) and base_dir is None and loaded.path is not None:
        base_dir = str(loaded.path.parent)
    gi = build_graph(loaded)
    drawing = _Drawing(gi, rankdir=rankdir, collapse=collapse, highlight=highlight, cut=cut,
                       expand_linked=expand_linked, search_path=search_path, bundle=bundle,
                       base_dir=base_dir, shapes=shapes, title=title)
    return drawing.text(layout)
