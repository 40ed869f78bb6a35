"""Small torch models converted to ML Programs for the tests in tests/mil.

Conversions are cached on disk under $SPECSURGERY_TEST_CACHE (tests/conftest.py: .pytest_cache; keyed by MODELS_VERSION,
the model name and the precision), so a second run costs no ct.convert.
If H3's ``tests/zoo.py`` offers ``converted(name, backend="mlprogram")``,
tests may use it too; these models cover the MIL ops the runtime must run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

# bump when a model below changes (the cache is keyed by this, not by the file's
# bytes, so adding a model does not throw away every other conversion)
MODELS_VERSION = "1"
# tests/conftest.py points SPECSURGERY_TEST_CACHE into pytest's cache folder (.pytest_cache)
CACHE = Path(os.environ.get("SPECSURGERY_TEST_CACHE") or tempfile.gettempdir()) / f"specsurgery_milzoo_v{MODELS_VERSION}"


def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.c1 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.down = nn.Conv2d(8, 16, 1, stride=2)
            self.pool = nn.MaxPool2d(2, ceil_mode=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = F.relu(self.bn(self.stem(x)))
            x = F.relu(self.bn1(self.c1(x)) + x)
            x = F.relu(self.c2(x) + self.down(x))
            x = self.pool(x)
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return F.softmax(self.fc(x), dim=1)

    class Mobile(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pw = nn.Conv2d(16, 24, 1)
            self.g = nn.Conv2d(24, 24, 3, padding=2, dilation=2, groups=4)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            x = F.relu6(self.c0(x))
            x = F.hardswish(self.dw(x))
            x = F.silu(self.pw(x))
            x = torch.sigmoid(self.g(x)) * x
            x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            return self.fc(x.mean(dim=(2, 3)))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1 = nn.Conv2d(3, 8, 3, padding=1)
            self.e2 = nn.Conv2d(8, 16, 3, padding=1)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.d1 = nn.Conv2d(16, 8, 3, padding=1)
            self.inorm = nn.InstanceNorm2d(8, affine=True)
            self.out = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            a = F.relu(self.e1(x))
            b = F.relu(self.e2(F.max_pool2d(a, 2)))
            u = self.up(b)
            c = torch.cat([u, a], dim=1)
            d = F.leaky_relu(self.inorm(self.d1(c)), 0.1)
            e = F.interpolate(F.avg_pool2d(d, 2), scale_factor=2, mode="bilinear", align_corners=False)
            f = F.interpolate(F.max_pool2d(d, 2), scale_factor=2, mode="nearest")
            return torch.tanh(self.out(e + f))

    class Transformer(nn.Module):
        def __init__(self, dim=32, heads=4):
            super().__init__()
            self.emb = nn.Embedding(50, dim)
            self.ln1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.ln2 = nn.LayerNorm(dim)
            self.ff1 = nn.Linear(dim, 64)
            self.ff2 = nn.Linear(64, dim)
            self.heads = heads
            self.head = nn.Linear(dim, 4)

        def forward(self, tokens):
            x = self.emb(tokens)
            b, t, d = 1, 8, 32  # static: traced shape arithmetic would become int() ops
            h = self.ln1(x)
            q, k, v = self.qkv(h).split(d, dim=-1)
            q = q.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            k = k.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            v = v.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            x = x + self.ff2(F.gelu(self.ff1(self.ln2(x))))
            return self.head(x[:, 0])

    class Misc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 6, 3)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            y = F.pad(x, (2, 1), mode="reflect")
            y = self.conv(y)
            y = torch.clamp(y, -0.5, 0.7) + torch.exp(-y.abs()) - torch.sqrt(y * y + 1)
            y = y[:, 1:5, ::2]
            z = y.max(dim=2).values + y.sum(dim=2) / (y.pow(2).mean(dim=2) + 1)
            z = torch.maximum(z, torch.zeros_like(z) - 0.2)
            z = F.elu(torch.cat([z, z[:, :2]], dim=1))
            return self.fc(z)

    class Attention(nn.Module):
        """torch's fused attention: ct emits scaled_dot_product_attention for iOS 18."""

        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(16, 48)
            self.out = nn.Linear(16, 16)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(1, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
            mask = torch.ones(6, 6).tril().bool()
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.out(y.transpose(1, 2).reshape(1, 6, 16))

    torch.manual_seed(0)
    models = {
        "resnet": (Res(), {"x": (1, 3, 32, 32)}),
        "mobilenet": (Mobile(), {"x": (1, 3, 32, 32)}),
        "unet": (UNet(), {"x": (1, 3, 32, 32)}),
        "transformer": (Transformer(), {"tokens": (1, 8)}),
        "misc": (Misc(), {"x": (1, 4, 12)}),
    }
    torch.manual_seed(1)
    models["attention"] = (Attention(), {"x": (1, 6, 16)})
    return models


NAMES = ["resnet", "mobilenet", "unet", "transformer", "misc"]


def example_inputs(name, seed=0):
    models = _torch_models()
    _, shapes = models[name]
    rng = np.random.RandomState(seed)
    out = {}
    for k, shape in shapes.items():
        if name == "transformer":
            out[k] = rng.randint(0, 50, size=shape).astype(np.int32)
        else:
            out[k] = rng.randn(*shape).astype(np.float32)
    return out


def torch_forward(name, inputs):
    import torch

    model, shapes = _torch_models()[name]
    model.eval()
    with torch.no_grad():
        args = [torch.from_numpy(np.asarray(inputs[k]).astype(np.int64 if name == "transformer" else np.float32))
                for k in shapes]
        out = model(*args)
    return out.numpy()


def _converted_impl(name, precision="fp32", deployment="iOS16") -> Path:
    """Path of the cached .mlpackage of model ``name`` (precision fp32 or fp16)."""
    target = CACHE / f"{name}_{precision}_{deployment}.mlpackage"
    if target.is_dir():
        return target
    import torch
    from specsurgery._proto import coremltools

    ct = coremltools()
    model, shapes = _torch_models()[name]
    model.eval()
    ex = [torch.zeros(s, dtype=torch.long) if name == "transformer" else torch.rand(s) for s in shapes.values()]
    traced = torch.jit.trace(model, tuple(ex))
    inputs = [ct.TensorType(name=k, shape=s, dtype=np.int32 if name == "transformer" else np.float32)
              for k, s in shapes.items()]
    mlmodel = ct.convert(
        traced, inputs=inputs, outputs=[ct.TensorType(name="out")], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, deployment))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    mlmodel.save(str(tmp / "m.mlpackage"))
    _publish(tmp / "m.mlpackage", target)
    shutil.rmtree(tmp, ignore_errors=True)
    _drop_temp_package(mlmodel)
    return target


