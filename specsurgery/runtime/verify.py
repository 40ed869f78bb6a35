"""Seeded random inputs and output-by-output comparison of two models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .. import spec as _spec
from .._proto import FeatureTypes_pb2
from ..errors import VerifyError
from ._inputs import check_declared_size
from .classic import input_vocabulary
from .nms import threshold_inputs
from .engine import GRAY_SPACES, Source, _run

INT32 = FeatureTypes_pb2.ArrayFeatureType.INT32

# layers through which an index input passes unchanged on its way to a lookup
_PASS = {"squeeze", "expandDims", "reshapeStatic", "reshapeDynamic", "reshapeLike", "flattenTo2D",
         "copy", "transpose", "rankPreservingReshape", "sliceStatic", "sliceDynamic", "reshape",
         "flatten", "permute", "splitND", "split"}


def _index_bounds(spec) -> dict:
    """{input name: exclusive upper bound} for inputs that index an embedding/gather."""
    bounds: dict = {}
    for info in _spec.iter_models(spec):
        nn_msg = _spec.nn_of(info.model)
        if nn_msg is None:
            continue
        consts = {}
        for layer in nn_msg.layers:
            if layer.WhichOneof("layer") == "loadConstantND" and len(layer.output):
                consts[layer.output[0]] = tuple(int(s) for s in layer.loadConstantND.shape)
        for f in info.model.description.input:
            frontier, seen = {f.name}, set()
            while frontier:
                blob = frontier.pop()
                seen.add(blob)
                for layer in nn_msg.layers:
                    if blob not in layer.input:
                        continue
                    kind = layer.WhichOneof("layer")
                    bound = None
                    if kind == "embeddingND":
                        bound = int(layer.embeddingND.vocabSize)
                    elif kind == "embedding":
                        bound = int(layer.embedding.inputDim)
                    elif kind == "gather" and len(layer.input) > 1 and layer.input[1] == blob:
                        shape = consts.get(layer.input[0])
                        if shape and -len(shape) <= int(layer.gather.axis) < len(shape):
                            bound = shape[int(layer.gather.axis)]
                    elif kind in _PASS:
                        frontier.update(o for o in layer.output if o not in seen)
                    if bound is not None:
                        bounds[f.name] = min(bounds.get(f.name, bound), bound)
    return bounds


def random_inputs(model, seed: int = 0, int_range: Optional[tuple] = None) -> dict:
    """Seeded inputs drawn from the model's input description.

    Images: uniform uint8 HxWx3 (HxW for grayscale).  Multiarrays: standard
    normal float32, or integers in ``int_range`` (default: below the smallest
    embedding/gather size the input feeds, else 0..9) for INT32 arrays and
    inputs that index a lookup.  Flexible inputs take their default shape.
    Double: standard normal (NMS thresholds: 0..1).  String / Int64 / dictionary inputs that a classic
    stage looks up (one-hot encoder, categorical mapping, dict vectorizer) draw
    from the keys it knows; otherwise "sample", 0..9 and {"a"|"b"|"c": normal}.
    """
    spec = Source(model).spec if not hasattr(model, "description") else model
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(spec)
    vocab = input_vocabulary(spec)     # values one-hot / categorical / dict stages know
    thresholds = threshold_inputs(spec)   # NMS threshold overrides: 0..1
    out = {}
    for f in spec.description.input:
        t = f.type.WhichOneof("Type")
        if t == "imageType":
            img = f.type.imageType
            h, w = int(img.height), int(img.width)
            if (h, w) == (0, 0) or _spec.is_flexible(f.type):
                flex = img.WhichOneof("SizeFlexibility")
                if (h, w) == (0, 0) and flex == "enumeratedSizes" and len(img.enumeratedSizes.sizes):
                    h, w = img.enumeratedSizes.sizes[0].height, img.enumeratedSizes.sizes[0].width
                elif (h, w) == (0, 0) and flex == "imageSizeRange":
                    h = img.imageSizeRange.heightRange.lowerBound
                    w = img.imageSizeRange.widthRange.lowerBound
            shape = (h, w) if img.colorSpace in GRAY_SPACES else (h, w, 3)
            check_declared_size(f.name, shape)
            out[f.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif t == "multiArrayType":
            shape = tuple(_spec.feature_shape(f.type) or (1,))
            check_declared_size(f.name, shape)
            is_int = f.type.multiArrayType.dataType == INT32 or f.name in bounds
            if is_int or int_range is not None and f.name in bounds:
                lo, hi = int_range if int_range is not None else (0, bounds.get(f.name, 10))
                if hi <= lo:
                    raise VerifyError(f"input {f.name!r} indexes a lookup (embedding or gather) of "
                                      f"{hi} entries, so no index can be drawn for it; fix the "
                                      "lookup's size or give --int-range LO,HI")
                out[f.name] = rng.integers(lo, hi, size=shape).astype(
                    np.int32 if f.type.multiArrayType.dataType == INT32 else np.float32)
            else:
                out[f.name] = rng.standard_normal(shape).astype(np.float32)
        elif t == "int64Type":
            lo, hi = int_range if int_range is not None else (0, 10)
            known = [k for k in vocab.get(f.name, ()) if isinstance(k, int)]
            out[f.name] = int(known[rng.integers(len(known))]) if known else int(rng.integers(lo, hi))
        elif t == "doubleType":
            out[f.name] = float(rng.uniform()) if f.name in thresholds else float(rng.standard_normal())
        elif t == "stringType":
            known = [k for k in vocab.get(f.name, ()) if isinstance(k, str)]
            out[f.name] = known[rng.integers(len(known))] if known else "sample"
        elif t == "dictionaryType":
            # keys the model looks up (a dictVectorizer's mapping) or a few defaults
            int_keys = f.type.dictionaryType.WhichOneof("KeyType") == "int64KeyType"
            known = [k for k in vocab.get(f.name, ()) if isinstance(k, int) == int_keys]
            keys = known or ([0, 1, 2] if int_keys else ["a", "b", "c"])
            pick = sorted(rng.choice(len(keys), size=max(1, (len(keys) + 1) // 2), replace=False))
            out[f.name] = {keys[i]: float(rng.standard_normal()) for i in pick}
        elif t == "sequenceType" and f.type.sequenceType.WhichOneof("Type") in ("stringType", "int64Type"):
            is_str = f.type.sequenceType.WhichOneof("Type") == "stringType"
            known = [k for k in vocab.get(f.name, ()) if isinstance(k, str) == is_str]
            keys = known or (["sample"] if is_str else list(range(10)))
            out[f.name] = [keys[i] for i in rng.integers(len(keys), size=3)]
        else:
            raise VerifyError(f"input {f.name!r}: cannot draw random values for type {t}")
    return out


@dataclass
class OutputReport:
    name: str
    kind: str = "array"              # array | label | dict | scalar
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatches: int = 0              # elements (or labels/keys) that failed
    total: int = 0
    ok: bool = True
    note: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "mismatches": self.mismatches, "total": self.total, "ok": self.ok, "note": self.note}


@dataclass
class VerifyReport:
    samples: int
    seed: int
    rtol: float
    atol: float
    outputs: list = field(default_factory=list)
    interface: list = field(default_factory=list)    # interface differences (strings)
    layers: Optional[list] = None                    # per-layer comparison (first sample), if asked

    @property
    def culprits(self) -> list:
        """Layers whose output differs while everything they read matches."""
        return [r for r in (self.layers or []) if r.culprit]

    @property
    def ok(self) -> bool:
        return not self.interface and bool(self.outputs) and all(o.ok for o in self.outputs)

    def output(self, name) -> OutputReport:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_json(self) -> dict:
        out = {"ok": self.ok, "samples": self.samples, "seed": self.seed, "rtol": self.rtol,
               "atol": self.atol, "interface": list(self.interface),
               "outputs": [o.to_json() for o in self.outputs]}
        if self.layers is not None:
            out["layers"] = {"compared": len(self.layers),
                             "mismatched": sum(1 for r in self.layers if not r.ok),
                             "culprits": [r.to_json() for r in self.culprits],
                             "all": [r.to_json() for r in self.layers]}
        return out

    def summary(self) -> str:
        lines = [f"{'output':<28} {'kind':<6} {'max abs err':>12} {'max rel err':>12} "
                 f"{'mismatch':>10}  result"]
        for o in self.outputs:
            lines.append(f"{o.name:<28} {o.kind:<6} {o.max_abs:>12.3g} {o.max_rel:>12.3g} "
                         f"{o.mismatches:>4}/{o.total:<5}  {'ok' if o.ok else 'MISMATCH'}"
                         + (f"  ({o.note})" if o.note else ""))
        for d in self.interface:
            lines.append(f"interface: {d}")
        if self.layers is not None:
            bad = [r for r in self.layers if not r.ok]
            lines.append(f"per layer (first sample): {len(self.layers)} values compared, {len(bad)} differ")
            for r in self.culprits:
                where = f"{r.stage}/" if r.stage else ""
                lines.append(f"  first to differ: {where}{r.layer} ({r.kind}) max abs err "
                             + (f"{r.max_abs:.3g}" if r.max_abs is not None else r.note))
        lines.append(f"{'OK' if self.ok else 'FAILED'}: {self.samples} sample(s), seed {self.seed}, "
                     f"rtol {self.rtol:g}, atol {self.atol:g}")
        return "\n".join(lines)


_CHUNK = 1 << 20


def _compare_arrays(rep: OutputReport, a, b, rtol, atol):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        if a.size == b.size:
            rep.note = f"shapes {a.shape} vs {b.shape} (same size, compared flat)"
            b = b.reshape(a.shape)
        else:
            rep.ok = False
            rep.note = f"shape {a.shape} vs {b.shape}"
            rep.mismatches += max(a.size, b.size)
            rep.total += max(a.size, b.size)
            return
    # in chunks: a large output compared whole makes several float64 temporaries of its size
    fa, fb = a.reshape(-1), b.reshape(-1)
    bad = 0
    for start in range(0, fa.size, _CHUNK):
        ca = fa[start:start + _CHUNK].astype(np.float64)
        cb = fb[start:start + _CHUNK].astype(np.float64)
        diff = np.abs(ca - cb)
        diff[np.isnan(ca) & np.isnan(cb)] = 0.0
        diff[np.isnan(diff)] = np.inf
        rel = diff / np.maximum(np.abs(ca), 1e-30)
        rel[diff == 0] = 0.0
        rep.max_abs = max(rep.max_abs, float(diff.max()))
        rep.max_rel = max(rep.max_rel, float(rel.max()))
        bad += int((diff > atol + rtol * np.abs(np.nan_to_num(ca))).sum())
    rep.mismatches += bad
    rep.total += a.size
    if bad:
        rep.ok = False


def _compare(rep: OutputReport, a, b, rtol, atol):
    if isinstance(a, dict) or isinstance(b, dict):
        rep.kind = "dict"
        if not (isinstance(a, dict) and isinstance(b, dict)):
            rep.ok = False
            rep.note = "one side is not a dictionary"
            return
        if set(a) != set(b):
            rep.ok = False
            extra = sorted(map(str, set(b) - set(a)))[:5]
            gone = sorted(map(str, set(a) - set(b)))[:5]
            rep.note = f"keys differ (missing {gone}, extra {extra})"
            rep.mismatches += len(set(a) ^ set(b))
            rep.total += len(set(a) | set(b))
            return
        keys = list(a)
        _compare_arrays(rep, [a[k] for k in keys], [b[k] for k in keys], rtol, atol)
        return
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)) or \
            (isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer))
             and rep.kind == "label"):
        rep.kind = "label"
        rep.total += 1
        if a != b:
            rep.ok = False
            rep.mismatches += 1
            rep.note = f"{a!r} vs {b!r}"
        return
    if np.isscalar(a) and np.isscalar(b):
        rep.kind = "scalar"
    _compare_arrays(rep, a, b, rtol, atol)


def _iface(spec) -> tuple[dict, dict]:
    return ({f.name: f for f in spec.description.input}, {f.name: f for f in spec.description.output})


def verify(reference, candidate, *, samples: int = 3, seed: int = 0, rtol: float = 1e-4,
           atol: float = 1e-5, search_path: Optional[str] = None, bundle=None, bundle_ids=None,
           int_range: Optional[tuple] = None, progress=None, per_layer: bool = False) -> VerifyReport:
    """Run both models on the same seeded random inputs and compare every common
    output: an element passes when ``|a - b| <= atol + rtol * |a|`` (a from the
    reference); labels and dictionary keys must match exactly.  ``progress(text)``,
    if given, is called after each sample.  ``per_layer`` also compares every
    intermediate value of the first sample (matched by stage and blob name) and
    names the layers that differ while their inputs match (``report.culprits``)."""
    ref, cand = Source(reference), Source(candidate)
    rin, rout = _iface(ref.spec)
    cin, cout = _iface(cand.spec)
    report = VerifyReport(samples=samples, seed=seed, rtol=rtol, atol=atol)
    unfed = [n for n, f in cin.items() if n not in rin and not f.type.isOptional]
    if unfed:
        raise VerifyError(f"the candidate needs input(s) {', '.join(map(repr, unfed))} which the "
                          f"reference does not describe (reference inputs: {', '.join(rin)}); "
                          "random inputs come from the reference, so these models cannot be compared")
    for role, mine, theirs in (("input", rin, cin), ("output", rout, cout)):
        for n in mine:
            if n not in theirs:
                report.interface.append(f"{role} {n!r} only in the reference")
            elif _spec.describe_type(mine[n].type) != _spec.describe_type(theirs[n].type):
                report.interface.append(f"{role} {n!r}: {_spec.describe_type(mine[n].type)} vs "
                                        f"{_spec.describe_type(theirs[n].type)}")
    for n in cout:
        if n not in rout:
            report.interface.append(f"output {n!r} only in the candidate")
    common = [n for n in rout if n in cout]
    if not common:
        raise VerifyError("the models share no output feature (reference: "
                          f"{', '.join(rout)}; candidate: {', '.join(cout)})")
    reps = {n: OutputReport(n) for n in common}
    for n in common:
        if rout[n].type.WhichOneof("Type") in ("stringType", "int64Type") and \
                n == ref.spec.description.predictedFeatureName:
            reps[n].kind = "label"
    bundle_r = bundle if bundle is not None else ref.base_dir
    bundle_c = bundle if bundle is not None else cand.base_dir
    for i in range(samples):
        inputs = random_inputs(ref.spec, seed=seed + i, int_range=int_range)
        trace_r = {} if per_layer and i == 0 else None
        trace_c = {} if per_layer and i == 0 else None
        ra = _run(ref.spec, ref.package, dict(inputs), ref.base_dir, search_path, bundle_r,
                  bundle_ids or {}, None, "", trace=trace_r)
        cb = _run(cand.spec, cand.package, {k: v for k, v in inputs.items() if k in cin},
                  cand.base_dir, search_path, bundle_c, bundle_ids or {}, None, "", trace=trace_c)
        if trace_r is not None:
            from .per_layer import compare_traces

            report.layers = compare_traces(ref.spec, trace_r, trace_c, rtol, atol)
            trace_r = trace_c = None
        for n in common:
            for role, res in (("reference", ra), ("candidate", cb)):
                if n not in res:
                    raise VerifyError(f"the {role} describes output {n!r} but its run did not produce "
                                      f"it (produced: {', '.join(map(repr, res)) or 'nothing'})")
            _compare(reps[n], ra[n], cb[n], rtol, atol)
        if progress is not None:
            progress(f"sample {i + 1}/{samples}")
    report.outputs = [reps[n] for n in common]
    return report
