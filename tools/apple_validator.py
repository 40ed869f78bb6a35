#!/usr/bin/env python3
"""Build Apple's open Core ML validator into a small CLI, and run it on models.

A developer tool for the differential harness (tools/check_diff.py); it is never
run in CI and no test depends on it. Apple's code and the build products stay
in the build folder (default /tmp/apple_validator); nothing of it is committed.

Needs: a coremltools checkout or git mirror (github:apple/coremltools, tag 9.0),
g++, and Debian's protobuf (`apt-get install -y libprotobuf-dev protobuf-compiler`).

    python tools/apple_validator.py build --coremltools /path/to/coremltools[.git] [--ref 9.0]
    python tools/apple_validator.py run model.mlmodel other.mlpackage ...

`run` prints one line per model: `valid <path>`, `invalid <path>: <Apple's message>`
or `crash <path>: <signal>` (Apple's validator dies on some specs; we count that
as a rejection).  `valid <path>: <message>` is Core ML's "potentially invalid
shapes" result of the legacy rank-5 shape pass, which its `Result::good()`
counts as valid (and which ends validation early).

How the build works: the protobuf C++ sources that coremltools commits were made
by an old protoc, so the .proto files are compiled again with the system protoc;
the `*_enums.h` headers are committed and kept. Only the `mlmodel` library's
validation sources are compiled (about 60 files, -j2), then linked with a tiny
main written here that parses each spec and calls `CoreML::Model::validate`.
Each model is validated in a forked child so that a crash is reported for that
model only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

DEFAULT_BUILD = Path(os.environ.get("APPLE_VALIDATOR_DIR", "/tmp/apple_validator"))
BINARY_NAME = "apple_validate"

# Sources of Apple's `mlmodel` static library that validation needs (the
# transforms and MILBlob writers are left out: validation does not call them).
_SOURCE_DIRS = ("src", "src/Validation", "src/Validation/NeuralNetwork")
_SKIP = {"src/HashOutputStreamBuf.cpp"}

# Our own driver: parse a spec file, validate, print one verdict line.
_MAIN_CPP = r"""
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "Format.hpp"
#include "Model.hpp"

