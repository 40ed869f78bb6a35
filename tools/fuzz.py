"""Seeded mutational fuzzer: hostile model files through every read-only verb, ``compress`` and ``run``.

    python tools/fuzz.py --seed 1 --count 3000                  # corpus (if found) + fixtures
    python tools/fuzz.py --seed 19 --count 200 --no-corpus      # the short run tests/test_fuzz.py does
    python tools/fuzz.py --replay fuzz-out/faults/s1-00042-tiny_nn.mlmodel   # one saved mutant, tracebacks shown
    python tools/fuzz.py --seed 1 --only 42 --keep              # regenerate mutant 42 of seed 1

Sources are the corpus models (``../shared/corpus`` or ``$SPECSURGERY_SHARED/corpus``,
MANIFEST.tsv) and models built in code by the tests (tests/nnbuild.py,
tests/surgery_models.py; with torch and coremltools also tests/zoo.py and
tests/mil/mil_models.py conversions, cached like the tests cache them).

Mutant ``i`` of seed ``S`` comes from ``random.Random(f"{S}:{i}")`` alone: it picks a
source and 1-3 mutations -- a protobuf field set to a hostile value (0, -1, huge
dims, NaN, ``../../etc/passwd``, ...), a repeated field cleared / cut / grown, a
message removed or duplicated, or the serialized bytes cut, flipped or spliced;
for an .mlpackage also its weight file (cut, bytes flipped), its Manifest.json
(paths leaving the package) or a symlink out of the package.  The same seed and
index always give the same file.

Each mutant goes through inspect (text, --json, --layers), check, tree, render to
.dot, suggest-cuts, run, verify (the model against itself, one sample) and
compress --fp16, through ``specsurgery.cli.main`` in worker processes (or one
subprocess per command with ``--isolate``) that run under an address-space limit
(``RLIMIT_AS``, 6 GiB) and a per-command timeout (20 s).

An *internal fault* is any exception that is not a ``SpecSurgeryError`` (the CLI
would print "rerun with --debug"), an exit code other than 0, 1 or 2, a
MemoryError, a timeout, or a worker that died.  Faulting mutants are saved as
``<out>/faults/s<seed>-<index>-<source><suffix>`` with ``<out>/faults.jsonl``
(command, exception, innermost specsurgery frame, traceback); the summary groups
faults by (command, exception, file:function).  Exit status: 0 without faults,
1 with faults, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import math
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MEMORY_GIB = 6.0

HOSTILE_STRINGS = ["../../etc/passwd", "/etc/passwd", "", "x" * 5000, "a b/c", "\x00", "ü\u202e",
                   "$BUNDLE_MAIN/../../outside", "@model_path/../../../etc/passwd", "%s%n{}", ".", "..",
                   "weights/../../../secret.bin"]
HOSTILE_INTS = [0, -1, 1, 2, 3, 7, -2, 255, 65535, 2**31 - 1, -2**31, 2**32 + 1, 2**40, 2**62, 10**9, 10**6]
HOSTILE_FLOATS = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e38, -1e38, 1e-45, 1.0, -1.0, 1e300]

# verb name -> argv builder (model path, scratch folder, output suffix)
COMMANDS: dict[str, Callable[[str, Path, str], list[str]]] = {
    "inspect": lambda m, d, s: ["inspect", m],
    "inspect-json": lambda m, d, s: ["inspect", "--json", m],
    "inspect-layers": lambda m, d, s: ["inspect", "--layers", m],
    "check": lambda m, d, s: ["check", m],
    "tree": lambda m, d, s: ["tree", m],
    "render-dot": lambda m, d, s: ["render", m, "-o", str(d / "g.dot")],
    "suggest-cuts": lambda m, d, s: ["suggest-cuts", m],
    "run": lambda m, d, s: ["run", m, "-o", str(d / "out.npz"), *_input_args(m, d)],
    "verify-self": lambda m, d, s: ["verify", m, m, "--samples", "1"],
    # ML Programs refuse --fp16 (their precision is chosen at conversion): palettize those
    "compress": lambda m, d, s: ["compress", m, *(["--fp16"] if s == ".mlmodel" else ["--palettize", "2"]),
                                 "--min-weights", "1", "-o", str(d / ("c" + s))],
    "verify-per-layer": lambda m, d, s: ["verify", m, m, "--samples", "1", "--per-layer", "--json"],
    "diff-self": lambda m, d, s: ["diff", m, m, "--json"],
    "set": lambda m, d, s: ["set", m, "--author", "fuzz", "--meta", "k=v", "--spec-version", "min",
                            "-o", str(d / ("s" + s))],
    "expose": lambda m, d, s: ["expose", m, _blob(m) or "x", "-o", str(d / ("e" + s))],
    "retype": lambda m, d, s: ["retype", m, "--input", _retype_arg(m) or f"{_first_input(m)}=array",
                               "-o", str(d / ("t" + s))],
}
# forward passes of these corpus models take minutes: read-only verbs only
HEAVY = {"real/carn.mlmodel"}
HEAVY_VERBS = {"run", "verify-self", "verify-per-layer", "compress"}


def _first_input(model: str) -> str:
    """The first input's name of a (mutated) model, or a placeholder it lacks."""
    from specsurgery.errors import SpecSurgeryError
    from specsurgery.io import load_spec

    try:
        inputs = load_spec(model).description.input
    except SpecSurgeryError:
        return "x"
    return inputs[0].name if len(inputs) and inputs[0].name else "x"


