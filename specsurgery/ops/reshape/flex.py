"""The reshape grammar (see the package docstring) and the feature-type edits both backends share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from ... import spec as S
from ..._proto import FeatureTypes_pb2
from ...errors import NotFoundError, SpecSurgeryError, missing_message

GRAMMAR = ("DxDx... with D a size (224) or a range LO..HI (64..512, HI=-1 for unbounded), or "
           "enumerated shapes separated by commas (1x3x224x224,1x3x320x320)")


@dataclass
class FlexShape:
    """A parsed shape: ``kind`` is ``"fixed"``, ``"range"`` or ``"enum"``.

    ``ranges`` holds ``(lo, hi)`` per dimension (``hi == -1``: unbounded;
    fixed dimensions have ``lo == hi``); ``shapes`` the enumerated shapes."""

    kind: str
    ranges: list = field(default_factory=list)
    shapes: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        return len(self.ranges) if self.kind == "range" else len(self.shapes[0])

    @property
    def default(self) -> list:
        if self.kind == "range":
            return [lo for lo, _ in self.ranges]
        return list(self.shapes[0])

    def variants(self) -> list:
        """Shapes to check the network at: every enumerated shape, or the
        lower bounds and the upper bounds (a step past the lower bound where
        unbounded)."""
        if self.kind != "range":
            return [list(s) for s in self.shapes]
        lo = [a for a, _ in self.ranges]
        hi = [b if b >= 0 else a * 2 + 3 for a, b in self.ranges]
        return [lo] if hi == lo else [lo, hi]

    def __str__(self) -> str:
        if self.kind == "range":
            return "x".join(str(a) if a == b else f"{a}..{b}" for a, b in self.ranges)
        return ",".join("x".join(map(str, s)) for s in self.shapes)


_DIM = re.compile(r"^\s*(\d+)\s*(?:\.\.\s*(-1|\d+)\s*)?$")


def parse_shape(text: str, flag: str = "shape") -> FlexShape:
    """Parse the grammar above; errors name ``flag`` and the grammar."""
    def bad(why: str):
        return SpecSurgeryError(f"{flag}: {why} in {text!r}; expected {GRAMMAR}")

    text = str(text).strip()
    if not text:
        raise bad("empty shape")
    parts = [p.strip() for p in text.split(",")]
    shapes = []
    for part in parts:
        if not part:
            raise bad("an empty shape between commas")
        dims = []
        for d in part.lower().split("x"):
            m = _DIM.match(d)
            if not m:
                raise bad(f"{d.strip()!r} is not a size or a range LO..HI")
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else int(m.group(2))
            if lo < 1:
                raise bad(f"size {lo} is below 1")
            if hi != -1 and hi < lo:
                raise bad(f"range {lo}..{hi} has its upper bound below its lower bound")
            dims.append((lo, hi))
        shapes.append(dims)
    ranged = any(lo != hi for s in shapes for lo, hi in s)
    if len(shapes) > 1:
        if ranged:
            raise bad("enumerated shapes cannot hold ranges")
        if len({len(s) for s in shapes}) > 1:
            raise bad("enumerated shapes must all have the same rank")
        uniq = []
        for s in shapes:
            s = [lo for lo, _ in s]
            if s not in uniq:
                uniq.append(s)
        return FlexShape("enum", shapes=uniq)
    if ranged:
        return FlexShape("range", ranges=shapes[0])
    return FlexShape("fixed", shapes=[[lo for lo, _ in shapes[0]]])


def as_flex(value, flag: str) -> FlexShape:
    """A :class:`FlexShape` from a string of the grammar, a FlexShape, or a
    list of ints (one fixed shape)."""
    if isinstance(value, FlexShape):
        return value
    if isinstance(value, str):
        return parse_shape(value, flag)
    try:
        dims = [int(d) for d in value]
    except (TypeError, ValueError):
        raise SpecSurgeryError(f"{flag}: expected a shape string ({GRAMMAR}), a FlexShape or a list of "
                               f"sizes, got {value!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise SpecSurgeryError(f"{flag}: sizes must be at least 1, got {dims}")
    return FlexShape("fixed", shapes=[dims])


# --------------------------------------------------------------------------- feature types

GRAY_SPACES = (FeatureTypes_pb2.ImageFeatureType.GRAYSCALE,
               getattr(FeatureTypes_pb2.ImageFeatureType, "GRAYSCALE_FLOAT16", 40))


def image_channels(img) -> int:
    return 1 if img.colorSpace in GRAY_SPACES else 3


def image_hw(name: str, ft, flex: FlexShape, flag: str) -> FlexShape:
    """The (height, width) part of ``flex`` for image input ``name``: rank 2
    (HxW), 3 (CxHxW) or 4 (1xCxHxW), with C the image's channels."""
    img = ft.imageType
    c = image_channels(img)
    rank = flex.rank
    if rank not in (2, 3, 4):
        raise SpecSurgeryError(f"{flag}: image input {name!r} takes HxW, CxHxW or 1xCxHxW "
                               f"(C={c}), got {rank} dims in {str(flex)!r}")
    lead = [1, c][4 - rank:] if rank > 2 else []
    if flex.kind == "range":
        head = flex.ranges[:rank - 2]
        if any(lo != hi or lo != want for (lo, hi), want in zip(head, lead)):
            raise SpecSurgeryError(f"{flag}: image input {name!r} has {c} channel(s); only its height and "
                                   f"width can vary, so the leading dims of {str(flex)!r} must be "
                                   + "x".join(map(str, lead)))
        return FlexShape("range", ranges=list(flex.ranges[-2:]))
    for s in flex.shapes:
        if list(s[:rank - 2]) != lead:
            raise SpecSurgeryError(f"{flag}: image input {name!r} has {c} channel(s); only its height and "
                                   f"width can vary, so every shape of {str(flex)!r} must start with "
                                   + "x".join(map(str, lead)))
    return FlexShape(flex.kind, shapes=[list(s[-2:]) for s in flex.shapes])


