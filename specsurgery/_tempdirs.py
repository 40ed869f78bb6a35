"""Keep coremltools' temporary folders out of /tmp.

coremltools writes ``tmp*.mlpackage`` copies and weight folders under the
temp dir and does not always remove them.  Inside :func:`private_tempdir`,
``tempfile.gettempdir()`` is a fresh folder of ours, removed on exit: nothing
is left behind, and no other process's clean-up of /tmp can pull a folder from
under coremltools while it writes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

_LOCK = threading.RLock()


@contextlib.contextmanager
def private_tempdir(prefix: str = "specsurgery-"):
    with _LOCK:  # tempfile.tempdir is process-wide
        parent = tempfile.gettempdir()
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        old = tempfile.tempdir
        tempfile.tempdir = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = old
            shutil.rmtree(folder, ignore_errors=True)
