"""Atomic writes: the one module of specsurgery that renames files into place.

Everything specsurgery writes goes to a temporary name beside its target and
is renamed over it once complete, so a reader sees the old file or the new one,
never half of one.  Temporary names are recognisable::

    .<target name>.sstmp-<pid>-<random>

so that a write into a folder first removes the leftovers of processes that
are gone (a ``kill -9`` mid-write leaves its temporary file behind), and a
SIGINT or SIGTERM (see :func:`install_signal_cleanup`) removes this process's
own at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

from .errors import SaveError

PathLike = Union[str, os.PathLike]

_MARK = ".sstmp-"
_STALE = re.compile(r"^\..*" + re.escape(_MARK) + r"(\d+)-[0-9a-f]{8}$")
_LIVE: set = set()           # temporary paths this process is writing
_LOCK = threading.Lock()


# --------------------------------------------------------------------------- temporary names

def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # somebody else's live process
        return True
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def remove_stale(folder: PathLike) -> list[Path]:
    """Remove the temporary files and folders that dead processes left in
    ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _STALE.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            path = Path(entry.path)
            _remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _temporary(target: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``target``, removed unless it was renamed away."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target, exc) from None
    remove_stale(target.parent)
    tmp = _temp_name(target)
    with _LOCK:
        _LIVE.add(tmp)
    try:
        yield tmp
    finally:
        with _LOCK:
            _LIVE.discard(tmp)
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


# --------------------------------------------------------------------------- errors

def write_error(path: Path, exc: OSError) -> SaveError:
    """An OS refusal while writing ``path`` as a one-line SaveError that says what to do."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.is_file()), None)   # a file where a folder must be
    if path.is_dir() and path.suffix != ".mlpackage":
        why = "an existing folder is in the way"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)) and blocker is not None:
        why = f"{blocker} is a file, not a folder"
    else:
        why = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(path):
            why += f" ({exc.filename})"
    return SaveError(f"{path}: cannot write: {why}; choose an output path whose folders can be "
                     "created and written")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- files

def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    with _temporary(path) as tmp:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # a folder in the way, a full disk, no permission
            raise write_error(path, exc) from None
    return path


def write_text(path: PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- folders

def _swap_in(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` (file or folder) to ``target``, replacing whatever is there;
    a folder in the way is moved aside first and restored if the rename fails."""
    if tmp.is_dir() and (target.is_dir() and not target.is_symlink()):
        backup = _temp_name(target)
        with _LOCK:
            _LIVE.add(backup)
        try:
            os.replace(target, backup)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(backup, target)
                raise
            _remove(backup)
        finally:
            with _LOCK:
                _LIVE.discard(backup)
        return
    if not tmp.is_dir() and target.is_dir() and not target.is_symlink():
        raise SaveError(f"{target}: cannot write: an existing folder is in the way; choose another "
                        "output path or remove the folder")
    os.replace(tmp, target)


def write_tree(path: PathLike, build: Callable[[Path], None]) -> Path:
    """Build a folder (an ``.mlpackage``) with ``build(tmp_folder)`` in a
    temporary folder beside ``path``, then swap it in."""
    path = Path(path)
    with _temporary(path) as tmp:
        try:
            tmp.mkdir(mode=0o777 & ~_umask())
            build(tmp)
            _swap_in(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    return path


class Staging:
    """A temporary folder beside ``out_dir`` in which a multi-file result is
    written; :meth:`commit` moves the named entries into ``out_dir``."""

    def __init__(self, out_dir: Path, tmp: Path):
        self.out_dir = out_dir
        self.dir = tmp
        self.committed: list[Path] = []

    def commit(self, names: Iterable[str]) -> list[Path]:
        names = list(names)
        missing = [n for n in names if not (self.dir / n).exists()]
        if missing:
            raise SaveError(f"{self.out_dir}: nothing was staged for {', '.join(missing)}")
        try:
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise SaveError(f"{self.out_dir} exists and is not a folder; pass a folder for -o")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale(self.out_dir)
            for name in names:
                target = self.out_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                _swap_in(self.dir / name, target)
                self.committed.append(target)
        except OSError as exc:
            raise write_error(self.out_dir, exc) from None
        return list(self.committed)


@contextlib.contextmanager
def staging(out_dir: PathLike) -> Iterator[Staging]:
    """``with staging(out) as st:`` write files under ``st.dir``, then
    ``st.commit(names)``; on an error (or without a commit) nothing of the
    staged result reaches ``out_dir`` and the temporary folder is removed."""
    out_dir = Path(out_dir)
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SaveError(f"{parent} exists and is not a folder; pass a folder for -o")
            break
    with _temporary(out_dir) as tmp:
        try:
            tmp.mkdir(mode=0o777 & ~_umask())
        except OSError as exc:
            raise write_error(out_dir, exc) from None
        yield Staging(out_dir, tmp)


# --------------------------------------------------------------------------- signals

def cleanup_now() -> None:
    """Remove every temporary path this process is writing (signal handlers)."""
    with _LOCK:
        live = list(_LIVE)
        _LIVE.clear()
    for path in live:
        _remove(path)


def install_signal_cleanup() -> None:
    """Make SIGTERM (and SIGHUP) unwind like Ctrl-C, so that temporary files are
    removed at once; the process then exits with 128 + the signal number."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        cleanup_now()
        sys.exit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, handler)


__all__ = ["write_bytes", "write_text", "write_tree", "staging", "Staging", "remove_stale",
           "write_error", "cleanup_now", "install_signal_cleanup"]
