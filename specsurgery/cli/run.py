"""``specsurgery run MODEL --input NAME=FILE ... -o OUT.npz``: the reference runtime."""

from __future__ import annotations

from contextlib import contextmanager

from ._common import add_bundle, add_json, add_quiet, add_search_path


def add_max_memory(parser) -> None:
    parser.add_argument("--max-memory", metavar="SIZE", default=None,
                        help="memory budget for the tensors and weights a model declares, e.g. 8G "
                             "(default: a quarter of physical memory, or $SPECSURGERY_MAX_MEMORY)")


@contextmanager
def runtime_limits(args):
    """The block runs under ``--max-memory``; the runtime's float16-overflow warnings
    become one ``warning:`` line each on stderr (said once, however many samples)."""
    import sys
    import warnings

    from .. import budget
    from ..runtime.mil import Float16Overflow

    said: list = []
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Float16Overflow):
            if str(message) not in said:
                said.append(str(message))
                print(f"warning: {message}", file=sys.stderr)
            return
        shown(message, category, filename, lineno, file, line)

    with budget.limited(args.max_memory), warnings.catch_warnings():
        warnings.simplefilter("always", Float16Overflow)
        warnings.showwarning = show
        yield


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel, .mlpackage or .pbtxt file")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE",
                        help="an input feature: .npy array, or .png/.jpg image (repeatable)")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("--function", default=None, help="ML Program function to run")
    add_max_memory(parser)
    parser.add_argument("-o", "--output", metavar="OUT.npz", default=None,
                        help="write outputs here: one array per output; a label as a one-element "
                             "string array; a dictionary as <name>.keys and <name>.values")
    add_quiet(parser)
    add_json(parser)


def _parse_inputs(pairs) -> list:
    from ..errors import SpecSurgeryError

    parsed = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SpecSurgeryError(f"--input {pair!r}: expected NAME=FILE (e.g. image=cat.png or x=x.npy)")
        parsed.append((name, path))
    return parsed


def _read_inputs(pairs):
    import numpy as np

    from ..errors import SpecSurgeryError

    inputs = {}
    for name, path in pairs:
        low = path.lower()
        try:
            if low.endswith(".npy"):
                inputs[name] = np.load(path, allow_pickle=False)
            elif low.endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")):
                from PIL import Image

                with Image.open(path) as im:
                    im.load()
                    inputs[name] = im.copy()
            else:
                raise SpecSurgeryError(f"--input {name}={path}: use a .npy array or a .png/.jpg image")
        except (OSError, ValueError) as exc:  # missing file, not an image, pickled or corrupt .npy
            raise SpecSurgeryError(f"--input {name}={path}: cannot read ({exc}); give a .npy written by "
                                   "numpy.save (no objects) or a .png/.jpg image") from None
    return inputs


def _check_array_dtypes(inputs: dict, features) -> None:
    """A .npy of strings or objects for a MultiArray input: say so instead of a numpy ValueError."""
    import numpy as np

    from ..errors import SpecSurgeryError
    from ..spec import describe_type

    for f in features:
        value = inputs.get(f.name)
        if (isinstance(value, np.ndarray) and f.type.WhichOneof("Type") == "multiArrayType"
                and value.dtype.kind not in "biuf"):
            raise SpecSurgeryError(f"--input {f.name}: the array holds {value.dtype} values but the model "
                                   f"takes {describe_type(f.type)}; save numbers (numpy.save of a float "
                                   "or int array)")


def to_arrays(outputs: dict) -> dict:
    """Runtime outputs -> flat {key: np.ndarray} as written to the .npz file."""
    import numpy as np

    arrays = {}
    for name, value in outputs.items():
        if isinstance(value, dict):
            keys = list(value)
            arrays[f"{name}.keys"] = np.asarray(keys)
            arrays[f"{name}.values"] = np.asarray([value[k] for k in keys], dtype=np.float64)
        elif isinstance(value, str):
            arrays[name] = np.asarray([value])
        else:
            arrays[name] = np.asarray(value)
    return arrays


def run(args) -> int:
    import sys

    import numpy as np

    from .. import io as _io
    from ..errors import NotFoundError
    from ..runtime import predict
    from ._common import Progress, print_json

    pairs = _parse_inputs(args.input)
    if args.output and not args.output.lower().endswith(".npz"):
        from ..errors import SpecSurgeryError

        raise SpecSurgeryError(f"-o {args.output}: outputs are written as a numpy archive; "
                               "name the file *.npz")
    spec = _io.load_spec(args.model)
    features = list(spec.description.input)
    if not features and spec.WhichOneof("Type") == "mlProgram":
        features = [f for fn in spec.description.functions for f in fn.input]
    known = [f.name for f in features]
    unknown = [n for n, _ in pairs if n not in known]
    if unknown:  # before reading any file: every wrong name at once
        from ..errors import missing_message

        raise NotFoundError(missing_message("input", unknown, known, args.model))
    if args.function is not None:
        from ..errors import SpecSurgeryError
        from ..spec import iter_models, model_type

        if not any(model_type(i.model) == "mlProgram" for i in iter_models(spec)):
            raise SpecSurgeryError(f"--function {args.function}: functions belong to ML Programs; "
                                   f"{args.model} is a {model_type(spec)} with none: drop --function")
    inputs = _read_inputs(pairs)
    _check_array_dtypes(inputs, features)
    bar = Progress.for_args(args, 1, "run")
    bar.describe(args.model)
    try:
        with runtime_limits(args):
            outputs = predict(args.model, inputs, search_path=args.search_path, bundle=args.bundle,
                              function=args.function)
        bar.step()
    except NotFoundError as exc:
        if not str(exc).startswith("missing input"):
            raise
        raise NotFoundError(f"{exc}; pass each with --input NAME=FILE (a .npy array or a "
                            ".png/.jpg image)") from None
    finally:
        bar.close()
    arrays = to_arrays(outputs)
    if args.output:
        import io as _pyio

        buf = _pyio.BytesIO()
        np.savez(buf, **arrays)
        _io.atomic_write_bytes(args.output, buf.getvalue())
    if args.json:
        print_json({k: (v.tolist() if v.size <= 10000 else {"shape": list(v.shape)})
                    for k, v in arrays.items()})
        return 0
    for name, arr in arrays.items():
        if arr.dtype.kind in "US":
            desc = ", ".join(map(str, arr.tolist()[:8])) + (" ..." if arr.size > 8 else "")
        else:
            flat = arr.astype(np.float64).reshape(-1) if arr.size else arr.reshape(-1)
            stats = (f" min {flat.min():.4g} max {flat.max():.4g} mean {flat.mean():.4g}"
                     if flat.size else "")
            desc = f"{arr.dtype}{list(arr.shape)}{stats}"
        print(f"{name}: {desc}")
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