def apply_to_array(ft, flex: FlexShape) -> None:
    arr = ft.multiArrayType
    arr.ClearField("shape")
    if arr.WhichOneof("ShapeFlexibility"):
        arr.ClearField(arr.WhichOneof("ShapeFlexibility"))
    arr.shape.extend(flex.default)
    if flex.kind == "range":
        for lo, hi in flex.ranges:
            r = arr.shapeRange.sizeRanges.add()
            r.lowerBound, r.upperBound = int(lo), int(hi)
    elif flex.kind == "enum":
        for s in flex.shapes:
            arr.enumeratedShapes.shapes.add().shape.extend(int(d) for d in s)


def apply_to_image(ft, hw: FlexShape) -> None:
    """``hw`` is the (height, width) FlexShape of :func:`image_hw`."""
    img = ft.imageType
    if img.WhichOneof("SizeFlexibility"):
        img.ClearField(img.WhichOneof("SizeFlexibility"))
    h, w = hw.default
    img.height, img.width = int(h), int(w)
    if hw.kind == "range":
        (hlo, hhi), (wlo, whi) = hw.ranges
        rr = img.imageSizeRange
        rr.heightRange.lowerBound, rr.heightRange.upperBound = int(hlo), int(hhi)
        rr.widthRange.lowerBound, rr.widthRange.upperBound = int(wlo), int(whi)
    elif hw.kind == "enum":
        for hh, ww in hw.shapes:
            s = img.enumeratedSizes.sizes.add()
            s.height, s.width = int(hh), int(ww)


def prepare_inputs(spec, plan: Mapping[str, FlexShape]) -> dict:
    """Check ``plan`` against the description's inputs and rewrite them; returns
    ``{name: FlexShape of the shape the network sees}`` (images: [C,H,W] world
    reduced to (H, W)), keyed by input name."""
    inputs = {f.name: f for f in spec.description.input}
    unknown = [n for n in plan if n not in inputs]
    if unknown:
        raise NotFoundError(missing_message("input", unknown, inputs, "the model")
                            + "; `specsurgery inspect` lists the inputs")
    seen = {}
    problems = []
    for name, flex in plan.items():
        f = inputs[name]
        kind = f.type.WhichOneof("Type")
        flag = f"--input {name}"
        if kind == "multiArrayType":
            old = S.feature_shape(f.type) or []
            if old and len(old) != flex.rank:
                problems.append(f"{flag}: input {name!r} has rank {len(old)} ({'x'.join(map(str, old))}), "
                                f"the new shape {str(flex)!r} has {flex.rank} dims; give {len(old)} dims")
                continue
            seen[name] = ("array", flex)
        elif kind == "imageType":
            seen[name] = ("image", image_hw(name, f.type, flex, flag))
        else:
            problems.append(f"input {name!r} is {S.describe_type(f.type)}; only MultiArray and image "
                            "inputs have a shape")
    if problems:
        raise SpecSurgeryError("reshape: " + "; ".join(problems))
    for name, (what, flex) in seen.items():
        ft = inputs[name].type
        if what == "array":
            apply_to_array(ft, flex)
        else:
            apply_to_image(ft, flex)
    return seen
