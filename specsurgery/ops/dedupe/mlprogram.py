"""Dedupe, ML Program part (``.mlpackage``): fingerprint the ops, rewrite the packages.

Matching: every non-const op of a program's main function gets a
*computation id*, a hash of its type, its attributes and inputs (immediate
values by content, values read from the weight file by the sha256 of their
raw blob bytes and dtype, consts by the id of their content, named inputs by
the id of the value they read) and its output types.  Function inputs get an
id from their name, MIL type and the description's feature type (an image's
size and colour space), so the same weights behind another input interface
never merge; the image scale/bias of ct.convert are ops, so other
preprocessing gives other ids.  Op and value names never enter an id.  A
const is no node of its own: its blobs count as weights of the ops that read
it, so a backbone is always some computation, never a lone const.  The ids,
blob hashes and sizes form the model's
:class:`~specsurgery.ops.dedupe.plan.Fingerprint`; the one planner
(``plan.py``) chooses the groups and cuts, as for neuralNetwork models.

Outputs, two choices, both measured and reported:

* linked (iOS 15+, spec 6): ``<backbone>.mlpackage`` holding the shared ops
  and their weights once, and per model a pipeline package
  ``[linked stub of <backbone>.mlmodelc, head]`` with the original interface
  and only the head's weights.  A linked ML Program backbone is checked
  offline only: the stub's interface is compared with the backbone's and the
  whole pipeline runs in the numpy runtime, but whether a device resolves the
  link is only known on the device.
* multifunction (iOS 18+, spec 9), ``multifunction=True``: one package whose
  functions are the models (named after them) and whose weight file stores
  every distinct blob once, like ``ct.utils.save_multifunction``.  The app
  loads each model with ``MLModelConfiguration.functionName``.

``allow_fp16_match`` is refused: an fp16 and an fp32 program differ in their
ops and value types (casts), not only in their weights, so a backbone cannot
serve both.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ... import io
from ... import spec as S
from ..._proto import Model_pb2
from ...errors import SpecSurgeryError, UnsupportedError
from ...mil import blobs as B
from ...mil import program as P
from .plan import (BackboneGroup, DedupeResult, Fingerprint, FolderSink, HashStats, ModelPlan, Sink, digest,
                   first_network, flatten_member, label_backbone, make_plan, open_model, pipeline_reason,
                   read_models, refuse_unsupported, settle)

BACKEND = "ML Program"
MULTIFUNCTION_VERSION = 9
#: the options of ``dedupe`` this backend cannot honour: (why, what to do)
CANNOT = {"allow_fp16_match": ("an fp16 and an fp32 program differ in their ops and value types (casts), not "
                               "only in their weights, so one backbone cannot serve both",
                               "drop the option, or convert the models with the same compute precision")}


# --------------------------------------------------------------------------- sizes

def package_bytes(pkg) -> int:
    """Bytes of a package as shipped: the serialized spec plus its weight files."""
    spec, p = io.split_model(pkg)
    return len(io.serialize(spec)) + (sum(w.size for w in p.weights.values()) if p is not None else 0)


def _as_package(model) -> io.MLPackage:
    spec, pkg = io.split_model(model)
    return pkg if pkg is not None else io.MLPackage(spec)


def network_of(pkg: io.MLPackage):
    """The program dedupe works on: the package itself, or for a pipeline whose first
    stage is an ML Program (a detector's, before its NMS stage) that stage over the
    package's weights; None for any other pipeline."""
    if S.model_type(pkg.spec) == "mlProgram" or S.pipeline_of(pkg.spec) is None:
        return pkg      # not a pipeline: _Reader says what it is
    first = first_network(pkg.spec, ("mlProgram",))
    return None if first is None else io.MLPackage(first, pkg.weights, pkg.path, pkg.metadata)


def _member_package(pkg: io.MLPackage, inner: io.MLPackage) -> io.MLPackage:
    """Pipeline package ``pkg`` with its first stage replaced by the stages of
    ``inner`` ([linked backbone, head]); the later stages keep their weights."""
    from ..pipeline.mlprogram import pack_weights

    out = flatten_member(pkg.spec, inner.spec)
    # stage 1 (the head) reads inner's weight files, every later stage the original's
    return io.MLPackage(out, pack_weights(out, {(): pkg, (0,): inner, (1,): inner}), None, {})


def _is_const(op) -> bool:
    return op.type == "const" or op.type.startswith("constexpr_")


# --------------------------------------------------------------------------- fingerprint

class _Reader:
    """Reads one program's main function into its :class:`Fingerprint`."""

    def __init__(self, name: str, pkg, stats: HashStats):
        self.pkg = pkg
        self.stats = stats
        spec = pkg.spec
        if S.model_type(spec) != "mlProgram":
            raise UnsupportedError(f"dedupe: {name} is a {S.model_type(spec)}, not an ML Program; give only "
                                   "ML Programs, or only neuralNetwork models")
        self.fp = Fingerprint(name, description_bytes=spec.description.ByteSize(), unit="ops")
        self.value_id: dict[str, str] = {}
        self.const_blobs: dict[str, tuple] = {}    # const value name -> ((blob hash, bytes), ...)
        self.blobs: dict[tuple, tuple] = {}        # (file, offset) -> (blob hash, bytes)
        self._read(spec)

    def _blob(self, value, found: list) -> str:
        bfv = value.blobFileValue
        key = (bfv.fileName, bfv.offset)
        if key not in self.blobs:   # each blob's bytes are hashed once
            rec, raw = B.raw_bytes(B.blob_source(self.pkg, bfv.fileName), bfv.offset)
            self.blobs[key] = (B.BlobWriter.key(rec.dtype, rec.padding_bits, raw).hex(), rec.size)
            self.stats.bytes_hashed += rec.size
            self.stats.weights_hashed += 1
        found.append(self.blobs[key])
        return digest("blob", value.type.SerializeToString(deterministic=True), self.blobs[key][0])

    def _value(self, value, found: list) -> str:
        if value.WhichOneof("value") == "blobFileValue":
            return self._blob(value, found)
        return digest("imm", value.SerializeToString(deterministic=True))

    def _named(self, name: str, parts: list, found: list, reads: list) -> None:
        if name not in self.value_id:
            raise SpecSurgeryError(f"dedupe: {self.fp.name}: value {name!r} is read before it is defined; "
                                   "run check on the model")
        vid = self.value_id[name]
        parts.append(vid)
        if name in self.const_blobs:
            found.extend(self.const_blobs[name])
        elif vid not in reads:
            reads.append(vid)

    def _read(self, spec) -> None:
        fp = self.fp
        _, fn = P.get_function(spec)
        feats = {f.name: f for f in spec.description.input}
        for i in fn.inputs:
            ft = feats.get(i.name)
            self.value_id[i.name] = fp.add_input(i.name, digest(
                "input", i.name, i.type.SerializeToString(deterministic=True),
                ft.type.SerializeToString(deterministic=True) if ft else b""))
        block = P.main_block(fn)
        for op in block.operations:
            parts, found, reads = ["op", op.type], [], []
            for key in sorted(op.attributes):
                if key != "name":
                    parts += [key, self._value(op.attributes[key], found)]
            for key in sorted(op.inputs):
                parts.append(key)
                for b in op.inputs[key].arguments:
                    if b.WhichOneof("binding") == "name":
                        self._named(b.name, parts, found, reads)
                    else:
                        parts.append(self._value(b.value, found))
            if op.blocks:
                parts.append(digest("blocks", *[b.SerializeToString(deterministic=True) for b in op.blocks]))
                for sub in op.blocks:    # nested bodies read outer values too
                    for inner in P.iter_ops(sub):
                        fp.names.update(o.name for o in inner.outputs)
                        for _, name in P.input_names(inner):
                            if name in self.value_id:
                                self._named(name, parts, found, reads)
            parts += [o.type.SerializeToString(deterministic=True) for o in op.outputs]
            oid = digest(*parts)
            if _is_const(op):
                for k, o in enumerate(op.outputs):
                    self.value_id[o.name] = digest(oid, k)
                    self.const_blobs[o.name] = tuple(found)
                    fp.names.add(o.name)
                continue
            vids = fp.add_node(oid, reads, [o.name for o in op.outputs], found)
            self.value_id.update(zip((o.name for o in op.outputs), vids))
        for name in block.outputs:
            if name in self.value_id and name not in self.const_blobs:
                fp.output_values.add(self.value_id[name])
        fp.names.update(f.name for f in list(spec.description.input) + list(spec.description.output))
        fp.weights = dict(self.blobs.values())
        fp.weight_bytes = sum(fp.weights.values())   # the weight file stores each blob once


def fingerprint(name: str, model, stats: HashStats = None) -> Fingerprint:
    """The planner's view of one ML Program (blob hashes, never blobs)."""
    return _Reader(name, _as_package(model), stats or HashStats()).fp


# --------------------------------------------------------------------------- plan

def plan(models, *, backbone_name: str = "Backbone", min_share: float = 0.2, allow_fp16_match: bool = False,
         search_path: str, progress=None, multifunction: bool = False, _loaded=None):
    """The dedupe plan of ML Programs (nothing built)."""
    refuse_unsupported(BACKEND, CANNOT, allow_fp16_match=allow_fp16_match)

    def read(name, source, label, stats):
        pkg = _as_package(io.load(source))
        net = network_of(pkg)
        p = ModelPlan(name, label, S.model_type(pkg.spec) or "none", package_bytes(pkg), output=f"{name}.mlpackage")
        if net is None:
            p.reason = pipeline_reason(pkg.spec, "ML Program")
            return p, None, pkg
        if multifunction and net is not pkg:
            raise UnsupportedError(
                f"dedupe: option multifunction (--multifunction) is not supported for {name}: it is a "
                f"{p.kind} (an ML Program followed by other stages, e.g. NMS), and a multifunction package "
                "holds ML Program functions only; drop --multifunction to write linked pipelines")
        return p, fingerprint(name, net, stats), pkg

    plans, fps, stats = read_models(models, read, backbone_name=backbone_name, min_share=min_share,
                                    progress=progress, loaded=_loaded)
    return make_plan(plans, fps, stats, backbone_name=backbone_name, min_share=min_share,
                     options={"search_path": search_path, "allow_fp16_match": False, "format": "mlpackage",
                              "multifunction": multifunction})


# --------------------------------------------------------------------------- building

def build_groups(result_plan, loaded: dict, *, search_path: str, progress, sink: Sink) -> None:
    """Build the plan's groups into ``sink``, one package at a time."""
    from ..link import make_linked_stub
    from ..pipeline import make_pipeline
    from ..rename import rename_feature
    from ..split import split_at

    def build_group(group: BackboneGroup):
        # the backbone outputs the reference's cut values, under the group's output names
        backbone, _ = split_at(network_of(_as_package(open_model(loaded[group.reference]))),
                               list(group.cuts[group.reference]))
        for old, new in group.cuts[group.reference].items():
            if old != new:
                rename_feature(backbone, old, new, inplace=True)
        label_backbone(backbone.spec, group)
        # each member is [stub, head] from the start: its pipeline never carries the backbone's weights
        stub = make_linked_stub(backbone.spec, file_name=f"{group.name}.mlmodelc", search_path=search_path)
        yield "backbone", group.name, backbone
        del backbone
        for member in group.members:
            if progress is not None:
                progress(f"rewrite {member}")
            pkg = _as_package(open_model(loaded[member]))
            net = network_of(pkg)
            _, head = split_at(net, group.head_cuts[member])
            for old in group.head_cuts[member]:
                if group.cuts[member][old] != old:
                    rename_feature(head, old, group.cuts[member][old], inplace=True)
            new = make_pipeline([stub, head], names=["backbone", "head"], interface=net)
            if net is not pkg:     # a detector: [stub, head, its later stages]
                new = _member_package(pkg, new)
            yield "member", member, new
            del pkg, net, head, new

    settle(result_plan, build_group, sink)


def _function_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_@]", "_", name)
    return s if re.match(r"[A-Za-z_]", s) else "m_" + s


