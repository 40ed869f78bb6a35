"""The retype grammar and the feature-type edits both backends share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from ... import spec as S
from ..._proto import FeatureTypes_pb2
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message

GRAMMAR = "image:RGB|BGR|GRAY[,scale=S][,bias=R,G,B] (GRAY: bias=V) or array"
ARRAY = "array"
IFT = FeatureTypes_pb2.ImageFeatureType
COLORS = {"RGB": IFT.RGB, "BGR": IFT.BGR, "GRAY": IFT.GRAYSCALE}
COLOR_NAMES = {v: k for k, v in COLORS.items()}


@dataclass
class ImageInput:
    """An image input's colour space and preprocessing: the network sees
    ``pixel * scale + bias``; ``bias`` is (R, G, B), or (V,) for GRAY."""

    color: str = "RGB"
    scale: float = 1.0
    bias: Optional[Sequence[float]] = None

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    def biases(self) -> list:
        n = self.channels
        if self.bias is None:
            return [0.0] * n
        return [float(b) for b in self.bias]


def parse_type(text: str, flag: str = "type") -> Union[ImageInput, str]:
    """``image:...`` -> :class:`ImageInput`; ``array`` -> ``"array"``; errors name ``flag``."""
    def bad(why: str):
        return SpecSurgeryError(f"{flag}: {why} in {text!r}; expected {GRAMMAR}")

    raw = str(text).strip()
    if raw.lower() == ARRAY:
        return ARRAY
    head, _, rest = raw.partition(",")
    kind, sep, color = head.partition(":")
    if kind.strip().lower() != "image" or not sep:
        raise bad(f"{head.strip() or 'nothing'!r} is neither image:COLOR nor array")
    color = color.strip().upper()
    if color == "GRAYSCALE":
        color = "GRAY"
    if color not in COLORS:
        raise bad(f"colour space {color or 'missing'!r} is not RGB, BGR or GRAY")
    scale, bias, current = 1.0, None, None
    def number(tok: str, value: str) -> float:
        try:
            return _number(value)
        except (ValueError, ZeroDivisionError):
            raise bad(f"{tok!r} is not a number") from None

    for tok in [t.strip() for t in rest.split(",")] if rest else []:
        key, eq, value = tok.partition("=")
        if eq:
            key = key.strip().lower()
            if key == "scale":
                scale, current = number(tok, value), None
            elif key == "bias":
                bias, current = [number(tok, value)], "bias"
            else:
                raise bad(f"unknown option {key!r} (scale=, bias=)")
        elif current == "bias":
            bias.append(number(tok, tok))
        else:
            raise bad(f"{tok!r} is not an option (scale=S, bias=R,G,B)")
    spec = ImageInput(color, scale, bias)
    check_image_input(spec, flag)
    return spec


def _number(text: str) -> float:
    text = text.strip()
    if "/" in text:   # 1/255
        num, _, den = text.partition("/")
        return float(num) / float(den)
    return float(text)


def check_image_input(spec: ImageInput, flag: str) -> None:
    if spec.color not in COLORS:
        raise SpecSurgeryError(f"{flag}: colour space {spec.color!r} is not RGB, BGR or GRAY")
    if spec.bias is not None and len(spec.bias) != spec.channels:
        want = "one value (bias=V)" if spec.channels == 1 else "three values (bias=R,G,B)"
        raise SpecSurgeryError(f"{flag}: {spec.color} takes {want}, got {len(spec.bias)}: "
                               f"{', '.join(map(str, spec.bias))}")


def as_type(value, flag: str):
    if isinstance(value, ImageInput):
        check_image_input(value, flag)
        return value
    if isinstance(value, str):
        return parse_type(value, flag)
    raise SpecSurgeryError(f"{flag}: expected {GRAMMAR} or an ImageInput, got {value!r}")


def array_chw(name: str, ft, want: ImageInput, flag: str) -> tuple:
    """(C, H, W, has_batch) of MultiArray input ``name`` for an image of ``want``'s colours."""
    shape = S.feature_shape(ft) or []
    if len(shape) == 4 and shape[0] == 1:
        has_batch = True
        c, h, w = shape[1:]
    elif len(shape) == 3:
        has_batch = False
        c, h, w = shape
    else:
        raise SpecSurgeryError(f"{flag}: input {name!r} has shape {'x'.join(map(str, shape)) or 'none'}; "
                               "an image input replaces a [1,C,H,W] or [C,H,W] array")
    if c != want.channels:
        other = "GRAY" if c == 1 else ("RGB or BGR" if c == 3 else None)
        raise SpecSurgeryError(f"{flag}: input {name!r} has {c} channel(s) ({'x'.join(map(str, shape))}); "
                               f"{want.color} takes {want.channels}"
                               + (f"; use {other}" if other else "; only 1 (GRAY) or 3 (RGB, BGR) fit"))
    return int(c), int(h), int(w), has_batch


