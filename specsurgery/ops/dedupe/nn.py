"""Dedupe, neuralNetwork part: fingerprint the layers, rewrite the models.

How layers are matched (neuralNetwork, -Classifier, -Regressor):

* Every layer gets a *computation id*: a hash of its kind, all its parameters
  except names, the content hash of each weight (each weight's bytes are hashed
  exactly once), and the ids of the blobs it reads.  A blob's id is the id of
  the layer that produced it plus the output position; a model input's id is
  its name, its feature type (size, colour space, dtype, shape flexibility),
  its preprocessing (image scale, biases, mean image) and the network's input
  shape mapping.  Blob and layer names never enter an id.
* Two layers in two models therefore have the same id exactly when they
  compute the same function of the same (equally preprocessed) inputs.  The
  ids, weight hashes and sizes form the model's
  :class:`~specsurgery.ops.dedupe.plan.Fingerprint`; the planner
  (``plan.py``) picks the groups and cuts from fingerprints alone.
* Weights are found generically (every ``WeightParams`` field of a layer's
  parameters), so no per-kind list is needed here.

Building: the backbone is the reference member's shared layers (``extract``),
each member becomes ``[linked stub of the backbone, its own head]`` with its
original interface (``make_pipeline``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from ... import io
from ..._proto import Model_pb2, NeuralNetwork_pb2
from ...errors import SpecSurgeryError
from ...spec import NN_TYPES, PIPELINE_TYPES, model_type, nn_of
from ...weights import storage_kind, weight_count, weight_nbytes
from .plan import (BackboneGroup, DedupeResult, Fingerprint, FolderSink, HashStats, ModelPlan, Sink, digest,
                   first_network, flatten_member, label_backbone, make_plan, open_model, pipeline_reason,
                   read_models, refuse_unsupported, settle)

_WeightParams = NeuralNetwork_pb2.WeightParams
BACKEND = "neuralNetwork"
#: the options of ``dedupe`` this backend cannot honour: (why, what to do)
CANNOT = {"multifunction": ("it builds one ML Program package whose functions share weights (spec 9, iOS 18), "
                            "and neuralNetwork models have no functions",
                            "drop --multifunction, or convert the models to ML Programs")}


# --------------------------------------------------------------------------- fingerprint

def _is_repeated(fld) -> bool:
    flag = getattr(fld, "is_repeated", None)   # protobuf >= 6
    return bool(flag) if flag is not None else fld.label == fld.LABEL_REPEATED


def _weight_hash(tag: bytes, data: bytes) -> str:
    # SHA-256 runs at ~1.5 GB/s on CPUs with SHA extensions: the weights' bytes are the bulk
    hasher = hashlib.sha256(tag + b"\x00")
    hasher.update(data)
    return hasher.hexdigest()[:32]


class _Canon:
    """Reads one neural-network model into its :class:`Fingerprint`."""

    def __init__(self, name: str, spec, *, allow_fp16_match: bool, stats: HashStats):
        self.spec = spec
        self.nn = nn_of(spec)
        self.allow_fp16 = allow_fp16_match
        self.stats = stats
        self.fp = Fingerprint(name, description_bytes=spec.description.ByteSize(), unit="layers",
                              allow_fp16=allow_fp16_match)
        self._build()

    # one weight -> digest; the bytes are hashed exactly once
    def _weight_digest(self, wp) -> str:
        nbytes = weight_nbytes(wp)
        self.stats.weights_hashed += 1
        self.stats.bytes_hashed += nbytes
        kind = storage_kind(wp)
        fp = self.fp
        fp.storage[kind] = fp.storage.get(kind, 0) + nbytes
        if self.allow_fp16 and kind in ("float32", "float16"):
            # fp16 and fp32 copies compare equal when the fp32 values round to the fp16 ones
            import numpy as np

            if kind == "float32":
                data = np.asarray(wp.floatValue, dtype=np.float32).astype("<f2").tobytes()
            else:
                data = bytes(wp.float16Value)
            key = _weight_hash(b"half%d" % wp.isUpdatable, data)
        else:
            key = _weight_hash(b"weight", wp.SerializeToString(deterministic=True))
        fp.weights[key] = nbytes
        fp.weight_bytes += nbytes
        return key

    def _hash_message(self, msg, hasher, weight_list: list) -> None:
        for fld, value in msg.ListFields():
            hasher.update(fld.name.encode() + b"=")
            if fld.message_type is None:
                if isinstance(value, bytes):
                    hasher.update(value)
                elif _is_repeated(fld):
                    hasher.update(repr(list(value)).encode())
                else:
                    hasher.update(repr(value).encode())
            elif isinstance(value, _WeightParams):
                weight_list.append(self._weight_digest(value))
                hasher.update(weight_list[-1].encode())
            elif fld.message_type.GetOptions().map_entry:
                for key in sorted(value):
                    item = value[key]
                    hasher.update(repr(key).encode())
                    if hasattr(item, "ListFields"):
                        self._hash_message(item, hasher, weight_list)
                    else:
                        hasher.update(repr(item).encode())
            elif not hasattr(value, "ListFields"):  # repeated messages
                for item in value:
                    hasher.update(b"[")
                    if isinstance(item, _WeightParams):
                        weight_list.append(self._weight_digest(item))
                        hasher.update(weight_list[-1].encode())
                    else:
                        self._hash_message(item, hasher, weight_list)
                    hasher.update(b"]")
            else:
                hasher.update(b"{")
                self._hash_message(value, hasher, weight_list)
                hasher.update(b"}")
            hasher.update(b";")

    def _structure(self, msg, hasher) -> None:
        """Like the computation id, with each weight reduced to its element count."""
        for fld, value in msg.ListFields():
            if fld.message_type is None:
                if _is_repeated(fld):
                    hasher.update(f"{fld.name}={list(value)!r};".encode())
                elif not isinstance(value, bytes):
                    hasher.update(f"{fld.name}={value!r};".encode())
            elif isinstance(value, _WeightParams):
                hasher.update(f"{fld.name}=w{weight_count(value)};".encode())
            elif fld.message_type.GetOptions().map_entry:
                continue
            elif not hasattr(value, "ListFields"):
                for item in value:
                    if isinstance(item, _WeightParams):
                        hasher.update(f"[w{weight_count(item)}]".encode())
                    else:
                        self._structure(item, hasher)
            else:
                hasher.update(fld.name.encode() + b"{")
                self._structure(value, hasher)
                hasher.update(b"}")

    def _input_signature(self, feature) -> str:
        ft = type(feature.type)()
        ft.CopyFrom(feature.type)
        ft.isOptional = False
        parts = [b"input", feature.name.encode(), ft.SerializeToString(deterministic=True),
                 str(self.nn.arrayInputShapeMapping), str(self.nn.imageInputShapeMapping)]
        for pre in self.nn.preprocessing:
            if pre.featureName == feature.name or (pre.featureName == "" and len(self.spec.description.input) == 1):
                p = type(pre)()
                p.CopyFrom(pre)
                p.featureName = ""
                parts.append(p.SerializeToString(deterministic=True))
        return digest(*parts)

    def _build(self) -> None:
        fp = self.fp
        desc = self.spec.description
        current: dict[str, str] = {}  # blob name -> blob id of its latest producer
        struct_of: dict[str, str] = {}  # blob id -> structure id of the blob
        for feature in desc.input:
            vid = fp.add_input(feature.name, self._input_signature(feature))
            struct_of[vid] = "in:" + feature.name
            current[feature.name] = vid
        for layer in self.nn.layers:
            kind = layer.WhichOneof("layer")
            inputs = [current.get(name, "missing:" + name) for name in layer.input]
            hasher = hashlib.blake2b(digest_size=16)
            hasher.update(f"{kind}|{len(layer.output)}|".encode())
            for vid in inputs:
                hasher.update(vid.encode() + b",")
            hasher.update(b"|")
            weights: list = []
            if kind is not None:
                self._hash_message(getattr(layer, kind), hasher, weights)
            for extra in (layer.inputTensor, layer.outputTensor):
                for t in extra:
                    hasher.update(t.SerializeToString(deterministic=True) + b",")
                hasher.update(b"|")
            hasher.update(b"u" if layer.isUpdatable else b"-")
            shasher = hashlib.blake2b(digest_size=16)
            shasher.update(f"{kind}|".encode() + ",".join(struct_of.get(b, b) for b in inputs).encode())
            if kind is not None:
                self._structure(getattr(layer, kind), shasher)
            sid = shasher.hexdigest()
            fp.struct_ids.append(sid)
            # every weight of a layer is its own copy in the file: keyed by position, not content
            n = len(fp.node_ids)
            own = [(f"{n}#{k}", fp.weights[key]) for k, key in enumerate(weights)]
            vids = fp.add_node(hasher.hexdigest(), inputs, list(layer.output), own)
            for k, (name, vid) in enumerate(zip(layer.output, vids)):
                struct_of[vid] = f"{sid}:{k}"
                current[name] = vid
            fp.names.update(layer.input)
        for feature in desc.output:
            fp.names.add(feature.name)
            if feature.name in current:
                fp.output_values.add(current[feature.name])
        if model_type(self.spec) == "neuralNetworkClassifier":
            prob = self.nn.labelProbabilityLayerName
            if prob and prob in current:
                fp.output_values.add(current[prob])


def fingerprint(name: str, spec, *, allow_fp16_match: bool = False, stats: HashStats = None) -> Fingerprint:
    """The planner's view of one neuralNetwork model (weight hashes, never weights)."""
    return _Canon(name, spec, allow_fp16_match=allow_fp16_match, stats=stats or HashStats()).fp


