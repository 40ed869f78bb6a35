"""PyTorch -> Core ML conversion with the well-known pitfalls handled.

:func:`from_torch` wraps ``coremltools.convert`` and does the chores every
conversion script repeats by hand:

* eval mode (and a warning when the module was training with dropout or
  batch norm), restored afterwards so the caller's module is left as it was;
* trace, or script (``script=True``) for data-dependent control flow; a trace
  whose result depends on the data it saw is refused instead of silently
  baking in one branch;
* forwards that return a dict, tuple, list or namedtuple are wrapped so every
  tensor becomes a Core ML output named after its key or field;
* ``mean=``/``std=`` written the torch way (on 0..1 pixels) become an
  ImageType's scale and per-channel bias; a per-channel ``std`` gets an exact
  per-channel multiply after the input (ImageType has one scale only);
* class labels, flexible shapes, metadata (with the Xcode preview keys);
* coremltools' temporary folders are created in a private folder that is
  removed afterwards;
* the result passes :func:`specsurgery.check.assert_valid`.

torch and coremltools are imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .._quiet import quiet_coremltools  # noqa: F401  (re-exported: convert.pytorch.quiet_coremltools)
from .._tempdirs import private_tempdir
from ..errors import SpecSurgeryError, UnsupportedError


class ConvertError(SpecSurgeryError):
    """A module or argument that cannot be converted as asked."""


class ConvertWarning(UserWarning):
    """Something converted, but probably not the way the caller meant."""


BACKENDS = ("neuralnetwork", "mlprogram")
COLOR_LAYOUTS = ("RGB", "BGR")
METADATA_KEYS = ("author", "license", "version", "description", "user_defined", "userDefined",
                 "inputs", "outputs", "preview")
CLASSIFIER_PROBS = "classLabelProbs"  # probabilities output of a classifier (Apple's usual name)
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
PREVIEW_PARAMS_KEY = "com.apple.coreml.model.preview.params"


# --------------------------------------------------------------------------- flexible shapes

class Range:
    """One flexible dimension: ``lower <= d <= upper`` (``upper=None``: unbounded).

    ``default`` is the size Core ML assumes when it needs one; it defaults to
    the example input's size.
    """

    def __init__(self, lower: int = 1, upper: Optional[int] = None, default: Optional[int] = None):
        if lower < 1 or (upper is not None and upper < lower):
            raise ConvertError(f"Range({lower}, {upper}): need 1 <= lower <= upper")
        self.lower, self.upper, self.default = int(lower), upper, default

    def __repr__(self) -> str:
        return f"Range({self.lower}, {self.upper})"


class Enumerated:
    """A fixed list of accepted shapes for one input (``default``: the example's shape)."""

    def __init__(self, shapes: Sequence[Sequence[int]], default: Optional[Sequence[int]] = None):
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        if not self.shapes:
            raise ConvertError("Enumerated() needs at least one shape")
        self.default = None if default is None else tuple(int(d) for d in default)

    def __repr__(self) -> str:
        return f"Enumerated({self.shapes})"


# --------------------------------------------------------------------------- main entry

def from_torch(module, example_inputs, *, image_input=None, mean=None, std=None,
               color_layout: str = "RGB", inputs=None, output_names=None, class_labels=None,
               backend: str = "neuralnetwork", minimum_deployment_target=None,
               script: bool = False, metadata: Optional[Mapping] = None, save_to=None,
               flexible: Optional[Mapping] = None, check: bool = True, quiet: bool = True):
    """Convert a PyTorch module (or ``torch.export`` program) to Core ML.

    Parameters
    ----------
    module: ``torch.nn.Module``, a ``torch.jit.ScriptModule`` or a
        ``torch.export.ExportedProgram``.
    example_inputs: a tensor or a tuple of tensors, one per input of forward.
    image_input: name (or list of names) of inputs that become ImageType
        (rank-4 ``1 x C x H x W``, C = 3 for RGB/BGR, 1 for grayscale).
    mean, std: the torch normalisation on 0..1 pixel values,
        ``(pixel/255 - mean) / std``, one value per channel (or one float).
    color_layout: "RGB" or "BGR", the channel order the module expects;
        mean/std are in that same order.
    inputs: names for the inputs (default: forward's parameter names).
    output_names: names for the outputs of a tensor/tuple/list forward
        (dict keys and namedtuple fields name themselves).
    class_labels: a list of labels or the path of a text file (one a line):
        makes a classifier whose probabilities are the module's output.
    backend: "neuralnetwork" (returns a ``Model_pb2.Model``) or "mlprogram"
        (returns a :class:`specsurgery.io.MLPackage` held in memory).
    minimum_deployment_target: a ``coremltools.target`` member or its name
        ("iOS15", "macOS13", ...).
    script: script instead of trace (for data-dependent control flow).
    metadata: author, license, version, description, user_defined (dict),
        inputs/outputs (dict name -> description), preview ({"type":
        "imageSegmenter", "labels": [...]}, or any params dict).
    save_to: also write the result there (``io.save``, which checks it).
    flexible: input name -> flexible shape: a tuple whose entries are ints or
        :class:`Range`, or an :class:`Enumerated` (or coremltools' Shape /
        EnumeratedShapes).
    check: run the offline validator on the result (default True).
    quiet: hide coremltools' progress bars and notes (errors still show).
    """
    if backend not in BACKENDS:
        raise ConvertError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if color_layout not in COLOR_LAYOUTS:
        raise ConvertError(f"color_layout {color_layout!r} is not one of {', '.join(COLOR_LAYOUTS)} "
                           "(a 1-channel image input is grayscale automatically)")
    _check_metadata_keys(metadata)
    import torch

    examples = _as_examples(example_inputs)
    exported = _is_exported_program(module)
    if not exported and not isinstance(module, torch.nn.Module):
        raise ConvertError(f"expected a torch.nn.Module or torch.export.ExportedProgram, "
                           f"got {type(module).__name__}")
    if isinstance(module, torch.jit.ScriptModule):
        script = True  # already compiled: keep its control flow, freeze it, fold dict reads
    names = _input_names(module, examples, inputs, exported)
    images = _image_inputs(image_input, names, examples)
    labels = _read_labels(class_labels)

    with _eval_mode(module) if not exported else contextlib.nullcontext():
        channel_scale, image_specs = _image_plan(images, names, examples, mean, std, color_layout)
        if exported:
            program = module
            if channel_scale:
                program = _reexport_with_channel_scale(program, channel_scale, examples)
            program = _prepare_exported(program)
            out_names = _exported_output_names(program, output_names)
            if labels is not None and output_names is None and len(out_names) == 1:
                out_names = [CLASSIFIER_PROBS]
            source = program
        else:
            with torch.no_grad():
                eager = _call(module, examples, "running forward on the example inputs")
            plan = _output_plan(eager, output_names)
            if labels is not None and output_names is None and len(plan) == 1:
                plan = [(CLASSIFIER_PROBS, plan[0][1])]
            out_names = [name for name, _ in plan]
            wrapped = _wrap(module, plan, channel_scale, eager)
            source = _trace_or_script(wrapped, module, examples, script)
        if labels is not None:
            _check_labels(labels, out_names, eager if not exported else None)
        mlmodel = _run_coremltools(source, names, examples, image_specs, flexible, out_names,
                                   labels, backend, minimum_deployment_target, quiet)
    _apply_metadata(mlmodel, metadata, labels)

    from .. import io as ssio

    if check:
        from ..check import assert_valid

        assert_valid(mlmodel, where="converted model")
    if save_to is not None:
        ssio.save(mlmodel, save_to, check=check)
    return mlmodel


# --------------------------------------------------------------------------- inputs

def _as_examples(example_inputs) -> tuple:
    import torch

    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and example_inputs:
        bad = [f"#{i} ({type(x).__name__})" for i, x in enumerate(example_inputs)
               if not isinstance(x, torch.Tensor)]
        if bad:
            raise ConvertError("example_inputs must be tensors; not tensors: " + ", ".join(bad))
        return tuple(example_inputs)
    raise ConvertError(f"example_inputs must be a tensor or a tuple of tensors, "
                       f"got {type(example_inputs).__name__}")


def _is_exported_program(obj) -> bool:
    return type(obj).__name__ == "ExportedProgram" and type(obj).__module__.startswith("torch.export")


def _forward_parameters(module) -> list[str]:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        try:  # a compiled forward has a schema instead of a Python signature
            return [a.name for a in module.forward.schema.arguments][1:]
        except Exception:
            return []
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        if p.name == "self":
            continue
        out.append(p.name)
    return out


def _input_names(module, examples, inputs, exported: bool) -> list[str]:
    if inputs is not None:
        if isinstance(inputs, str):
            inputs = [inputs]
        names = list(inputs)
        if not all(isinstance(n, str) for n in names):
            raise ConvertError("inputs= takes input names (strings); shapes come from the examples "
                               "and flexible=, images from image_input=")
        if len(names) != len(examples) or not all(names):
            raise ConvertError(f"inputs= gives {len(names)} name(s) {names} for "
                               f"{len(examples)} example input(s); give one non-empty name each")
    elif exported:
        sig = module.graph_signature
        names = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    else:
        params = _forward_parameters(module)
        names = params[: len(examples)]
        names += [f"input_{i}" for i in range(len(names), len(examples))]
    if len(set(names)) != len(names):
        raise ConvertError(f"input names must be unique, got {names}")
    return names


def _image_inputs(image_input, names, examples) -> list[int]:
    if image_input is None:
        return []
    wanted = [image_input] if isinstance(image_input, str) else list(image_input)
    from ..errors import missing_message

    missing = [w for w in wanted if w not in names]
    if missing:
        raise ConvertError(missing_message("input", missing, names, "image_input") +
                           f"; the inputs are {names}")
    idx = [names.index(w) for w in wanted]
    for i in idx:
        shape = tuple(examples[i].shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, 3):
            raise ConvertError(
                f"image input {names[i]!r} has example shape {list(shape)}; an image input must be "
                "1 x C x H x W with C = 3 (RGB/BGR) or C = 1 (grayscale)")
        if examples[i].dtype.is_floating_point is False:
            raise ConvertError(f"image input {names[i]!r}: the example must be a float tensor "
                               f"(the normalised image), got {examples[i].dtype}")
    return idx


def _per_channel(values, what: str, channels: int, name: str) -> list[float]:
    if isinstance(values, (int, float)):
        return [float(values)] * channels
    try:
        vals = [float(v) for v in values]
    except TypeError:
        raise ConvertError(f"{what} must be a number or a list of numbers, got {values!r}") from None
    if len(vals) != channels:
        layout = "grayscale" if channels == 1 else "RGB/BGR"
        raise ConvertError(
            f"{what} has {len(vals)} value(s) {vals} but image input {name!r} has {channels} "
            f"channel(s) ({layout}); give {channels} value(s), one per channel, or a single number")
    return vals


def _image_plan(images, names, examples, mean, std, color_layout):
    """(per-input channel multipliers or None, {input index: (scale, bias, layout)})."""
    if not images and (mean is not None or std is not None):
        raise ConvertError("mean=/std= describe an image input's normalisation; "
                           "also pass image_input=<name of the image input>")
    channel_scale = {}
    specs = {}
    for i in images:
        c = int(examples[i].shape[1])
        m = _per_channel(0.0 if mean is None else mean, "mean", c, names[i])
        s = _per_channel(1.0 if std is None else std, "std", c, names[i])
        if any(v <= 0 for v in s):
            raise ConvertError(f"std must be positive, got {s}")
        # (p/255 - m) / s = p * 1/(255 s) - m/s
        if len(set(s)) == 1:
            scale = 1.0 / (255.0 * s[0])
            bias = [-mv / s[0] for mv in m]
        else:
            # ImageType has one scale: take out 1/255 and the mean there, and let
            # an exact per-channel multiply by 1/std follow the input.
            scale = 1.0 / 255.0
            bias = [-mv for mv in m]
            channel_scale[i] = [1.0 / v for v in s]
        layout = "G" if c == 1 else color_layout
        specs[i] = (scale, bias, layout)
    return channel_scale, specs


def _read_labels(class_labels):
    if class_labels is None:
        return None
    if isinstance(class_labels, (str, os.PathLike)):
        path = Path(class_labels)
        if not path.is_file():
            raise ConvertError(f"class_labels: {path} is not a file; pass a list of labels "
                               "or a text file with one label a line")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConvertError(f"class_labels: cannot read {path} ({exc}); pass a UTF-8 text file "
                               "with one label a line") from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        labels = list(class_labels)
    if not labels:
        raise ConvertError("class_labels is empty")
    if not (all(isinstance(x, str) for x in labels) or all(isinstance(x, int) for x in labels)):
        raise ConvertError("class_labels must be all strings or all integers")
    if len(set(labels)) != len(labels):
        dups = sorted({x for x in labels if labels.count(x) > 1}, key=str)
        raise ConvertError(f"class_labels has duplicates: {dups}")
    return labels


# --------------------------------------------------------------------------- eval mode

@contextlib.contextmanager
def _eval_mode(module):
    """Eval mode during conversion; the training flags are restored afterwards."""
    import torch

    # modules whose forward differs between train and eval: dropout and batch norms
    _TRAINING_DEPENDENT = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
                           torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout, torch.nn.BatchNorm1d,
                           torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
                           torch.nn.LazyBatchNorm1d, torch.nn.LazyBatchNorm2d, torch.nn.LazyBatchNorm3d)
    flags = [(m, m.training) for m in module.modules()]
    if module.training:
        risky = sorted({type(m).__name__ for m in module.modules()
                        if isinstance(m, _TRAINING_DEPENDENT)})
        if risky:
            warnings.warn(
                f"{type(module).__name__} was in training mode and has {', '.join(risky)}: "
                "converted in eval mode (dropout off, batch norm with running statistics); "
                "call .eval() first to silence this warning", ConvertWarning, stacklevel=4)
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _call(module, examples, what: str):
    try:
        return module(*examples)
    except Exception as exc:
        raise ConvertError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- outputs