def image_flex_from_array(arr, img, has_batch: bool) -> None:
    """Copy a MultiArray's flexibility over its last two dims onto image type ``img``."""
    flex = arr.WhichOneof("ShapeFlexibility")
    if flex == "shapeRange":
        rngs = list(arr.shapeRange.sizeRanges)
        lead = rngs[:-2]
        if any(r.lowerBound != r.upperBound for r in lead):
            raise UnsupportedError("retype: the array's channel or batch dims are flexible; an image has "
                                   "fixed channels (reshape them fixed first)")
        rr = img.imageSizeRange
        rr.heightRange.lowerBound, rr.heightRange.upperBound = rngs[-2].lowerBound, rngs[-2].upperBound
        rr.widthRange.lowerBound, rr.widthRange.upperBound = rngs[-1].lowerBound, rngs[-1].upperBound
    elif flex == "enumeratedShapes":
        shapes = [list(s.shape) for s in arr.enumeratedShapes.shapes]
        if len({tuple(s[:-2]) for s in shapes}) > 1:
            raise UnsupportedError("retype: the array's enumerated shapes vary in channels or batch; an "
                                   "image has fixed channels")
        for s in shapes:
            e = img.enumeratedSizes.sizes.add()
            e.height, e.width = int(s[-2]), int(s[-1])


def array_flex_from_image(img, arr, lead: Sequence[int]) -> None:
    """Copy an image's size flexibility onto MultiArray type ``arr`` (shape lead + [H, W])."""
    flex = img.WhichOneof("SizeFlexibility")
    if flex == "imageSizeRange":
        rr = img.imageSizeRange
        for d in lead:
            r = arr.shapeRange.sizeRanges.add()
            r.lowerBound = r.upperBound = int(d)
        for src in (rr.heightRange, rr.widthRange):
            r = arr.shapeRange.sizeRanges.add()
            r.lowerBound, r.upperBound = int(src.lowerBound), int(src.upperBound)
    elif flex == "enumeratedSizes":
        for s in img.enumeratedSizes.sizes:
            arr.enumeratedShapes.shapes.add().shape.extend(list(lead) + [int(s.height), int(s.width)])


def _take(ft, member: str):
    """A copy of ``ft``'s ``member`` message, with ``ft`` cleared but for isOptional."""
    old = type(getattr(ft, member))()
    old.CopyFrom(getattr(ft, member))
    optional = ft.isOptional
    ft.Clear()
    ft.isOptional = optional
    return old


def make_image_type(ft, want: ImageInput, h: int, w: int, has_batch: bool) -> None:
    """Turn MultiArray feature type ``ft`` into an image type, in place."""
    arr = _take(ft, "multiArrayType")
    img = ft.imageType
    img.width, img.height = int(w), int(h)
    img.colorSpace = COLORS[want.color]
    image_flex_from_array(arr, img, has_batch)


def make_array_type(ft, lead: Sequence[int], dtype=FeatureTypes_pb2.ArrayFeatureType.FLOAT32) -> None:
    img = _take(ft, "imageType")
    arr = ft.multiArrayType
    arr.dataType = dtype
    arr.shape.extend(list(lead) + [int(img.height), int(img.width)])
    array_flex_from_image(img, arr, lead)


def image_channels(img) -> int:
    return 1 if img.colorSpace in (IFT.GRAYSCALE, getattr(IFT, "GRAYSCALE_FLOAT16", 40)) else 3


def check_plan(spec, plan: Mapping) -> None:
    """Every name an input, of the type its retype needs; every culprit named at once."""
    inputs = {f.name: f for f in spec.description.input}
    unknown = [n for n in plan if n not in inputs]
    if unknown:
        raise NotFoundError(missing_message("input", unknown, inputs, "the model")
                            + "; `specsurgery inspect` lists the inputs")
    problems = []
    for name, want in plan.items():
        kind = inputs[name].type.WhichOneof("Type")
        desc = S.describe_type(inputs[name].type)
        if want == ARRAY and kind != "imageType":
            problems.append(f"input {name!r} is {desc}, not an image; `array` turns an image input back "
                            "into a MultiArray")
        elif want != ARRAY and kind != "multiArrayType":
            problems.append(f"input {name!r} is {desc}, not a MultiArray; image:... retypes a MultiArray "
                            "input" + ("; retype it to array first to change its colours" if kind == "imageType"
                                       else ""))
    if problems:
        raise SpecSurgeryError("retype: " + "; ".join(problems))
