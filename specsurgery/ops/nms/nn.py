"""add_nms, NeuralNetwork part: the shapes of a network's outputs, and the
small NeuralNetwork stage that turns raw detector outputs into what the
``nonMaximumSuppression`` stage reads (squeeze a leading batch of 1, turn
``(x1, y1, x2, y2)`` corners into ``(cx, cy, w, h)``)."""

from __future__ import annotations

from typing import Optional

from ..._proto import FeatureTypes_pb2, Model_pb2

ADAPTER_VERSION = 4   # sliceStatic, the broadcastable arithmetic, concatND and squeeze are iOS 13 layers


def output_shapes(model, names) -> dict:
    """{name: shape} of network outputs that declare no shape, by shape inference."""
    from .._nn import blob_shapes

    shapes, _ = blob_shapes(model, list(names))
    return {n: tuple(int(d) for d in s) for n, s in shapes.items()}


def _array(desc_list, name: str, template, shape, squeeze: bool):
    """A feature ``name`` like ``template`` (dtype, flexibility) with the leading 1 dropped if ``squeeze``."""
    f = desc_list.add()
    f.name = name
    arr = f.type.multiArrayType
    src = template.multiArrayType
    arr.dataType = src.dataType
    cut = 1 if squeeze else 0
    if src.WhichOneof("ShapeFlexibility") == "shapeRange":
        for r in list(src.shapeRange.sizeRanges)[cut:]:
            arr.shapeRange.sizeRanges.add().CopyFrom(r)
        if len(src.shape):
            arr.shape.extend(list(src.shape)[cut:])
    else:
        arr.shape.extend(int(d) for d in list(shape)[cut:])
    return f


def adapter_stage(conf_in: Optional[tuple], coord_in: tuple, conf_out: Optional[str], coord_out: str, *,
                  squeeze: bool, xyxy: bool) -> "Model_pb2.Model":
    """A NeuralNetwork stage from the raw outputs to NMS-ready ones.

    ``conf_in`` / ``coord_in``: (name, FeatureType, shape) of the raw outputs
    (``conf_in`` None: the confidence goes to NMS as it is).  ``squeeze``
    drops the leading batch of 1 of both; ``xyxy`` turns corner boxes into
    centre/size ones (:func:`_corners_to_centres`).
    """
    m = Model_pb2.Model()
    m.specificationVersion = ADAPTER_VERSION
    nn = m.neuralNetwork
    nn.arrayInputShapeMapping = 1      # EXACT_ARRAY_MAPPING: arrays keep their rank
    nn.imageInputShapeMapping = 1
    desc = m.description
    for feat in (conf_in, coord_in):
        if feat is not None:
            desc.input.add(name=feat[0]).type.CopyFrom(feat[1])

    def squeeze_layer(src, dst):
        nn.layers.add(name=f"squeeze_{src}", input=[src], output=[dst]).squeeze.axes.append(0)

    if conf_in is not None:
        _array(desc.output, conf_out, conf_in[1], conf_in[2], squeeze)
        squeeze_layer(conf_in[0], conf_out)
    _array(desc.output, coord_out, coord_in[1], coord_in[2], squeeze)
    boxes = coord_in[0]
    if squeeze:
        target = coord_out if not xyxy else coord_in[0] + "_squeezed"
        squeeze_layer(boxes, target)
        boxes = target
    if xyxy:
        _corners_to_centres(nn, boxes, coord_out)
    return m


def _corners_to_centres(nn, src: str, dst: str) -> None:
    """``[N, 4]`` (x1, y1, x2, y2) -> (cx, cy, w, h) with weightless layers: the two corners
    sliced out, centre = (min + max) * 0.5, size = max - min, concatenated."""
    def add(name, inputs, output):
        return nn.layers.add(name=f"{dst}_{name}", input=inputs, output=[f"{dst}_{output}" if output else dst])

    for part, (begin, end) in (("min", (0, 2)), ("max", (2, 4))):
        sl = add(f"{part}_corner", [src], part).sliceStatic
        sl.beginIds.extend([0, begin])
        sl.endIds.extend([0, end])
        sl.strides.extend([1, 1])
        sl.beginMasks.extend([True, False])
        sl.endMasks.extend([True, False])
    add("corner_sum", [f"{dst}_min", f"{dst}_max"], "sum").addBroadcastable.SetInParent()
    add("centre", [f"{dst}_sum"], "centre").activation.linear.alpha = 0.5
    add("size", [f"{dst}_max", f"{dst}_min"], "size").subtractBroadcastable.SetInParent()
    add("concat", [f"{dst}_centre", f"{dst}_size"], None).concatND.axis = -1


def is_float16(ft) -> bool:
    return ft.WhichOneof("Type") == "multiArrayType" and \
        ft.multiArrayType.dataType == getattr(FeatureTypes_pb2.ArrayFeatureType, "FLOAT16", 65552)


def declared_shape(ft) -> Optional[tuple]:
    """The declared (default) shape of a multiarray, or None when it declares none."""
    if ft.WhichOneof("Type") != "multiArrayType":
        return None
    arr = ft.multiArrayType
    if len(arr.shape):
        return tuple(int(d) for d in arr.shape)
    if arr.WhichOneof("ShapeFlexibility") == "shapeRange" and len(arr.shapeRange.sizeRanges):
        return tuple(int(r.lowerBound) for r in arr.shapeRange.sizeRanges)
    if arr.WhichOneof("ShapeFlexibility") == "enumeratedShapes" and len(arr.enumeratedShapes.shapes):
        return tuple(int(d) for d in arr.enumeratedShapes.shapes[0].shape)
    return None


__all__ = ["adapter_stage", "output_shapes", "declared_shape", "is_float16"]