def build_multifunction(packages: dict) -> io.MLPackage:
    """One spec-9 package whose functions are the models' main functions (``{function
    name: package}``, the first is the default) and whose weight file stores every
    distinct blob once."""
    names = list(packages)
    out = Model_pb2.Model()
    out.specificationVersion = max(MULTIFUNCTION_VERSION, *(p.spec.specificationVersion for p in packages.values()))
    out.description.metadata.CopyFrom(packages[names[0]].spec.description.metadata)
    writer = B.BlobWriter()
    for fname, pkg in packages.items():
        if not P.IDENTIFIER.match(fname):
            raise SpecSurgeryError(f"multifunction: {fname!r} is not a valid function name "
                                   "([A-Za-z_][A-Za-z0-9_@]*); rename the model")
        spec = pkg.spec
        sub = Model_pb2.Model()
        sub.mlProgram.functions[fname].CopyFrom(P.get_function(spec)[1])
        B.rewrite_blobs(sub, pkg, writer)
        out.mlProgram.functions[fname].CopyFrom(sub.mlProgram.functions[fname])
        out.mlProgram.version = spec.mlProgram.version
        d = out.description.functions.add()
        d.name = fname
        d.input.extend(spec.description.input)
        d.output.extend(spec.description.output)
        d.state.extend(spec.description.state)
        d.predictedFeatureName = spec.description.predictedFeatureName
        d.predictedProbabilitiesName = spec.description.predictedProbabilitiesName
    out.description.defaultFunctionName = names[0]
    return io.MLPackage(out, {"weights/weight.bin": writer.to_weight_file()} if writer.count else {}, None, {})


