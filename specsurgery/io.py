"""Reading and writing Core ML models.

``load`` accepts a path (``.mlmodel``, ``.mlpackage``, ``.pbtxt``), bytes, a
``Model_pb2.Model``, an :class:`MLPackage` or a ``coremltools.models.MLModel``.
A ``.mlpackage`` loads as an :class:`MLPackage`: its root spec plus its weight
files, read lazily and memory-mapped, because a bare ``Model_pb2.Model``
cannot carry ``weight.bin``.  Everything else loads as a plain spec.

``save`` checks the model first (every output passes ``check``) and writes
atomically: a temporary file or folder beside the target, then a rename, so a
failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping, Union

import numpy as np

from ._proto import Model_pb2
from . import _atomic, _hooks
from .errors import LoadError, SaveError, SpecSurgeryError

MODEL_PATH_PREFIX = "@model_path/"
DEFAULT_ROOT = "com.apple.CoreML/model.mlmodel"
DEFAULT_WEIGHTS = "com.apple.CoreML/weights"
WEIGHT_FILE_NAME = "@model_path/weights/weight.bin"


class WeightFile:
    """One file of an ML Program's weights folder, read lazily.

    ``data`` is a read-only ``np.uint8`` array (memory-mapped when the file
    comes from disk).  ``missing`` is true when the file does not exist; the
    package still loads, inspects and renders, and ``check`` reports it.
    """

    __slots__ = ("path", "_data")

    def __init__(self, path: Union[str, os.PathLike, None] = None, data=None):
        self.path = None if path is None else Path(path)
        self._data = None if data is None else _as_uint8(data)

    @property
    def missing(self) -> bool:
        return self._data is None and (self.path is None or not self.path.is_file())

    @property
    def size(self) -> int:
        if self._data is not None:
            return int(self._data.size)
        if self.missing:
            return 0
        return self.path.stat().st_size

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            if self.missing:
                raise LoadError(f"weight file {self.path} is missing")
            if self.path.stat().st_size == 0:
                self._data = np.zeros(0, dtype=np.uint8)
            else:
                self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._data

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "<memory>"
        return f"WeightFile({where}, {self.size} bytes{', missing' if self.missing else ''})"


def _as_uint8(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), dtype=np.uint8)


class MLPackage:
    """An ML Program (or any model) stored as a ``.mlpackage``.

    ``spec`` is the root ``Model_pb2.Model``; ``weights`` maps a path relative
    to the folder that holds the model file (``"weights/weight.bin"``) to a
    :class:`WeightFile`.  ``blobFileValue.fileName`` values such as
    ``@model_path/weights/weight.bin`` resolve through :meth:`weight_file`.
    """

    def __init__(self, spec: "Model_pb2.Model", weights: Mapping[str, WeightFile] | None = None,
                 path: Union[str, os.PathLike, None] = None, metadata: Mapping | None = None):
        self.spec = spec
        self.weights: dict[str, WeightFile] = dict(weights or {})
        self.path = None if path is None else Path(path)
        self.metadata = dict(metadata or {})

    def weight_file(self, file_name: str) -> WeightFile:
        """The weight file a ``blobFileValue.fileName`` names (may be ``missing``).

        A name that leads outside the package (``..``, an absolute path, a
        symlink out) is refused with a LoadError before anything is opened."""
        key = weight_key(file_name)
        if key in self.weights:
            return self.weights[key]
        base = None if self.path is None else self.path / "Data" / Path(DEFAULT_ROOT).parent
        if base is None:
            _refuse_escape(key, None, f"weight file name {file_name!r}")
            return WeightFile(None)
        return WeightFile(_inside(self.path, base, key, f"weight file name {file_name!r}"))

    def copy(self) -> "MLPackage":
        spec = Model_pb2.Model()
        spec.CopyFrom(self.spec)
        return MLPackage(spec, dict(self.weights), self.path, self.metadata)

    @property
    def weight_bytes(self) -> int:
        return sum(w.size for w in self.weights.values())

    def __repr__(self) -> str:
        return (f"MLPackage({str(self.path) if self.path else '<memory>'}, "
                f"type={self.spec.WhichOneof('Type')}, weights={sorted(self.weights)})")


ModelLike = Union["Model_pb2.Model", MLPackage, str, os.PathLike, bytes]


def _refuse_escape(rel: str, package, what: str) -> None:
    parts = Path(rel).parts
    if Path(rel).is_absolute() or rel.startswith("~") or ".." in parts:
        where = f"{package}: " if package is not None else ""
        raise LoadError(f"{where}{what} leads outside the package ({rel!r}); a package only reads "
                        "files inside itself: use a path relative to the package, without '..'")


def _inside(package: Path, base: Path, rel: str, what: str) -> Path:
    """``base / rel``, refused when it (or a symlink on the way) leaves ``package``."""
    _refuse_escape(rel, package, what)
    target = base / rel
    try:
        real, top = target.resolve(), package.resolve()
    except (OSError, RuntimeError) as exc:   # a symlink loop
        raise LoadError(f"{package}: {what} cannot be resolved ({exc})") from None
    if real != top and top not in real.parents:
        raise LoadError(f"{package}: {what} is a symlink that leads outside the package (to {real}); "
                        "a package only reads files inside itself: replace the link by the file")
    return target


def weight_key(file_name: str) -> str:
    """``@model_path/weights/weight.bin`` -> ``weights/weight.bin``."""
    if file_name.startswith(MODEL_PATH_PREFIX):
        return file_name[len(MODEL_PATH_PREFIX):]
    return file_name


# --------------------------------------------------------------------------- load

def _is_mlmodel_object(obj) -> bool:
    cls = type(obj)
    return cls.__name__ == "MLModel" and cls.__module__.startswith("coremltools")


def _parse(data: bytes, where: str) -> "Model_pb2.Model":
    if len(data) == 0:
        raise LoadError(f"{where}: the file is empty (0 bytes); expected a serialized Core ML Model")
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise LoadError(
            f"{where}: not a readable Core ML model ({len(data)} bytes; protobuf says: {exc}); "
            "the file is truncated, corrupt, or from a pre-release format"
        ) from exc
    if spec.specificationVersion == 0 and spec.WhichOneof("Type") is None and not spec.HasField("description"):
        raise LoadError(
            f"{where}: {len(data)} bytes that parse as no Core ML model (no specificationVersion, "
            "no description, no model type); expected an .mlmodel, .mlpackage or .pbtxt"
        )
    return spec


def _parse_text(text: str, where: str) -> "Model_pb2.Model":
    from google.protobuf import text_format

    spec = Model_pb2.Model()
    try:
        text_format.Parse(text, spec)
    except Exception as exc:
        raise LoadError(f"{where}: not a Core ML model in protobuf text format ({exc})") from exc
    return spec


def _read_manifest(path: Path) -> tuple[Path, dict]:
    manifest_path = path / "Manifest.json"
    if manifest_path.is_symlink():
        _inside(path, path, "Manifest.json", "Manifest.json")
    if not manifest_path.is_file():
        raise LoadError(f"{path}: folder has no Manifest.json; expected an .mlpackage "
                        "(Manifest.json plus Data/)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except Exception as exc:
        raise LoadError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise LoadError(f"{manifest_path}: expected a JSON object with fileFormatVersion, "
                        "rootModelIdentifier and itemInfoEntries")
    entries = manifest.get("itemInfoEntries")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(entries, dict) or root_id not in entries:
        raise LoadError(f"{manifest_path}: rootModelIdentifier {root_id!r} is not one of "
                        f"itemInfoEntries {sorted(entries) if isinstance(entries, dict) else entries!r}")
    rel = entries[root_id].get("path") if isinstance(entries[root_id], dict) else None
    if not rel or not isinstance(rel, str):
        raise LoadError(f"{manifest_path}: root item {root_id!r} has no path")
    for item_id, item in entries.items():
        item_path = item.get("path") if isinstance(item, dict) else None
        if isinstance(item_path, str):
            _inside(path, path / "Data", item_path, f"Manifest.json item {item_id!r} path")
    root = path / "Data" / rel
    if not root.is_file():
        raise LoadError(f"{path}: Manifest.json names root model Data/{rel}, which does not exist")
    return root, manifest


def _load_package(path: Path) -> MLPackage:
    root, manifest = _read_manifest(path)
    spec = _parse(root.read_bytes(), str(root))
    weights: dict[str, WeightFile] = {}
    base = root.parent
    for file in sorted(base.rglob("*")):
        if file.is_symlink():
            _inside(path, base, file.relative_to(base).as_posix(), f"{file.relative_to(path)}")
        if file.is_file() and file != root:
            weights[file.relative_to(base).as_posix()] = WeightFile(file)
    return MLPackage(spec, weights, path, {"manifest": manifest, "root": root.relative_to(path).as_posix()})


def _looks_compiled(path: Path) -> bool:
    return path.suffix == ".mlmodelc" or (path / "coremldata.bin").exists() or (path / "model.espresso.net").exists()


def load(source, *, what: str = "model") -> Union["Model_pb2.Model", MLPackage]:
    """Load a model: a plain spec, or an :class:`MLPackage` for ``.mlpackage``.

    The result never aliases ``source``: a spec passed in is returned as is
    (operations copy before editing unless asked to work in place).
    """
    if isinstance(source, Model_pb2.Model):
        return source
    if isinstance(source, MLPackage):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "<bytes>")
    if _is_mlmodel_object(source):
        spec = source.get_spec()
        package_path = getattr(source, "package_path", None)
        if package_path and Path(package_path).is_dir():
            pkg = _load_package(Path(package_path))
            pkg.spec = spec
            return pkg
        return spec
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            hint = ""
            if path.parent.is_dir():
                from .errors import near_matches

                close = near_matches(path.name, (p.name for p in path.parent.iterdir()))
                if close:
                    hint = " (did you mean " + ", ".join(close) + "?)"
            raise LoadError(f"{path}: no such file{hint}")
        if path.is_dir():
            if _looks_compiled(path):
                raise LoadError(
                    f"{path}: a compiled model (.mlmodelc) cannot be read or edited; "
                    "pass the .mlmodel or .mlpackage it was compiled from")
            return _load_package(path)
        if path.suffix == ".pbtxt":
            return _parse_text(path.read_text(errors="replace"), str(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LoadError(f"{path}: cannot read ({exc.strerror})") from exc
        return _parse(data, str(path))
    raise LoadError(
        f"cannot load a {what} from {type(source).__name__}; pass a path (.mlmodel, .mlpackage, "
        ".pbtxt), bytes, a Model_pb2.Model, an MLPackage or a coremltools MLModel")


def _description_bytes(data) -> bytes:
    """The bytes of a serialized Model's ``description`` (field 2), found by
    walking the top-level wire format without parsing the rest (the weights)."""
    with memoryview(data) as view:
        return _walk_description(view)


def _walk_description(view) -> bytes:
    i, n = 0, len(view)

    def varint(i):
        shift = value = 0
        while True:
            if i >= n or shift > 63:
                raise LoadError("truncated varint")
            b = view[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, i
            shift += 7

    found = []
    while i < n:
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = varint(i)
            if field == 2:
                found.append(bytes(view[i:i + size]))
            i += size
        else:
            raise LoadError(f"unexpected wire type {wire}")
    if i > n:
        raise LoadError("truncated field")
    return b"".join(found)     # repeated occurrences of a message field merge


def load_description(source) -> "Model_pb2.ModelDescription":
    """The ``ModelDescription`` of a model file or package, without decoding its
    weights (a 100 MB .mlmodel costs a scan, not a parse)."""
    path = Path(source)
    if path.is_dir():
        path, _ = _read_manifest(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise LoadError(f"{path}: the file is empty (0 bytes); expected a serialized Core ML Model")
            import mmap

            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                try:
                    raw = _description_bytes(mm)
                except LoadError as exc:
                    raise LoadError(f"{path}: not a readable Core ML model ({exc})") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror})") from exc
    desc = Model_pb2.ModelDescription()
    try:
        desc.ParseFromString(raw)
    except Exception as exc:
        raise LoadError(f"{path}: not a readable Core ML model description ({exc})") from exc
    return desc


def working_copy(source, inplace: bool = False):
    """(result, spec) for an operation that edits a model: ``source`` loaded and,
    unless ``inplace``, copied (an MLPackage keeps its weights); ``spec`` is
    the root spec inside ``result``, which the operation edits and returns."""
    loaded = load(source)
    if isinstance(loaded, MLPackage):
        result = loaded if inplace else loaded.copy()
        return result, result.spec
    result = loaded if inplace else copy_spec(loaded)
    return result, result


def load_spec(source) -> "Model_pb2.Model":
    """The ``Model_pb2.Model`` of any model-like input (a package's root spec)."""
    model = load(source)
    return model.spec if isinstance(model, MLPackage) else model


def split_model(model) -> tuple["Model_pb2.Model", MLPackage | None]:
    """(spec, package or None) for a loaded model."""
    if isinstance(model, MLPackage):
        return model.spec, model
    return model, None


def copy_spec(spec: "Model_pb2.Model") -> "Model_pb2.Model":
    out = Model_pb2.Model()
    out.CopyFrom(spec)
    return out


def serialize(spec: "Model_pb2.Model") -> bytes:
    """The bytes of ``spec`` as an .mlmodel (protobuf's deterministic form)."""
    return spec.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------- save

def set_validator(fn: "Callable | None") -> "Callable | None":
    """Install ``fn(model, *, search_path, where, base_dir)`` as the check that
    :func:`save` runs before writing (io cannot import check, which sits above
    it); returns the previous one."""
    old, _hooks.validator = _hooks.validator, fn
    return old


atomic_write_bytes = _atomic.write_bytes
atomic_write_text = _atomic.write_text
_write_error = _atomic.write_error


def _write_package_tree(pkg: MLPackage, folder: Path) -> None:
    model_rel = DEFAULT_ROOT
    model_file = folder / "Data" / model_rel
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(serialize(pkg.spec))
    weights_dir = model_file.parent / "weights"
    weights_dir.mkdir()
    for key, weight in sorted(pkg.weights.items()):
        target = model_file.parent / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if weight.missing:
            continue
        if weight._data is None and weight.path is not None:
            shutil.copyfile(weight.path, target)
        else:
            with open(target, "wb") as fh:
                fh.write(memoryview(np.ascontiguousarray(weight.data)))
    spec_id, weights_id = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
    manifest = {
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {
            spec_id: {"author": "com.apple.CoreML", "description": "CoreML Model Specification",
                      "name": "model.mlmodel", "path": model_rel},
            weights_id: {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
                         "name": "weights", "path": DEFAULT_WEIGHTS},
        },
        "rootModelIdentifier": spec_id,
    }
    (folder / "Manifest.json").write_text(json.dumps(manifest, indent=4, sort_keys=True))


def save(model, path: Union[str, os.PathLike], *, check: bool = True, search_path=None) -> Path:
    """Check ``model`` and write it atomically to ``path``.

    ``.mlmodel`` gets the serialized spec, ``.mlpackage`` a package folder
    (with the weights of an :class:`MLPackage`), ``.pbtxt`` protobuf text.  An
    ML Program whose weights live in a weight file can only go to
    ``.mlpackage``: an ``.mlmodel`` would silently drop them.
    """
    model = load(model)
    path = Path(path)
    spec, pkg = split_model(model)
    if check:
        if _hooks.validator is None:
            raise SpecSurgeryError(
                f"{path}: no validator is installed, so the model cannot be checked before it is "
                "written; import specsurgery (which installs check) or pass check=False")
        _hooks.validator(model, search_path=search_path, where=str(path), base_dir=path.resolve().parent)
    suffix = path.suffix
    if suffix == ".mlpackage":
        if pkg is None:
            pkg = MLPackage(spec)
        return _atomic.write_tree(path, lambda folder: _write_package_tree(pkg, folder))
    if pkg is not None and uses_weight_files(spec):
        raise SaveError(
            f"{path}: this ML Program keeps its weights in {sorted(pkg.weights) or 'a weight file'}; "
            "an .mlmodel would drop them. Save it as .mlpackage")
    if suffix == ".pbtxt":
        from google.protobuf import text_format

        return atomic_write_text(path, text_format.MessageToString(spec))
    if suffix not in (".mlmodel", ""):
        raise SaveError(f"{path}: unknown extension {suffix!r}; use .mlmodel, .mlpackage or .pbtxt")
    return atomic_write_bytes(path, serialize(spec))


def uses_weight_files(spec: "Model_pb2.Model") -> bool:
    """True when any ML Program in ``spec`` (pipelines included) reads a blob file."""
    from .spec import iter_models

    for info in iter_models(spec):
        sub = info.model
        if sub.WhichOneof("Type") == "mlProgram":
            if any(True for _ in iter_blob_values(sub.mlProgram)):
                return True
    return False


def iter_blob_values(program) -> Iterator:
    """Every ``MILSpec.Value`` with a ``blobFileValue`` in an ML Program."""
    def walk_block(block):
        for op in block.operations:
            for name, value in op.attributes.items():
                if value.WhichOneof("value") == "blobFileValue":
                    yield value
            for arg in op.inputs.values():
                for binding in arg.arguments:
                    if binding.WhichOneof("binding") == "value" and binding.value.WhichOneof("value") == "blobFileValue":
                        yield binding.value
            for sub in op.blocks:
                yield from walk_block(sub)

    for fn in program.functions.values():
        for block in fn.block_specializations.values():
            yield from walk_block(block)


def file_size(path: Union[str, os.PathLike]) -> int:
    """Bytes on disk of a file or a package folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


__all__ = [
    "MLPackage", "WeightFile", "load", "load_spec", "save", "serialize", "copy_spec",
    "atomic_write_bytes", "atomic_write_text", "set_validator", "file_size", "split_model", "weight_key",
    "SpecSurgeryError",
]
