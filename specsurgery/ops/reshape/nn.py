"""reshape, NeuralNetwork part (and pipelines of networks).

The network is checked by the runtime's shape inference at each variant of
each reshaped input (the others at their default shapes); outputs get their
new default shape and, where they follow the input, the flexibility mapped
by :func:`specsurgery.ops._nn.blob_shapes`.
"""

from __future__ import annotations

from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError
from .. import _nn
from .flex import FlexShape, apply_to_array, apply_to_image, image_channels, prepare_inputs

#: the first spec version whose Core ML honours flexible shapes
FLEXIBLE_VERSION = 3


def _dims_that_vary(flex: FlexShape) -> list:
    if flex.kind == "range":
        return [i for i, (lo, hi) in enumerate(flex.ranges) if lo != hi]
    first = flex.shapes[0]
    return [i for i in range(len(first)) if any(s[i] != first[i] for s in flex.shapes)]


def _check_follows(spec, seen: dict, old_shapes: dict) -> None:
    """Shape inference at every variant; a failing layer is named with the input and dims."""
    from ...runtime import infer_shapes

    tries = [(None, None)]
    for name, (what, flex) in seen.items():
        for v in flex.variants():
            tries.append((name, v))
    for name, shape in tries:
        try:
            infer_shapes(spec, {name: shape} if name else None)
        except UnsupportedError as exc:
            raise UnsupportedError(f"reshape: cannot check that the network follows the new shape(s) of "
                                   f"{', '.join(map(repr, seen))}: {exc}") from None
        except SpecSurgeryError as exc:
            if name is None:
                name = next(iter(seen))
                shape = seen[name][1].default
            what, flex = seen[name]
            axes = _dims_that_vary(flex)
            if what == "image":
                at = f"{shape[1]}x{shape[0]} (width x height)"
                dims = "the width and height"
            else:
                at = "x".join(map(str, shape))
                old = old_shapes.get(name)
                changed = [i for i in range(len(shape)) if old and i < len(old) and old[i] != shape[i]]
                axes = changed or axes
                dims = ("dim " if len(axes) == 1 else "dims ") + ", ".join(str(i) for i in axes) if axes else "its shape"
            raise SpecSurgeryError(
                f"reshape: the network does not follow input {name!r} at {at}: {exc}; that layer pins "
                f"{dims} of {name!r}; keep those sizes fixed, or reshape only what the layers after it "
                "can take") from None


def _output_types(spec, old_outputs: dict) -> dict:
    """Rewrite the outputs whose shape changed; returns {name: new FeatureType}."""
    nn = S.nn_of(spec)
    produced = {b for layer in nn.layers for b in _nn.layer_writes(layer)}
    outs = [f for f in spec.description.output
            if f.name in produced and f.type.WhichOneof("Type") in ("multiArrayType", "imageType")]
    if not outs:
        return {}
    shapes, flex = _nn.blob_shapes(spec, [f.name for f in outs])
    changed = {}
    for f in outs:
        new, fl = shapes[f.name], flex.get(f.name)
        old = old_outputs.get(f.name)
        if f.type.WhichOneof("Type") == "imageType":
            img = f.type.imageType
            hw = (int(img.height), int(img.width))
            if len(new) < 2 or (fl is None and tuple(new[-2:]) == hw):
                continue
            if fl is None:
                apply_to_image(f.type, FlexShape("fixed", shapes=[list(new[-2:])]))
            elif fl[0] == "enum":
                apply_to_image(f.type, FlexShape("enum", shapes=[list(s[-2:]) for s in fl[1]]))
            else:
                apply_to_image(f.type, FlexShape("range", ranges=list(fl[1][-2:])))
            changed[f.name] = f.type
            continue
        if fl is None:
            if old is not None and _count(old) == _count(new) and len(old):
                continue   # same size; keep the declared layout (e.g. [C] for a held [C,1,1])
            if old is not None and not len(old):
                continue   # declared without a shape: stays so
            apply_to_array(f.type, FlexShape("fixed", shapes=[new]))
        elif fl[0] == "enum":
            apply_to_array(f.type, FlexShape("enum", shapes=[list(s) for s in fl[1]]))
        else:
            apply_to_array(f.type, FlexShape("range", ranges=list(fl[1])))
        changed[f.name] = f.type
    return changed


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _raise_version(spec, seen: dict) -> None:
    if any(flex.kind != "fixed" for _, flex in seen.values()) and spec.specificationVersion < FLEXIBLE_VERSION:
        _nn.note(f"reshape: spec version raised from {spec.specificationVersion} to {FLEXIBLE_VERSION}, the "
                 "first that honours flexible shapes")
        spec.specificationVersion = FLEXIBLE_VERSION