def _flatten(value, prefix: str, out: list, path: tuple, where: str):
    import torch

    if isinstance(value, torch.Tensor):
        out.append((prefix, path))
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConvertError(f"{where} returns a dict with key {key!r} ({type(key).__name__}); "
                                   "output names come from the keys, which must be strings")
            _flatten(item, f"{prefix}_{key}" if prefix else key, out, path + (key,), where)
        return
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        for field in value._fields:
            _flatten(getattr(value, field), f"{prefix}_{field}" if prefix else field, out,
                     path + (field,), where)
        return
    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}_{i}" if prefix else f"output_{i}", out, path + (i,), where)
        return
    label = prefix or "the output"
    raise ConvertError(
        f"{where}: output {label!r} is a {type(value).__name__} ({_short(value)}), not a tensor; "
        "Core ML outputs are tensors: return tensors (or a dict/tuple of tensors) from forward")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _output_plan(eager, output_names) -> list[tuple[str, tuple]]:
    """[(output name, access path into forward's result)], one per tensor."""
    import torch

    plan: list = []
    _flatten(eager, "", plan, (), "forward")
    if isinstance(eager, torch.Tensor):
        plan = [("output", ())]
    if output_names is not None:
        output_names = [output_names] if isinstance(output_names, str) else list(output_names)
        if len(output_names) != len(plan):
            raise ConvertError(f"output_names gives {len(output_names)} name(s) {output_names} but "
                               f"forward returns {len(plan)} tensor(s) {[n for n, _ in plan]}")
        plan = [(new, path) for new, (_, path) in zip(output_names, plan)]
    seen = [n for n, _ in plan]
    if len(set(seen)) != len(seen):
        raise ConvertError(f"output names must be unique, got {seen}")
    return plan


