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



def add_quiet(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar on stderr (it only shows on a terminal anyway)")


class Progress:
    """A tqdm progress bar on a terminal's stderr; silent when the stream is
    not a terminal (piped, redirected), under ``--quiet`` or under ``--json``.

    ``step(what)`` is the plain callable the library's ``progress=`` parameters
    take: one call, one step, ``what`` shown beside the bar.  Use as a context
    manager or call ``close()``; a closed bar leaves no line behind.
    """

    def __init__(self, total, label: str, stream=None, *, enabled: bool = True, unit: str = "step"):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.active = bool(enabled and callable(isatty) and isatty())
        self._bar = None
        if self.active:
            from tqdm import tqdm

            sized = _terminal_sized(self.stream)
            # a terminal of size 0 (a pty nobody sized) would make tqdm draw nothing: give it 80 x 24
            self._bar = tqdm(total=total or None, desc=label, file=self.stream, unit=unit, leave=False,
                             ncols=None if sized else 80, nrows=None if sized else 24,
                             dynamic_ncols=sized, mininterval=0.1)

    @classmethod
    def for_args(cls, args, total, label: str, stream=None, **kw) -> "Progress":
        """A bar that stays quiet under the verb's ``--quiet`` or ``--json``."""
        quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
        return cls(total, label, stream, enabled=not quiet, **kw)

    def step(self, what: str = "") -> None:
        self.done += 1
        if self._bar is not None:
            if what:
                self._bar.set_postfix_str(str(what)[:40], refresh=False)
            self._bar.update(1)

    def describe(self, what: str) -> None:
        """Say what the step under way is (a stage's name), without counting a step."""
        if self._bar is not None:
            self._bar.set_postfix_str(str(what)[:40])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _terminal_sized(stream) -> bool:
    """Whether the stream's terminal says how wide and tall it is (a pty of size 0 and a
    stream without a file do not)."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


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


def report_inputs(args, edited, names) -> int:
    """What reshape/retype print after writing: the changed inputs (or JSON)."""
    from ..spec import describe_type, feature_to_json

    spec = getattr(edited, "spec", edited)
    changed = [f for f in spec.description.input if f.name in names]
    if getattr(args, "json", False):
        print_json({"output": str(args.output), "spec_version": spec.specificationVersion,
                    "inputs": [feature_to_json(f) for f in changed],
                    "outputs": [feature_to_json(f) for f in spec.description.output]})
        return 0
    for f in changed:
        print(f"input {f.name}: {describe_type(f.type)}")
    print(f"wrote {args.output} (spec version {spec.specificationVersion})")
    return 0