def _multifunction(result_plan, loaded: dict) -> io.MLPackage:
    mf = build_multifunction({_function_name(p.name): _as_package(open_model(loaded[p.name]))
                              for p in result_plan.models})
    _sizes(result_plan, package_bytes(mf))
    return mf


def _sizes(result_plan, multifunction_bytes=None) -> None:
    """Both bundle sizes in the plan: the linked one as built, the multifunction one
    measured when it was built, else estimated (it stores every distinct blob once, so
    it is about the best possible)."""
    opts = result_plan.options
    opts["multifunction_measured"] = multifunction_bytes is not None
    opts["multifunction_bytes"] = result_plan.best_possible if multifunction_bytes is None else multifunction_bytes
    opts["linked_bytes"] = result_plan.total_after
    about = "" if opts["multifunction_measured"] else "about "
    result_plan.notes.append(
        f"bundle size: linked pipelines (iOS 15+) {opts['linked_bytes']} bytes; one multifunction package "
        f"(iOS 18+, spec 9) {about}{opts['multifunction_bytes']} bytes; before {result_plan.total_before} bytes")


def dedupe(models, *, backbone_name: str, search_path: str, min_share: float, allow_fp16_match: bool,
           build: bool, progress, multifunction: bool) -> DedupeResult:
    """The ML Program dedupe: the plan, and with ``build`` the linked packages (and, with
    ``multifunction``, the multifunction package in ``result.multifunction``)."""
    t0 = time.perf_counter()
    loaded: dict = {}
    result_plan = plan(models, backbone_name=backbone_name, min_share=min_share,
                       allow_fp16_match=allow_fp16_match, search_path=search_path, progress=progress,
                       multifunction=multifunction, _loaded=loaded)
    sink = Sink(package_bytes)
    result = DedupeResult(result_plan, sink.backbones, sink.models, {p.name: ".mlpackage" for p in result_plan.models})
    if build:
        if result_plan.shares_anything:
            build_groups(result_plan, loaded, search_path=search_path, progress=progress, sink=sink)
        for p in result_plan.models:
            if p.name not in sink.models:
                sink.models[p.name] = _as_package(open_model(loaded[p.name]))
        if multifunction:
            result.multifunction = _multifunction(result_plan, loaded)
        else:
            _sizes(result_plan)
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- files

