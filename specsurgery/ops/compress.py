"""Weight compression: float16, n-bit linear, palettization (k-means look-up
tables) and magnitude pruning, per layer, through pipelines.

neuralNetwork models (and every neuralNetwork stage of a pipeline, nested
ones too) are compressed here, in Core ML's own ``WeightParams`` storage:

* ``fp16``: ``float16Value`` (spec v2 or later);
* ``linear``: ``rawValue`` codes with ``linearQuantization`` scale and bias,
  one pair per tensor or per output channel (axis 0; axis 1 for
  deconvolution weights), value = code * scale + bias (spec v3 or later);
* ``palettize``: ``rawValue`` codes into a ``lookupTableQuantization`` table
  of 2**nbits entries found by our 1-D k-means (:mod:`.kmeans`), codes packed
  most significant bit first (spec v3 or later);
* ``prune``: the smallest-magnitude weights set to zero (float32), or
  combined with any of the above through ``sparsity=``.

Which layer kinds may hold which storage follows Core ML's validator
(``NeuralNetworkLayerValidator.cpp``): quantized storage is accepted through
``validateGeneralWeightParams`` by convolution, innerProduct, batchedMatmul,
embedding(ND), the recurrent layers, batchnorm, scale, bias and
loadConstant(ND); convolution3d rejects quantized weights (float16 only);
layerNormalization requires float32 gamma and beta.  A layer must not mix
float16 and float32 fields, so ``fp16`` converts every field of a layer,
while n-bit modes compress the large weight fields and keep biases float32
(a quantized weight next to a float32 bias is allowed).

mlProgram models (``.mlpackage``, and ML Program stages of pipeline
packages) are palettized directly: weight consts become iOS 16
``constexpr_lut_to_dense`` ops and the weight file is rewritten.  Linear
quantization, pruning, grouped-channel tables and iOS 18 programs go through
``coremltools.optimize.coreml``, with our k-means as the palettizer's
``lut_function`` (coremltools' own k-means needs scikit-learn).
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .. import io as ssio
from .._tempdirs import private_tempdir
from ..errors import NotFoundError, SpecSurgeryError, UnsupportedError, near_matches
from ..spec import NN_TYPES, iter_models, model_type
from ..weights import decode, set_linear, set_lut, storage_kind, weight_nbytes
from .kmeans import kmeans1d, lut_quantize

MODES = ("fp16", "linear", "palettize", "prune")

#: Kinds whose weights may hold n-bit storage (Core ML's validator accepts QUINT).
NBIT_KINDS = frozenset(
    "convolution innerProduct batchedMatmul embedding embeddingND simpleRecurrent gru "
    "uniDirectionalLSTM biDirectionalLSTM loadConstant loadConstantND batchnorm scale bias".split())
#: Kinds that accept float16 but not quantized storage, with the reason.
FP16_ONLY = {
    "convolution3d": "Core ML's validator rejects quantized convolution3d weights (float16 is allowed)",
    "activation": "PReLU/ParametricSoftplus parameters: float16 only",
}
#: Kinds whose weights must stay as they are, with the reason.
NO_STORAGE = {
    "layerNormalization": "Core ML requires float32 gamma and beta in layerNormalization",
    "custom": "custom-layer weights are read by the app's own layer code",
}


# --------------------------------------------------------------------------- report

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

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.layer}" if self.stage else self.layer

    def to_json(self) -> dict:
        return {"stage": self.stage, "layer": self.layer, "kind": self.kind, "fields": self.fields,
                "count": self.count, "storage_before": self.storage_before,
                "storage_after": self.storage_after, "bits_before": round(self.bits_before, 4),
                "bits_after": round(self.bits_after, 4), "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after,
                "snr_db": _json_snr(self.snr_db),
                "sparsity": self.sparsity}


@dataclass
class Skipped:
    stage: str
    layer: str
    kind: str
    reason: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


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
        return sum(l.bytes_before for l in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(l.bytes_after for l in self.layers)

    @property
    def ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 1.0

    def to_json(self) -> dict:
        return {"mode": self.mode, "nbits": self.nbits, "per_channel": self.per_channel,
                "sparsity": self.sparsity, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "ratio": round(self.ratio, 6),
                "layers": [l.to_json() for l in self.layers],
                "skipped": [s.to_json() for s in self.skipped], "notes": list(self.notes),
                "spec_versions": {k or "<top>": list(v) for k, v in self.versions.items()},
                "outputs_snr_db": {k: _json_snr(v) for k, v in self.outputs.items()}}

    def summary(self) -> str:
        what = self.mode + (f" {self.nbits}-bit" if self.mode in ("linear", "palettize") else "")
        if self.sparsity and self.mode != "prune":
            what += f" + {self.sparsity:.0%} pruning"
        lines = [f"{what}: {len(self.layers)} layer(s), weights {_human(self.bytes_before)} -> "
                 f"{_human(self.bytes_after)} ({self.ratio:.1%})"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} layer(s): " + "; ".join(
                f"{s.stage + '/' if s.stage else ''}{s.layer}: {s.reason}" for s in self.skipped[:8])
                + (" ..." if len(self.skipped) > 8 else ""))
        lines.extend(self.notes)
        return "\n".join(lines)

    def table(self) -> str:
        """The per-layer table (``--report``)."""
        head = ["layer", "kind", "weights", "bits", "bytes before", "bytes after", "SNR dB"]
        rows = []
        for l in self.layers:
            rows.append([l.name, l.kind, str(l.count),
                         f"{_fmt_bits(l.bits_before)}->{_fmt_bits(l.bits_after)}",
                         str(l.bytes_before), str(l.bytes_after),
                         _fmt_snr(l.snr_db)])
        rows.append(["total", "", str(sum(l.count for l in self.layers)), "",
                     str(self.bytes_before), str(self.bytes_after), ""])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        out = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
               for r in [head] + rows]
        for s in self.skipped:
            out.append(f"skipped {s.stage + '/' if s.stage else ''}{s.layer} ({s.kind}): {s.reason}")
        for name, snr in self.outputs.items():
            out.append(f"output {name}: SNR {_fmt_snr(snr)} dB")
        out.extend(self.notes)
        return "\n".join(out)


def _fmt_snr(v) -> str:
    if v is None:
        return "n/a"
    return "inf" if math.isinf(v) and v > 0 else f"{v:.1f}"


def _json_snr(v):
    if v is None:
        return None
    return "inf" if math.isinf(v) and v > 0 else round(float(v), 3)


def _fmt_bits(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else f"{b:.2f}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def snr_db(original, approx) -> Optional[float]:
    """Signal-to-noise ratio in dB of ``approx`` against ``original`` (inf: exact)."""
    a = np.asarray(original, dtype=np.float32).reshape(-1)
    b = np.asarray(approx, dtype=np.float32).reshape(-1)
    d = a - b
    noise = float(np.dot(d, d))          # BLAS float32 dot: plenty for a dB figure
    if noise == 0.0:
        return math.inf
    signal = float(np.dot(a, a))
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# --------------------------------------------------------------------------- layer layouts

@dataclass
class _Field:
    path: str
    wp: object
    shape: tuple
    axis: int               # output-channel axis of ``shape``
    channels: int           # scales Core ML accepts per channel (1: per tensor only)
    main: bool              # a weight matrix (n-bit modes compress these)


def _kernel(p):
    ks = list(p.kernelSize)
    return (int(ks[0]), int(ks[1])) if len(ks) == 2 else (3, 3)


def _layout(layer) -> "list[_Field] | str":
    """The weight fields of a layer with their shapes, or why it has none."""
    kind = layer.WhichOneof("layer")
    F = _Field
    if kind == "convolution":
        p = layer.convolution
        if len(layer.input) > 1:
            return "its weights come from the second input"
        kh, kw = _kernel(p)
        groups = p.nGroups or 1
        if p.isDeconvolution:
            shape = (p.kernelChannels, p.outputChannels // groups, kh, kw)
            fields = [F("weights", p.weights, shape, 1, p.outputChannels if groups == 1 else 1, True)]
        else:
            shape = (p.outputChannels, p.kernelChannels, kh, kw)
            fields = [F("weights", p.weights, shape, 0, p.outputChannels, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "innerProduct":
        p = layer.innerProduct
        fields = [F("weights", p.weights, (p.outputChannels, p.inputChannels), 0, p.outputChannels, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "batchedMatmul":
        p = layer.batchedMatmul
        if len(layer.input) > 1:
            return "its weight matrix comes from the second input"
        x1, x2 = p.weightMatrixFirstDimension, p.weightMatrixSecondDimension
        fields = [F("weights", p.weights, (x2, x1), 0, x2, True)]   # column-major [X1, X2]
        if p.hasBias:
            fields.append(F("bias", p.bias, (x2,), 0, 1, False))
        return fields
    if kind in ("embedding", "embeddingND"):
        p = getattr(layer, kind)
        out, vocab = ((p.outputChannels, p.inputDim) if kind == "embedding"
                      else (p.embeddingSize, p.vocabSize))
        fields = [F("weights", p.weights, (out, vocab), 0, out, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (out,), 0, 1, False))
        return fields
    if kind == "simpleRecurrent":
        p = layer.simpleRecurrent
        i, o = p.inputVectorSize, p.outputVectorSize
        fields = [F("weightMatrix", p.weightMatrix, (o, i), 0, o, True),
                  F("recursionMatrix", p.recursionMatrix, (o, o), 0, o, True)]
        if p.hasBiasVector:
            fields.append(F("biasVector", p.biasVector, (o,), 0, 1, False))
        return fields
    if kind == "gru":
        p = layer.gru
        i, o = p.inputVectorSize, p.outputVectorSize
        fields = []
        for gate in ("update", "reset", "output"):
            fields.append(F(f"{gate}GateWeightMatrix", getattr(p, f"{gate}GateWeightMatrix"), (o, i), 0, o, True))
            fields.append(F(f"{gate}GateRecursionMatrix", getattr(p, f"{gate}GateRecursionMatrix"), (o, o), 0, o, True))
            if p.hasBiasVectors:
                fields.append(F(f"{gate}GateBiasVector", getattr(p, f"{gate}GateBiasVector"), (o,), 0, 1, False))
        return fields
    if kind in ("uniDirectionalLSTM", "biDirectionalLSTM"):
        p = getattr(layer, kind)
        x, h = p.inputVectorSize, p.outputVectorSize
        groups = [("weightParams", p.weightParams)] if kind == "uniDirectionalLSTM" else [
            (f"weightParams[{d}]", wp) for d, wp in enumerate(p.weightParams)]
        fields = []
        for prefix, w in groups:
            for gate in ("inputGate", "forgetGate", "blockInput", "outputGate"):
                fields.append(F(f"{prefix}.{gate}WeightMatrix", getattr(w, f"{gate}WeightMatrix"), (h, x), 0, h, True))
                fields.append(F(f"{prefix}.{gate}RecursionMatrix", getattr(w, f"{gate}RecursionMatrix"), (h, h), 0, h, True))
            for name, wp in ((f, getattr(w, f)) for f in (
                    "inputGateBiasVector", "forgetGateBiasVector", "blockInputBiasVector",
                    "outputGateBiasVector", "inputGatePeepholeVector", "forgetGatePeepholeVector",
                    "outputGatePeepholeVector")):
                if storage_kind(wp) != "empty":
                    fields.append(F(f"{prefix}.{name}", wp, (h,), 0, 1, False))
        return fields
    if kind in ("loadConstant", "loadConstantND"):
        p = getattr(layer, kind)
        shape = tuple(int(d) for d in p.shape) or (0,)
        channels = shape[0] if kind == "loadConstant" and len(shape) == 3 and shape[0] > 1 else 1
        return [F("data", p.data, shape, 0, channels, True)]
    if kind == "batchnorm":
        p = layer.batchnorm
        fields = [F(n, getattr(p, n), (p.channels,), 0, 1, True) for n in ("gamma", "beta")]
        for n in ("mean", "variance"):
            if storage_kind(getattr(p, n)) != "empty":
                fields.append(F(n, getattr(p, n), (p.channels,), 0, 1, True))
        return fields
    if kind == "scale":
        p = layer.scale
        shape = tuple(int(d) for d in p.shapeScale)
        ch = shape[0] if len(shape) == 3 and shape[0] > 1 else 1
        fields = [F("scale", p.scale, shape, 0, ch, True)]
        if p.hasBias:
            bshape = tuple(int(d) for d in p.shapeBias)
            bch = bshape[0] if len(bshape) == 3 and bshape[0] > 1 else 1
            fields.append(F("bias", p.bias, bshape, 0, bch, True))
        return fields
    if kind == "bias":
        p = layer.bias
        shape = tuple(int(d) for d in p.shape)
        ch = shape[0] if len(shape) == 3 and shape[0] > 1 else 1
        return [F("bias", p.bias, shape, 0, ch, True)]
    if kind == "convolution3d":
        p = layer.convolution3d
        groups = p.nGroups or 1
        k = (p.kernelDepth, p.kernelHeight, p.kernelWidth)
        if p.isDeconvolution:
            shape = (p.outputChannels // groups, p.inputChannels) + k
        else:
            shape = (p.outputChannels, p.inputChannels // groups) + k
        fields = [F("weights", p.weights, shape, 0, 1, True)]
        if p.hasBias:
            fields.append(F("bias", p.bias, (p.outputChannels,), 0, 1, False))
        return fields
    if kind == "activation":
        act = layer.activation
        which = act.WhichOneof("NonlinearityType")
        if which == "PReLU":
            return [F("PReLU.alpha", act.PReLU.alpha, (len_of(act.PReLU.alpha),), 0, 1, True)]
        if which == "parametricSoftplus":
            a, b = act.parametricSoftplus.alpha, act.parametricSoftplus.beta
            return [F("parametricSoftplus.alpha", a, (len_of(a),), 0, 1, True),
                    F("parametricSoftplus.beta", b, (len_of(b),), 0, 1, True)]
        return []
    return []


def len_of(wp) -> int:
    kind = storage_kind(wp)
    if kind == "float32":
        return len(wp.floatValue)
    if kind == "float16":
        return len(wp.float16Value) // 2
    return 0


def _has_weights(layer) -> bool:
    from ..weights import layer_weights

    return any(storage_kind(wp) != "empty" for _, wp in layer_weights(layer))


def _iter_layers(nn, prefix: str = ""):
    """Layers of a network, including those inside branch and loop bodies."""
    for layer in nn.layers:
        yield layer
        kind = layer.WhichOneof("layer")
        if kind == "branch":
            for sub in (layer.branch.ifBranch, layer.branch.elseBranch):
                yield from _iter_layers(sub)
        elif kind == "loop":
            for sub in (layer.loop.conditionNetwork, layer.loop.bodyNetwork):
                yield from _iter_layers(sub)


# --------------------------------------------------------------------------- quantizers

def prune_magnitude(values: np.ndarray, sparsity: float) -> np.ndarray:
    """``values`` with the ``sparsity`` fraction of smallest magnitudes set to 0."""
    flat = np.array(values, dtype=np.float32).reshape(-1)
    n_zero = int(round(sparsity * flat.size))
    if n_zero <= 0:
        return flat.reshape(np.shape(values))
    if n_zero >= flat.size:
        return np.zeros_like(flat).reshape(np.shape(values))
    idx = np.argpartition(np.abs(flat), n_zero - 1)[:n_zero]
    flat[idx] = 0.0
    return flat.reshape(np.shape(values))


def linear_quantize(values: np.ndarray, nbits: int, axis: Optional[int] = None,
                    keep_zero: bool = False):
    """(codes uint8 in ``values``' layout, scale, bias) with value ~ code*scale + bias.

    ``axis`` None gives one scale and bias for the tensor; otherwise one per
    index along ``axis``.  ``keep_zero`` puts 0.0 exactly on the grid (for
    pruned tensors).
    """
    return _linear_quantize(values, nbits, axis, keep_zero)[:3]


def _linear_quantize(values, nbits, axis=None, keep_zero=False):
    """:func:`linear_quantize` plus the squared error of the decoded values,
    measured on the way (one pass fewer than decoding again)."""
    arr = np.asarray(values, dtype=np.float32)
    levels = (1 << nbits) - 1
    if axis is None:
        moved = arr.reshape(1, -1)
    else:
        moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    lo = moved.min(axis=1).astype(np.float64)
    hi = moved.max(axis=1).astype(np.float64)
    if keep_zero:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = ((hi - lo) / levels).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    if keep_zero:
        zero_code = np.clip(np.round(-lo / safe), 0, levels).astype(np.float32)
        bias = (-(zero_code * scale)).astype(np.float32)
    else:
        bias = lo.astype(np.float32)
    q = moved - bias[:, None]
    q *= (np.float32(1.0) / safe)[:, None]
    r = np.rint(q)
    if keep_zero:
        np.clip(r, 0, levels, out=r)   # else q lies in [0, levels] by construction
    codes = r.astype(np.uint8)
    # decoded - original = (code - q) * scale, row by row
    r -= q
    if r.shape[0] == 1:
        flat = r.reshape(-1)
        err = float(np.dot(flat, flat)) * float(scale[0]) ** 2
    else:
        err = float(np.einsum("ij,ij->i", r, r) @ (scale.astype(np.float64) ** 2))
    if axis is None:
        codes = codes.reshape(arr.shape)
    else:
        shape = (arr.shape[axis],) + tuple(d for i, d in enumerate(arr.shape) if i != axis)
        codes = np.moveaxis(codes.reshape(shape), 0, axis)
    return codes, scale, bias, err


def palettize(values: np.ndarray, nbits: int, *, seed: int = 0, keep_zero: bool = False):
    """(table float32 [2**nbits], codes uint8) by 1-D k-means; ``keep_zero``
    reserves entry 0 for an exact 0.0 (pruned weights stay zero)."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    size = 1 << nbits
    if keep_zero:
        nonzero = flat != 0
        if not nonzero.all():
            table = np.zeros(size, dtype=np.float32)
            codes = np.zeros(flat.size, dtype=np.uint8)
            if nonzero.any() and size > 1:
                res = kmeans1d(flat[nonzero], size - 1, seed=seed)
                table[1:1 + res.k] = res.centroids.astype(np.float32)
                table[1 + res.k:] = table[res.k]
                codes[nonzero] = res.labels.astype(np.uint8) + 1
            return table, codes.reshape(np.shape(values))
    table, codes = lut_quantize(flat, nbits, seed=seed)
    return table, codes.reshape(np.shape(values))


# --------------------------------------------------------------------------- selection

class _Selector:
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


# --------------------------------------------------------------------------- main entry

def compress(model, *, mode: str = "fp16", nbits: Optional[int] = None, per_channel: bool = False,
             sparsity: Optional[float] = None, layers=None, exclude=None, min_weights: int = 2048,
             seed: int = 0, granularity: str = "per_tensor", group_size: int = 32,
             inplace: bool = False, return_report: bool = False, progress: Optional[Callable] = None):
    """Compress the weights of ``model``; returns the new spec (an ``MLPackage``
    for ML Programs), or ``(model, CompressReport)`` with ``return_report``.

    ``mode``: ``"fp16"``, ``"linear"`` (``nbits`` 1..8, default 8; per tensor or
    ``per_channel``), ``"palettize"`` (``nbits`` 1..8, default 4; k-means look-up
    table) or ``"prune"`` (``sparsity`` in [0, 1)).  ``sparsity`` with another
    mode prunes first, then compresses (zeros stay exact).  ``layers`` and
    ``exclude`` are globs on layer names or ``stage/layer`` paths; a pattern
    that matches nothing is an error.  Layers with fewer than ``min_weights``
    weights, kinds that cannot hold the storage, and layers already compressed
    are skipped, and the report says why.  ``granularity="per_grouped_channel"``
    (ML Programs only, iOS 18) gives one table per ``group_size`` channels.
    The weights' SNR is measured only when the report is asked for (it costs
    a pass or two over the weights); without it ``snr_db`` is None.
    """
    nbits = _check_args(mode, nbits, sparsity, min_weights, granularity, group_size)
    loaded = ssio.load(model)
    spec, pkg = ssio.split_model(loaded)
    if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
        inplace = True      # our own freshly read copy: no need to copy it again
    report = CompressReport(mode, nbits if mode in ("linear", "palettize") else None, per_channel, sparsity)
    opts = dict(mode=mode, nbits=nbits, per_channel=per_channel, sparsity=sparsity,
                min_weights=min_weights, seed=seed, granularity=granularity, group_size=group_size,
                measure=return_report)
    selector = _Selector(layers, exclude)

    if model_type(spec) == "mlProgram":
        if pkg is None:
            raise UnsupportedError("compress: this ML Program has no weights attached; load it from "
                                   "its .mlpackage (the weights live in weights/weight.bin)")
        out = _compress_mlprogram(pkg, opts, selector, report)
        return (out, report) if return_report else out

    if granularity != "per_tensor":
        raise UnsupportedError(
            f"compress: granularity {granularity!r} exists only for ML Programs (iOS 18 per-grouped-"
            "channel tables); a neuralNetwork look-up table is per tensor")
    out_spec = spec if inplace else ssio.copy_spec(spec)
    known_layers: list[str] = []
    new_weights: dict = {}
    need: dict[tuple, int] = {}
    found_nn = False
    for info in iter_models(out_spec):
        kind = model_type(info.model)
        if kind in NN_TYPES:
            found_nn = True
            nn = getattr(info.model, kind)
            v = _compress_nn(nn, info.path, opts, selector, report, known_layers, progress)
            if v:
                need[info.index] = v
        elif kind == "linkedModel":
            target = info.model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue
            report.notes.append(
                f"stage {info.path or '<top>'!r} is a linkedModel stub for {target!r}: its weights live "
                "in that file; compress the model it was compiled from instead")
        elif kind == "mlProgram":
            done = _compress_program_stage(info, pkg, opts, selector, report, known_layers, new_weights)
            if done:
                found_nn = True
                need[info.index] = max(need.get(info.index, 0), info.model.specificationVersion)
            elif done is None:
                found_nn = True
        elif kind not in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
            if info.path:
                report.notes.append(f"stage {info.path!r} is a {kind} model: no neural-network weights")
    if not found_nn:
        raise UnsupportedError(
            f"compress: a {model_type(spec)} model has no neural-network weights to compress; "
            "compress works on neuralNetwork(Classifier/Regressor) models, pipelines of them and "
            "ML Programs (.mlpackage)" + ("; " + "; ".join(report.notes) if report.notes else ""))
    selector.check_all_used(known_layers)
    _raise_spec_versions(out_spec, need, report)
    _explain_nothing_done(report)
    result = out_spec
    if pkg is not None:
        weights = dict(pkg.weights)
        weights.update(new_weights)
        result = ssio.MLPackage(out_spec, weights, None, dict(pkg.metadata))
    return (result, report) if return_report else result


def _compress_program_stage(info, pkg, opts, selector, report, known, new_weights):
    """Compress an ML Program stage of a pipeline package in place.

    The stage is lifted into a package of its own (its weight file renamed to
    ``weights/weight.bin``), compressed through coremltools, and put back
    under its original weight-file name.  Returns True when compressed, None
    when there was nothing to do, False when the stage cannot be handled."""
    where = info.path
    names = {v.blobFileValue.fileName for v in ssio.iter_blob_values(info.model.mlProgram)}
    if pkg is None:
        report.notes.append(f"stage {where!r} is an ML Program without its weights: load the "
                            ".mlpackage that holds it")
        return False
    if len(names) > 1:
        report.notes.append(f"stage {where!r} reads {len(names)} weight files; compress needs one per stage")
        return False
    original = next(iter(names)) if names else ssio.WEIGHT_FILE_NAME
    stage_spec = ssio.copy_spec(info.model)
    _rename_blob_files(stage_spec, ssio.WEIGHT_FILE_NAME)
    wf = pkg.weight_file(original)
    if wf.missing and names:
        report.notes.append(f"stage {where!r}: its weight file {original} is missing")
        return False
    sub = ssio.MLPackage(stage_spec, {"weights/weight.bin": wf} if names else {}, None, {})
    out = _compress_mlprogram(sub, opts, selector, report, stage=where, known_out=known, final=False)
    if out is None:
        return None
    _rename_blob_files(out.spec, original)
    info.model.CopyFrom(out.spec)
    if "weights/weight.bin" in out.weights:
        new_weights[ssio.weight_key(original)] = out.weights["weights/weight.bin"]
    return True


def _rename_blob_files(spec, file_name: str) -> None:
    for value in ssio.iter_blob_values(spec.mlProgram):
        value.blobFileValue.fileName = file_name


def _check_args(mode, nbits, sparsity, min_weights, granularity, group_size) -> Optional[int]:
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
    if mode == "prune" and sparsity is None:
        raise SpecSurgeryError("compress: mode 'prune' needs sparsity (a fraction in [0, 1), e.g. 0.5)")
    if sparsity is not None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
                or not (0.0 <= float(sparsity) < 1.0):
            raise SpecSurgeryError(
                f"compress: sparsity {sparsity!r} is outside [0, 1); it is the fraction of weights "
                "set to zero (0.5 zeroes half)")
    if not isinstance(min_weights, (int, np.integer)) or min_weights < 0:
        raise SpecSurgeryError(f"compress: min_weights must be a count >= 0, got {min_weights!r}")
    if granularity not in ("per_tensor", "per_grouped_channel"):
        raise SpecSurgeryError(
            f"compress: granularity {granularity!r} unknown; use 'per_tensor' or 'per_grouped_channel'")
    if group_size < 1:
        raise SpecSurgeryError(f"compress: group_size must be >= 1, got {group_size}")
    return nbits


def _compress_nn(nn, stage, opts, selector, report, known, progress) -> int:
    """Compress the layers of one network; returns the spec version it needs (0: none)."""
    mode = opts["mode"]
    need = 0
    for layer in _iter_layers(nn):
        name, kind = layer.name, layer.WhichOneof("layer")
        known.append(f"{stage}/{name}" if stage else name)
        if not _has_weights(layer):
            # Weight-free layers are not worth a line, unless asked for by name.
            selector.wants(stage, name)
            continue
        why = selector.wants(stage, name)
        explicit = selector.layers and selector.explicit(stage, name)
        if why is not None:
            if not why.startswith("not selected"):
                report.skipped.append(Skipped(stage, name, kind, why))
            continue
        fields = _layout(layer)
        reason = None
        if isinstance(fields, str):
            reason = fields
        elif kind in NO_STORAGE:
            reason = NO_STORAGE[kind]
        elif kind in FP16_ONLY and mode in ("linear", "palettize"):
            reason = FP16_ONLY[kind]
        elif not fields:
            reason = f"compress does not know where {kind} keeps its weights; left as is"
        elif layer.isUpdatable:
            reason = "updatable layer: Core ML trains float32 weights, they must stay unquantized"
        if reason is None:
            targets = fields if mode == "fp16" else [f for f in fields if f.main]
            stored = sorted({storage_kind(f.wp) for f in targets} - {"empty"})
            if any(s != "float32" for s in stored):
                stored = [s for s in stored if s != "float32"]
                reason = (f"already {'/'.join(stored)}: never quantized twice; compress the float "
                          "model instead")
                if explicit:
                    raise SpecSurgeryError(
                        f"compress: layer {name!r}{' in stage ' + repr(stage) if stage else ''} is "
                        f"already {'/'.join(stored)}; quantizing it again would stack errors. "
                        "Compress the float model, or leave the layer out of --layers")
            elif not stored:
                reason = "its weight fields are empty"
            else:
                count = sum(int(np.prod(f.shape)) for f in targets)
                if count < opts["min_weights"]:
                    reason = f"{count} weights < min_weights {opts['min_weights']}"
        if reason is not None:
            report.skipped.append(Skipped(stage, name, kind, reason))
            continue
        row = _compress_layer(stage, name, kind, targets, opts, report)
        if isinstance(row, str):
            report.skipped.append(Skipped(stage, name, kind, row))
            continue
        report.layers.append(row)
        need = max(need, 2 if row.storage_after.startswith("float16") else
                   3 if row.storage_after.startswith(("linear", "lut")) else 1)
        if progress is not None:
            progress(row.name)
    return need


def _compress_layer(stage, name, kind, targets, opts, report):
    mode, nbits, sparsity = opts["mode"], opts["nbits"], opts["sparsity"]
    # The SNR costs a pass or two over the weights: only when a report is asked for.
    measure = opts.get("measure", True)
    keep = measure or bool(sparsity)
    # Decode every field first: a size mismatch skips the whole layer untouched.
    originals = []
    for f in targets:
        expected = int(np.prod(f.shape))
        try:
            values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{name}.{f.path}")
        except SpecSurgeryError as exc:
            return f"cannot read {f.path}: {exc}"
        if values.size != expected:
            return f"{f.path} holds {values.size} values, the layer needs {expected}"
        originals.append(values)
    bytes_before = sum(weight_nbytes(f.wp) for f in targets)
    storage_before = "float32"
    storages, zeros = [], 0
    signal = noise = 0.0
    count = 0
    notes = set()
    for f, values in zip(targets, originals):
        work = values
        pruned = bool(sparsity) and (f.main or mode == "prune")
        if pruned:
            work = prune_magnitude(values, float(sparsity))
        # ``written`` is the array whose bytes go into the spec (what Core ML
        # decodes); the tests check the bytes decode to it independently.
        if mode == "fp16":
            half = np.asarray(work, dtype="<f2")
            f.wp.Clear()
            f.wp.float16Value = half.tobytes()
            written = half.astype(np.float32) if keep else None  # (a cast inside a ufunc is slower)
            # (the difference is taken in place below: no second large buffer)
        elif mode == "prune":
            _set_float32_fast(f.wp, work)
            written = work
        elif mode == "linear":
            axis = None
            if opts["per_channel"]:
                if f.channels > 1 and f.shape[f.axis] == f.channels:
                    axis = f.axis
                elif f.channels == 1 and f.main and int(np.prod(f.shape)) > 1 and kind in (
                        "convolution",) and f.shape[f.axis] > 1:
                    notes.add("grouped deconvolution: one scale per tensor (Core ML counts "
                              "outputChannels scales, the weight has outputChannels/nGroups)")
            codes, scale, bias, err = _linear_quantize(work, nbits, axis, keep_zero=pruned)
            set_linear(f.wp, codes.reshape(-1), scale, bias, nbits)
            # Without pruning the rounding error is the whole error; with it,
            # compare the decoded values with the unpruned originals.
            written = _linear_values(codes, scale, bias, axis) if pruned else None
        else:  # palettize
            table, codes = palettize(work, nbits, seed=opts["seed"], keep_zero=pruned)
            set_lut(f.wp, codes.reshape(-1), table, nbits)
            written = table[codes] if keep else None
        storages.append(storage_kind(f.wp))
        if sparsity:
            zeros += int(np.count_nonzero(written == 0)) if written is not None else 0
        count += values.size
        if not measure:
            continue
        a = values.reshape(-1)
        signal += float(np.dot(a, a))
        if written is None:         # linear: the rounding error, already measured
            noise += err
        else:
            d = written.reshape(-1)
            if d.dtype == np.float32 and not np.may_share_memory(d, a):
                np.subtract(a, d, out=d)
            else:
                d = a - d
            noise += float(np.dot(d, d))
    bytes_after = sum(weight_nbytes(f.wp) for f in targets)
    for n in notes:
        msg = f"{stage + '/' if stage else ''}{name}: {n}"
        if msg not in report.notes:
            report.notes.append(msg)
    snr = None if not measure else math.inf if noise == 0 else (
        -math.inf if signal == 0 else 10.0 * math.log10(signal / noise))
    return LayerReport(stage, name, kind, [f.path for f in targets], count, storage_before,
                       ",".join(sorted(set(storages))), 8.0 * bytes_before / count,
                       8.0 * bytes_after / count, bytes_before, bytes_after, snr,
                       round(zeros / count, 4) if sparsity else None)


def _set_float32_fast(wp, values) -> None:
    """``floatValue`` from a numpy array through its packed wire form (field 1),
    many times faster than ``extend`` with a list of Python floats."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    n, head = len(data), bytearray(b"\x0a")
    while True:
        byte, n = n & 0x7F, n >> 7
        head.append(byte | (0x80 if n else 0))
        if not n:
            break
    wp.Clear()
    if data:
        wp.MergeFromString(bytes(head) + data)


def _linear_values(codes, scale, bias, axis):
    """code * scale + bias in float32, per tensor or along ``axis``."""
    c = codes.astype(np.float32)
    if axis is None:
        return c * scale[0] + bias[0]
    shape = [1] * c.ndim
    shape[axis] = -1
    return c * scale.reshape(shape) + bias.reshape(shape)


def _raise_spec_versions(spec, need: dict, report) -> None:
    """Raise the version of every stage that needs it, and of its parents."""
    if not need:
        return
    infos = {info.index: info for info in iter_models(spec)}
    required: dict[tuple, int] = {}
    for index, version in need.items():
        for depth in range(len(index) + 1):
            key = index[:depth]
            required[key] = max(required.get(key, 0), version)
    for index, version in sorted(required.items()):
        model = infos[index].model
        before = model.specificationVersion
        if before < version:
            model.specificationVersion = version
            report.versions[infos[index].path] = (before, version)


def _explain_nothing_done(report) -> None:
    if report.layers:
        return
    if not report.skipped:
        raise SpecSurgeryError("compress: no layer holds weights to compress"
                               + ("; " + "; ".join(report.notes) if report.notes else ""))
    reasons: dict[str, list[str]] = {}
    for s in report.skipped:
        key = s.reason.split(":")[0] if s.reason.startswith("already") else s.reason
        if "min_weights" in s.reason:
            key = f"fewer weights than min_weights"
        reasons.setdefault(key, []).append(s.layer)
    parts = [f"{k} ({', '.join(v[:4])}{' ...' if len(v) > 4 else ''})" for k, v in reasons.items()]
    hint = ""
    if any(s.reason.startswith("already") for s in report.skipped):
        hint = "; never quantize twice: compress the float model instead"
    elif any("min_weights" in s.reason for s in report.skipped):
        hint = "; lower min_weights (--min-weights) to include small layers"
    notes = ("; " + "; ".join(report.notes)) if report.notes else ""
    raise SpecSurgeryError("compress: nothing to compress: " + "; ".join(parts) + hint + notes)


# --------------------------------------------------------------------------- ML Programs

#: Bit widths coremltools' palettizer writes (MIL has uint1/2/3/4/6/8 indices).
MIL_LUT_BITS = (1, 2, 3, 4, 6, 8)
_MIL_FLOAT_DTYPES = {10: "float16", 11: "float32"}


def _blob_size(pkg, value) -> int:
    """sizeInBytes of the blob a ``blobFileValue`` points to (0 if unreadable)."""
    bfv = value.blobFileValue
    wf = pkg.weight_file(bfv.fileName)
    if wf.missing:
        return 0
    data = wf.data
    off = int(bfv.offset)
    if off + 64 > data.size:
        return 0
    head = np.frombuffer(bytes(data[off:off + 16]), dtype="<u4")
    if int(head[0]) != 0xDEADBEEF:
        return 0
    return int(np.frombuffer(bytes(data[off + 8:off + 16]), dtype="<u8")[0])


def _op_name(op) -> str:
    attr = op.attributes.get("name") if "name" in op.attributes else None
    if attr is not None and attr.WhichOneof("value") == "immediateValue":
        vals = attr.immediateValue.tensor.strings.values
        if len(vals):
            return vals[0]
    return op.outputs[0].name if len(op.outputs) else op.type


def _program_inventory(pkg):
    """Weights of an ML Program: {const output: info} and already-compressed ops."""
    consts, compressed, consumers = {}, {}, {}

    def walk(block):
        for op in block.operations:
            if op.type == "const" and "val" in op.attributes and \
                    op.attributes["val"].WhichOneof("value") == "blobFileValue":
                out = op.outputs[0]
                dims = [int(d.constant.size) for d in out.type.tensorType.dimensions]
                consts[out.name] = {"dtype": out.type.tensorType.dataType, "shape": dims,
                                    "bytes": _blob_size(pkg, op.attributes["val"])}
            elif op.type.startswith("constexpr_"):
                nbytes = sum(_blob_size(pkg, v) for v in op.attributes.values()
                             if v.WhichOneof("value") == "blobFileValue")
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        if b.WhichOneof("binding") == "value" and b.value.WhichOneof("value") == "blobFileValue":
                            nbytes += _blob_size(pkg, b.value)
                out = op.outputs[0]
                dims = [int(d.constant.size) for d in out.type.tensorType.dimensions]
                compressed[out.name] = {"type": op.type, "shape": dims, "bytes": nbytes,
                                        "inputs": [b.name for a in op.inputs.values() for b in a.arguments
                                                   if b.WhichOneof("binding") == "name"]}
            else:
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        if b.WhichOneof("binding") == "name":
                            consumers.setdefault(b.name, []).append((op.type, _op_name(op)))
            for sub in op.blocks:
                walk(sub)

    for fn in pkg.spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    # Inputs of constexpr ops (their indices, tables) are not weights of their own.
    inner = {n for c in compressed.values() for n in c["inputs"]}
    for n in inner:
        consts.pop(n, None)
    return consts, compressed, consumers


def _opset_version(spec) -> int:
    best = 0
    for fn in spec.mlProgram.functions.values():
        for key in list(fn.block_specializations) + [fn.opset]:
            if key.startswith("CoreML") and key[6:].isdigit():
                best = max(best, int(key[6:]))
    return best


def _compress_mlprogram(*args, **kwargs):
    """``_compress_program`` with coremltools' import notes and progress bars silenced: the CLI
    prints one summary (or one error line), not a screenful of tqdm output on stderr."""
    from .._quiet import quiet_coremltools

    with quiet_coremltools():
        return _compress_program(*args, **kwargs)


def _compress_program(pkg, opts, selector, report, stage: str = "", known_out=None, final: bool = True):
    """Compress one ML Program package through coremltools.optimize.coreml.

    ``stage`` names it inside a pipeline.  With ``final`` False (a pipeline
    stage) a program with nothing to compress returns None instead of raising,
    and layer names go to ``known_out`` for the caller's pattern check."""
    mode, nbits, sparsity = opts["mode"], opts["nbits"], opts["sparsity"]
    consts, already, consumers = _program_inventory(pkg)
    opset = _opset_version(pkg.spec)   # CoreML5 = iOS 15, CoreML8 = iOS 18
    for name, info in already.items():
        user = consumers.get(name, [("?", name)])[0]
        report.skipped.append(Skipped(stage, user[1], user[0],
                                      f"already compressed ({info['type']}): never quantized twice"))
    known = sorted({c[1] for n in consts for c in consumers.get(n, [])} |
                   {c[1] for n in already for c in consumers.get(n, [])})
    if sparsity and mode != "prune":
        raise UnsupportedError(
            "compress: pruning combined with another mode is done on neuralNetwork models only; for an "
            "ML Program use coremltools' joint compression (iOS 18) or compress in one mode")
    if mode == "fp16":
        f32 = [n for n, c in consts.items() if c["dtype"] == 11]
        if not f32:
            for n, c in consts.items():
                user = consumers.get(n, [("?", n)])[0]
                report.skipped.append(Skipped(stage, user[1], user[0], "already float16"))
            if not final:
                return None
            _explain_nothing_done(report)
        raise UnsupportedError(
            "compress: float16 for an ML Program is chosen at conversion: convert again with "
            "compute_precision=coremltools.precision.FLOAT16 (the default for mlprogram)")
    if opts["granularity"] == "per_grouped_channel" and opset < 8:
        raise UnsupportedError(
            f"compress: per-grouped-channel tables need iOS 18 (opset CoreML8, spec v9); this program "
            f"uses CoreML{opset or '?'}. Convert with minimum_deployment_target=coremltools.target.iOS18")
    if mode == "palettize" and nbits not in MIL_LUT_BITS:
        raise SpecSurgeryError(f"compress: ML Program look-up tables take {MIL_LUT_BITS} bits, not {nbits}")
    if mode == "palettize" and nbits not in DIRECT_LUT_BITS and opset < 8:
        # iOS 16/17 constexpr_lut_to_dense holds 2, 4, 16, 64 or 256 entries (coremltools failed mid-pass)
        raise UnsupportedError(
            f"compress: {nbits}-bit look-up tables need iOS 18 (opset CoreML8); this program uses "
            f"CoreML{opset or '?'}: use {', '.join(map(str, DIRECT_LUT_BITS))} bits, or convert with "
            "minimum_deployment_target=coremltools.target.iOS18")
    if mode == "linear" and not (nbits == 8 or (nbits == 4 and opset >= 8)):
        raise SpecSurgeryError(
            f"compress: ML Program linear quantization writes 8-bit codes (4-bit needs iOS 18); got {nbits}")

    # Which weight consts the selection keeps, named by the op that reads them.
    op_names = {}
    selected = set()
    for name, info in consts.items():
        users = consumers.get(name, [])
        if not users:
            continue
        kind, op = users[0]
        why = selector.wants(stage, op)
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if why is not None:
            if not why.startswith("not selected") and len(info["shape"]) > 1:
                report.skipped.append(Skipped(stage, op, kind, why))
            op_names[op] = False
            continue
        if len(info["shape"]) <= 1:
            continue    # biases and scalars: coremltools leaves rank-1 consts alone
        if count < opts["min_weights"]:
            report.skipped.append(Skipped(stage, op, kind, f"{count} weights < min_weights {opts['min_weights']}"))
            continue
        op_names[op] = True
        selected.add(name)
    if final:
        selector.check_all_used(known)
    else:
        known_out.extend(f"{stage}/{k}" if stage else k for k in known)
    if not any(op_names.values()):
        if not final:
            return None
        _explain_nothing_done(report)

    if (mode == "palettize" and opts["granularity"] == "per_tensor" and nbits in DIRECT_LUT_BITS
            and opset <= 7):
        # Fast path: write iOS 16 constexpr_lut_to_dense ops ourselves.
        out = _palettize_program_direct(pkg, consts, consumers, selected, nbits, opts, report, stage)
        if final:
            _explain_nothing_done(report)
        return out

    ct = _proto_coremltools()
    cto = ct.optimize.coreml
    threshold = max(0, int(opts["min_weights"]) - 1)
    calls = []

    def lut_function(val):
        flat = np.asarray(val, dtype=np.float32).reshape(-1)
        table, codes = lut_quantize(flat, nbits, seed=opts["seed"])
        approx = table[codes]
        calls.append((tuple(np.shape(val)), snr_db(flat, approx)))
        return table.astype(np.asarray(val).dtype), codes.reshape(-1).astype(np.uint8)

    if mode == "palettize":
        kw = {}
        if opts["granularity"] == "per_grouped_channel":
            kw = {"granularity": "per_grouped_channel", "group_size": int(opts["group_size"])}
        op_cfg = cto.OpPalettizerConfig(mode="custom", lut_function=lut_function,
                                        weight_threshold=threshold, **kw)
        run = cto.palettize_weights
    elif mode == "linear":
        op_cfg = cto.OpLinearQuantizerConfig(
            mode="linear", dtype="int8" if nbits == 8 else "int4",
            granularity="per_channel" if opts["per_channel"] else "per_tensor",
            weight_threshold=threshold)
        run = cto.linear_quantize_weights
    else:
        op_cfg = cto.OpMagnitudePrunerConfig(target_sparsity=float(sparsity), weight_threshold=threshold)
        run = cto.prune_weights
    if selector.layers or selector.exclude:
        config = cto.OptimizationConfig(
            global_config=None if selector.layers else op_cfg,
            op_name_configs={op: (op_cfg if keep else None) for op, keep in op_names.items()})
    else:
        config = cto.OptimizationConfig(global_config=op_cfg)

    with private_tempdir("specsurgery-compress-") as tmp:
        src = tmp / "in.mlpackage"
        ssio.save(pkg, src, check=False)
        mlmodel = ct.models.MLModel(str(src), skip_model_load=True)
        result = run(mlmodel, config)
        dst = tmp / "out.mlpackage"
        result.save(str(dst))
        loaded = ssio.load(dst)
        # Read the weights into memory: the temp folder goes away on exit.
        weights = {k: ssio.WeightFile(None, np.array(v.data)) for k, v in loaded.weights.items()}
        out = ssio.MLPackage(loaded.spec, weights, None, dict(pkg.metadata))
        del mlmodel, result

    # Report: every weight that became a constexpr op.
    _, after, _ = _program_inventory(out)
    shape_snr = list(calls)
    for out_name, info in after.items():
        if out_name in already:
            continue
        # coremltools names the new op after the const it replaces plus a
        # suffix (``_palettized``, ``_quantized``, ...).
        name = max((n for n in consts if out_name == n or out_name.startswith(n + "_")),
                   key=len, default=None)
        if name is None:
            continue
        before = consts[name]
        kind, op = consumers.get(name, [("?", name)])[0]
        count = int(np.prod(before["shape"])) if before["shape"] else 1
        snr = None
        for i, (shape, value) in enumerate(shape_snr):
            if list(shape) == list(before["shape"]):
                snr = value
                shape_snr.pop(i)
                break
        if mode == "palettize" and opts["granularity"] != "per_tensor":
            snr = None
        bits_b = 8.0 * before["bytes"] / count
        report.layers.append(LayerReport(
            stage, op, kind, [name], count, _MIL_FLOAT_DTYPES.get(before["dtype"], str(before["dtype"])),
            info["type"], bits_b, 8.0 * info["bytes"] / count, before["bytes"], info["bytes"], snr,
            float(sparsity) if mode == "prune" else None))
    if opts["granularity"] == "per_grouped_channel":
        report.notes.append(f"one table per {opts['group_size']} output channels (iOS 18)")
    if out.spec.specificationVersion != pkg.spec.specificationVersion:
        report.versions[stage] = (pkg.spec.specificationVersion, out.spec.specificationVersion)
    if final:
        _explain_nothing_done(report)
    return out


def _pack_lsb_first(codes, nbits: int) -> bytes:
    """n-bit codes packed into bytes least significant bits first (MIL's
    order; neuralNetwork ``rawValue`` is the other way round)."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if nbits == 8:
        return codes.tobytes()
    per = 8 // nbits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[: codes.size] = codes
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for i in range(per):
        out |= groups[:, i] << np.uint8(nbits * i)
    return out.tobytes()


#: Bits the iOS 16 ``constexpr_lut_to_dense`` takes (indices packed in a uint8 tensor).
DIRECT_LUT_BITS = (1, 2, 4, 6, 8)


def _palettize_program_direct(pkg, consts, consumers, chosen, nbits, opts, report, stage):
    """Palettize an ML Program without coremltools: every selected weight
    ``const`` becomes an iOS 16 ``constexpr_lut_to_dense`` op (same output
    name and type, so no consumer changes) whose ``indices`` (uint8 tensor,
    codes packed least significant bit first) and ``lut`` (2**nbits entries
    in the weight's own float type) are new blobs; the weight file is
    rewritten with exactly the blobs the program reads.  Functions on opset
    CoreML5 move to CoreML6 (iOS 16), and the spec to version 7 or more."""
    from ..mil import blobs as B
    from .._proto import MIL_pb2

    out = pkg.copy()
    pending: list = []
    new_name = "@specsurgery-new-blob"
    rows = []

    def blob_value(value, array, mil_dtype):
        value.type.tensorType.dataType = mil_dtype
        value.type.tensorType.rank = 1
        value.type.tensorType.dimensions.add().constant.size = int(array.size if mil_dtype != MIL_pb2.UINT8
                                                                   else len(array))
        value.blobFileValue.fileName = new_name
        value.blobFileValue.offset = len(pending)
        pending.append((array, mil_dtype))

    def walk(block):
        for op in block.operations:
            if op.type == "const" and len(op.outputs) and op.outputs[0].name in chosen:
                name = op.outputs[0].name
                val = op.attributes["val"]
                src = pkg.weight_file(val.blobFileValue.fileName)
                values = B.read_blob(src, val.blobFileValue.offset)
                float_type = op.outputs[0].type.tensorType.dataType
                flat = values.reshape(-1)      # float16 stays float16: k-means counts its bits
                table, codes = lut_quantize(flat, nbits, seed=opts["seed"])
                flat = flat.astype(np.float32)
                packed = _pack_lsb_first(codes, nbits) if nbits in (1, 2, 4, 8) else \
                    B.pack_subbyte(codes, nbits)[0]
                dims = [int(d.constant.size) for d in op.outputs[0].type.tensorType.dimensions]
                op.type = "constexpr_lut_to_dense"
                del op.attributes["val"]
                np_float = np.float16 if float_type == MIL_pb2.FLOAT16 else np.float32
                lut = table.astype(np_float)
                blob_value(op.attributes["lut"], lut, float_type)
                blob_value(op.attributes["indices"], np.frombuffer(packed, dtype=np.uint8), MIL_pb2.UINT8)
                shape = op.attributes["shape"]
                shape.type.tensorType.dataType = MIL_pb2.UINT32
                shape.type.tensorType.rank = 1
                shape.type.tensorType.dimensions.add().constant.size = len(dims)
                shape.immediateValue.tensor.bytes.values = np.asarray(dims, dtype="<u4").tobytes()
                kind, user = consumers[name][0]
                bytes_before = consts[name]["bytes"]
                bytes_after = len(packed) + lut.nbytes
                count = flat.size
                rows.append(LayerReport(stage, user, kind, [name], count,
                                        _MIL_FLOAT_DTYPES.get(float_type, str(float_type)),
                                        "constexpr_lut_to_dense", 8.0 * bytes_before / count,
                                        8.0 * bytes_after / count, bytes_before, bytes_after,
                                        snr_db(flat, lut.astype(np.float32)[codes])))
            for sub in op.blocks:
                walk(sub)

    for fn in out.spec.mlProgram.functions.values():
        for key in list(fn.block_specializations):
            walk(fn.block_specializations[key])
        for key in list(fn.block_specializations):
            if key.startswith("CoreML") and key[6:].isdigit() and int(key[6:]) < 6:
                block = fn.block_specializations[key]
                fn.block_specializations["CoreML6"].CopyFrom(block)
                del fn.block_specializations[key]
        if fn.opset.startswith("CoreML") and fn.opset[6:].isdigit() and int(fn.opset[6:]) < 6:
            fn.opset = "CoreML6"
    # One new weight file: the blobs the program still reads, then the new ones.
    writer = B.BlobWriter()
    for value in B.iter_program_blobs(out.spec.mlProgram):
        bfv = value.blobFileValue
        if bfv.fileName == new_name:
            array, mil_dtype = pending[bfv.offset]
            bfv.offset = writer.add_array(array, mil_dtype)
        else:
            rec, raw = B.raw_bytes(pkg.weight_file(bfv.fileName), bfv.offset)
            bfv.offset = writer.add_raw(rec.dtype, raw, rec.padding_bits)
        bfv.fileName = ssio.WEIGHT_FILE_NAME
    out.weights = {ssio.weight_key(ssio.WEIGHT_FILE_NAME): writer.to_weight_file()}
    before = out.spec.specificationVersion
    if rows and before < 7:
        out.spec.specificationVersion = 7
        report.versions[stage] = (before, 7)
    report.layers.extend(rows)
    out.path = None
    return out


def _proto_coremltools():
    from .._proto import coremltools

    return coremltools()


# --------------------------------------------------------------------------- helpers for users

def dequantize(model, *, inplace: bool = False):
    """A copy of ``model`` whose neuralNetwork weights are all float32 again
    (the values the compressed storage decodes to).  Useful as a reference:
    running it equals running the compressed model."""
    spec = ssio.load_spec(model)
    out = spec if inplace else ssio.copy_spec(spec)
    for info in iter_models(out):
        kind = model_type(info.model)
        if kind not in NN_TYPES:
            continue
        for layer in _iter_layers(getattr(info.model, kind)):
            fields = _layout(layer)
            if isinstance(fields, str):
                continue
            for f in fields:
                if storage_kind(f.wp) in ("float32", "empty"):
                    continue
                values = decode(f.wp, shape=f.shape, channel_axis=f.axis, where=f"{layer.name}.{f.path}")
                _set_float32_fast(f.wp, values)
    return out


def verify_outputs(original, compressed, report: Optional[CompressReport] = None, *, seed: int = 0,
                   samples: int = 1, search_path=None) -> dict:
    """SNR in dB of each output of ``compressed`` against ``original`` on seeded
    random inputs, run through the reference runtime (``inf``: identical).
    Non-numeric outputs (labels) count as exact when equal, else -inf."""
    from ..runtime import predict, random_inputs

    signal: dict = {}
    noise: dict = {}
    for i in range(samples):
        inputs = random_inputs(original, seed=seed + i)
        a = predict(original, inputs, search_path=search_path)
        b = predict(compressed, inputs, search_path=search_path)
        for name, va in a.items():
            vb = b.get(name)
            if isinstance(va, dict) and isinstance(vb, dict) and va.keys() == vb.keys():
                keys = sorted(va, key=str)    # class probabilities: compare as a vector
                va = np.array([float(va[k]) for k in keys])
                vb = np.array([float(vb[k]) for k in keys])
            if isinstance(va, dict) or isinstance(va, str) or not isinstance(va, np.ndarray) \
                    or not np.issubdtype(np.asarray(va).dtype, np.number):
                same = _same_value(va, vb)
                signal.setdefault(name, 1.0)
                noise[name] = noise.get(name, 0.0) + (0.0 if same else math.inf)
                continue
            va64 = np.asarray(va, dtype=np.float64).reshape(-1)
            vb64 = np.asarray(vb, dtype=np.float64).reshape(-1)
            signal[name] = signal.get(name, 0.0) + float(va64 @ va64)
            d = va64 - vb64
            noise[name] = noise.get(name, 0.0) + float(d @ d)
    out = {}
    for name in signal:
        n = noise[name]
        out[name] = (math.inf if n == 0 else -math.inf if math.isinf(n) or signal[name] == 0
                     else 10.0 * math.log10(signal[name] / n))
    if report is not None:
        report.outputs.update(out)
    return out


def _same_value(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(abs(float(a[k]) - float(b[k])) < 1e-6 for k in a)
    return a == b


def compress_file(source, output, **kwargs):
    """Path-level wrapper: load ``source``, compress, check and save to ``output``."""
    result, report = compress(source, return_report=True, **kwargs)
    ssio.save(result, output)
    return report


__all__ = ["compress", "compress_file", "dequantize", "verify_outputs", "CompressReport", "LayerReport", "Skipped",
           "prune_magnitude", "linear_quantize", "palettize", "snr_db", "MODES"]


from .._callable import make_callable  # noqa: E402

make_callable(__name__, "compress")