def _spec_or_none(model: str):
    from specsurgery.errors import SpecSurgeryError
    from specsurgery.io import load_spec

    try:
        return load_spec(model)
    except SpecSurgeryError:
        return None


def _blob(model: str):
    """A blob (NN layer output) or value (ML Program op output) halfway through the
    model that is not already a model input or output; None when there is none."""
    from specsurgery.spec import iter_models, model_type, nn_of

    spec = _spec_or_none(model)
    if spec is None:
        return None
    taken = {f.name for f in list(spec.description.input) + list(spec.description.output)}
    names = []
    for info in iter_models(spec):
        kind = model_type(info.model)
        if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
            names += [b for layer in nn_of(info.model).layers for b in layer.output]
        elif kind == "mlProgram":
            names += [o.name for fn in info.model.mlProgram.functions.values()
                      for block in fn.block_specializations.values() for op in block.operations
                      for o in op.outputs if not op.type.startswith("const")]
    names = [n for n in names if n not in taken]
    return names[len(names) // 2] if names else None


def _retype_arg(model: str):
    """NAME=array for an image input, NAME=image:RGB|GRAY for a [1,]C,H,W array input
    with 3 or 1 channels; None when the model has neither."""
    spec = _spec_or_none(model)
    if spec is None:
        return None
    program = spec.WhichOneof("Type") == "mlProgram"     # a program's image input is rank 4
    for f in spec.description.input:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            return f"{f.name}=array"
        if kind == "multiArrayType":
            shape = list(f.type.multiArrayType.shape)
            if len(shape) in ((4,) if program else (3, 4)) and (len(shape) == 3 or shape[0] == 1) \
                    and shape[-3] in (1, 3):
                return f"{f.name}=image:{'RGB' if shape[-3] == 3 else 'GRAY'}"
    return None


def applicable(verb: str, model) -> bool:
    """Whether ``verb`` has something to work on in an unmutated ``model`` (expose needs an
    intermediate blob, retype an image or an image-shaped array input); where not, the
    fuzzer still runs it, and a clean refusal is the right answer."""
    if verb == "expose":
        return _blob(str(model)) is not None
    if verb == "retype":
        return _retype_arg(str(model)) is not None
    return True


# --------------------------------------------------------------------------- sources

@dataclass
class Source:
    name: str           # short, file-name safe
    path: Path          # .mlmodel file or .mlpackage folder
    heavy: bool = False

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()


def _tests_on_path() -> None:
    for p in (str(TESTS), str(TESTS / "mil")):
        if p not in sys.path:
            sys.path.insert(0, p)
    # share the test suite's conversion cache (tests/conftest.py sets the same folder)
    os.environ.setdefault("SPECSURGERY_TEST_CACHE", str(REPO / ".pytest_cache" / "d" / "specsurgery"))


def corpus_sources(corpus: Path) -> list[Source]:
    manifest = corpus / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    lines = manifest.read_text().splitlines()
    header = lines[0].split("\t")
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        row = dict(zip(header, line.split("\t")))
        path = corpus / row["file"]
        if path.exists():
            name = "corpus_" + row["file"].replace("/", "_").rsplit(".", 1)[0]
            out.append(Source(name, path, heavy=row["file"] in HEAVY))
    for pkg in sorted((corpus / "generated").glob("*.mlpackage")):
        if not any(s.path == pkg for s in out):
            out.append(Source("corpus_generated_" + pkg.stem, pkg))
    return out


def fixture_sources(folder: Path, *, converted: bool = True) -> list[Source]:
    """The test suite's in-code models, written into ``folder`` (and, when torch and
    coremltools are there, a few cached conversions of tests/zoo.py and tests/mil)."""
    _tests_on_path()
    import nnbuild as nb
    import surgery_models as sm
    from specsurgery import io as ssio

    specs = {
        "tiny_nn": nb.tiny_nn(),
        "tiny_classifier": nb.tiny_classifier(),
        "tiny_regressor": nb.tiny_regressor(),
        "tiny_conv": nb.tiny_conv(),
        "tiny_conv_image": nb.tiny_conv(image=True, groups=1),
        "tiny_pipeline": nb.tiny_pipeline(),
        "tiny_linked": nb.tiny_linked(),
        "skip_net": sm.skip_net(),
        "skip_net_legacy": sm.skip_net(legacy=True),
        "skip_net_image_classifier": sm.skip_net(image=True, classifier=True),
        "updatable_net": sm.updatable_net(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, spec in specs.items():
        path = folder / f"{name}.mlmodel"
        if not path.exists():
            path.write_bytes(spec.SerializeToString())
        out.append(Source(name, path))
    if converted:
        out += _converted_sources()
    return out


def _converted_sources() -> list[Source]:
    out = []
    try:
        import torch  # noqa: F401
        import zoo
        import mil_models
    except Exception:  # no torch / coremltools: the in-code specs only
        return out
    for arch in ("bilstm_tagger", "lstm_text", "layer_mix", "dict_outputs", "flexible", "scripted_loop",
                 "image_classifier"):
        try:
            out.append(Source(f"zoo_{arch}", zoo.converted(arch)))
        except Exception as exc:
            print(f"fuzz: skipping zoo model {arch}: {type(exc).__name__}: {exc}", file=sys.stderr)
    for name in ("misc", "resnet"):
        try:
            out.append(Source(f"mil_{name}", mil_models.converted(name, "fp32")))
        except Exception as exc:
            print(f"fuzz: skipping ML Program {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        out.append(Source("mil_zoo_layer_mix", mil_models.zoo_converted("layer_mix", "fp32")))
    except Exception as exc:
        print(f"fuzz: skipping ML Program layer_mix: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- mutations

def _repeated(fd) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED


def _leaves(msg, path=()):
    """Every set field of ``msg`` and its sub-messages: (message, field, path)."""
    for fd, value in msg.ListFields():
        here = path + (fd.name,)
        if fd.type == fd.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                yield msg, fd, here
                continue
            yield msg, fd, here          # the message itself (clear / duplicate / drop an element)
            items = value if _repeated(fd) else [value]
            for i, sub in enumerate(items):
                yield from _leaves(sub, here + (i,))
        else:
            yield msg, fd, here


def _hostile_scalar(fd, rng: random.Random, old=None):
    t = fd.type
    if t == fd.TYPE_STRING:
        if rng.random() < 0.2 and isinstance(old, str) and old:
            return old[: rng.randrange(len(old))]
        return rng.choice(HOSTILE_STRINGS)
    if t == fd.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 17])))
    if t == fd.TYPE_BOOL:
        return not old if old is not None else True
    if t in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        return rng.choice(HOSTILE_FLOATS)
    if t == fd.TYPE_ENUM:
        values = [v.number for v in fd.enum_type.values]
        return rng.choice(values + [max(values) + 1, 12345])
    unsigned = t in (fd.TYPE_UINT32, fd.TYPE_UINT64, fd.TYPE_FIXED32, fd.TYPE_FIXED64)
    bits32 = t in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32, fd.TYPE_UINT32, fd.TYPE_FIXED32)
    v = rng.choice(HOSTILE_INTS)
    if isinstance(old, int) and old and rng.random() < 0.3:
        v = old * rng.choice([-1, 2, 1000, 0]) + rng.choice([0, 1, -1])
    lo, hi = (0, 2**32 - 1) if unsigned and bits32 else (0, 2**64 - 1) if unsigned else \
        (-2**31, 2**31 - 1) if bits32 else (-2**63, 2**63 - 1)
    return min(max(v, lo), hi)