# --------------------------------------------------------------------------- plan

def network_of(spec):
    """The network dedupe works on: the model itself, or the first stage of a pipeline
    whose first stage is a network (a detector's, before its NMS stage); None otherwise."""
    if model_type(spec) in NN_TYPES:
        return spec
    return first_network(spec, NN_TYPES)


def _model_bytes(source, model) -> int:
    if isinstance(source, (str, os.PathLike)) and Path(source).exists():
        return io.file_size(source)
    spec, pkg = io.split_model(model)
    return spec.ByteSize() + (pkg.weight_bytes if pkg is not None else 0)


def _output_name(name: str, source) -> str:
    """The rewritten model keeps its input's name and format (.mlmodel or .pbtxt)."""
    suffix = Path(source).suffix if isinstance(source, (str, os.PathLike)) else ".mlmodel"
    return name + (suffix if suffix in (".mlmodel", ".pbtxt") else ".mlmodel")


def plan(models, *, backbone_name: str = "Backbone", min_share: float = 0.2, allow_fp16_match: bool = False,
         search_path: str, progress=None, multifunction: bool = False, _loaded=None):
    """The dedupe plan of neuralNetwork models (nothing built)."""
    refuse_unsupported(BACKEND, CANNOT, multifunction=multifunction)
    versions = {}

    def read(name, source, label, stats):
        model = io.load(source)
        spec, _ = io.split_model(model)
        kind = model_type(spec) or "none"
        p = ModelPlan(name, label, kind, _model_bytes(source, model), output=_output_name(name, source))
        versions[name] = spec.specificationVersion
        net = network_of(spec)
        if net is None:
            if kind in PIPELINE_TYPES:
                p.reason = pipeline_reason(spec, "neuralNetwork, neuralNetworkClassifier and neuralNetworkRegressor")
            else:
                p.reason = (f"model type {kind!r}: dedupe rewrites neuralNetwork, neuralNetworkClassifier and "
                            "neuralNetworkRegressor models, and pipelines whose first stage is one"
                            + (" (ML Programs: give only .mlpackage inputs)" if kind == "mlProgram" else ""))
            return p, None, model
        if spec.isUpdatable or net.isUpdatable or any(layer.isUpdatable for layer in nn_of(net).layers):
            p.reason = "updatable model: a pipeline with a linked stage cannot stay updatable"
            return p, None, model
        return p, fingerprint(name, net, allow_fp16_match=allow_fp16_match, stats=stats), model

    plans, fps, stats = read_models(models, read, backbone_name=backbone_name, min_share=min_share,
                                    progress=progress, loaded=_loaded)
    result = make_plan(plans, fps, stats, backbone_name=backbone_name, min_share=min_share,
                       options={"search_path": search_path, "allow_fp16_match": allow_fp16_match,
                                "format": "mlmodel", "multifunction": False})
    result.versions = versions
    if allow_fp16_match:
        result.notes.append("fp16 and fp32 copies of a weight were matched (values equal after rounding to fp16); "
                            "each backbone keeps the smallest copy (fp16), so members that stored fp32 copies now "
                            "compute with fp16 weights")
    return result