class Writer(FolderSink):
    """Saves each built package into a staging folder as it comes."""

    def __init__(self, folder: Path, result_plan):
        super().__init__(folder, result_plan, package_bytes)

    def save(self, group, role, name, model) -> str:
        rel = f"{name}.mlpackage" if role == "backbone" else self.outputs[name]
        io.save(model, self.folder / rel, search_path=str(self.folder))
        return rel


def write_files(result_plan, loaded: dict, folder: Path, *, search_path: str, progress,
                multifunction_name: str = "Models") -> list[str]:
    """Build and save the outputs into ``folder`` (a staging folder), one package after
    another; returns the names written.  With ``multifunction`` (in the plan's
    options) the linked packages are built and measured only, and the one
    multifunction package is written."""
    if result_plan.options.get("multifunction"):
        build_groups(result_plan, loaded, search_path=search_path, progress=progress,
                     sink=Sink(package_bytes, keep=False))
        io.save(_multifunction(result_plan, loaded), folder / f"{multifunction_name}.mlpackage")
        return [f"{multifunction_name}.mlpackage"]
    writer = Writer(folder, result_plan)
    build_groups(result_plan, loaded, search_path=search_path, progress=progress, sink=writer)
    for p in result_plan.models:
        if p.backbone is None:
            io.save(_as_package(open_model(loaded[p.name])), folder / p.output)
            writer.written[p.name] = p.output
    _sizes(result_plan)
    return list(writer.written.values())