static int verdict(const char* path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) { std::printf("invalid %s: cannot open\n", path); return 0; }
    CoreML::Specification::Model spec;
    if (!spec.ParseFromIstream(&in)) { std::printf("invalid %s: protobuf parse failed\n", path); return 0; }
    CoreML::Result r = CoreML::Model::validate(spec);
    std::string msg = r.message();
    for (auto& c : msg) { if (c == '\n' || c == '\r') c = ' '; }
    // good() is also true for POTENTIALLY_INVALID_NEURAL_NETWORK_SHAPES (the legacy shape
    // pass failed): Core ML accepts such a model, and skips the checks after it.
    if (r.good()) std::printf(msg.empty() ? "valid %s\n" : "valid %s: %s\n", path, msg.c_str());
    else std::printf("invalid %s: %s\n", path, msg.c_str());
    return 0;
}

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) { verdict(argv[i]); std::fflush(stdout); _exit(0); }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) std::printf("crash %s: signal %d\n", argv[i], WTERMSIG(status));
        else if (WEXITSTATUS(status) != 0) std::printf("crash %s: exit %d\n", argv[i], WEXITSTATUS(status));
    }
    std::fflush(stdout);
    return 0;
}
"""


def _extract(coremltools: Path, ref: str, dest: Path) -> Path:
    """Put coremltools' mlmodel folder under dest; accepts a checkout or a git dir."""
    src = dest / "src"
    if (src / "mlmodel" / "src" / "Model.cpp").is_file():
        return src / "mlmodel"
    src.mkdir(parents=True, exist_ok=True)
    if (coremltools / "mlmodel" / "src").is_dir():
        shutil.copytree(coremltools / "mlmodel", src / "mlmodel", dirs_exist_ok=True)
    else:
        data = subprocess.run(
            ["git", f"--git-dir={coremltools}", "archive", ref, "mlmodel"],
            check=True, capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(src)
    return src / "mlmodel"


def _protoc(mlmodel: Path) -> None:
    out = mlmodel / "build" / "format"
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / ".regenerated"
    if stamp.exists():
        return
    protos = sorted(p.name for p in (mlmodel / "format").glob("*.proto"))
    subprocess.run(["protoc", f"--cpp_out={out}", *protos], cwd=mlmodel / "format", check=True)
    stamp.write_text("system protoc\n")


def _compile(args: tuple[list[str], Path, Path]) -> str:
    cmd, src, obj = args
    if obj.exists() and obj.stat().st_mtime >= src.stat().st_mtime:
        return ""
    r = subprocess.run([*cmd, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    if r.returncode:
        return f"{src}:\n{r.stderr[-4000:]}"
    return ""


def build(coremltools: Path, ref: str = "9.0", build_dir: Path = DEFAULT_BUILD, jobs: int = 2) -> Path:
    """Build the CLI and return its path (reuses objects already built)."""
    for tool in ("g++", "protoc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y g++ libprotobuf-dev protobuf-compiler")
    mlmodel = _extract(coremltools, ref, build_dir)
    _protoc(mlmodel)
    objdir = build_dir / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    main_cpp = build_dir / "apple_validate_main.cpp"
    if not main_cpp.exists() or main_cpp.read_text() != _MAIN_CPP:
        main_cpp.write_text(_MAIN_CPP)
    sources = [main_cpp]
    for d in _SOURCE_DIRS:
        for p in sorted((mlmodel / d).glob("*.cpp")):
            if f"{d}/{p.name}" not in _SKIP:
                sources.append(p)
    sources += sorted((mlmodel / "build" / "format").glob("*.pb.cc"))
    cxx = ["g++", "-std=c++17", "-O1", "-w", "-DGOOGLE_PROTOBUF_NO_STATIC_INITIALIZER",
           f"-I{mlmodel / 'src'}", f"-I{mlmodel}", f"-I{mlmodel / 'build' / 'format'}"]
    jobs_args = []
    for s in sources:
        rel = s.relative_to(build_dir) if s.is_relative_to(build_dir) else Path(s.name)
        obj = objdir / (str(rel).replace("/", "_") + ".o")
        jobs_args.append((cxx, s, obj))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        errors = [e for e in ex.map(_compile, jobs_args) if e]
    if errors:
        raise SystemExit("compile failed:\n" + "\n".join(errors))
    binary = build_dir / BINARY_NAME
    subprocess.run(["g++", "-o", str(binary), *[str(o) for _, _, o in jobs_args], "-lprotobuf", "-lpthread"],
                   check=True)
    return binary


def spec_file(path: Path) -> Path:
    """The protobuf spec file of a .mlmodel or .mlpackage."""
    path = Path(path)
    if path.is_dir():
        return path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    return path


def run(paths: list[Path], build_dir: Path = DEFAULT_BUILD, chunk: int = 200) -> dict[str, tuple[str, str]]:
    """Apple's verdict per path: {str(path): (verdict, message)}, verdict in valid/invalid/crash."""
    binary = build_dir / BINARY_NAME
    if not binary.exists():
        raise SystemExit(f"{binary} not built: run `python tools/apple_validator.py build --coremltools ...`")
    out: dict[str, tuple[str, str]] = {}
    files = [str(spec_file(p)) for p in paths]
    back = {f: str(p) for f, p in zip(files, paths)}
    for i in range(0, len(files), chunk):
        part = files[i:i + chunk]
        r = subprocess.run([str(binary), *part], capture_output=True, text=True, errors="replace")
        for line in r.stdout.splitlines():
            verdict, _, rest = line.partition(" ")
            for f in part:  # paths may hold ': ', so match by prefix
                if rest == f or rest.startswith(f + ": "):
                    out[back[f]] = (verdict, rest[len(f) + 2:])
                    break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the validator CLI")
    b.add_argument("--coremltools", type=Path, required=True, help="coremltools checkout or git dir")
    b.add_argument("--ref", default="9.0", help="git ref when --coremltools is a git dir (default 9.0)")
    b.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD)
    b.add_argument("-j", "--jobs", type=int, default=2)
    r = sub.add_parser("run", help="validate models with the built CLI")
    r.add_argument("paths", nargs="+", type=Path)
    r.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        print(build(a.coremltools, a.ref, a.build_dir, a.jobs))
        return 0
    res = run(a.paths, a.build_dir)
    bad = 0
    for p in a.paths:
        verdict, msg = res.get(str(p), ("missing", "no answer"))
        bad += verdict != "valid"
        print(f"{verdict} {p}" + (f": {msg}" if msg else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