# --------------------------------------------------------------------------- building

def _backbone_version(backbone, member_versions) -> int:
    """The oldest member's spec version, unless the backbone itself needs more: the shared
    model should not ask for a newer OS than any model that links it."""
    from ...check import min_spec_version

    return max(min_spec_version(backbone)[0], min(member_versions))


def _build_backbone(group: BackboneGroup, ref_spec):
    from ..extract import extract
    from ..rename import rename_feature

    # extract, not split_at: the backbone outputs every member's cut blobs, also those
    # the reference's own head does not read
    backbone = extract(ref_spec, group.inputs, list(group.cuts[group.reference]))
    for old, new in group.cuts[group.reference].items():
        if old != new:
            backbone = rename_feature(backbone, old, new)
    label_backbone(backbone, group)
    return backbone


def _build_member(group: BackboneGroup, member: str, spec, stub, backbone):
    """``member`` as [stub, its head]; ``backbone`` needs only the backbone's description.
    A pipeline member (a detector) becomes [stub, head, its later stages]."""
    net = network_of(spec)
    if net is not spec:
        return flatten_member(spec, _build_member(group, member, net, stub, backbone))
    from ..extract import extract
    from ..pipeline import make_pipeline
    from ..rename import rename_feature
    from ..split import split_at

    cuts = group.cuts[member]
    if group.head_reads_inputs.get(member):
        # the head also reads a model input (preprocessing included): split_at handles that
        _, head = split_at(spec, group.head_cuts[member])
    else:
        # extract copies only the head's layers (split_at would copy the backbone too). The cut
        # blobs compute what the backbone outputs, so their types come from the backbone: no
        # second shape inference over (a copy of) the backbone's layers per member
        from ...spec import feature_shape

        typed = {f.name: f for f in backbone.description.output}
        given = {old: feature_shape(typed[cuts[old]].type) for old in group.head_cuts[member]}
        head = extract(spec, group.head_cuts[member], [f.name for f in spec.description.output],
                       shapes={k: v for k, v in given.items() if v})
        for f in head.description.input:
            if f.name in cuts and cuts[f.name] in typed:
                f.type.CopyFrom(typed[cuts[f.name]].type)
        declared = {f.name: f for f in spec.description.output}
        for f in head.description.output:      # keep the original's declared output types
            if f.name in declared:
                f.CopyFrom(declared[f.name])
        head.description.metadata.CopyFrom(spec.description.metadata)
    for old, new in cuts.items():
        if old != new and any(f.name == old for f in head.description.input):
            head = rename_feature(head, old, new)
    kind = model_type(spec)
    pipe_kind = {"neuralNetworkClassifier": "classifier", "neuralNetworkRegressor": "regressor"}.get(kind, "pipeline")
    # the original interface, word for word: names, types, descriptions, metadata
    new = make_pipeline([stub, head], names=[group.name, "head"], kind=pipe_kind, interface=spec)
    new.specificationVersion = max(new.specificationVersion, spec.specificationVersion, 4)
    return new