def _exported_output_names(program, output_names):
    count = sum(1 for s in program.graph_signature.output_specs if s.kind.name == "USER_OUTPUT")
    if output_names is None:
        try:
            names = _treespec_names(program.call_spec.out_spec, "")
        except Exception:  # an unfamiliar pytree: fall back to positions
            names = []
        if len(names) == count and len(set(names)) == count:
            return names
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    names = [output_names] if isinstance(output_names, str) else list(output_names)
    if len(names) != count:
        raise ConvertError(f"output_names gives {len(names)} name(s) but the exported program "
                           f"has {count} output(s)")
    return names


def _treespec_names(spec, prefix: str) -> list[str]:
    """Output names from an exported program's output pytree (dict keys,
    namedtuple fields, positions), the same names a traced forward gets."""
    if spec.is_leaf():
        return [prefix or "output"]
    kind = spec.type
    children = spec.children() if callable(getattr(spec, "children", None)) else spec.children_specs
    if kind is dict or (isinstance(kind, type) and issubclass(kind, dict)):
        keys = [str(k) for k in spec.context]
    elif isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
        keys = list(kind._fields)
    elif isinstance(spec.context, type) and hasattr(spec.context, "_fields"):
        keys = list(spec.context._fields)  # pytree keeps a namedtuple's class as the context
    else:
        keys = [str(i) if prefix else f"output_{i}" for i in range(len(children))]
    names = []
    for key, child in zip(keys, children):
        names += _treespec_names(child, f"{prefix}_{key}" if prefix else key)
    return names


