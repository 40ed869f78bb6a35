"""A zoo of small plain-torch architectures, converted with coremltools and cached.

Shared by the runtime, surgery, compression and ML Program tests::

    import zoo
    path = zoo.converted("resnet")                      # .mlmodel (neuralNetwork backend)
    path = zoo.converted("resnet", backend="mlprogram")  # .mlpackage
    module, example_inputs, convert_kwargs = zoo.build("resnet")
    inputs = zoo.coreml_inputs("resnet", seed=0)         # feature name -> value for predict
    expected = zoo.torch_outputs("resnet", seed=0)       # output name -> np.ndarray (torch forward)

Every model is small (converts in seconds).  Weights come from a fixed seed,
so ``build`` returns the same module in every process; conversions are cached
under ``$SPECSURGERY_TEST_CACHE/specsurgery-zoo`` (tests/conftest.py sets it to
.pytest_cache/d/specsurgery; else the temp dir) keyed by (arch, backend, zoo version, torch
and coremltools versions) and written atomically, so parallel test workers
share them safely.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from specsurgery.convert.pytorch import private_tempdir
import torch.nn as nn
import torch.nn.functional as F

ZOO_VERSION = "1"
# tests/conftest.py points SPECSURGERY_TEST_CACHE into pytest's cache folder (.pytest_cache)
CACHE_DIR = Path(os.environ.get("SPECSURGERY_TEST_CACHE") or tempfile.gettempdir()) / "specsurgery-zoo"

IMAGE_SCALE = 1 / 255.0
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = 0.226
CLASS_LABELS = ["cat", "dog", "bird", "fish", "horse"]


def _ct():
    from specsurgery._proto import coremltools

    return coremltools()


# --------------------------------------------------------------------------- architectures

def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial batchnorm statistics so folding mistakes show up."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + idt)


class ResNet(nn.Module):
    def __init__(self, classes=10, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.Hardswish(),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 1, 2), InvertedResidual(16, 24, 2, 3),
                                    InvertedResidual(24, 24, 1, 3), InvertedResidual(24, 32, 2, 2))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1), nn.Hardswish())
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


class UNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        def dbl(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
                                 nn.Conv2d(b, b, 3, padding=1), nn.ReLU())
        self.enc1, self.enc2, self.mid = dbl(3, 8), dbl(8, 16), dbl(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = dbl(32, 16)
        self.dec1 = dbl(24, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        up = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up, e1], dim=1))
        return self.out(d1)


class TransformerBlock(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads, self.dim, self.hd = heads, dim, dim // heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        t = 8   # fixed sequence length keeps the traced graph static
        h = self.ln1(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        q = q.reshape(1, t, self.heads, self.hd).transpose(1, 2)
        k = k.reshape(1, t, self.heads, self.hd).transpose(1, 2)
        v = v.reshape(1, t, self.heads, self.hd).transpose(1, 2)
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / self.hd ** 0.5), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(1, t, self.dim)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class LSTMText(nn.Module):
    VOCAB = 50

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(self.VOCAB, 16)
        self.lstm = nn.LSTM(16, 24, batch_first=True)
        self.fc = nn.Linear(24, 3)

    def forward(self, tokens):
        y, _ = self.lstm(self.emb(tokens))
        return torch.softmax(self.fc(y[:, -1]), dim=-1)


class BiLSTMTagger(nn.Module):
    """Embedding + 2-layer bidirectional LSTM, a tag score per token."""

    VOCAB = 30

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(self.VOCAB, 8)
        self.lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 4)

    def forward(self, tokens):
        y, _ = self.lstm(self.emb(tokens))
        return self.fc(y)


class DictOutputs(nn.Module):
    """Returns a dict; the conversion wrapper names Core ML outputs by its keys."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv2d(8, 3, 1)
        self.cls = nn.Linear(8, 5)

    def forward(self, x):
        f = self.body(x)
        return {"segmentation": self.seg(f), "scores": torch.sigmoid(self.cls(f.mean(dim=(2, 3))))}


class ImageClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AvgPool2d(2))
        self.fc = nn.Linear(16 * 4 * 4, len(CLASS_LABELS))

    def forward(self, x):
        return torch.softmax(self.fc(self.features(x).flatten(1)), dim=-1)


class FlexibleFCN(nn.Module):
    """Fully convolutional: any H, W (flexible input shape)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.Sigmoid(),
                                 nn.Conv2d(8, 2, 1))

    def forward(self, x):
        return self.net(x)


class LayerMix(nn.Module):
    """Odd corners: grouped/dilated/strided convs, deconv with output padding,
    average pooling with and without padding counts, PReLU, ELU, softplus, tanh,
    bilinear upsampling with aligned corners, channel shuffle, GRU."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.prelu = nn.PReLU(8)
        self.c2 = nn.Conv2d(8, 8, (3, 5), padding=(2, 4), dilation=2)
        self.dec = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.pool_a = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.pool_b = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.gru = nn.GRU(6, 5, batch_first=True)

    def forward(self, x):
        y = self.prelu(self.c1(x))
        y = F.elu(self.c2(y))
        y = self.dec(y)
        y = self.pool_b(torch.tanh(y)) + F.softplus(self.pool_a(F.interpolate(
            y, scale_factor=2, mode="bilinear", align_corners=True)))
        y = y.reshape(1, 2, 3, 16, 16).transpose(1, 2).reshape(1, 6, 16, 16)
        seq = y.mean(dim=3).transpose(1, 2)          # [b, h, c]
        out, _ = self.gru(seq)
        return y, out