def _interface(spec):
    """A model with only ``spec``'s description (what a stub or a head needs of the backbone)."""
    shell = Model_pb2.Model()
    shell.description.CopyFrom(spec.description)
    return shell


def build_groups(result_plan, loaded: dict, *, search_path: str, progress, sink: Sink) -> None:
    """Build the plan's groups into ``sink``, one model at a time: each group's backbone
    from its reference, then each member read again and rewritten."""
    from ...runtime import clear_cache
    from ..link import make_linked_stub

    def build_group(group: BackboneGroup):
        backbone = _build_backbone(group, network_of(io.load_spec(loaded[group.reference])))
        backbone.specificationVersion = _backbone_version(
            backbone, [result_plan.versions[m] for m in group.members])
        stub = make_linked_stub(backbone, file_name=f"{group.name}.mlmodelc", search_path=search_path)
        shell = _interface(backbone)
        # shape inference (in extract) compiles each model in the runtime, whose cache keeps the
        # last few specs and their decoded weights: let each model go once it is built
        clear_cache()
        yield "backbone", group.name, backbone
        del backbone
        for member in group.members:
            if progress is not None:
                progress(f"rewrite {member}")
            model = _build_member(group, member, io.load_spec(loaded[member]), stub, shell)
            clear_cache()
            yield "member", member, model
            del model

    settle(result_plan, build_group, sink)


