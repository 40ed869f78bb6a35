"""reshape, ML Program part.

The function input's tensor type gets unknown dimensions where the shape is
flexible.  The program is then run by the MIL runtime at the default shape
and at every bound / enumerated shape: an op that fails there pins the size
and is named; every value whose shape differs between the runs gets unknown
dimensions on those axes (and its new size where it changed for good), so no
value keeps a stale constant shape, and the outputs that follow get matching
flexibility in the description.
"""

from __future__ import annotations

import numpy as np

from ... import spec as S
from ..._proto import MIL_pb2
from ...errors import SpecSurgeryError, UnsupportedError
from ...mil import program as P
from .flex import FlexShape, apply_to_array, apply_to_image, image_channels, prepare_inputs


def _set_dims(vt, dims) -> None:
    """Rewrite tensor ValueType ``vt``'s dimensions: an int is a constant size, None unknown."""
    tt = vt.tensorType
    tt.ClearField("dimensions")
    tt.rank = len(dims)
    for d in dims:
        dim = tt.dimensions.add()
        if d is None:
            dim.unknown.variadic = False
        else:
            dim.constant.size = int(d)


def _input_dims(what: str, flex: FlexShape, channels: int) -> list:
    """The function input's dimensions for a reshaped feature (None where flexible)."""
    if flex.kind == "range":
        dims = [lo if lo == hi else None for lo, hi in flex.ranges]
    else:
        dims = _enum_dims(flex)
    return [1, channels] + dims if what == "image" else dims


def _enum_dims(flex: FlexShape) -> list:
    first = flex.shapes[0]
    return [first[i] if all(s[i] == first[i] for s in flex.shapes) else None for i in range(len(first))]


def _env(fn, desc_inputs: dict, shapes: dict) -> dict:
    """Inputs for a probe run: seeded values of the given (or declared) shapes."""
    rng = np.random.default_rng(0)
    env = {}
    for i in fn.inputs:
        vt = i.type
        if vt.WhichOneof("type") == "stateType":
            vt = vt.stateType.wrappedType
        shape = shapes.get(i.name)
        if shape is None:
            declared = P.tensor_shape(vt) or ()
            f = desc_inputs.get(i.name)
            default = S.feature_shape(f.type) if f is not None else None
            if f is not None and f.type.WhichOneof("Type") == "imageType":
                img = f.type.imageType
                default = [1, image_channels(img), int(img.height), int(img.width)]
            shape = [d if d is not None else (default[k] if default and k < len(default) else 1)
                     for k, d in enumerate(declared)]
        dt = P.tensor_dtype(vt)
        if dt in (MIL_pb2.INT32, MIL_pb2.INT64, MIL_pb2.INT16, MIL_pb2.INT8, MIL_pb2.UINT8):
            env[i.name] = np.ones(shape, np.int32)
        elif dt == MIL_pb2.BOOL:
            env[i.name] = np.ones(shape, bool)
        else:
            env[i.name] = rng.random(shape, dtype=np.float32)
    return env


def _probe(block, fn, desc_inputs, package, shapes) -> dict:
    from ...runtime.mil import run_block

    env = _env(fn, desc_inputs, shapes)
    run_block(block, env, package)
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in env.items() if isinstance(v, np.ndarray)}


