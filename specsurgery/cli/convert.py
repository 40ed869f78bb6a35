"""``specsurgery convert FILE.py:factory --input NAME=1x3x224x224 ... -o OUT``.

``factory`` is a function in FILE.py that returns a ``torch.nn.Module`` (called
with no arguments).  Each ``--input`` names one argument of forward, in order,
with its example shape:

* ``x=1x3x224x224``            fixed shape (float32 example, values in 0..1)
* ``tokens=1x8[1..64]:int``    a flexible axis: example size 8, any size 1..64
                               (``[1..]`` = unbounded); ``:int`` = integer input
* ``x=1x3x224x224,1x3x320x320`` enumerated shapes (the first is the example)
"""

from __future__ import annotations

import re

from ._common import add_json, add_quiet

_DIM = re.compile(r"^(\d+)(?:\[(\d+)\.\.(\d*)\])?$")


def configure(parser) -> None:
    parser.add_argument("source", metavar="FILE.py:factory",
                        help="a Python file and the function in it that returns the nn.Module")
    parser.add_argument("--input", dest="inputs", action="append", required=True,
                        metavar="NAME=SHAPE",
                        help="one per forward argument, in order: NAME=1x3x224x224, "
                             "NAME=1x8[1..64]:int (flexible axis, integer), NAME=SHAPE,SHAPE (enumerated)")
    parser.add_argument("--image", action="append", metavar="NAME", default=None,
                        help="make this input an image (1 x 3|1 x H x W)")
    parser.add_argument("--mean", nargs="+", type=float, metavar="M",
                        help="torch normalisation mean on 0..1 pixels, one per channel")
    parser.add_argument("--std", nargs="+", type=float, metavar="S",
                        help="torch normalisation std on 0..1 pixels, one per channel")
    parser.add_argument("--color-layout", choices=("RGB", "BGR"), default="RGB",
                        help="channel order the module expects (default RGB)")
    parser.add_argument("--labels", metavar="FILE",
                        help="class labels, one a line: makes a classifier")
    parser.add_argument("--output-name", dest="output_names", action="append", metavar="NAME",
                        help="name of each tensor output, in order (dict keys name themselves)")
    parser.add_argument("--backend", choices=("neuralnetwork", "mlprogram"), default="neuralnetwork")
    parser.add_argument("--min-target", metavar="TARGET",
                        help="minimum deployment target, e.g. iOS15, macOS13")
    parser.add_argument("--script", action="store_true",
                        help="script instead of trace (for data-dependent control flow)")
    parser.add_argument("--author")
    parser.add_argument("--license")
    parser.add_argument("--model-version", metavar="VERSION")
    parser.add_argument("--description")
    parser.add_argument("--preview", metavar="TYPE",
                        help="Xcode preview type, e.g. imageSegmenter (labels from --preview-labels)")
    parser.add_argument("--preview-labels", metavar="FILE", help="labels for the preview, one a line")
    parser.add_argument("--meta", action="append", metavar="KEY=VALUE", default=[],
                        help="user-defined metadata entry (repeatable)")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help=".mlmodel (neuralnetwork) or .mlpackage (mlprogram)")
    add_quiet(parser)
    add_json(parser)


def parse_input(text: str):
    """``NAME=SHAPE[:int|:float]`` -> (name, example shape, dtype, flexible or None)."""
    from ..convert import ConvertError, Enumerated, Range

    if "=" not in text:
        raise ConvertError(f"--input {text!r}: expected NAME=SHAPE, e.g. image=1x3x224x224")
    name, _, rest = text.partition("=")
    dtype = "float"
    if ":" in rest:
        rest, _, dtype = rest.rpartition(":")
        if dtype not in ("int", "float"):
            raise ConvertError(f"--input {text!r}: type {dtype!r} is not int or float")
    shapes = []
    flexible = None
    for part in rest.split(","):
        dims, ranged = [], False
        for token in part.lower().split("x"):
            m = _DIM.match(token.strip())
            if not m:
                raise ConvertError(f"--input {text!r}: dimension {token!r} is not N or N[LO..HI]")
            size = int(m.group(1))
            if m.group(2) is not None:
                ranged = True
                lo, hi = int(m.group(2)), int(m.group(3)) if m.group(3) else None
                if lo < 1 or (hi is not None and hi < lo):
                    raise ConvertError(f"--input {text!r}: range [{m.group(2)}..{m.group(3) or ''}] needs "
                                       "1 <= LO <= HI (HI empty for unbounded), e.g. 3[1..64]")
                dims.append(Range(lo, hi))
            else:
                dims.append(size)
            if size < 1:
                raise ConvertError(f"--input {text!r}: sizes must be >= 1")
        shapes.append(([int(_DIM.match(t.strip()).group(1)) for t in part.lower().split("x")],
                       dims, ranged))
    if not name:
        raise ConvertError(f"--input {text!r}: the name is empty")
    example = shapes[0][0]
    if len(shapes) > 1:
        if any(r for _, _, r in shapes):
            raise ConvertError(f"--input {text!r}: use either ranges or enumerated shapes, not both")
        flexible = Enumerated([s for s, _, _ in shapes])
    elif shapes[0][2]:
        flexible = tuple(shapes[0][1])
    return name, example, dtype, flexible