def _mutate_field(msg, fd, rng: random.Random) -> str:
    name = fd.name
    repeated = _repeated(fd)
    if fd.type == fd.TYPE_MESSAGE:
        if fd.message_type.GetOptions().map_entry:
            msg.ClearField(name)
            return f"clear map {name}"
        if repeated:
            items = getattr(msg, name)
            n = len(items)
            op = rng.choice(["drop", "dup", "clear", "swap"]) if n else "clear"
            if op == "drop":
                del items[rng.randrange(n)]
            elif op == "dup":
                items.add().CopyFrom(items[rng.randrange(n)])
            elif op == "swap" and n > 1:
                i, j = rng.sample(range(n), 2)
                a, b = type(items[i])(), type(items[j])()
                a.CopyFrom(items[i]), b.CopyFrom(items[j])
                items[i].CopyFrom(b), items[j].CopyFrom(a)
            else:
                msg.ClearField(name)
            return f"{op} {name}[{n}]"
        msg.ClearField(name)
        return f"clear {name}"
    if repeated:
        items = getattr(msg, name)
        n = len(items)
        op = rng.choice(["cut", "clear", "grow", "set"]) if n else "grow"
        if op == "cut":
            del items[rng.randrange(n):]
        elif op == "clear":
            msg.ClearField(name)
        elif op == "grow":
            items.extend([_hostile_scalar(fd, rng) for _ in range(rng.choice([1, 2, 5]))])
        else:
            i = rng.randrange(n)
            items[i] = _hostile_scalar(fd, rng, items[i])
        return f"{op} {name}[{n}]"
    old = getattr(msg, name)
    setattr(msg, name, _hostile_scalar(fd, rng, old))
    return f"set {name}"


