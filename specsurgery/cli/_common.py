"""Argument groups and output helpers shared by the CLI verbs."""

from __future__ import annotations

import json
import sys

from ..units import human_bytes  # noqa: F401  (re-exported for the verbs)


class notes_to_stderr:
    """Collect the library's :class:`~specsurgery.ops._nn.SurgeryNote` warnings
    while the block runs (the list it yields) and print them as ``note: ...``
    lines on stderr when it ends."""

    def __enter__(self) -> list:
        from ..ops._nn import capture_notes

        self._capture = capture_notes()
        self.notes = self._capture.__enter__()
        return self.notes

    def __exit__(self, *exc) -> None:
        self._capture.__exit__(*exc)
        for text in self.notes:
            print(f"note: {text}", file=sys.stderr)


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_search_path(parser) -> None:
    parser.add_argument("--search-path", metavar="P", default=None,
                        help="where linked models are looked for, ':'-separated "
                             "(entries: folders, $BUNDLE_MAIN, $BUNDLE_IDENTIFIER(id))")


def add_stub_search_path(parser, what: str = "linkedModelSearchPath") -> None:
    """--search-path written into a linked stub (the library's DEFAULT_SEARCH_PATH)."""
    parser.add_argument("--search-path", metavar="P", default=".:$BUNDLE_MAIN",
                        help=f"{what} (default: .:$BUNDLE_MAIN)")


def add_bundle(parser) -> None:
    parser.add_argument("--bundle", metavar="DIR", default=None,
                        help="folder that $BUNDLE_MAIN stands for (default: the top model's folder)")


def add_output(parser, required: bool = True, help_text: str = "output file") -> None:
    parser.add_argument("-o", "--output", metavar="OUT", required=required, help=help_text)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_default)
    sys.stdout.write("\n")


def _default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    return str(obj)



class Progress:
    """A one-line progress indicator on a terminal's stderr; silent elsewhere."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.active = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, what: str = "") -> None:
        self.done += 1
        if self.active:
            self.stream.write(f"\r{self.label} {self.done}/{self.total} {what[:50]:<50}")
            self.stream.flush()

    def close(self) -> None:
        if self.active:
            self.stream.write("\r" + " " * (len(self.label) + 70) + "\r")
            self.stream.flush()


def label_list(value: str, flag: str = "--labels") -> list[str]:
    """``--labels`` as a file with one label a line, or as ``a,b,c``."""
    import os

    from ..errors import SpecSurgeryError

    if os.path.isfile(value):
        try:
            text = open(value, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SpecSurgeryError(f"{flag} {value}: cannot read ({why}); pass a UTF-8 file with one "
                                   "label a line, or a,b,c") from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    elif os.sep in value or value.endswith(".txt"):
        raise SpecSurgeryError(f"{flag} {value}: no such file; pass a file with one label a line, or a,b,c")
    else:
        labels = [part.strip() for part in value.split(",")]
    if not labels or any(not label for label in labels):
        raise SpecSurgeryError(f"{flag} {value!r}: empty label; pass a file with one label a line, or a,b,c")
    return labels


def key_values(pairs, flag: str) -> dict:
    """Repeated ``KEY=VALUE`` arguments as a dict; every malformed one is named."""
    from ..errors import SpecSurgeryError

    out, bad = {}, []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            bad.append(pair)
        else:
            out[key] = value
    if bad:
        raise SpecSurgeryError(f"{flag}: expected KEY=VALUE, got " + ", ".join(repr(b) for b in bad))
    return out
