"""Checks on model inputs that both interpreters make before anything runs:
a flexible input's shape against its declared ranges or enumerated shapes (and
its rank), and a declared input's size against the memory budget."""

from __future__ import annotations

from .. import budget
from .. import spec as _spec
from ..errors import SpecSurgeryError


class InputShapeError(SpecSurgeryError):
    """An input's shape is outside what its feature declares."""


def _bound(hi) -> str:
    return "inf" if int(hi) < 0 else str(int(hi))


def check_array_shape(ft, name: str, shape) -> None:
    """Refuse an array of ``shape`` for a flexible MultiArray feature ``ft`` when its
    rank differs or a dimension is outside the declared range / enumerated shapes."""
    arr = ft.multiArrayType
    flex = arr.WhichOneof("ShapeFlexibility")
    shape = tuple(int(d) for d in shape)
    declared = _spec.describe_type(ft)
    if flex == "shapeRange" and len(arr.shapeRange.sizeRanges):
        ranges = [(int(r.lowerBound), int(r.upperBound)) for r in arr.shapeRange.sizeRanges]
        if len(shape) != len(ranges):
            raise InputShapeError(
                f"input {name!r}: array has shape {list(shape)} (rank {len(shape)}), the model takes "
                f"rank-{len(ranges)} arrays within {declared}; give an array of rank {len(ranges)}")
        bad = [f"axis {i} is {d}, outside {lo}..{_bound(hi)}" for i, (d, (lo, hi)) in
               enumerate(zip(shape, ranges)) if d < lo or (hi >= 0 and d > hi)]
        if bad:
            raise InputShapeError(f"input {name!r}: array has shape {list(shape)}: {'; '.join(bad)} "
                                  f"(the model declares {declared})")
    elif flex == "enumeratedShapes" and len(arr.enumeratedShapes.shapes):
        allowed = [tuple(int(d) for d in s.shape) for s in arr.enumeratedShapes.shapes]
        if shape not in allowed:
            listed = " | ".join(str(list(s)) for s in allowed)
            raise InputShapeError(f"input {name!r}: array has shape {list(shape)}, the model takes "
                                  f"one of {listed} ({declared})")


def check_image_size(ft, name: str, width: int, height: int) -> None:
    """Refuse an image size outside a flexible image feature's sizes or ranges."""
    img = ft.imageType
    flex = img.WhichOneof("SizeFlexibility")
    declared = _spec.describe_type(ft)
    if flex == "enumeratedSizes" and len(img.enumeratedSizes.sizes):
        allowed = [(int(s.width), int(s.height)) for s in img.enumeratedSizes.sizes]
        if (int(width), int(height)) not in allowed:
            listed = " | ".join(f"{w}x{h}" for w, h in allowed)
            raise InputShapeError(f"input {name!r}: image is {width}x{height} (width x height), the "
                                  f"model takes one of {listed} ({declared})")
    elif flex == "imageSizeRange":
        bad = []
        for what, value, r in (("width", width, img.imageSizeRange.widthRange),
                               ("height", height, img.imageSizeRange.heightRange)):
            lo, hi = int(r.lowerBound), int(r.upperBound)
            if value < lo or (hi >= 0 and value > hi):
                bad.append(f"{what} {value} is outside {lo}..{_bound(hi)}")
        if bad:
            raise InputShapeError(f"input {name!r}: image is {width}x{height}: {'; '.join(bad)} "
                                  f"(the model declares {declared})")


def check_declared_size(name: str, shape, itemsize: int = 4) -> None:
    """Refuse an input of a declared ``shape`` with a negative dimension or over the
    memory budget (before drawing or allocating it)."""
    shape = [int(d) for d in shape]
    if any(d < 0 for d in shape):
        raise InputShapeError(f"input {name!r} declares the shape {shape}, with a negative "
                              "dimension; fix the model's input description")
    budget.check(shape, itemsize, what=f"input {name!r}")