def _check_labels(labels, out_names, eager):
    import torch

    if len(out_names) != 1:
        raise ConvertError(f"class_labels make a classifier, which needs forward to return one "
                           f"tensor of scores; it returns {len(out_names)}: {out_names}")
    if isinstance(eager, torch.Tensor):
        n = int(eager.shape[-1]) if eager.dim() else 1  # the class axis is the last one
        if n != len(labels):
            raise ConvertError(f"class_labels has {len(labels)} label(s) but the output "
                               f"{out_names[0]!r} has {n} scores (shape {list(eager.shape)}); "
                               "give one label per score")


def _get(value, path):
    for key in path:
        value = getattr(value, key) if isinstance(key, str) and hasattr(value, "_fields") else value[key]
    return value


@functools.lru_cache(maxsize=None)
def _wrapper_class():
    """The wrapper module class (built on first use so torch loads lazily)."""
    import torch

    class OutputWrapper(torch.nn.Module):
        """forward(*inputs) -> the plan's tensors (a tuple, or one tensor).

        Also applies the exact per-channel ``1/std`` of image inputs whose std
        differs per channel (ImageType has one scale for all channels).
        """

        def __init__(self, inner, paths, channel_scale):
            super().__init__()
            self.inner = inner
            self.paths = paths
            self.scaled = sorted(channel_scale)
            for i, values in channel_scale.items():
                self.register_buffer(f"channel_scale_{i}",
                                     torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, *args):
            args = list(args)
            for i in self.scaled:
                args[i] = args[i] * getattr(self, f"channel_scale_{i}")
            out = self.inner(*args)
            if len(self.paths) == 1:  # one tensor: no tuple, so no "tuple output" note
                return _get(out, self.paths[0])
            return tuple(_get(out, p) for p in self.paths)

    return OutputWrapper


def _wrap(module, plan, channel_scale, eager):
    """``module`` itself when coremltools can take its outputs as they are,
    else the wrapper that flattens them (and scales image channels)."""
    import torch

    paths = [p for _, p in plan]
    if not channel_scale and (isinstance(eager, torch.Tensor) or
                              (type(eager) is tuple and all(len(p) == 1 for p in paths))):
        return module
    return _wrapper_class()(module, paths, channel_scale).eval()


# --------------------------------------------------------------------------- trace / script

_DATA_DEPENDENT = re.compile(r"Converting a tensor to a Python (boolean|index|integer|float|number)|"
                             r"might cause the trace to be incorrect", re.I)


def _probe_inputs(examples, seed: int):
    """Inputs of the same shapes and dtypes as the examples but other values."""
    import torch

    gen = torch.Generator().manual_seed(1234 + seed)
    probes = []
    for x in examples:
        if x.dtype.is_floating_point:
            sign = -1.0 if seed % 2 == 0 else 1.0
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            probes.append(sign * (3.0 * x + 1.0) + 0.5 * noise)
        elif x.dtype == torch.bool:
            probes.append(~x if seed == 0 else torch.rand(x.shape, generator=gen) > 0.5)
        else:
            lo = int(x.min()) if x.numel() else 0
            hi = int(x.max()) + 1 if x.numel() else 1
            probes.append(torch.randint(min(lo, 0), max(hi, 2), x.shape, generator=gen, dtype=x.dtype))
    return tuple(probes)