def reshape_nn(spec, plan: dict) -> dict:
    """Reshape the inputs of NN ``spec`` in place; returns the outputs whose type changed."""
    old_inputs = {f.name: S.feature_shape(f.type) for f in spec.description.input}
    old_outputs = {f.name: list(f.type.multiArrayType.shape) for f in spec.description.output
                   if f.type.WhichOneof("Type") == "multiArrayType"}
    seen = prepare_inputs(spec, plan)
    _raise_version(spec, seen)
    _check_follows(spec, seen, old_inputs)
    return _output_types(spec, old_outputs)


def _flex_of(ft) -> FlexShape:
    """The FlexShape a stage input must take to match feature type ``ft``."""
    kind = ft.WhichOneof("Type")
    if kind == "imageType":
        img = ft.imageType
        c = image_channels(img)
        flex = img.WhichOneof("SizeFlexibility")
        if flex == "enumeratedSizes":
            return FlexShape("enum", shapes=[[c, int(s.height), int(s.width)] for s in img.enumeratedSizes.sizes])
        if flex == "imageSizeRange":
            rr = img.imageSizeRange
            return FlexShape("range", ranges=[(c, c), (int(rr.heightRange.lowerBound), int(rr.heightRange.upperBound)),
                                              (int(rr.widthRange.lowerBound), int(rr.widthRange.upperBound))])
        return FlexShape("fixed", shapes=[[c, int(img.height), int(img.width)]])
    arr = ft.multiArrayType
    flex = arr.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes":
        return FlexShape("enum", shapes=[list(s.shape) for s in arr.enumeratedShapes.shapes])
    if flex == "shapeRange":
        return FlexShape("range", ranges=[(int(r.lowerBound), int(r.upperBound)) for r in arr.shapeRange.sizeRanges])
    return FlexShape("fixed", shapes=[list(arr.shape)])


def reshape_pipeline(spec, plan: dict) -> dict:
    """Reshape a pipeline's inputs: each stage reading a reshaped feature is
    reshaped the same way, in order, and the features it then outputs with a
    new shape flow on to the stages after it and to the pipeline's outputs."""
    pipe = S.pipeline_of(spec)
    seen = prepare_inputs(spec, plan)
    _raise_version(spec, seen)
    current = {f.name: f.type for f in spec.description.input if f.name in seen}
    for k, stage in enumerate(pipe.models):
        names = [f.name for f in stage.description.input if f.name in current]
        if not names:
            continue
        label = f"stage {k} ({S.model_type(stage) or 'untyped'})"
        sub = {}
        for n in names:
            f = next(x for x in stage.description.input if x.name == n)
            if f.type.WhichOneof("Type") != current[n].WhichOneof("Type"):
                raise UnsupportedError(f"reshape: {label} reads {n!r} as {S.describe_type(f.type)}, the "
                                       f"pipeline as {S.describe_type(current[n])}; fix the pipeline first")
            flex = _flex_of(current[n])
            if f.type.WhichOneof("Type") == "multiArrayType" and \
                    len(S.feature_shape(f.type) or []) not in (0, flex.rank):
                raise UnsupportedError(f"reshape: {label} declares {n!r} as {S.describe_type(f.type)}, "
                                       f"of another rank than the pipeline's {S.describe_type(current[n])}")
            sub[n] = flex
        kind = S.model_type(stage)
        try:
            if kind in S.NN_TYPES:
                changed = reshape_nn(stage, sub)
            elif kind in S.PIPELINE_TYPES:
                changed = reshape_pipeline(stage, sub)
            else:
                raise UnsupportedError(f"reshape: {label} reads {', '.join(map(repr, names))}; reshape "
                                       "follows shapes through neural-network stages only (option "
                                       f"'shapes' on backend {kind or 'untyped'})")
        except SpecSurgeryError as exc:
            msg = str(exc)
            raise type(exc)(msg if msg.startswith("reshape: " + label) else
                            msg.replace("reshape: ", f"reshape: {label}: ", 1)) from None
        spec.specificationVersion = max(spec.specificationVersion, stage.specificationVersion)
        current.update(changed)
    out = {}
    for f in spec.description.output:
        if f.name in current and f.name not in seen:
            f.type.CopyFrom(current[f.name])
            out[f.name] = f.type
    return out