class private_tmp:
    """Point ``tempfile`` (so coremltools' temporary packages) at a private
    folder while converting, and delete it afterwards: other processes that
    sweep /tmp/tmp* then never touch our in-flight files, and we never touch
    theirs."""

    def __enter__(self):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.saved = tempfile.tempdir
        self.path = tempfile.mkdtemp(prefix=".ct-", dir=CACHE)
        tempfile.tempdir = self.path
        return Path(self.path)

    def __exit__(self, *exc):
        tempfile.tempdir = self.saved
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def _publish(built: Path, target: Path) -> None:
    """Move a finished package into the cache; a parallel worker that got
    there first wrote the same model, so losing the race is fine."""
    try:
        if not target.exists():
            os.replace(built, target)
    except OSError:
        pass


def _drop_temp_package(mlmodel) -> None:
    """Remove the temporary .mlpackage ct.convert left for this model (only
    that one: other processes' temp folders are none of our business)."""
    pkg_dir = getattr(mlmodel, "package_path", None)
    if pkg_dir and Path(pkg_dir).exists() and str(Path(pkg_dir).resolve()).startswith(
            str(Path(tempfile.gettempdir()).resolve())):
        shutil.rmtree(pkg_dir, ignore_errors=True)


# --------------------------------------------------------------------------- H3's zoo at both precisions

def _zoo_converted_impl(name, precision="fp32") -> Path:
    """H3's ``tests/zoo.py`` architecture ``name`` as an ML Program at ``precision``
    (zoo.converted(name, backend="mlprogram") gives ct's default, fp16 only)."""
    import zoo

    key = hashlib.sha1(Path(zoo.__file__).read_bytes()).hexdigest()[:10]
    scripted = getattr(zoo.ARCHS[name], "script", False)
    target = CACHE / f"zoo_{name}_{precision}_{key}{'_scripted' if scripted else ''}.mlpackage"
    if target.is_dir():
        return target
    import torch
    from specsurgery._proto import coremltools

    ct = coremltools()
    module, example, kwargs = zoo.build(name)
    traced = torch.jit.script(module) if scripted else torch.jit.trace(module, example)
    first = None
    mlmodel = ct.convert(traced, convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                         **kwargs)
    if zoo.ARCHS[name].kind == "image_classifier":   # name the probabilities "probs", as zoo does
        spec = mlmodel.get_spec()
        old = spec.description.predictedProbabilitiesName
        if old and old != "probs":
            ct.utils.rename_feature(spec, old, "probs")
            first = mlmodel
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    mlmodel.save(str(tmp / "m.mlpackage"))
    _publish(tmp / "m.mlpackage", target)
    shutil.rmtree(tmp, ignore_errors=True)
    _drop_temp_package(mlmodel)
    if first is not None:
        _drop_temp_package(first)
    return target