_TO_PYTHON = {"__bool__": "bool(tensor)", "__int__": "int(tensor)", "__index__": "tensor used as an index or range()",
              "__float__": "float(tensor)", "item": "tensor.item()", "tolist": "tensor.tolist()"}
# ops whose result depends on an input's shape only, never on its values
_SHAPE_ONLY = {"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones",
               "new_empty", "new_full", "size", "dim", "numel"}


def find_data_dependence(module, examples):
    """Run ``module`` eagerly and report the first tensor *computed from the
    inputs' values* that Python turns into a bool/int/float (an ``if`` on a
    tensor, a loop count, ``.item()``): ``(what, "file:line")`` or None.

    Values are followed with a ``TorchFunctionMode``: every op output with an
    input-derived operand is input-derived; sizes are Python ints in eager
    mode, so shape-only logic never counts.
    """
    import traceback

    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten

    tainted: dict[int, object] = {}  # id -> tensor (kept alive so ids stay unique)
    found: list = []
    here = os.path.abspath(__file__)

    def mark(value):
        for t in tree_flatten(value)[0]:
            if isinstance(t, torch.Tensor):
                tainted[id(t)] = t

    def is_tainted(args, kwargs):
        flat = tree_flatten((args, kwargs or {}))[0]
        return any(isinstance(t, torch.Tensor) and id(t) in tainted for t in flat)

    class _Follow(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            dependent = is_tainted(args, kwargs) and name not in _SHAPE_ONLY
            if dependent and name in _TO_PYTHON and not found:
                frames = [f for f in traceback.extract_stack()[:-1]
                          if os.sep + "torch" + os.sep not in f.filename
                          and os.path.abspath(f.filename) != here]
                where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
                found.append((_TO_PYTHON[name], where))
            out = func(*args, **(kwargs or {}))
            if dependent:
                mark(out)
            return out

    mark(examples)
    with torch.no_grad(), _Follow():
        module(*examples)
    return found[0] if found else None


def _probe_disagreement(wrapped, traced, examples, warning):
    """Fallback check: does the trace disagree with eager forward on other values?"""
    import torch

    for seed in range(4):
        probes = _probe_inputs(examples, seed)
        with torch.no_grad():
            try:
                expected = wrapped(*probes)
            except Exception:
                continue
            try:
                got = traced(*probes)
            except Exception:
                got = None
        if not _same(expected, got):
            return str(warning.message).split(".")[0], f"{warning.filename}:{warning.lineno}"
    return None


def _same(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5,
                                                           equal_nan=True))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _trace_or_script(wrapped, module, examples, script: bool):
    import torch

    name = type(module).__name__
    if script:
        inner = wrapped.inner if hasattr(wrapped, "paths") else wrapped
        try:
            scripted = inner if isinstance(inner, torch.jit.ScriptModule) else torch.jit.script(inner)
        except Exception as exc:
            raise ConvertError(
                f"scripting {name} failed: {type(exc).__name__}: {_first_lines(exc)}; TorchScript "
                "needs type annotations for non-tensor arguments and supports a subset of Python "
                "(no **kwargs, no dynamic attribute access)") from exc
        if wrapped is module:
            frozen = _freeze(scripted, name)
            _fold_num_to_tensor(frozen)
            return frozen
        # A traced wrapper around the scripted module keeps the scripted control
        # flow (the trace records a call into it) and flattens the outputs.
        wrapped.inner = scripted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(wrapped, examples, check_trace=False, strict=False)
            except Exception as exc:
                raise ConvertError(f"wrapping scripted {name} failed: {_first_lines(exc)}") from exc
        traced = _freeze(traced, name)
        _fold_dict_getitem(traced)
        _fold_num_to_tensor(traced)
        return traced
    if isinstance(module, torch.jit.ScriptModule) and wrapped is module:
        return module
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            traced = torch.jit.trace(wrapped, examples, check_trace=False, strict=False)
        except Exception as exc:
            raise ConvertError(
                f"tracing {name} failed: {type(exc).__name__}: {_first_lines(exc)}. Tracing runs "
                "forward once on the example inputs and records the tensor operations; it cannot "
                "follow Python control flow that depends on tensor values (if/while on a tensor, "
                "loops whose length is a tensor). Use script=True for such a module, or make "
                "forward take and return tensors only") from exc
    suspicious = [w for w in caught if _DATA_DEPENDENT.search(str(w.message))]
    if suspicious:
        # The trace turned a tensor into a Python value (an if, a loop count).
        # Harmless when the value only depends on shapes (tracing turns sizes
        # into tensors); wrong for every other input when it depends on values.
        try:
            found = find_data_dependence(wrapped, examples)
        except Exception:  # the analysis itself failed: compare on other values instead
            found = _probe_disagreement(wrapped, traced, examples, suspicious[0])
        if found:
            what, where = found
            raise ConvertError(
                f"tracing {name} recorded data-dependent control flow: forward turns a tensor "
                f"computed from the inputs into a Python value ({what} at {where}), so the trace "
                "baked in the branch or loop count of the example inputs and would give wrong "
                "results for other inputs. Use script=True (TorchScript keeps if/while/for as "
                "control flow)")
    _fold_num_to_tensor(traced)
    return traced