def mutate_spec_bytes(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """1-3 mutations of a serialized Model: protobuf fields, or raw bytes."""
    from specsurgery._proto import Model_pb2 as M

    notes = []
    spec = M.Model()
    try:
        spec.ParseFromString(data)
    except Exception:  # the source is no protobuf (a corpus file under invalid/): bytes only
        spec = None
    if spec is None or rng.random() < 0.2:  # raw bytes
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(["cut", "flip", "splice"])
            if op == "cut" and buf:
                del buf[rng.randrange(len(buf)):]
            elif op == "flip" and buf:
                for _ in range(rng.randint(1, 8)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            else:
                at = rng.randrange(len(buf) + 1)
                buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            notes.append(f"bytes {op}")
        return bytes(buf), notes
    for _ in range(rng.randint(1, 3)):
        leaves = list(_leaves(spec))
        if not leaves:
            break
        msg, fd, path = leaves[rng.randrange(len(leaves))]
        try:
            notes.append(_mutate_field(msg, fd, rng) + " at " + ".".join(map(str, path)))
        except (ValueError, TypeError) as exc:  # a value protobuf itself refuses
            notes.append(f"(refused by protobuf: {exc})")
    return spec.SerializeToString(), notes


def _package_root(pkg: Path) -> Optional[Path]:
    try:
        manifest = json.loads((pkg / "Manifest.json").read_text())
        rel = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
        return pkg / "Data" / rel
    except Exception:
        return None


def mutate_package(src: Path, dst: Path, rng: random.Random) -> list[str]:
    shutil.copytree(src, dst, symlinks=True)
    root = _package_root(dst)
    weights = sorted(p for p in (dst / "Data").rglob("*") if p.is_file() and p != root)
    notes = []
    roll = rng.random()
    if roll < 0.6 and root is not None:
        data, notes = mutate_spec_bytes(root.read_bytes(), rng)
        root.write_bytes(data)
    elif roll < 0.8 and weights:
        w = rng.choice(weights)
        buf = bytearray(w.read_bytes())
        op = rng.choice(["cut", "flip-header", "flip", "empty"])
        if op == "cut" and buf:
            del buf[rng.randrange(len(buf)):]
        elif op == "flip-header" and buf:
            for _ in range(rng.randint(1, 4)):  # file header and the first blob's metadata
                buf[rng.randrange(min(len(buf), 192))] = rng.choice([0, 0xFF, rng.randrange(256)])
        elif op == "flip" and buf:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        else:
            buf = bytearray()
        w.write_bytes(bytes(buf))
        notes.append(f"weights {op} {w.name}")
    elif roll < 0.9:
        manifest = dst / "Manifest.json"
        try:
            m = json.loads(manifest.read_text())
            item = rng.choice(sorted(m["itemInfoEntries"]))
            m["itemInfoEntries"][item]["path"] = rng.choice(
                ["../../../secret.txt", "/etc/passwd", "com.apple.CoreML/../../../x", "", "nope/none"])
            manifest.write_text(json.dumps(m))
            notes.append(f"manifest path of {item}")
        except Exception:
            manifest.write_text(rng.choice(["", "{", "[]", '{"itemInfoEntries": 3}']))
            notes.append("manifest garbled")
    elif weights:
        w = rng.choice(weights)
        w.unlink()
        w.symlink_to(rng.choice(["/etc/passwd", "/dev/zero", "../../../../outside.bin"]))
        notes.append(f"symlink {w.name} out of the package")
    return notes


def make_mutant(sources: list[Source], seed: int, index: int, folder: Path) -> tuple[Path, Source, list[str]]:
    rng = random.Random(f"{seed}:{index}")
    src = sources[rng.randrange(len(sources))]
    suffix = ".mlpackage" if src.is_package else ".mlmodel"
    dst = folder / f"s{seed}-{index:05d}-{src.name}{suffix}"
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() and not dst.is_symlink() else dst.unlink()
    if src.is_package:
        notes = mutate_package(src.path, dst, rng)
    else:
        data, notes = mutate_spec_bytes(src.path.read_bytes(), rng)
        dst.write_bytes(data)
    return dst, src, notes


# --------------------------------------------------------------------------- running one command

class _Timeout(BaseException):
    """Raised by SIGPROF inside a command that used too much CPU time (a BaseException,
    so the CLI's own ``except Exception`` cannot swallow it)."""


def _on_alarm(signum, frame):
    raise _Timeout()


def limit_memory(gib: float) -> None:
    if gib > 0:
        n = int(gib * 2**30)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (n, hard if hard != resource.RLIM_INFINITY and hard < n else n))


def _culprit(tb) -> str:
    """Innermost frame inside specsurgery/ (else the innermost frame): file:function."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if "/specsurgery/" in f.filename.replace(os.sep, "/")]
    f = (ours or frames or [None])[-1]
    if f is None:
        return "?"
    fn = f.filename.replace(os.sep, "/")
    fn = fn[fn.rfind("/specsurgery/") + 1:] if "/specsurgery/" in fn else Path(fn).name
    return f"{fn}:{f.name}"


def run_in_process(make_argv: Callable[[], list[str]], timeout: float) -> dict:
    """``specsurgery.cli.main(make_argv())`` with debug on, so non-SpecSurgeryErrors surface
    (the argv is made inside the timer: ``run``'s random inputs read the mutant too)."""
    from specsurgery.cli import main
    from specsurgery.errors import SpecSurgeryError

    os.environ["SPECSURGERY_DEBUG"] = "1"
    out, err = _io.StringIO(), _io.StringIO()
    # CPU seconds, not wall seconds: a loaded machine must not turn a slow run into a "hang"
    # (the parent's wall-clock watchdog catches a process stuck without using CPU)
    old = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, timeout)
    start = time.monotonic()
    res: dict = {}
    argv: list[str] = []
    try:
        import warnings

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            argv = make_argv()
            code = main(argv)
        res = {"status": "ok" if code in (0, 1, 2) else "fault", "code": code}
        if code not in (0, 1, 2):
            res.update(exception=f"exit code {code}", where="cli")
    except _Timeout as exc:  # where it was when the timer fired
        res = {"status": "fault", "exception": f"Timeout (> {timeout:g} s of CPU)", "where": _culprit(exc.__traceback__),
               "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]}
    except SpecSurgeryError:
        res = {"status": "ok", "code": 1}
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        res = {"status": "ok" if code in (0, 1, 2) else "fault", "code": code}
    except BaseException as exc:  # noqa: BLE001 -- the point of the exercise
        res = {"status": "fault", "exception": f"{type(exc).__name__}: {str(exc)[:300]}",
               "where": _culprit(exc.__traceback__),
               "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
        os.environ.pop("SPECSURGERY_DEBUG", None)
    res["seconds"] = round(time.monotonic() - start, 3)
    res["argv"] = argv
    return res


def _limit_child(timeout: float, memory_gib: float) -> None:
    limit_memory(memory_gib)
    cpu = int(math.ceil(timeout))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))   # SIGXCPU after `timeout` CPU seconds


def run_subprocess(make_argv: Callable[[], list[str]], timeout: float, memory_gib: float) -> dict:
    """One command as ``python -m specsurgery``, under RLIMIT_AS, RLIMIT_CPU (the timeout,
    in CPU seconds) and a wall-clock limit for a process stuck without using CPU."""
    env = dict(os.environ, SPECSURGERY_DEBUG="1", PYTHONWARNINGS="ignore")
    start = time.monotonic()
    try:
        argv = make_argv()
    except Exception as exc:
        return {"status": "fault", "exception": f"{type(exc).__name__}: {str(exc)[:300]}",
                "where": _culprit(exc.__traceback__), "seconds": 0.0,
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]}
    try:
        proc = subprocess.run([sys.executable, "-m", "specsurgery", *argv], capture_output=True, text=True,
                              timeout=10 * timeout, env=env, preexec_fn=lambda: _limit_child(timeout, memory_gib))
    except subprocess.TimeoutExpired:
        return {"status": "fault", "exception": f"Hang (> {10 * timeout:g} s of wall time)", "where": "?",
                "seconds": round(time.monotonic() - start, 3), "argv": argv}
    res = {"code": proc.returncode, "seconds": round(time.monotonic() - start, 3), "argv": argv}
    tb = proc.stderr
    if "Traceback (most recent call last)" in tb:
        last = [l for l in tb.strip().splitlines() if l and not l.startswith(" ")][-1]
        if _is_ours(last):
            res["status"] = "ok"
        else:
            where = [l for l in tb.splitlines() if "/specsurgery/" in l and l.strip().startswith("File")]
            res.update(status="fault", exception=last[:300], traceback=tb[-4000:],
                       where=_where_from_line(where[-1]) if where else "?")
    elif proc.returncode == -signal.SIGXCPU:
        res.update(status="fault", exception=f"Timeout (> {timeout:g} s of CPU)", where="?", traceback=tb[-4000:])
    elif proc.returncode not in (0, 1, 2):
        res.update(status="fault", exception=f"exit code {proc.returncode}{_signal_name(proc.returncode)}",
                   where="?", traceback=tb[-4000:])
    else:
        res["status"] = "ok"
    return res