# --------------------------------------------------------------------------- shared-backbone family

def _family():
    import torch
    import torch.nn as nn

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(7)
    backbone = Backbone().eval()

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.fc = backbone, nn.Linear(64, 6)

        def forward(self, x):
            return torch.softmax(self.fc(self.backbone(x).mean(dim=(2, 3))), dim=1)

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.fc = backbone, nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(self.backbone(x).amax(dim=(2, 3)))

    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.conv = backbone, nn.Conv2d(64, 4, 1)

        def forward(self, x):
            return torch.nn.functional.interpolate(self.conv(self.backbone(x)), scale_factor=4, mode="nearest")

    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.fc = backbone, nn.Linear(64 * 8 * 8, 16)

        def forward(self, x):
            return self.fc(self.backbone(x).flatten(1))

    torch.manual_seed(8)
    models = {"Classifier": Classifier().eval(), "Regressor": Regressor().eval(),
              "Segmenter": Segmenter().eval(), "Embedder": Embedder().eval()}
    # "Tuned": the classifier with its backbone's last stage fine-tuned
    import copy

    tuned = copy.deepcopy(models["Classifier"])
    with torch.no_grad():
        tuned.backbone.body[7].weight.mul_(1.1)
    models["Tuned"] = tuned.eval()
    return models


FAMILY = ["Classifier", "Regressor", "Segmenter", "Embedder"]


def _family_converted_impl(name, scale=1 / 255.0) -> Path:
    """Model ``name`` of a family sharing one backbone, as an ML Program with an
    image input (``scale`` is the image preprocessing; another scale must not dedupe)."""
    tag = f"{scale:.6g}".replace(".", "p")
    target = CACHE / f"family_{name}_{tag}.mlpackage"
    if target.is_dir():
        return target
    import torch
    from specsurgery._proto import coremltools

    ct = coremltools()
    module = _family()[name]
    traced = torch.jit.trace(module, torch.rand(1, 3, 32, 32))
    mlmodel = ct.convert(traced, inputs=[ct.ImageType(name="image", shape=(1, 3, 32, 32), scale=scale)],
                         outputs=[ct.TensorType(name="out")], convert_to="mlprogram")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    mlmodel.save(str(tmp / "m.mlpackage"))
    _publish(tmp / "m.mlpackage", target)
    shutil.rmtree(tmp, ignore_errors=True)
    _drop_temp_package(mlmodel)
    return target


def converted(name, precision="fp32", deployment="iOS16") -> Path:
    """Path of the cached .mlpackage of model ``name`` (precision fp32 or fp16)."""
    target = CACHE / f"{name}_{precision}_{deployment}.mlpackage"
    if target.is_dir():
        return target
    with private_tmp():
        return _converted_impl(name, precision, deployment)


def zoo_converted(name, precision="fp32") -> Path:
    """H3's zoo architecture ``name`` as an ML Program at ``precision`` (cached)."""
    with private_tmp():
        return _zoo_converted_impl(name, precision)


def family_converted(name, scale=1 / 255.0) -> Path:
    """Model ``name`` of the shared-backbone family (cached)."""
    with private_tmp():
        return _family_converted_impl(name, scale)


def stateful_converted() -> tuple:
    """(path, torch module) of an iOS 18 model with a state (an accumulator buffer)."""
    import torch
    import torch.nn as nn

    class Accumulator(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("acc", torch.zeros(1, 4))
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            self.acc.add_(self.fc(x))
            return self.acc * 2

    torch.manual_seed(3)
    module = Accumulator().eval()
    target = CACHE / "stateful_acc.mlpackage"
    if target.is_dir():
        return target, module
    from specsurgery._proto import coremltools

    ct = coremltools()
    with private_tmp():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_fresh_copy(module), torch.rand(1, 4))  # tracing mutates the buffer
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(shape=(1, 4), name="x")],
                             outputs=[ct.TensorType(name="y")],
                             states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4)), name="acc")],
                             minimum_deployment_target=ct.target.iOS18)
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        mlmodel.save(str(tmp / "m.mlpackage"))
        _publish(tmp / "m.mlpackage", target)
        shutil.rmtree(tmp, ignore_errors=True)
    return target, module


def _fresh_copy(module):
    import copy

    return copy.deepcopy(module)
