"""``specsurgery run MODEL --input NAME=FILE ... -o OUT.npz``: the reference runtime.

``--input NAME=FOLDER`` runs every .npy or image file of the folder (sorted by name) on
the model prepared once, and ``-o`` names a folder receiving ``<file name>.npz`` for
each.  Several folder inputs pair their files by name (extension aside); a plain
file input is given to every run."""

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
                        help="an input feature: .npy array, or .png/.jpg image (repeatable); a folder "
                             "of them runs every file in it (sorted; several folders must hold the "
                             "same names), writing one OUT/<name>.npz each")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("--function", default=None, help="ML Program function to run")
    add_max_memory(parser)
    parser.add_argument("-o", "--output", metavar="OUT.npz", default=None,
                        help="write outputs here: one array per output; a label as a one-element "
                             "string array; a dictionary as <name>.keys and <name>.values (with "
                             "folder inputs: a folder, one .npz per input file)")
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
            elif low.endswith(_IMAGE_SUFFIXES):
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


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
_INPUT_SUFFIXES = (".npy",) + _IMAGE_SUFFIXES


def _folder_files(name: str, folder: str) -> dict:
    """{stem: path} of the .npy and image files in ``folder`` (hidden files and
    sub-folders are skipped; any other file is refused by name)."""
    from pathlib import Path

    from ..errors import SpecSurgeryError

    found: dict = {}
    other = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if entry.suffix.lower() not in _INPUT_SUFFIXES:
            other.append(entry.name)
            continue
        if entry.stem in found:
            raise SpecSurgeryError(f"--input {name}={folder}: {Path(found[entry.stem]).name} and {entry.name} "
                                   f"are both input {entry.stem!r}; keep one file per name")
        found[entry.stem] = str(entry)
    if other:
        raise SpecSurgeryError(f"--input {name}={folder}: {', '.join(other)} "
                               f"{'is' if len(other) == 1 else 'are'} neither a .npy array nor an image "
                               f"({', '.join(_IMAGE_SUFFIXES)}); move {'it' if len(other) == 1 else 'them'} "
                               "out of the folder")
    if not found:
        raise SpecSurgeryError(f"--input {name}={folder}: the folder holds no .npy or image files "
                               f"({', '.join(_IMAGE_SUFFIXES)})")
    return found


def _folder_samples(folders) -> list:
    """[(stem, [(name, path), ...]), ...] in sorted order; every folder must hold the same
    names (the file name without its extension, so x/a.png pairs with y/a.npy)."""
    from ..errors import SpecSurgeryError

    files = [(name, folder, _folder_files(name, folder)) for name, folder in folders]
    stems = sorted(set().union(*(f.keys() for _, _, f in files)))
    gaps = [f"--input {name}={folder} lacks {', '.join(repr(s) for s in stems if s not in found)}"
            for name, folder, found in files if len(found) != len(stems)]
    if gaps:
        raise SpecSurgeryError("input folders must hold the same file names (extension aside): "
                               + "; ".join(gaps))
    return [(stem, [(name, found[stem]) for name, _, found in files]) for stem in stems]


def _in_sample(exc, where: str):
    """``exc`` with the input files it ran on in front of its message."""
    try:
        return type(exc)(f"{where}: {exc}")
    except TypeError:
        return exc


def _describe(arrays: dict) -> list:
    import numpy as np

    lines = []
    for name, arr in arrays.items():
        if arr.dtype.kind in "US":
            desc = ", ".join(map(str, arr.tolist()[:8])) + (" ..." if arr.size > 8 else "")
        else:
            flat = arr.astype(np.float64).reshape(-1) if arr.size else arr.reshape(-1)
            stats = (f" min {flat.min():.4g} max {flat.max():.4g} mean {flat.mean():.4g}"
                     if flat.size else "")
            desc = f"{arr.dtype}{list(arr.shape)}{stats}"
        lines.append(f"{name}: {desc}")
    return lines


def _json_arrays(arrays: dict) -> dict:
    return {k: (v.tolist() if v.size <= 10000 else {"shape": list(v.shape)}) for k, v in arrays.items()}