def _is_ours(line: str) -> bool:
    """Is the traceback's last line ("pkg.mod.Class: message") a SpecSurgeryError?"""
    import importlib

    from specsurgery import errors

    dotted = line.split(":", 1)[0].strip()
    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module) if module else errors, name, None)
    except Exception:
        cls = getattr(errors, name, None)
    return isinstance(cls, type) and issubclass(cls, errors.SpecSurgeryError)


def _where_from_line(line: str) -> str:
    # '  File "/x/specsurgery/runtime/nn.py", line 12, in fn'
    try:
        file = line.split('"')[1].replace(os.sep, "/")
        fn = line.rsplit(" in ", 1)[1].strip()
        return f"{file[file.rfind('/specsurgery/') + 1:]}:{fn}"
    except Exception:
        return "?"


def _input_args(model: str, scratch: Path) -> list[str]:
    """--input NAME=FILE for seeded random inputs drawn from the (mutated) description;
    none when the description cannot give any (run must then say which input is missing)."""
    import numpy as np

    from specsurgery.errors import SpecSurgeryError
    from specsurgery.runtime import random_inputs

    try:
        values = random_inputs(model, seed=0)
    except SpecSurgeryError:
        return []
    out = []
    for i, (name, value) in enumerate(values.items()):
        if isinstance(value, dict):
            continue
        path = scratch / f"in{i}.npy"
        np.save(path, np.asarray(value), allow_pickle=False)
        out += ["--input", f"{name}={path}"]
    return out


