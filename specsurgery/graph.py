"""A graph index over a Core ML spec: a ``networkx.DiGraph`` view, rebuilt from the spec.

The spec stays the source of truth.  :func:`build_graph` walks it once and
returns a :class:`GraphIndex` whose ``g`` is a directed data-flow graph of the
whole model, nested pipeline stages included, plus a few per-network lookups
(producers, consumers, topological order, the layers between blobs, the blobs
where one cut splits a network).  After editing the spec, build a new index:
it takes milliseconds (a 2,000-layer network builds in well under a second).

Node ids (``path`` is the stage path, ``""`` for the top model, ``"a/b"`` for
stage ``b`` of the pipeline stage ``a``; ``q(path, name)`` is ``path/name``, or
just ``name`` at the top)::

    stage:<path>            every model, the top one included ("stage:")
    input:<q(path, name)>   a feature of a model's description.input
    output:<q(path, name)>  a feature of a model's description.output
    blob:<q(path, name)>    a blob of a neural network, or a feature of a
                            pipeline's shared namespace (re-produced
                            pipeline features get "blob:<..>@1", "@2", ...)
    layer:<q(path, name)>   a neural-network layer
    preprocess:<q(path, input)>  the image-to-tensor step of an image input
    classifier:<path>       a classifier's label/probability step
    linked:<path>           a linkedModel stub (file name, search path)
    model:<path>            any other model kind (GLM, tree ensemble, ...)
    function:<q(path, fn)>  an ML Program function (metadata only)
    op:<q(path, fn)>/<out>  an ML Program op, named by its first output
    blob:<q(path, fn)>/<v>  an ML Program value

Every node has ``type`` (the prefix above), ``path`` and ``name``; ``kind`` is
the layer kind, op type or model type; layers also carry ``category``,
``index`` (position in the spec) and the fields of
:func:`specsurgery.nn.kinds.layer_facts` (parameters, weight_bytes, storage,
weights); ops carry ``function``, ``block`` and ``weight_bytes``/``storage``
of their inline and blob-file constants.  Data edges run producer -> blob ->
consumer; ``stage:`` and ``function:`` nodes carry metadata and have no edges.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from .errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from .io import MLPackage, load
from .nn.kinds import KINDS, key_params, layer_facts, weight_fields
from .spec import (
    NN_TYPES, PIPELINE_TYPES, describe_type, feature_shape, iter_models, model_type, pipeline_of,
    stage_names,
)


def q(path: str, name: str) -> str:
    """``path/name``, or ``name`` for the top model (``path == ""``)."""
    return f"{path}/{name}" if path else name


def node_id(kind: str, path: str, name: str = "") -> str:
    """The node id of a ``kind`` node (see the module docstring)."""
    if kind in ("stage", "classifier", "linked", "model"):
        return f"{kind}:{path}"
    return f"{kind}:{q(path, name)}"


# --------------------------------------------------------------------------- key parameters

#: layer kind -> function(layer message member) -> dict of key parameters (for
#: labels and --layers); the functions live in the layer-kind table (nn/kinds.py).
KEY_PARAMS = {name: kind.params for name, kind in KINDS.items() if kind.params is not None}


def weight_shapes(layer) -> dict:
    """Declared C-order shapes of the main weights, from the layer-kind table
    (:func:`specsurgery.nn.weight_fields`): [out, in] for the matrix kinds,
    [outC, kC, kH, kW] for 2-d convolutions, the declared shape for a bias layer."""
    return {f.path: list(f.shape) for f in weight_fields(layer) if f.main and f.shape is not None}


# --------------------------------------------------------------------------- ML Program helpers

_MIL_CATEGORY_PREFIXES = (
    ("constexpr", "Data"), ("const", "Data"), ("conv", "Layer"), ("linear", "Layer"),
    ("matmul", "Layer"), ("einsum", "Layer"), ("lstm", "Layer"), ("gru", "Layer"), ("rnn", "Layer"),
    ("scaled_dot_product_attention", "Layer"),
    ("max_pool", "Pool"), ("avg_pool", "Pool"), ("l2_pool", "Pool"),
    ("batch_norm", "Normalization"), ("layer_norm", "Normalization"),
    ("instance_norm", "Normalization"), ("local_response_norm", "Normalization"),
    ("l2_norm", "Normalization"), ("reduce_", "Reduce"),
    ("reshape", "Shape"), ("transpose", "Shape"), ("squeeze", "Shape"), ("expand_dims", "Shape"),
    ("flatten", "Shape"), ("shape", "Shape"), ("space_to", "Shape"), ("depth_to", "Shape"),
    ("pixel_", "Shape"),
    ("concat", "Tensor"), ("split", "Tensor"), ("slice", "Tensor"), ("gather", "Tensor"),
    ("scatter", "Tensor"), ("pad", "Tensor"), ("tile", "Tensor"), ("stack", "Tensor"),
    ("upsample", "Tensor"), ("resize", "Tensor"), ("crop", "Tensor"), ("topk", "Tensor"),
    ("argsort", "Tensor"), ("band_part", "Tensor"), ("fill", "Tensor"), ("range", "Tensor"),
    ("cast", "Tensor"), ("identity", "Tensor"),
    ("add", "Elementwise"), ("sub", "Elementwise"), ("mul", "Elementwise"),
    ("real_div", "Elementwise"), ("floor_div", "Elementwise"), ("pow", "Elementwise"),
    ("maximum", "Elementwise"), ("minimum", "Elementwise"), ("equal", "Elementwise"),
    ("not_equal", "Elementwise"), ("less", "Elementwise"), ("greater", "Elementwise"),
    ("logical", "Elementwise"), ("select", "Elementwise"), ("mod", "Elementwise"),
    ("cond", "Control"), ("while", "Control"), ("random", "Data"),
)


def mil_category(op_type: str) -> str:
    """Category (as in ``render.dot.CATEGORY_COLORS``) of an ML Program op type."""
    for prefix, cat in _MIL_CATEGORY_PREFIXES:
        if op_type.startswith(prefix):
            return cat
    return "Activation"  # relu, sigmoid, softmax, gelu, tanh, clip, exp, sqrt ... are unary


#: MIL DataType enum value -> (name, bits per element)
MIL_DTYPES = {
    1: ("bool", 8), 2: ("string", 8), 10: ("float16", 16), 11: ("float32", 32), 12: ("float64", 64),
    13: ("bfloat16", 16), 21: ("int8", 8), 22: ("int16", 16), 23: ("int32", 32), 24: ("int64", 64),
    25: ("int4", 4), 31: ("uint8", 8), 32: ("uint16", 16), 33: ("uint32", 32), 34: ("uint64", 64),
    35: ("uint4", 4), 36: ("uint2", 2), 37: ("uint1", 1), 38: ("uint6", 6), 39: ("uint3", 3),
    40: ("float8e4m3fn", 8), 41: ("float8e5m2", 8),
}


def mil_tensor_info(value_type) -> tuple[Optional[str], Optional[list], int]:
    """(dtype name, shape or None, element count) of a MIL ValueType (tensors only)."""
    if value_type.WhichOneof("type") != "tensorType":
        return None, None, 0
    t = value_type.tensorType
    name = MIL_DTYPES.get(t.dataType, (f"dtype{t.dataType}", 8))[0]
    shape = []
    for dim in t.dimensions:
        if dim.WhichOneof("dimension") == "constant":
            shape.append(int(dim.constant.size))
        else:
            shape.append(None)
    count = 1
    for d in shape:
        count *= d if d is not None else 1
    return name, shape, count


def mil_value_bytes(value) -> tuple[int, Optional[str], str]:
    """(bytes, dtype, where) of a MIL constant Value: where is "blob" or "inline"."""
    where = "blob" if value.WhichOneof("value") == "blobFileValue" else "inline"
    dtype, shape, count = mil_tensor_info(value.type)
    if dtype is None:
        return 0, None, where
    bits = MIL_DTYPES.get(value.type.tensorType.dataType, ("", 8))[1]
    return (count * bits + 7) // 8, dtype, where


def _dtype_bits(dtype: Optional[str]) -> int:
    for name, bits in MIL_DTYPES.values():
        if name == dtype:
            return bits
    return 8


def mil_compression(op_type: str, values: dict) -> Optional[str]:
    """Storage name of a compressed-weight op (``lut4``, ``linear8``, ``sparse``), else None.

    ``values`` maps argument names (``lut``, ``indices``, ``data``...) to
    (dtype, shape) of their constants.
    """
    if op_type.startswith("constexpr_lut_to_dense"):
        idx, lut = values.get("indices"), values.get("lut")
        if idx and idx[0] and _dtype_bits(idx[0]) < 8:
            return f"lut{_dtype_bits(idx[0])}"
        if lut and lut[1]:
            shape = [d or 1 for d in lut[1]]
            n = shape[0] if len(shape) == 1 else shape[-2]      # iOS16 [P]; iOS18 [..., P, vector]
            if n > 0 and n & (n - 1) == 0:
                return f"lut{n.bit_length() - 1}"
        return "lut"
    if op_type.startswith("constexpr_affine_dequantize"):
        q = values.get("quantized_data")
        return f"linear{_dtype_bits(q[0]) if q else 8}"
    if op_type.startswith("constexpr_blockwise_shift_scale"):
        d = values.get("data")
        return f"linear{_dtype_bits(d[0]) if d else 8}"
    if "sparse" in op_type:
        return "sparse"
    if op_type.startswith("constexpr_cast"):
        return None
    return None


def block_storages(block) -> dict:
    """{op position: storage name} for compressed weights in one MIL block.

    A ``constexpr_*`` op names its own storage; a ``const`` that feeds one by
    name (iOS 18 style) gets the storage of the op it feeds.
    """
    consts = {}
    for op in block.operations:
        if op.type == "const" and "val" in op.attributes and len(op.outputs):
            dtype, shape, _ = mil_tensor_info(op.attributes["val"].type)
            consts[op.outputs[0].name] = (dtype, shape)
    out, feeds = {}, {}
    for k, op in enumerate(block.operations):
        if not op.type.startswith("constexpr"):
            continue
        values, names = {}, []
        for name in op.attributes:
            value = op.attributes[name]
            if value.WhichOneof("value") in ("blobFileValue", "immediateValue"):
                values[name] = mil_tensor_info(value.type)[:2]
        for arg in op.inputs:
            for binding in op.inputs[arg].arguments:
                if binding.WhichOneof("binding") == "value":
                    values[arg] = mil_tensor_info(binding.value.type)[:2]
                elif binding.name in consts:
                    values[arg] = consts[binding.name]
                    names.append(binding.name)
        storage = mil_compression(op.type, values)
        if storage:
            out[k] = storage
            for n in names:
                feeds[n] = storage
    for k, op in enumerate(block.operations):
        if op.type == "const" and len(op.outputs) and op.outputs[0].name in feeds:
            out[k] = feeds[op.outputs[0].name]
    return out


def _iter_op_constants(op):
    """Every constant Value of an op: attributes (``val`` of const) and inline inputs."""
    for name in sorted(op.attributes):
        value = op.attributes[name]
        if value.WhichOneof("value") in ("blobFileValue", "immediateValue") and name != "name":
            yield name, value
    for arg_name in sorted(op.inputs):
        for binding in op.inputs[arg_name].arguments:
            if binding.WhichOneof("binding") == "value":
                yield arg_name, binding.value


#: control-flow layers and the nested networks whose blobs they read and write
CONTROL_FLOW_NETS = {name: tuple(field for _, field in kind.networks)
                     for name, kind in KINDS.items() if kind.networks}


def _layer_blobs(layer) -> tuple[list, list]:
    """(blobs read, blobs written) by a layer, nested branch/loop networks included.

    A loop body updates outer blobs through ``copy`` layers and lists no
    outputs of its own, so its writes are what its nested layers write; its
    reads are what they read before writing it (plus the loop's condition).
    """
    kind = layer.WhichOneof("layer")
    if kind not in CONTROL_FLOW_NETS:
        return list(layer.input), list(layer.output)
    reads, writes = list(layer.input), list(layer.output)
    msg = getattr(layer, kind)
    produced: set = set()
    for sub in CONTROL_FLOW_NETS[kind]:
        if not msg.HasField(sub):
            continue
        for inner in getattr(msg, sub).layers:
            r, w = _layer_blobs(inner)
            reads += [b for b in r if b not in produced and b not in reads]
            produced.update(w)
            writes += [b for b in w if b not in writes]
        if kind == "branch":
            produced = set()          # the two branches are alternatives
    if kind == "loop" and msg.conditionVar and msg.conditionVar not in produced \
            and msg.conditionVar not in reads:
        reads.append(msg.conditionVar)
    return reads, writes


# --------------------------------------------------------------------------- the index

@dataclass
class _NetView:
    """Per-network lookups (plain dicts, built once from the spec)."""

    path: str
    model_type: str
    layers: list                    # NeuralNetworkLayer messages, spec order
    index: dict                     # layer name -> position
    producers: dict                 # blob -> [layer position]
    consumers: dict                 # blob -> [layer position]
    inputs: list                    # model input blob names
    outputs: list                   # model output names produced by layers (or classifier source)
    blob_order: list                # blobs in order of first appearance
    classifier_source: Optional[str] = None
    reads: list = field(default_factory=list)    # per layer: blobs read (nested networks included)
    writes: list = field(default_factory=list)   # per layer: blobs written (nested networks included)

    def producers_for(self, blob: str, consumer: Optional[int], *, latest: bool = True) -> list:
        """Producers of ``blob`` as seen by layer ``consumer``.

        A blob re-written by ``copy`` or a loop body has several producers;
        the consumer reads the version of the last one listed before it
        (``latest``), or, for ordering, must wait for all listed before it.
        Outputs (``consumer`` None) see the last producer; out-of-order specs
        fall back to every producer.
        """
        prods = self.producers.get(blob, [])
        if len(prods) < 2:
            return prods
        if consumer is None:
            return [prods[-1]] if latest else prods
        earlier = [p for p in prods if p < consumer]
        if not earlier:
            return prods
        return [max(earlier)] if latest else earlier


class GraphIndex:
    """A read-only graph view of a spec (see the module docstring for node ids).

    ``spec`` is the root ``Model_pb2.Model``, ``package`` the :class:`MLPackage`
    (or None), ``g`` the ``networkx.DiGraph``, ``models`` maps stage paths to
    :class:`specsurgery.spec.ModelInfo`.
    """

    def __init__(self, spec, package: Optional[MLPackage] = None):
        self.spec = spec
        self.package = package
        import networkx as nx

        self.g = nx.DiGraph()
        self.models = {}
        self._nets: dict[str, _NetView] = {}
        self._build()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        for info in iter_models(self.spec):
            self.models[info.path] = info
        self._add_model(self.spec, "", "", ())

    def _add_model(self, spec, path: str, name: str, index: tuple) -> None:
        g = self.g
        kind = model_type(spec) or "<none>"
        desc = spec.description
        g.add_node(node_id("stage", path), type="stage", path=path, name=name, kind=kind,
                   index=index, spec_version=int(spec.specificationVersion))
        for f in desc.input:
            g.add_node(node_id("input", path, f.name), type="input", path=path, name=f.name,
                       kind=f.type.WhichOneof("Type"), feature_type=describe_type(f.type),
                       shape=feature_shape(f.type))
        for f in desc.output:
            g.add_node(node_id("output", path, f.name), type="output", path=path, name=f.name,
                       kind=f.type.WhichOneof("Type"), feature_type=describe_type(f.type),
                       shape=feature_shape(f.type))
        if kind in NN_TYPES:
            self._add_nn(spec, path, kind)
        elif kind in PIPELINE_TYPES:
            self._add_pipeline(spec, path, index)
        elif kind == "mlProgram":
            self._add_program(spec, path)
        else:
            nid = node_id("linked" if kind == "linkedModel" else "model", path)
            attrs = {"type": "linked" if kind == "linkedModel" else "model", "path": path,
                     "name": name, "kind": kind, "category": "Linked" if kind == "linkedModel" else "Model"}
            if kind == "linkedModel":
                lm = spec.linkedModel
                if lm.WhichOneof("LinkType") == "linkedModelFile":
                    attrs["file_name"] = lm.linkedModelFile.linkedModelFileName.defaultValue
                    attrs["search_path"] = lm.linkedModelFile.linkedModelSearchPath.defaultValue
                else:
                    attrs["file_name"], attrs["search_path"] = "", ""
            g.add_node(nid, **attrs)
            for f in desc.input:
                g.add_edge(node_id("input", path, f.name), nid, blob=f.name)
            for f in desc.output:
                g.add_edge(nid, node_id("output", path, f.name), blob=f.name)

    def _add_nn(self, spec, path: str, kind: str) -> None:
        g = self.g
        nn = getattr(spec, kind)
        desc = spec.description
        layers = list(nn.layers)
        producers: dict[str, list] = {}
        consumers: dict[str, list] = {}
        order: list[str] = []
        seen = set()

        def blob(name):
            if name not in seen:
                seen.add(name)
                order.append(name)
                g.add_node(f"blob:{q(path, name)}", type="blob", path=path, name=name)
            return f"blob:{q(path, name)}"

        inputs = [f.name for f in desc.input]
        image_inputs = {f.name for f in desc.input if f.type.WhichOneof("Type") == "imageType"}
        prep = {p.featureName: p for p in nn.preprocessing}
        for name in inputs:
            b = blob(name)
            g.nodes[b]["model_input"] = True
            src = node_id("input", path, name)
            if name in image_inputs:
                pid = node_id("preprocess", path, name)
                p = prep.get(name) or prep.get("")
                attrs = {"type": "preprocess", "path": path, "name": name, "kind": "preprocess",
                         "category": "Data"}
                if p is not None:
                    which = p.WhichOneof("preprocessor")
                    if which == "scaler":
                        s = p.scaler
                        attrs["scaler"] = {"channelScale": s.channelScale or 1.0, "red": s.redBias,
                                           "green": s.greenBias, "blue": s.blueBias, "gray": s.grayBias}
                    elif which == "meanImage":
                        attrs["mean_image"] = len(p.meanImage.meanImage)
                g.add_node(pid, **attrs)
                g.add_edge(src, pid, blob=name)
                g.add_edge(pid, b, blob=name)
            else:
                g.add_edge(src, b, blob=name)

        index = {}
        reads, writes = [], []
        for i, layer in enumerate(layers):
            lname = layer.name
            index.setdefault(lname, i)
            lid = f"layer:{q(path, lname)}"
            if lid in g:  # duplicate layer names: keep them apart, flagged
                lid = f"layer:{q(path, lname)}#{i}"
            facts = layer_facts(layer)
            facts["type"] = "layer"
            facts["path"] = path
            facts["index"] = i
            facts["params"] = key_params(layer)
            g.add_node(lid, **facts)
            r, w = _layer_blobs(layer)
            reads.append(r)
            writes.append(w)
            for bname in r:
                g.add_edge(blob(bname), lid, blob=bname)
                consumers.setdefault(bname, []).append(i)
            for bname in w:
                g.add_edge(lid, blob(bname), blob=bname)
                producers.setdefault(bname, []).append(i)

        outputs = []
        classifier_source = None
        if kind == "neuralNetworkClassifier":
            special = {desc.predictedFeatureName, desc.predictedProbabilitiesName} - {""}
            src_name = nn.labelProbabilityLayerName or (layers[-1].output[0] if layers and len(layers[-1].output) else "")
            cid = node_id("classifier", path)
            labels = nn.WhichOneof("ClassLabels")
            n_labels = len(getattr(nn, labels).vector) if labels else 0
            g.add_node(cid, type="classifier", path=path, name="classifier", kind="classifier",
                       category="Activation", labels=n_labels, source=src_name)
            if src_name:
                g.add_edge(blob(src_name), cid, blob=src_name)
                classifier_source = src_name
            for f in desc.output:
                if f.name in special and f.name not in producers:
                    g.add_edge(cid, node_id("output", path, f.name), blob=f.name)
                else:
                    g.add_edge(blob(f.name), node_id("output", path, f.name), blob=f.name)
                    outputs.append(f.name)
            if classifier_source and classifier_source not in outputs:
                outputs.append(classifier_source)
        else:
            for f in desc.output:
                g.add_edge(blob(f.name), node_id("output", path, f.name), blob=f.name)
                outputs.append(f.name)
        for name in order:
            if name not in producers and name not in inputs:
                g.nodes[f"blob:{q(path, name)}"]["undefined"] = True
        self._nets[path] = _NetView(path, kind, layers, index, producers, consumers, inputs,
                                    outputs, order, classifier_source, reads, writes)

    def _add_pipeline(self, spec, path: str, index: tuple) -> None:
        g = self.g
        pipe = pipeline_of(spec)
        current: dict[str, str] = {}   # feature name -> newest node id in the namespace
        versions: dict[str, int] = {}

        def produce(name):
            n = versions.get(name, -1) + 1
            versions[name] = n
            nid = f"blob:{q(path, name)}" + (f"@{n}" if n else "")
            g.add_node(nid, type="blob", path=path, name=name, pipeline=True)
            current[name] = nid
            return nid

        for f in spec.description.input:
            g.add_edge(node_id("input", path, f.name), produce(f.name), blob=f.name)
        for i, (sname, stage) in enumerate(zip(stage_names(pipe), pipe.models)):
            spath = q(path, sname)
            self._add_model(stage, spath, sname, index + (i,))
            for f in stage.description.input:
                src = current.get(f.name)
                if src is None:  # unresolved stage input: flagged, still drawn
                    src = produce(f.name)
                    g.nodes[src]["undefined"] = True
                g.add_edge(src, node_id("input", spath, f.name), blob=f.name)
            for f in stage.description.output:
                g.add_edge(node_id("output", spath, f.name), produce(f.name), blob=f.name)
        for f in spec.description.output:
            src = current.get(f.name)
            if src is None:
                src = produce(f.name)
                g.nodes[src]["undefined"] = True
            g.add_edge(src, node_id("output", path, f.name), blob=f.name)

    def _add_program(self, spec, path: str) -> None:
        g = self.g
        prog = spec.mlProgram
        desc = spec.description
        default_fn = desc.defaultFunctionName or ("main" if "main" in prog.functions else
                                                  (sorted(prog.functions)[0] if prog.functions else ""))
        for fname in sorted(prog.functions):
            fn = prog.functions[fname]
            fpath = q(path, fname)
            opset = fn.opset or (sorted(fn.block_specializations)[0] if fn.block_specializations else "")
            g.add_node(node_id("function", path, fname), type="function", path=path, name=fname,
                       kind="function", opset=opset, default=(fname == default_fn))
            for inp in fn.inputs:
                dtype, shape, _ = mil_tensor_info(inp.type)
                g.add_node(f"blob:{fpath}/{inp.name}", type="blob", path=path, name=inp.name,
                           function=fname, dtype=dtype, shape=shape, model_input=True)
            block = fn.block_specializations.get(opset)
            if block is None and fn.block_specializations:
                block = fn.block_specializations[sorted(fn.block_specializations)[0]]
            if block is None:
                continue
            self._add_block(block, path, fname, "")
            if fname == default_fn:
                for f in desc.input:
                    bid = f"blob:{fpath}/{f.name}"
                    if bid in g:
                        g.add_edge(node_id("input", path, f.name), bid, blob=f.name)
                outs = list(block.outputs)
                names = [f.name for f in desc.output]
                for j, oname in enumerate(names):
                    src = oname if oname in outs else (outs[j] if j < len(outs) else oname)
                    bid = f"blob:{fpath}/{src}"
                    if bid not in g:
                        g.add_node(bid, type="blob", path=path, name=src, function=fname, undefined=True)
                    g.add_edge(bid, node_id("output", path, oname), blob=src)

    def _add_block(self, block, path: str, fname: str, bpath: str) -> None:
        g = self.g
        fpath = q(path, fname)
        compressed = block_storages(block)
        for k, op in enumerate(block.operations):
            first = op.outputs[0].name if len(op.outputs) else f"{op.type}_{bpath}{k}"
            oid = f"op:{fpath}/{first}"
            if oid in g:
                oid = f"{oid}#{bpath}{k}"
            nbytes, storages, blob_bytes, files = 0, set(), 0, set()
            for _, value in _iter_op_constants(op):
                b, dtype, where = mil_value_bytes(value)
                if where == "blob":
                    files.add(value.blobFileValue.fileName)
                if op.type.startswith(("const", "constexpr")) or where == "blob" or b >= 64:
                    nbytes += b
                    if where == "blob":
                        blob_bytes += b
                    if dtype:
                        storages.add(dtype)
            out_shapes = {}
            for o in op.outputs:
                dtype, shape, _ = mil_tensor_info(o.type)
                out_shapes[o.name] = shape
            g.add_node(oid, type="op", path=path, name=first, kind=op.type, function=fname,
                       block=bpath, category=mil_category(op.type), weight_bytes=nbytes,
                       blob_bytes=blob_bytes, blob_files=sorted(files),
                       storage=compressed.get(k) or ",".join(sorted(storages)),
                       inputs=[b.name for a in op.inputs.values() for b in a.arguments
                               if b.WhichOneof("binding") == "name"],
                       outputs=[o.name for o in op.outputs], shapes=out_shapes)
            for arg_name in sorted(op.inputs):
                for binding in op.inputs[arg_name].arguments:
                    if binding.WhichOneof("binding") != "name":
                        continue
                    bid = f"blob:{fpath}/{binding.name}"
                    if bid not in g:
                        g.add_node(bid, type="blob", path=path, name=binding.name, function=fname,
                                   undefined=True)
                    g.add_edge(bid, oid, blob=binding.name, arg=arg_name)
            for o in op.outputs:
                dtype, shape, _ = mil_tensor_info(o.type)
                bid = f"blob:{fpath}/{o.name}"
                g.add_node(bid, type="blob", path=path, name=o.name, function=fname, dtype=dtype,
                           shape=shape)
                g.add_edge(oid, bid, blob=o.name)
            for j, sub in enumerate(op.blocks):
                for inp in sub.inputs:
                    bid = f"blob:{fpath}/{inp.name}"
                    if bid not in g:
                        g.add_node(bid, type="blob", path=path, name=inp.name, function=fname)
                self._add_block(sub, path, fname, f"{bpath}{first}[{j}]/")

    # ------------------------------------------------------------------ lookups
    def net(self, path: str = "") -> _NetView:
        """The per-network lookups of the neural network at ``path``."""
        view = self._nets.get(path)
        if view is not None:
            return view
        if path not in self.models:
            raise NotFoundError(missing_message("stage path", [path], [p for p in self.models if p]))
        kind = model_type(self.models[path].model)
        nets = sorted(p or '""' for p in self._nets)
        hint = f"; neural networks in this model: {', '.join(nets)}" if nets else ""
        where = f"stage {path!r}" if path else "the top model"
        raise UnsupportedError(f"{where} is a {kind}, not a neural network (expected one of "
                               f"{', '.join(NN_TYPES)}){hint}")

    @property
    def nn_paths(self) -> list[str]:
        """Stage paths of every neural network in the model, in stage order."""
        return [p for p in self.models if p in self._nets]

    def layer(self, name: str, path: str = ""):
        """The ``NeuralNetworkLayer`` message named ``name`` (the spec's own message)."""
        view = self.net(path)
        i = view.index.get(name)
        if i is None:
            raise NotFoundError(missing_message("layer", [name], view.index, path or ""))
        return view.layers[i]

    def layer_node(self, name: str, path: str = "") -> dict:
        """Attributes of a layer's node (kind, category, facts, params)."""
        self.layer(name, path)
        return self.g.nodes[f"layer:{q(path, name)}"]

    def blobs(self, path: str = "") -> list[str]:
        """Blob names of the network at ``path`` in order of first appearance."""
        return list(self.net(path).blob_order)

    def _check_blobs(self, view: _NetView, names: Sequence[str], what: str = "blob") -> None:
        known = set(view.blob_order)
        missing = [n for n in names if n not in known]
        if missing:
            raise NotFoundError(missing_message(what, missing, view.blob_order, view.path or ""))

    def producers(self, blob: str, path: str = "") -> list[str]:
        """Names of the layers that write ``blob`` (empty for a model input)."""
        view = self.net(path)
        self._check_blobs(view, [blob])
        return [view.layers[i].name for i in view.producers.get(blob, [])]

    def consumers(self, blob: str, path: str = "") -> list[str]:
        """Names of the layers that read ``blob``, in spec order."""
        view = self.net(path)
        self._check_blobs(view, [blob])
        return [view.layers[i].name for i in view.consumers.get(blob, [])]

    # ------------------------------------------------------------------ order
    def _topo_positions(self, view: _NetView) -> list[int]:
        """Layer positions in topological order; spec order breaks ties.

        A blob produced several times (``copy`` layers in branches) makes
        every consumer wait for every producer listed before it in the spec.
        """
        n = len(view.layers)
        indeg = [0] * n
        succ: list[list[int]] = [[] for _ in range(n)]
        for i in range(n):
            deps = set()
            for b in view.reads[i]:
                for p in view.producers_for(b, i, latest=False):
                    if p != i:
                        deps.add(p)
            for p in deps:
                succ[p].append(i)
                indeg[i] += 1
        heap = [i for i in range(n) if indeg[i] == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for j in succ[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(heap, j)
        if len(order) < n:
            left = [i for i in range(n) if indeg[i] > 0]
            raise SpecSurgeryError(self._describe_cycle(view, left))
        return order

    def _describe_cycle(self, view: _NetView, left: list[int]) -> str:
        import networkx as nx

        sub = nx.DiGraph()
        for i in left:
            for b in view.reads[i]:
                for p in view.producers_for(b, i, latest=False):
                    if p in left and p != i:
                        sub.add_edge(p, i, blob=b)
        try:
            cycle = nx.find_cycle(sub)
            parts = [f"{view.layers[u].name} -[{sub.edges[u, v]['blob']}]-> " for u, v in cycle]
            text = "".join(parts) + view.layers[cycle[0][0]].name
        except nx.NetworkXNoCycle:  # pragma: no cover - indeg says there is one
            text = ", ".join(view.layers[i].name for i in left)
        where = f"stage {view.path!r}" if view.path else "the network"
        return (f"{where} has a cycle: {text}; a Core ML network must be a DAG: "
                "rename the blob that closes the loop or remove one of these layers")

    def topological_layers(self, path: str = "") -> list[str]:
        """Layer names in a topological order (spec order where free); errors on cycles."""
        view = self.net(path)
        return [view.layers[i].name for i in self._topo_positions(view)]

    # ------------------------------------------------------------------ sub-graphs
    def between(self, inputs: Iterable[str], outputs: Iterable[str], path: str = "") -> list[str]:
        """Names of the layers needed to compute ``outputs`` given ``inputs``, topologically ordered.

        Walks back from every output and stops at the given blobs.  Layers
        without inputs (constants) are included when needed.  An output that
        still depends on a model input (or an undefined blob) not among
        ``inputs`` raises an error naming that un-cut path.
        """
        view = self.net(path)
        inputs, outputs = list(inputs), list(outputs)
        self._check_blobs(view, inputs + outputs)
        given = set(inputs)
        needed: set[int] = set()
        parent: dict[str, tuple] = {}   # blob -> (layer position, blob it was needed for)
        stack = [(o, None) for o in outputs]
        seen_blobs = set()
        leaks = []
        while stack:
            b, via = stack.pop()
            prods = view.producers_for(b, via[0] if via is not None else None)
            key = (b, tuple(prods))
            if key in seen_blobs:
                continue
            seen_blobs.add(key)
            if via is not None and b not in parent:
                parent[b] = via
            if b in given:
                continue
            if not prods:
                leaks.append(b)
                continue
            for p in prods:
                if p in needed:
                    continue
                needed.add(p)
                for src in view.reads[p]:
                    stack.append((src, (p, b)))
        if leaks:
            paths = []
            for leak in leaks:
                chain = [repr(leak)]
                b = leak
                while b in parent:
                    p, nxt = parent[b]
                    chain.append(f"{view.layers[p].name} -> {nxt!r}")
                    b = nxt
                kind = "model input" if leak in view.inputs else "undefined blob"
                paths.append(f"{kind} {' -> '.join(chain)}")
            where = f" in stage {view.path!r}" if view.path else ""
            raise SpecSurgeryError(
                f"outputs {', '.join(map(repr, outputs))} cannot be computed from "
                f"{', '.join(map(repr, inputs)) or 'no inputs'}{where}: un-cut path"
                f"{'s' if len(paths) > 1 else ''}: " + "; ".join(paths)
                + "; add the blob where the path should be cut to the inputs")
        order = self._topo_positions(view)
        return [view.layers[i].name for i in order if i in needed]

    def articulation_blobs(self, path: str = "", include_ends: bool = False) -> list[str]:
        """Blobs through which every path from the model inputs to the outputs runs.

        Cutting the network at one of them splits it into a backbone (inputs
        -> blob) and a head (blob -> outputs).  Topologically ordered.  Model
        input blobs and output blobs are left out unless ``include_ends``.
        """
        import networkx as nx

        view = self.net(path)
        order = self._topo_positions(view)
        src, dst = ("__source__",), ("__sink__",)
        h = nx.DiGraph()
        h.add_node(src)
        for b in view.inputs:
            h.add_edge(src, ("b", b))
        for i in order:
            for b in view.reads[i]:
                h.add_edge(("b", b), ("l", i))
            for b in view.writes[i]:
                if b not in view.reads[i]:   # an in-place update (loop bodies) is not a new path
                    h.add_edge(("l", i), ("b", b))
        for b in view.outputs:
            h.add_edge(("b", b), dst)
        if dst not in h or not nx.has_path(h, src, dst):
            return []
        idom = nx.immediate_dominators(h, src)
        chain = []
        node = idom.get(dst)
        while node is not None and node != src:
            if node[0] == "b":
                chain.append(node[1])
            nxt = idom.get(node)
            if nxt == node:
                break
            node = nxt
        chain.reverse()
        if not include_ends:
            ends = set(view.inputs) | set(view.outputs)
            chain = [b for b in chain if b not in ends]
        return chain

    # ------------------------------------------------------------------ nodes by type
    def nodes_of(self, node_type: str, path: Optional[str] = None) -> list[str]:
        """Node ids of one type (``layer``, ``blob``, ``op``...), optionally of one stage."""
        return [n for n, d in self.g.nodes(data=True)
                if d.get("type") == node_type and (path is None or d.get("path") == path)]

    def __repr__(self) -> str:
        return (f"GraphIndex({model_type(self.spec)}, {self.g.number_of_nodes()} nodes, "
                f"{self.g.number_of_edges()} edges, stages={[p for p in self.models if p]})")


def build_graph(model) -> GraphIndex:
    """Build the :class:`GraphIndex` of a spec, path, MLPackage or MLModel."""
    loaded = load(model)
    if isinstance(loaded, MLPackage):
        return GraphIndex(loaded.spec, loaded)
    return GraphIndex(loaded, None)


__all__ = ["GraphIndex", "build_graph", "node_id", "q", "key_params", "weight_shapes",
           "mil_category", "mil_tensor_info", "mil_value_bytes", "KEY_PARAMS"]
