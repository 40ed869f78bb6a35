"""Draw a model's graph: DOT text (no binary needed) and SVG, PNG or PDF through Graphviz.

``to_dot(model, ...)`` is deterministic; ``render(model, out_path, ...)`` writes
``.dot`` directly and the other formats through the ``graphviz`` package and
the ``dot`` program.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

from ..errors import SpecSurgeryError
from .dot import to_dot

FORMATS = ("dot", "svg", "png", "pdf")
INSTALL_HINT = "apt-get install -y graphviz"


def _dot_binary() -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise SpecSurgeryError(
            "Graphviz's `dot` program is not installed, so SVG/PNG/PDF cannot be drawn; install it "
            f"with `{INSTALL_HINT}` (macOS: `brew install graphviz`), or write .dot output instead")
    return exe


def dot_to_bytes(dot_text: str, fmt: str) -> bytes:
    """Lay out DOT text with Graphviz and return the ``fmt`` (svg, png, pdf) bytes."""
    if fmt not in FORMATS[1:]:
        raise SpecSurgeryError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    _dot_binary()
    import graphviz

    pinned = dot_text.startswith("// specsurgery: layered layout")
    try:
        if pinned:  # positions are fixed: neato only routes edges and draws
            return graphviz.Source(dot_text, engine="neato").pipe(format=fmt, neato_no_op=2)
        return graphviz.Source(dot_text).pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise SpecSurgeryError(f"Graphviz's `dot` could not be run ({exc}); install it with "
                               f"`{INSTALL_HINT}`") from exc
    except graphviz.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise SpecSurgeryError(f"Graphviz failed to draw the graph: {err[-1] if err else exc}") from exc


def render(model, out_path: Union[str, os.PathLike], **kwargs) -> Path:
    """Write the graph of ``model`` to ``out_path`` (.dot, .svg, .png or .pdf).

    Keyword arguments are those of :func:`to_dot`.  Returns the path written.
    """
    from ..io import atomic_write_bytes

    out = Path(out_path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise SpecSurgeryError(f"{out}: unknown output format {out.suffix or '(none)'!r}; "
                               f"use one of {', '.join('.' + f for f in FORMATS)}")
    if fmt != "dot":
        _dot_binary()   # fail before the work when the binary is missing
    text = to_dot(model, **kwargs)
    data = text.encode("utf-8") if fmt == "dot" else dot_to_bytes(text, fmt)
    return atomic_write_bytes(out, data)


__all__ = ["to_dot", "render", "dot_to_bytes", "FORMATS"]


from .._callable import make_callable  # noqa: E402

make_callable(__name__, "render")