def commands_for(model: Path, heavy: bool, verbs: list[str], scratch: Path) -> list[tuple[str, Callable]]:
    """(verb, argv maker) for each command to run on ``model``."""
    suffix = ".mlpackage" if model.is_dir() or model.suffix == ".mlpackage" else ".mlmodel"
    out = []
    for verb in verbs:
        if heavy and verb in HEAVY_VERBS:
            continue
        out.append((verb, lambda verb=verb: COMMANDS[verb](str(model), scratch, suffix)))
    return out


# --------------------------------------------------------------------------- workers

def worker_main(timeout: float, memory_gib: float) -> int:
    """Read {"model", "heavy", "verbs"} lines on stdin; write one result line per command."""
    limit_memory(memory_gib)
    from specsurgery import cli as _cli  # noqa: F401  (import once, outside the timed commands)

    for line in sys.stdin:
        task = json.loads(line)
        scratch = Path(tempfile.mkdtemp(prefix="fuzz-run-"))
        old_cwd = os.getcwd()
        try:
            os.chdir(scratch)
            for verb, make_argv in commands_for(Path(task["model"]), task["heavy"], task["verbs"], scratch):
                print(json.dumps({"start": verb}), flush=True)
                res = run_in_process(make_argv, timeout)
                res["verb"] = verb
                print(json.dumps(res), flush=True)
        finally:
            os.chdir(old_cwd)
            shutil.rmtree(scratch, ignore_errors=True)
        print(json.dumps({"done": task["model"]}), flush=True)
    return 0