class ScriptedLoop(nn.Module):
    """Scripted (not traced) control flow: a counted loop and a data-dependent if,
    which ct.convert turns into loop / branch layers with copy."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        y = x
        for _ in range(3):
            y = torch.tanh(self.fc(y)) + y
        if bool(y.sum() > 0):
            y = y * 2.0
        else:
            y = y - 1.0
        return y


@dataclass
class Arch:
    name: str
    make: Callable[[], nn.Module]
    shapes: dict                 # input name -> torch shape
    outputs: list                # Core ML output names, in forward order
    kind: str = "tensor"         # tensor | image_classifier | dict
    int_inputs: dict = None      # input name -> exclusive upper bound
    flexible: bool = False
    doc: str = ""
    script: bool = False         # convert torch.jit.script(module) instead of a trace


ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("resnet", lambda: ResNet(), {"x": (1, 3, 32, 32)}, ["logits"], doc="ResNet basic blocks"),
    Arch("mobilenetv2", lambda: MobileNetV2(), {"x": (1, 3, 32, 32)}, ["logits"],
         doc="depthwise convolutions, hardswish, ReLU6"),
    Arch("unet", lambda: UNet(), {"x": (1, 3, 32, 32)}, ["mask"],
         doc="U-Net: max pooling, transposed conv, bilinear upsampling, concatenation"),
    Arch("transformer", lambda: TransformerBlock(), {"x": (1, 8, 32)}, ["y"],
         doc="pre-norm transformer block: layer norm, matmul, softmax, GELU"),
    Arch("lstm_text", lambda: LSTMText(), {"tokens": (1, 12)}, ["probs"],
         int_inputs={"tokens": LSTMText.VOCAB}, doc="embedding + LSTM text classifier"),
    Arch("bilstm_tagger", lambda: BiLSTMTagger(), {"tokens": (1, 9)}, ["tags"],
         int_inputs={"tokens": BiLSTMTagger.VOCAB}, doc="embedding + stacked bidirectional LSTM"),
    Arch("dict_outputs", lambda: DictOutputs(), {"x": (1, 3, 16, 16)}, ["segmentation", "scores"],
         kind="dict", doc="forward returns a dict of outputs"),
    Arch("image_classifier", lambda: ImageClassifier(), {"image": (1, 3, 32, 32)},
         ["classLabel", "probs"], kind="image_classifier",
         doc="ImageType input with scale/bias normalisation, class labels"),
    Arch("flexible", lambda: FlexibleFCN(), {"x": (1, 3, 24, 24)}, ["y"], flexible=True,
         doc="fully convolutional with a flexible (RangeDim) input shape"),
    Arch("layer_mix", lambda: LayerMix(), {"x": (1, 4, 16, 16)}, ["y", "seq"],
         doc="grouped/dilated conv, deconv output padding, pooling padding modes, PReLU, ELU, GRU"),
    Arch("scripted_loop", lambda: ScriptedLoop(), {"x": (1, 6)}, ["y"], script=True,
         doc="torch.jit.script loop and if (loop, branch, copy layers)"),
]}


class _TupleOutputs(nn.Module):
    def __init__(self, inner, keys):
        super().__init__()
        self.inner, self.keys = inner, keys

    def forward(self, *args):
        out = self.inner(*args)
        return tuple(out[k] for k in self.keys)


def _module(name: str) -> nn.Module:
    arch = ARCHS[name]
    torch.manual_seed(1234 + sum(map(ord, name)))
    module = arch.make()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        _randomize_bn(module, gen)
    return module.eval()


def build(name: str):
    """(torch module in eval mode, example input tensors, ct.convert keyword arguments)."""
    if name not in ARCHS:
        raise KeyError(f"unknown zoo architecture {name!r}; known: {', '.join(ARCHS)}")
    ct = _ct()

    arch = ARCHS[name]
    module = _module(name)
    example = tuple(_torch_input(arch, n, s, 0) for n, s in arch.shapes.items())
    inputs = []
    for n, shape in arch.shapes.items():
        if arch.kind == "image_classifier":
            inputs.append(ct.ImageType(name=n, shape=shape, scale=IMAGE_SCALE / IMAGE_STD,
                                       bias=[-m / IMAGE_STD for m in IMAGE_MEAN],
                                       color_layout=ct.colorlayout.RGB))
        elif arch.int_inputs and n in arch.int_inputs:
            inputs.append(ct.TensorType(name=n, shape=shape, dtype=np.int32))
        elif arch.flexible:
            inputs.append(ct.TensorType(name=n, shape=(1, shape[1], ct.RangeDim(8, 64, default=shape[2]),
                                                       ct.RangeDim(8, 64, default=shape[3]))))
        else:
            inputs.append(ct.TensorType(name=n, shape=shape))
    kwargs = {"inputs": inputs}
    if arch.kind == "image_classifier":
        kwargs["classifier_config"] = ct.ClassifierConfig(CLASS_LABELS)
    else:
        kwargs["outputs"] = [ct.TensorType(name=o) for o in arch.outputs]
    if arch.kind == "dict":
        module = _TupleOutputs(module, arch.outputs).eval()
    return module, example, kwargs


def _torch_input(arch, name, shape, seed):
    g = torch.Generator().manual_seed(seed + 17)
    if arch.int_inputs and name in arch.int_inputs:
        return torch.randint(0, arch.int_inputs[name], shape, generator=g)
    if arch.kind == "image_classifier":
        return _normalise(_image(shape, seed))
    return torch.randn(shape, generator=g)


def _image(shape, seed) -> np.ndarray:
    rng = np.random.default_rng(seed + 5)
    return rng.integers(0, 256, size=(shape[2], shape[3], 3), dtype=np.uint8)


def _normalise(img: np.ndarray) -> torch.Tensor:
    x = img.astype(np.float32).transpose(2, 0, 1)[None] * np.float32(IMAGE_SCALE / IMAGE_STD)
    x = x + np.asarray([-m / IMAGE_STD for m in IMAGE_MEAN], np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy(x.astype(np.float32))


def coreml_inputs(name: str, seed: int = 0, shape=None) -> dict:
    """Inputs for ``predict`` (feature name -> array / uint8 image) matching
    ``torch_inputs(name, seed)``; ``shape`` overrides the input shape (flexible)."""
    arch = ARCHS[name]
    out = {}
    for n, s in arch.shapes.items():
        s = shape or s
        if arch.kind == "image_classifier":
            out[n] = _image(s, seed)
        else:
            t = _torch_input(arch, n, s, seed)
            out[n] = t.numpy().astype(np.int32 if t.dtype == torch.int64 else np.float32)
    return out


def torch_inputs(name: str, seed: int = 0, shape=None) -> tuple:
    arch = ARCHS[name]
    return tuple(_torch_input(arch, n, shape or s, seed) for n, s in arch.shapes.items())


def torch_outputs(name: str, seed: int = 0, shape=None) -> dict:
    """The torch forward for ``torch_inputs(name, seed)`` keyed like Core ML's
    outputs (image classifier: probabilities as {label: p} and the label)."""
    arch = ARCHS[name]
    module = _module(name)
    with torch.no_grad():
        res = module(*torch_inputs(name, seed, shape))
    if arch.kind == "dict":
        return {k: res[k].numpy() for k in arch.outputs}
    if arch.kind == "image_classifier":
        p = res.numpy().reshape(-1)
        return {"classLabel": CLASS_LABELS[int(p.argmax())],
                "probs": {lab: float(v) for lab, v in zip(CLASS_LABELS, p)}}
    if not isinstance(res, tuple):
        res = (res,)
    return {o: r.numpy() for o, r in zip(arch.outputs, res)}


# --------------------------------------------------------------------------- cached conversion

def _versions() -> str:
    ct = _ct()

    return f"torch{torch.__version__}-ct{ct.__version__}"


def cache_key(name: str, backend: str, precision: str | None = None) -> str:
    src = Path(__file__).read_bytes()
    tag = backend if precision is None else f"{backend}-{precision}"
    digest = hashlib.sha256(src + f"{name}|{tag}|{ZOO_VERSION}|{_versions()}".encode()).hexdigest()[:16]
    return f"{name}-{tag}-{digest}"


def converted(name: str, backend: str = "neuralnetwork", precision: str | None = None) -> Path:
    """Path of the converted model (cached on disk; converts on first use).

    ``precision`` ("float16" / "float32") sets an ML Program's compute precision;
    None keeps coremltools' default (float16 for ML Programs)."""
    if backend not in ("neuralnetwork", "mlprogram"):
        raise ValueError(f"backend must be 'neuralnetwork' or 'mlprogram', not {backend!r}")
    if precision not in (None, "float16", "float32") or (precision and backend != "mlprogram"):
        raise ValueError("precision is 'float16' or 'float32', for backend='mlprogram' only")
    suffix = ".mlmodel" if backend == "neuralnetwork" else ".mlpackage"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / (cache_key(name, backend, precision) + suffix)
    if target.exists():
        return target
    ct = _ct()

    module, example, kwargs = build(name)
    traced = torch.jit.script(module) if ARCHS[name].script else torch.jit.trace(module, example)
    # coremltools' temp folders go to a private folder removed afterwards; never sweep
    # /tmp (another test process may be converting at the same time)
    with private_tempdir():
        if precision is not None:
            kwargs["compute_precision"] = (ct.precision.FLOAT32 if precision == "float32"
                                           else ct.precision.FLOAT16)
        mlmodel = ct.convert(traced, convert_to=backend, **kwargs)
        tmp = CACHE_DIR / f".{target.name}.{uuid.uuid4().hex}{suffix}"
        if ARCHS[name].kind == "image_classifier":
            # name the probability output "probs" (ct picks a generated name)
            spec = mlmodel.get_spec()
            old = spec.description.predictedProbabilitiesName
            if old and old != "probs":
                ct.utils.rename_feature(spec, old, "probs")
                weights_dir = mlmodel.weights_dir if backend == "mlprogram" else None
                mlmodel = ct.models.MLModel(spec, weights_dir=weights_dir, skip_model_load=True)
        mlmodel.save(str(tmp))
        try:
            os.replace(tmp, target)           # atomic; a concurrent writer's copy is identical
        except OSError:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        del mlmodel
    return target
