"""What the checker reports: :class:`Finding` and the list that collects them."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem (or remark) about one element of a model.

    ``path`` locates the element: the stage path of a nested model
    (``backbone`` or ``outer/inner``, empty for the top model) followed by the
    element, e.g. ``backbone/layer:conv1.weights`` or ``input:image``.
    ``rule`` is a stable dotted id (``nn.undefined-blob``) documented in
    docs/check.md; ``message`` says what is wrong and how to fix it.
    """

    severity: str
    path: str
    rule: str
    message: str

    def to_json(self) -> dict:
        return {"severity": self.severity, "path": self.path, "rule": self.rule,
                "message": self.message}

    def __str__(self) -> str:  # like a compiler: where: severity: what [rule]
        where = self.path or "<model>"
        return f"{where}: {self.severity}: {self.message} [{self.rule}]"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def join(*parts: str) -> str:
    """Join path parts, skipping empty ones: join("head", "layer:x") -> "head/layer:x"."""
    return "/".join(p for p in parts if p)


class Findings(list):
    """A list of :class:`Finding` with shorthands that prefix a stage path."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def add(self, severity: str, where: str, rule: str, message: str) -> None:
        self.append(Finding(severity, join(self.prefix, where), rule, message))

    def error(self, where: str, rule: str, message: str) -> None:
        self.add("error", where, rule, message)

    def warning(self, where: str, rule: str, message: str) -> None:
        self.add("warning", where, rule, message)

    def info(self, where: str, rule: str, message: str) -> None:
        self.add("info", where, rule, message)


def element_prefixes(path: str) -> list[str]:
    """The last element of a finding path and its shorter forms at each '.',
    longest first: "head/layer:conv.1.weights" -> ["layer:conv.1.weights",
    "layer:conv.1", "layer:conv"] (layer names may hold dots themselves)."""
    if "layer:" in path:   # layer names may hold '/' too (TensorFlow scopes)
        last = "layer:" + path.rsplit("layer:", 1)[-1]
    else:
        last = path.rsplit("/", 1)[-1]
    out = [last]
    while "." in last:
        last = last.rsplit(".", 1)[0]
        out.append(last)
    return out


def errors(findings) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