class Worker:
    def __init__(self, timeout: float, memory_gib: float, env: dict):
        self.timeout, self.memory_gib, self.env = timeout, memory_gib, env
        self.proc: Optional[subprocess.Popen] = None
        self.buf = b""

    def start(self):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                      "--timeout", str(self.timeout), "--memory-gib", str(self.memory_gib)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, cwd=str(REPO))
        self.buf = b""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        self.proc = None

    def run(self, model: Path, heavy: bool, verbs: list[str]) -> list[dict]:
        """Results of every command on ``model``; a worker that hangs past the timeout
        (stuck in C code) or dies is recorded as a fault and restarted."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        task = json.dumps({"model": str(model), "heavy": heavy, "verbs": verbs}) + "\n"
        try:
            self.proc.stdin.write(task.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return [{"verb": "?", "status": "fault", "exception": "worker died before the task", "where": "?"}]
        results, current = [], None
        wall = 10 * self.timeout  # the worker's own CPU timer fires first unless it is stuck (or starved)
        deadline = time.monotonic() + wall
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if "done" in msg:
                    return results
                if "start" in msg:
                    current = msg["start"]
                    deadline = time.monotonic() + wall
                else:
                    results.append(msg)
                    current = None
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.stop()
                results.append({"verb": current or "?", "status": "fault", "where": "?",
                                "exception": f"Hang (worker killed after {wall:g} s of wall time)"})
                return results
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                self.proc = None
                results.append({"verb": current or "?", "status": "fault", "where": "?",
                                "exception": f"worker died (exit {code}{_signal_name(code)})"})
                return results
            self.buf += chunk


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return f", {signal.Signals(-code).name}"
        except ValueError:
            return ""
    return ""


# --------------------------------------------------------------------------- driver

@dataclass
class Report:
    seed: int
    mutants: int = 0
    commands: int = 0
    faults: list = field(default_factory=list)
    seconds: float = 0.0
    verb_seconds: Counter = field(default_factory=Counter)
    verb_runs: Counter = field(default_factory=Counter)
    verb_ok: Counter = field(default_factory=Counter)

    def signatures(self) -> dict:
        groups = defaultdict(list)
        for f in self.faults:
            exc = f["exception"].split(":", 1)[0]
            groups[(f["verb"], exc, f.get("where", "?"))].append(f)
        return groups

    def summary(self) -> str:
        lines = [f"fuzz: seed {self.seed}: {self.mutants} mutants, {self.commands} commands, "
                 f"{len(self.faults)} internal faults, {self.seconds:.1f} s"]
        for (verb, exc, where), items in sorted(self.signatures().items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(items):4d} x {verb}: {exc} in {where}  (e.g. {items[0]['mutant']})")
        return "\n".join(lines)

    def timing(self) -> str:
        return "fuzz: per command (exit 0 / runs, seconds): " + ", ".join(
            f"{v} {self.verb_ok[v]}/{self.verb_runs[v]} {self.verb_seconds[v]:.1f} s"
            for v in sorted(self.verb_runs, key=str))


def fuzz(sources: list[Source], *, seed: int, count: int, out: Path, verbs: list[str], jobs: int = 2,
         timeout: float = DEFAULT_TIMEOUT, memory_gib: float = DEFAULT_MEMORY_GIB, isolate: bool = False,
         start: int = 0, progress: bool = False) -> Report:
    if not sources:
        raise SystemExit("fuzz: no sources (no corpus found and no fixtures)")
    report = Report(seed)
    t0 = time.monotonic()
    faults_dir = out / "faults"
    work = Path(tempfile.mkdtemp(prefix="fuzz-mutants-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["TMPDIR"] = str(work)  # whatever a command leaves in the temp folder goes with the work folder
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # one core per worker: --jobs sets the parallelism
    workers = [Worker(timeout, memory_gib, env) for _ in range(max(1, jobs))]
    pending = list(range(start, start + count))
    try:
        import concurrent.futures as cf

        def one(worker: Worker, index: int):
            model, src, notes = make_mutant(sources, seed, index, work)
            if isolate:
                scratch = Path(tempfile.mkdtemp(dir=work))
                results = []
                for verb, make_argv in commands_for(model, src.heavy, verbs, scratch):
                    r = run_subprocess(make_argv, timeout, memory_gib)
                    r["verb"] = verb
                    results.append(r)
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                results = worker.run(model, src.heavy, verbs)
            return index, model, src, notes, results

        free = list(workers)
        with cf.ThreadPoolExecutor(len(workers)) as pool:
            running = {}
            while pending or running:
                while pending and free:
                    w = free.pop()
                    running[pool.submit(one, w, pending.pop(0))] = w
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    free.append(running.pop(fut))
                    index, model, src, notes, results = fut.result()
                    report.mutants += 1
                    report.commands += len(results)
                    for r in results:
                        report.verb_seconds[r.get("verb")] += r.get("seconds", 0)
                        report.verb_runs[r.get("verb")] += 1
                        report.verb_ok[r.get("verb")] += r.get("code") == 0
                    bad = [r for r in results if r.get("status") != "ok"]
                    if bad:
                        faults_dir.mkdir(parents=True, exist_ok=True)
                        saved = faults_dir / model.name
                        if not saved.exists() and not saved.is_symlink():
                            if model.is_dir():
                                shutil.copytree(model, saved, symlinks=True)
                            else:
                                shutil.copyfile(model, saved)
                        with open(out / "faults.jsonl", "a") as fh:
                            for r in bad:
                                entry = {"mutant": model.name, "index": index, "seed": seed, "source": src.name,
                                         "mutations": notes, "verb": r.get("verb"), "argv": r.get("argv"),
                                         "exception": r.get("exception", "?"), "where": r.get("where", "?"),
                                         "traceback": r.get("traceback", "")}
                                report.faults.append(entry)
                                fh.write(json.dumps(entry) + "\n")
                                if progress:
                                    print(f"fuzz: FAULT {model.name} {entry['verb']}: {entry['exception'][:160]} "
                                          f"in {entry['where']}", file=sys.stderr, flush=True)
                    if model.is_dir() and not model.is_symlink():
                        shutil.rmtree(model, ignore_errors=True)
                    else:
                        model.unlink(missing_ok=True)
                    if progress and report.mutants % 100 == 0:
                        print(f"fuzz: {report.mutants}/{count} mutants, {len(report.faults)} faults, "
                              f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        for w in workers:
            w.stop()
        shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.monotonic() - t0
    return report


def replay(path: Path, verbs: list[str], timeout: float, memory_gib: float) -> int:
    """Every command on one saved mutant, in a subprocess each, tracebacks printed."""
    faults = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-replay-") as d:
        for verb, make_argv in commands_for(path, False, verbs, Path(d)):
            r = run_subprocess(make_argv, timeout, memory_gib)
            mark = "FAULT" if r["status"] != "ok" else "ok"
            print(f"{mark:5s} {verb:14s} exit {r.get('code', '-')}  {r.get('seconds', 0):.2f} s  "
                  f"{r.get('exception', '')}")
            if r["status"] != "ok":
                faults += 1
                print(r.get("traceback", ""))
    return 1 if faults else 0


def default_corpus() -> Path:
    shared = Path(os.environ.get("SPECSURGERY_SHARED", REPO.parent / "shared"))
    return shared / "corpus"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="tools/fuzz.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=300, help="number of mutants (default 300)")
    p.add_argument("--start", type=int, default=0, help="index of the first mutant")
    p.add_argument("--only", type=int, help="write mutant ONLY of --seed into --out and stop")
    p.add_argument("--corpus", type=Path, default=None, help="corpus folder (default ../shared/corpus)")
    p.add_argument("--no-corpus", action="store_true", help="fixtures only")
    p.add_argument("--no-fixtures", action="store_true", help="corpus only")
    p.add_argument("--no-converted", action="store_true", help="in-code specs only (no torch conversions)")
    p.add_argument("--verbs", default=",".join(COMMANDS), help="comma-separated (default: all of "
                   + ", ".join(COMMANDS) + ")")
    p.add_argument("--out", type=Path, default=Path("fuzz-out"), help="faults go here (default ./fuzz-out)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per command (default 20)")
    p.add_argument("--memory-gib", type=float, default=DEFAULT_MEMORY_GIB,
                   help="RLIMIT_AS of each worker, GiB (default 6; 0 = no limit)")
    p.add_argument("--isolate", action="store_true", help="one subprocess per command (slower)")
    p.add_argument("--replay", type=Path, help="run every command on this saved mutant and show tracebacks")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    verbs = [v for v in args.verbs.split(",") if v]
    unknown = [v for v in verbs if v not in COMMANDS]
    if unknown:
        p.error(f"unknown --verbs {', '.join(unknown)}; choose from {', '.join(COMMANDS)}")
    if args.worker:
        return worker_main(args.timeout, args.memory_gib)
    if args.replay:
        return replay(args.replay, verbs, args.timeout, args.memory_gib)
    # SIGTERM unwinds like Ctrl-C, so the work folders in the temp dir go and the workers stop
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sources: list[Source] = []
    fixtures_dir = Path(tempfile.mkdtemp(prefix="fuzz-fixtures-"))
    try:
        if not args.no_corpus:
            corpus = args.corpus or default_corpus()
            found = corpus_sources(corpus)
            if not found and not args.quiet:
                print(f"fuzz: no corpus at {corpus}; fixtures only", file=sys.stderr)
            sources += found
        if not args.no_fixtures:
            sources += fixture_sources(fixtures_dir, converted=not args.no_converted)
        if args.only is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            model, src, notes = make_mutant(sources, args.seed, args.only, args.out)
            print(f"{model}  (from {src.name}: {'; '.join(notes)})")
            return 0
        if not args.quiet:
            print(f"fuzz: {len(sources)} sources, seed {args.seed}, mutants {args.start}..{args.start + args.count - 1}, "
                  f"commands {', '.join(verbs)}", file=sys.stderr)
        report = fuzz(sources, seed=args.seed, count=args.count, out=args.out, verbs=verbs, jobs=args.jobs,
                      timeout=args.timeout, memory_gib=args.memory_gib, isolate=args.isolate, start=args.start,
                      progress=not args.quiet)
    finally:
        shutil.rmtree(fixtures_dir, ignore_errors=True)
    print(report.summary())
    if not args.quiet:
        print(report.timing(), file=sys.stderr)
    if report.faults:
        print(f"fuzz: faulting mutants and tracebacks in {args.out}/faults, {args.out}/faults.jsonl")
    return 1 if report.faults else 0


if __name__ == "__main__":
    sys.exit(main())