def _freeze(script_module, name: str):
    """Freeze a scripted module: attributes become constants.

    coremltools 9.0 reads ``prim::GetAttr`` of an int attribute (a loop count,
    a token id) as an untyped value and fails on it (``cast ... Provided
    string``); frozen, the attribute is a plain constant it understands.
    """
    import torch

    try:
        return torch.jit.freeze(script_module)
    except Exception:
        # Already frozen (no attributes left) or not freezable: convert as it is;
        # coremltools reports anything it then cannot read.
        return script_module


def _first_lines(exc, n: int = 3) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:n]) or type(exc).__name__


def _fold_dict_getitem(traced) -> None:
    """Replace ``dict[key]`` of a dict built in the same graph with the value.

    coremltools 9.0 has no converter for ``prim::DictConstruct``; a scripted
    forward that returns a dict produces one, and the wrapper then reads it
    with constant keys.  After inlining, each such read is the value itself.
    """
    import torch

    graph = traced.graph
    torch._C._jit_pass_inline(graph)
    changed = False
    for node in list(graph.nodes()):
        if node.kind() != "aten::__getitem__":
            continue
        src, key = list(node.inputs())
        producer = src.node()
        if producer.kind() != "prim::DictConstruct" or key.node().kind() != "prim::Constant":
            continue
        wanted = key.toIValue()
        items = list(producer.inputs())
        for k, v in zip(items[0::2], items[1::2]):
            if k.node().kind() == "prim::Constant" and k.toIValue() == wanted:
                node.output().replaceAllUsesWith(v)
                changed = True
                break
    if changed:
        torch._C._jit_pass_dce(graph)


def _fold_num_to_tensor(module) -> int:
    """``aten::Int(prim::NumToTensor(n))`` -> ``n`` in a traced graph.

    Tracing records ``B, T = x.shape`` as ``size -> NumToTensor -> Int``.
    coremltools 9.0 holds the NumToTensor value as a one-element array and
    converts it with ``int(array)``, which NumPy 2 refuses ("only
    0-dimensional arrays can be converted to Python scalars").  The round
    trip is an identity on the int, so drop it.
    """
    import torch

    graph = module.graph
    torch._C._jit_pass_inline(graph)
    folded = 0

    def visit(block):
        nonlocal folded
        for node in list(block.nodes()):
            for sub in node.blocks():
                visit(sub)
            if node.kind() != "aten::Int":
                continue
            source = node.input().node()
            if source.kind() == "prim::NumToTensor":
                node.output().replaceAllUsesWith(source.input())
                folded += 1

    visit(graph)
    if folded:
        torch._C._jit_pass_dce(graph)
    return folded


def _reexport_with_channel_scale(program, channel_scale, examples):
    """An exported program cannot take the per-channel ``1/std`` wrapper in
    place; export the wrapper around the program's module instead."""
    import torch

    inner = program.module()
    n_out = sum(1 for s in program.graph_signature.output_specs if s.kind.name == "USER_OUTPUT")
    paths = [()] if n_out == 1 else [(i,) for i in range(n_out)]
    if n_out == 1:
        wrapped = _wrapper_class()(inner, paths, channel_scale)
    else:
        wrapped = _wrapper_class()(_flat_class()(inner), paths, channel_scale)
    try:
        return torch.export.export(wrapped, tuple(examples))
    except Exception as exc:
        raise ConvertError(f"re-exporting the program with the per-channel 1/std failed: "
                           f"{_first_lines(exc)}; pass the nn.Module instead") from exc