def reshape_program(spec, package, plan: dict) -> None:
    if package is None and any(True for _ in P.blob_refs(spec)):
        raise SpecSurgeryError("reshape: this ML Program keeps its weights in a weight file; pass the "
                               ".mlpackage (or an MLPackage), not its bare spec")
    fname, fn = P.single_function(spec, "reshape", "shapes")
    block = P.main_block(fn)
    desc_inputs = {f.name: f for f in spec.description.input}
    seen = prepare_inputs(spec, plan)
    fn_inputs = {i.name: i for i in fn.inputs}
    held = {}
    for name, (what, flex) in seen.items():
        f = desc_inputs[name]
        channels = image_channels(f.type.imageType) if what == "image" else 0
        vt = fn_inputs[name].type
        if vt.WhichOneof("type") != "tensorType":
            raise UnsupportedError(f"reshape: function {fname!r} input {name!r} is "
                                   f"{P.describe_value_type(vt)}, not a tensor")
        dims = _input_dims(what, flex, channels)
        if len(dims) != len(P.tensor_shape(vt)):
            raise SpecSurgeryError(f"reshape: input {name!r} is {P.describe_value_type(vt)} in function "
                                   f"{fname!r}; the new shape {str(flex)!r} has {len(dims)} dims")
        _set_dims(vt, dims)
        held[name] = (what, flex, channels)

    def full(what, shape, channels):
        return [1, channels] + list(shape) if what == "image" else list(shape)

    runs = []     # (name or None, shape, {value: shape})
    tries = [(None, None)] + [(n, v) for n, (_, flex, _) in held.items() for v in flex.variants()]
    defaults = {n: full(w, fl.default, c) for n, (w, fl, c) in held.items()}
    for name, shape in tries:
        shapes = dict(defaults)
        if name is not None:
            w, _, c = held[name]
            shapes[name] = full(w, shape, c)
        try:
            runs.append(_probe(block, fn, desc_inputs, package, shapes))
        except UnsupportedError as exc:
            raise UnsupportedError(f"reshape: cannot check that the program follows the new shape(s) of "
                                   f"{', '.join(map(repr, held))}: {exc}") from None
        except SpecSurgeryError as exc:
            who = name or next(iter(held))
            at = "x".join(map(str, shapes[who]))
            raise SpecSurgeryError(
                f"reshape: the program does not follow input {who!r} at {at}: {exc}; that op pins the "
                f"size of {who!r} (e.g. a reshape to a constant shape); keep those sizes fixed, or "
                "reshape only what the ops after it can take") from None
    base = runs[0]
    changed = {}
    for op in block.operations:
        for o in op.outputs:
            if o.type.WhichOneof("type") != "tensorType" or o.name not in base:
                continue
            observed = [r[o.name] for r in runs if o.name in r]
            if len({len(s) for s in observed}) > 1:
                _set_dims(o.type, [None] * len(observed[0]))
                changed[o.name] = observed
                continue
            dims = [observed[0][k] if all(s[k] == observed[0][k] for s in observed) else None
                    for k in range(len(observed[0]))]
            if list(P.tensor_shape(o.type)) != dims:
                _set_dims(o.type, dims)
            if any(s != observed[0] for s in observed) or None in dims:
                changed[o.name] = observed
    _outputs(spec, block, held, changed, base)


def _outputs(spec, block, held, changed, base) -> None:
    flexes = [fl for _, fl, _ in held.values() if fl.kind != "fixed"]
    enumerated = bool(flexes) and all(fl.kind == "enum" for fl in flexes)
    unbounded = any(hi < 0 for fl in flexes if fl.kind == "range" for _, hi in fl.ranges)
    for f in spec.description.output:
        kind = f.type.WhichOneof("Type")
        if f.name not in base or kind not in ("multiArrayType", "imageType"):
            continue
        observed = changed.get(f.name) or [base[f.name]]
        default = list(observed[0])
        if all(s == observed[0] for s in observed):
            flex = FlexShape("fixed", shapes=[default])
            old = list(f.type.multiArrayType.shape) if kind == "multiArrayType" else None
            if kind == "multiArrayType" and old == default and not f.type.multiArrayType.WhichOneof("ShapeFlexibility"):
                continue
        elif enumerated or len({len(s) for s in observed}) > 1:
            uniq = []
            for s in observed:
                if list(s) not in uniq:
                    uniq.append(list(s))
            flex = FlexShape("enum", shapes=uniq)
        else:
            ranges = []
            for k in range(len(default)):
                lo, hi = min(s[k] for s in observed), max(s[k] for s in observed)
                ranges.append((lo, lo) if lo == hi else (lo, -1 if unbounded else hi))
            flex = FlexShape("range", ranges=ranges)
        if kind == "multiArrayType":
            if flex.kind == "enum" and len({len(s) for s in flex.shapes}) > 1:
                raise UnsupportedError(f"reshape: output {f.name!r} changes rank with the input shape "
                                       f"({', '.join(map(str, flex.shapes))}); a MultiArray output has one rank")
            apply_to_array(f.type, flex)
        else:
            if flex.kind == "range":
                apply_to_image(f.type, FlexShape("range", ranges=flex.ranges[-2:]))
            else:
                apply_to_image(f.type, FlexShape(flex.kind, shapes=[s[-2:] for s in flex.shapes]))