def dedupe(models, *, backbone_name: str, search_path: str, min_share: float, allow_fp16_match: bool,
           build: bool, progress, multifunction: bool) -> DedupeResult:
    """The neuralNetwork dedupe: the plan, and with ``build`` the rewritten specs."""
    t0 = time.perf_counter()
    loaded: dict = {}
    result_plan = plan(models, backbone_name=backbone_name, min_share=min_share, allow_fp16_match=allow_fp16_match,
                       search_path=search_path, progress=progress, multifunction=multifunction, _loaded=loaded)
    sink = Sink(lambda spec: spec.ByteSize())
    if build and result_plan.shares_anything:
        build_groups(result_plan, loaded, search_path=search_path, progress=progress, sink=sink)
        for p in result_plan.models:
            if p.name not in sink.models:
                sink.models[p.name] = open_model(loaded[p.name])
    formats = {p.name: Path(p.output).suffix for p in result_plan.models}
    return DedupeResult(result_plan, sink.backbones, sink.models, formats, time.perf_counter() - t0)


# --------------------------------------------------------------------------- files

class Writer(FolderSink):
    """Saves each built model into a staging folder as it comes."""

    def __init__(self, folder: Path, result_plan):
        super().__init__(folder, result_plan, lambda spec: spec.ByteSize())
        self.interfaces: dict = {}

    def save(self, group, role, name, model) -> str:
        if role == "backbone":
            io.save(model, self.folder / f"{name}.mlmodel")
            self.interfaces[name] = _interface(model)
            return f"{name}.mlmodel"
        # the stub's interface was copied from the backbone, which was checked just above;
        # checking each stub against the target on disk would re-read and re-check the
        # backbone once per member (100 MB apiece for a ResNet-50)
        _assert_stub_matches(model, self.interfaces[group.name], name)
        io.save(model, self.folder / self.outputs[name])
        return self.outputs[name]


def _assert_stub_matches(model, backbone, where: str) -> None:
    from ...spec import pipeline_of

    for stage in pipeline_of(model).models:
        if stage.WhichOneof("Type") == "linkedModel":
            mine, theirs = stage.description, backbone.description
            if list(mine.input) != list(theirs.input) or list(mine.output) != list(theirs.output):
                raise SpecSurgeryError(f"{where}: the linked stub's interface differs from the backbone's "
                                       "(internal error; please report)")


def write_files(result_plan, loaded: dict, folder: Path, *, search_path: str, progress,
                multifunction_name: str = "Models") -> list[str]:
    """Build and save every output into ``folder`` (a staging folder), one model after
    another; returns the names written."""
    writer = Writer(folder, result_plan)
    build_groups(result_plan, loaded, search_path=search_path, progress=progress, sink=writer)
    for p in result_plan.models:
        if p.backbone is not None:
            continue
        source = loaded[p.name]
        if isinstance(source, (str, os.PathLike)) and Path(source).is_file() \
                and Path(source).suffix == Path(p.output).suffix:
            shutil.copyfile(source, folder / p.output)      # unchanged, byte for byte
        else:
            io.save(open_model(source), folder / p.output, check=False)
        writer.written[p.name] = p.output
    return [rel for rel in writer.written.values()]