def load_factory(source: str):
    """Import FILE.py from its path and return its factory function."""
    import importlib.util
    import sys
    from pathlib import Path

    from ..errors import NotFoundError
    from ..convert import ConvertError

    file, sep, attr = source.rpartition(":")
    if not sep or not file or not attr:
        raise ConvertError(f"{source!r}: expected FILE.py:factory (a file and the function "
                           "in it that returns the nn.Module)")
    path = Path(file).resolve()
    if not path.is_file():
        raise NotFoundError(f"{file}: no such file")
    mod_name = f"_specsurgery_factory_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # let the file import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConvertError(f"{file}: importing it failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if sys.path and sys.path[0] == str(path.parent):
            sys.path.pop(0)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        from ..errors import missing_message

        known = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise NotFoundError(missing_message("factory", [attr], known, file))
    return factory


def run(args) -> int:
    from ._common import Progress

    # stages: import FILE.py, build the module, convert (trace + coremltools + check + save)
    with Progress.for_args(args, 3, "convert") as bar:
        return _convert(args, bar)


def _convert(args, bar) -> int:
    import time
    from pathlib import Path

    import torch

    from .. import io as ssio
    from ..convert import ConvertError, from_torch
    from ._common import human_bytes, print_json

    names, examples, flexible = [], [], {}
    for text in args.inputs:
        name, shape, dtype, flex = parse_input(text)
        names.append(name)
        gen = torch.Generator().manual_seed(len(names))
        if dtype == "int":
            examples.append(torch.randint(0, 2, shape, generator=gen))
        else:
            examples.append(torch.rand(shape, generator=gen))
        if flex is not None:
            flexible[name] = flex
    bar.describe(f"import {args.source.rpartition(':')[0]}")
    factory = load_factory(args.source)
    bar.step()
    bar.describe("build the module")
    try:
        module = factory()
    except Exception as exc:
        raise ConvertError(f"{args.source}: calling the factory failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ConvertError(f"{args.source} returned a {type(module).__name__}; "
                           "the factory must return a torch.nn.Module")
    metadata = {k: v for k, v in (("author", args.author), ("license", args.license),
                                  ("version", args.model_version),
                                  ("description", args.description)) if v is not None}
    user = {}
    for entry in args.meta:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ConvertError(f"--meta {entry!r}: expected KEY=VALUE")
        user[key] = value
    if user:
        metadata["user_defined"] = user
    if args.preview:
        preview = {"type": args.preview}
        if args.preview_labels:
            try:
                text = Path(args.preview_labels).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ConvertError(f"--preview-labels {args.preview_labels}: cannot read ({why}); pass a "
                                   "UTF-8 text file with one label a line") from None
            preview["labels"] = [line.strip() for line in text.splitlines() if line.strip()]
        metadata["preview"] = preview
    out = Path(args.output)
    if args.backend == "mlprogram" and out.suffix != ".mlpackage":
        raise ConvertError(f"{out}: an ML Program keeps its weights in a weight file; "
                           "write it to a .mlpackage")
    bar.step()
    bar.describe(f"convert to {args.backend}")
    t0 = time.perf_counter()
    model = from_torch(module, tuple(examples), inputs=names,
                       image_input=args.image, mean=args.mean, std=args.std,
                       color_layout=args.color_layout, output_names=args.output_names,
                       class_labels=args.labels, backend=args.backend,
                       minimum_deployment_target=args.min_target, script=args.script,
                       metadata=metadata or None, flexible=flexible or None, save_to=out)
    seconds = time.perf_counter() - t0
    bar.step()
    bar.close()  # before the summary is printed
    spec = ssio.load_spec(model)
    size = ssio.file_size(out) if hasattr(ssio, "file_size") else 0
    from ..spec import describe_type

    summary = {
        "output": str(out), "type": spec.WhichOneof("Type"),
        "specificationVersion": spec.specificationVersion,
        "inputs": {f.name: describe_type(f.type) for f in spec.description.input},
        "outputs": {f.name: describe_type(f.type) for f in spec.description.output},
        "bytes": size, "seconds": round(seconds, 2),
    }
    if args.json:
        print_json(summary)
        return 0
    print(f"wrote {out} ({summary['type']}, spec v{summary['specificationVersion']}, "
          f"{human_bytes(size)}) in {seconds:.1f} s")
    for kind in ("inputs", "outputs"):
        for name, text in summary[kind].items():
            print(f"  {kind[:-1]:6} {name}: {text}")
    return 0