def _npz_bytes(arrays: dict) -> bytes:
    import io as _pyio

    import numpy as np

    buf = _pyio.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def run(args) -> int:
    import sys
    from pathlib import Path

    from .. import io as _io
    from ..errors import NotFoundError, SpecSurgeryError
    from ..runtime import predict
    from ..runtime.engine import source
    from ._common import Progress, print_json

    pairs = _parse_inputs(args.input)
    folders = [(n, p) for n, p in pairs if Path(p).is_dir()]
    if folders and args.output and (args.output.lower().endswith(".npz") or Path(args.output).is_file()):
        raise SpecSurgeryError(f"-o {args.output}: --input {folders[0][0]}={folders[0][1]} is a folder, so "
                               "the outputs are one .npz per input file; name a folder for -o")
    if not folders and args.output and not args.output.lower().endswith(".npz"):
        raise SpecSurgeryError(f"-o {args.output}: outputs are written as a numpy archive; "
                               "name the file *.npz")
    spec = source(args.model).spec      # the parse predict() reuses below
    features = list(spec.description.input)
    if not features and spec.WhichOneof("Type") == "mlProgram":
        features = [f for fn in spec.description.functions for f in fn.input]
    known = [f.name for f in features]
    unknown = [n for n, _ in pairs if n not in known]
    if unknown:  # before reading any file: every wrong name at once
        from ..errors import missing_message

        raise NotFoundError(missing_message("input", unknown, known, args.model))
    if args.function is not None:
        from ..spec import iter_models, model_type

        if not any(model_type(i.model) == "mlProgram" for i in iter_models(spec)):
            raise SpecSurgeryError(f"--function {args.function}: functions belong to ML Programs; "
                                   f"{args.model} is a {model_type(spec)} with none: drop --function")
    del spec
    fixed = [(n, p) for n, p in pairs if (n, p) not in folders]
    samples = _folder_samples(folders) if folders else [(None, [])]
    constant = _read_inputs(fixed)

    def one(extra):
        inputs = dict(constant)
        inputs.update(_read_inputs(extra))
        _check_array_dtypes(inputs, features)
        try:
            return to_arrays(predict(args.model, inputs, search_path=args.search_path,
                                     bundle=args.bundle, function=args.function))
        except NotFoundError as exc:
            if not str(exc).startswith("missing input"):
                raise
            raise NotFoundError(f"{exc}; pass each with --input NAME=FILE (a .npy array or a "
                                ".png/.jpg image, or a folder of them)") from None

    if not folders:
        bar = Progress.for_args(args, 1, "run")
        bar.describe(args.model)
        try:
            with runtime_limits(args):
                arrays = one([])
            bar.step()
        finally:
            bar.close()
        if args.output:
            _io.atomic_write_bytes(args.output, _npz_bytes(arrays))
        if args.json:
            print_json(_json_arrays(arrays))
            return 0
        for line in _describe(arrays):
            print(line)
        if args.output:
            print(f"wrote {args.output}", file=sys.stderr)
        return 0

    # a folder of inputs: the model is prepared once (predict's cache), one .npz per file
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecSurgeryError(f"-o {args.output}: cannot create the folder ({exc.strerror})") from None
    report: dict = {}
    lines: list = []
    with runtime_limits(args), Progress.for_args(args, len(samples), "run", unit="file") as bar:
        for stem, extra in samples:
            try:
                arrays = one(extra)
            except SpecSurgeryError as exc:
                where = ", ".join(f"{n}={p}" for n, p in extra)
                raise _in_sample(exc, f"input {stem!r} ({where})") from None
            if out_dir is not None:
                _io.atomic_write_bytes(out_dir / f"{stem}.npz", _npz_bytes(arrays))
            if args.json:
                report[stem] = _json_arrays(arrays)
            else:
                lines.append(f"{stem}:")
                lines.extend("  " + line for line in _describe(arrays))
            bar.step(stem)
    if args.json:
        print_json(report)
        return 0
    for line in lines:
        print(line)
    if out_dir is not None:
        print(f"wrote {len(samples)} file{'s' if len(samples) != 1 else ''} to {out_dir}", file=sys.stderr)
    return 0