@functools.lru_cache(maxsize=None)
def _flat_class():
    import torch
    from torch.utils._pytree import tree_flatten

    class _FlatModule(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return tuple(tree_flatten(self.inner(*args))[0])

    return _FlatModule


def _prepare_exported(program):
    """coremltools 9.0 reads an ExportedProgram in the core-ATen dialect; with
    torch >= 2.5 ``torch.export`` yields the training IR, so decompose it
    (``run_decompositions({})`` keeps high-level ops coremltools knows)."""
    try:
        return program.run_decompositions({})
    except Exception as exc:
        raise ConvertError(f"run_decompositions on the exported program failed: "
                           f"{_first_lines(exc)}") from exc


# --------------------------------------------------------------------------- coremltools

def _target(ct, minimum_deployment_target):
    if minimum_deployment_target is None or not isinstance(minimum_deployment_target, str):
        return minimum_deployment_target
    known = {t.name.lower(): t for t in ct.target}
    try:
        return known[minimum_deployment_target.lower()]
    except KeyError:
        raise ConvertError(f"minimum_deployment_target {minimum_deployment_target!r} is not one of "
                           f"{', '.join(t.name for t in ct.target)}") from None


def _shape_for(ct, name, example_shape, flexible):
    """The coremltools shape of one input (fixed, ranged or enumerated)."""
    spec = (flexible or {}).get(name)
    if spec is None:
        return tuple(example_shape)
    if isinstance(spec, (ct.Shape, ct.EnumeratedShapes)):
        return spec
    if isinstance(spec, Enumerated):
        default = spec.default or tuple(example_shape)
        if tuple(example_shape) not in spec.shapes:
            raise ConvertError(f"flexible[{name!r}]: the example shape {list(example_shape)} is not "
                               f"one of the enumerated shapes {[list(s) for s in spec.shapes]}")
        if default not in spec.shapes:
            raise ConvertError(f"flexible[{name!r}]: default {list(default)} is not one of the shapes")
        return ct.EnumeratedShapes(shapes=[list(s) for s in spec.shapes], default=list(default))
    spec = list(spec)
    if len(spec) != len(example_shape):
        raise ConvertError(f"flexible[{name!r}] has {len(spec)} dimension(s) but the example input "
                           f"has shape {list(example_shape)} (rank {len(example_shape)})")
    dims = []
    for axis, (d, size) in enumerate(zip(spec, example_shape)):
        if isinstance(d, tuple) and len(d) == 2:
            d = Range(d[0], d[1])
        if isinstance(d, Range):
            upper = -1 if d.upper is None else d.upper
            if size < d.lower or (d.upper is not None and size > d.upper):
                raise ConvertError(f"flexible[{name!r}] axis {axis}: the example size {size} is "
                                   f"outside {d}; trace with an example inside the range")
            dims.append(ct.RangeDim(lower_bound=d.lower, upper_bound=upper,
                                    default=d.default if d.default is not None else int(size)))
        elif isinstance(d, ct.RangeDim):
            dims.append(d)
        elif isinstance(d, int):
            if d != size:
                raise ConvertError(f"flexible[{name!r}] axis {axis}: fixed size {d} differs from "
                                   f"the example size {size}")
            dims.append(d)
        else:
            raise ConvertError(f"flexible[{name!r}] axis {axis}: {d!r} is not an int, Range(lo, hi) "
                               "or (lo, hi)")
    return ct.Shape(shape=dims)


def _run_coremltools(source, names, examples, image_specs, flexible, out_names, labels, backend,
                     minimum_deployment_target, quiet=True):
    import numpy as np
    import torch

    unknown = sorted(set(flexible or {}) - set(names))
    if unknown:
        from ..errors import missing_message

        raise ConvertError(missing_message("input", unknown, names, "flexible"))
    with private_tempdir("specsurgery-convert-") as tmp, quiet_coremltools(quiet):
        from .._proto import coremltools

        ct = coremltools()
        ct_inputs = []
        for i, (name, x) in enumerate(zip(names, examples)):
            shape = _shape_for(ct, name, tuple(x.shape), flexible)
            if i in image_specs:
                scale, bias, layout = image_specs[i]
                layout = {"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR,
                          "G": ct.colorlayout.GRAYSCALE}[layout]
                ct_inputs.append(ct.ImageType(name=name, shape=shape, scale=scale,
                                              bias=bias[0] if len(bias) == 1 else bias,
                                              color_layout=layout))
            else:
                dtype = np.float32 if x.dtype.is_floating_point else np.int32
                if x.dtype == torch.bool:
                    dtype = np.bool_
                ct_inputs.append(ct.TensorType(name=name, shape=shape, dtype=dtype))
        kwargs = dict(inputs=ct_inputs, convert_to=backend,
                      minimum_deployment_target=_target(ct, minimum_deployment_target))
        if labels is not None:
            kwargs["classifier_config"] = ct.ClassifierConfig(labels)
        else:
            kwargs["outputs"] = [ct.TensorType(name=n) for n in out_names]
        if backend == "mlprogram":
            kwargs["compute_precision"] = ct.precision.FLOAT32
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", module="coremltools")
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                mlmodel = ct.convert(source, **kwargs)
        except NotImplementedError as exc:
            op = re.search(r"op '([^']+)'", str(exc))
            raise UnsupportedError(
                f"coremltools {ct.__version__} cannot convert the torch op "
                f"{op.group(1) if op else '?'!r} ({_first_lines(exc, 1)}); rewrite that part of "
                "forward with supported ops or register a custom op converter") from exc
        except SpecSurgeryError:
            raise
        except Exception as exc:
            raise ConvertError(f"coremltools.convert failed: {type(exc).__name__}: "
                               f"{_first_lines(exc)}") from exc
        if backend == "neuralnetwork":
            result = mlmodel.get_spec()
            _drop_dead_layers(result)
        else:
            result = _package_in_memory(mlmodel, tmp)
        del mlmodel
    if labels is not None:
        _name_classifier_output(result, out_names[0])
    return result


def _consumed_blobs(network, into: set) -> None:
    """Every blob a layer of ``network`` (nested networks included) reads."""
    for layer in network.layers:
        into.update(layer.input)
        kind = layer.WhichOneof("layer")
        if kind == "loop":
            if layer.loop.conditionVar:
                into.add(layer.loop.conditionVar)
            _consumed_blobs(layer.loop.conditionNetwork, into)
            _consumed_blobs(layer.loop.bodyNetwork, into)
        elif kind == "branch":
            _consumed_blobs(layer.branch.ifBranch, into)
            _consumed_blobs(layer.branch.elseBranch, into)


def _drop_dead_layers(spec) -> int:
    """Remove top-level layers whose outputs nothing reads.

    coremltools 9.0 emits, after a ``loop`` layer, a second ``loadConstantND``
    with the same name and output as one inside the loop body (the unused
    iteration counter of a TorchScript loop).  The blob is then produced
    twice, which the validator rejects; nothing reads it, so drop it.
    """
    which = spec.WhichOneof("Type")
    if which not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return 0
    network = getattr(spec, which)
    if not any(layer.WhichOneof("layer") in ("loop", "branch") for layer in network.layers):
        return 0  # only seen with control flow; leave plain networks untouched
    keep_always = {f.name for f in spec.description.output}
    if which == "neuralNetworkClassifier" and network.labelProbabilityLayerName:
        keep_always.add(network.labelProbabilityLayerName)
    removed = 0
    while True:
        # A top-level layer is dead when no later layer (or layer nested in a
        # later loop/branch) reads its outputs and no model output is one.
        dead = []
        used = set(keep_always)
        for i in range(len(network.layers) - 1, -1, -1):
            layer = network.layers[i]
            if (layer.output and not (set(layer.output) & used)
                    and layer.WhichOneof("layer") not in ("loop", "branch")):
                dead.append(i)
                continue
            holder = type(network)()
            holder.layers.add().CopyFrom(layer)
            _consumed_blobs(holder, used)
        if not dead:
            return removed
        for i in sorted(dead, reverse=True):
            del network.layers[i]
        removed += len(dead)


def _package_in_memory(mlmodel, tmp: Path):
    """The converted ML Program as an MLPackage whose weights live in memory."""
    import numpy as np

    from .. import io as ssio

    path = tmp / "converted.mlpackage"
    mlmodel.save(str(path))
    pkg = ssio.load(path)
    weights = {key: ssio.WeightFile(None, data=np.array(w.data, copy=True))
               for key, w in pkg.weights.items() if not w.missing}
    return ssio.MLPackage(pkg.spec, weights, None, {})


def _name_classifier_output(result, probs_name: str) -> None:
    """coremltools names the probabilities after an internal variable; use ours."""
    from ..io import split_model

    spec, _ = split_model(result)
    old = spec.description.predictedProbabilitiesName
    if not old or old == probs_name:
        return
    if probs_name in {f.name for f in spec.description.input}:
        return
    for f in spec.description.output:
        if f.name == old:
            f.name = probs_name
    spec.description.predictedProbabilitiesName = probs_name
    which = spec.WhichOneof("Type")
    if which in ("neuralNetworkClassifier", "neuralNetwork", "neuralNetworkRegressor"):
        nn = getattr(spec, which)
        if which == "neuralNetworkClassifier":
            nn.labelProbabilityLayerName = nn.labelProbabilityLayerName or old
        for layer in nn.layers:
            for i, o in enumerate(layer.output):
                if o == old:
                    layer.output[i] = probs_name
            for i, o in enumerate(layer.input):
                if o == old:
                    layer.input[i] = probs_name
        if which == "neuralNetworkClassifier" and nn.labelProbabilityLayerName == old:
            nn.labelProbabilityLayerName = probs_name
    else:
        # ML Program: rename the function output.
        for fn in spec.mlProgram.functions.values():
            block = fn.block_specializations[fn.opset]
            for i, o in enumerate(block.outputs):
                if o == old:
                    block.outputs[i] = probs_name
            for op in block.operations:
                for out in op.outputs:
                    if out.name == old:
                        out.name = probs_name
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        if b.WhichOneof("binding") == "name" and b.name == old:
                            b.name = probs_name


# --------------------------------------------------------------------------- metadata

def _check_metadata_keys(metadata):
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise ConvertError(f"metadata must be a dict, got {type(metadata).__name__}")
    unknown = sorted(set(metadata) - set(METADATA_KEYS))
    if unknown:
        from ..errors import missing_message

        raise ConvertError(missing_message("metadata key", unknown, METADATA_KEYS) +
                           f"; allowed: {', '.join(METADATA_KEYS)}")


def _apply_metadata(result, metadata, labels):
    from ..io import split_model

    spec, _ = split_model(result)
    meta = spec.description.metadata
    metadata = dict(metadata or {})
    for key, field in (("author", "author"), ("license", "license"), ("version", "versionString"),
                       ("description", "shortDescription")):
        if metadata.get(key) is not None:
            setattr(meta, field, str(metadata[key]))
    user = dict(metadata.get("user_defined") or {})
    user.update(metadata.get("userDefined") or {})
    for key, value in user.items():
        meta.userDefined[str(key)] = value if isinstance(value, str) else json.dumps(value)
    preview = metadata.get("preview")
    if preview is not None:
        if isinstance(preview, str):
            preview = {"type": preview}
        preview = dict(preview)
        kind = preview.pop("type", None)
        if not kind:
            raise ConvertError("metadata['preview'] needs a 'type', e.g. {'type': 'imageSegmenter', "
                               "'labels': [...]}")
        meta.userDefined[PREVIEW_TYPE_KEY] = str(kind)
        if "labels" not in preview and labels is not None and kind == "imageSegmenter":
            preview["labels"] = list(labels)
        if preview:
            meta.userDefined[PREVIEW_PARAMS_KEY] = json.dumps(preview)
    for group, features in (("inputs", spec.description.input), ("outputs", spec.description.output)):
        wanted = dict(metadata.get(group) or {})
        known = [f.name for f in features]
        missing = sorted(set(wanted) - set(known))
        if missing:
            from ..errors import missing_message

            raise ConvertError(missing_message(group[:-1], missing, known, "metadata"))
        for f in features:
            if f.name in wanted:
                f.shortDescription = str(wanted[f.name])
