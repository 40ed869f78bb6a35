"""Interface rules: feature names and types, optional inputs, I/O presence
(format notes §1.2 generic rules and §6)."""

from __future__ import annotations

from ..spec import NN_TYPES, PIPELINE_TYPES, describe_type
from .findings import Findings

FLOAT32, DOUBLE, INT32, FLOAT16, INT8 = 65568, 65600, 131104, 65552, 131080
DTYPES = {FLOAT32: "FLOAT32", DOUBLE: "DOUBLE", INT32: "INT32", FLOAT16: "FLOAT16", INT8: "INT8"}
COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}

#: Types that may have optional inputs (§6 validateOptional).  The first group
#: also needs at least one non-optional input.
OPTIONAL_NEEDS_REQUIRED = set(NN_TYPES) | {"mlProgram", "serializedModel"}
OPTIONAL_FREE = set(PIPELINE_TYPES) | {"treeEnsembleClassifier", "treeEnsembleRegressor", "imputer",
                                       "itemSimilarityRecommender", "identity"}
#: Types that may carry default values for optional inputs.
DEFAULT_VALUE_TYPES = set(NN_TYPES) | {"mlProgram", "serializedModel"}
#: Types that may have an empty input list at v9+.
EMPTY_INPUT_TYPES = set(NN_TYPES) | set(PIPELINE_TYPES) | {"mlProgram"}


def _fmt_shape(shape) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def check_array(arr, where: str, name: str, role: str, out: Findings, kind: str,
                version: int = 10, optional: bool = False) -> None:
    label = f"{role} '{name}'"
    if arr.dataType not in DTYPES:
        out.error(where, "array.bad-dtype",
                  f"{label}: multiarray dataType {arr.dataType} is not valid; use FLOAT32, DOUBLE, "
                  "INT32, FLOAT16 (v7+) or INT8 (v10+)")
    # Below v3 Core ML ignores shape flexibility (it is neither checked nor used).
    flex = arr.WhichOneof("ShapeFlexibility") if version >= 3 else None
    shape = list(arr.shape)
    if role == "input" and not shape and flex is None:
        out.error(where, "array.no-shape",
                  f"{label}: a multiarray input needs a shape or a shape flexibility (honoured "
                  "from v3); set multiArrayType.shape")
    if any(d < 0 for d in shape):
        out.error(where, "array.negative-dim",
                  f"{label}: shape {_fmt_shape(shape)} has a negative dimension; dimensions must be >= 0")
    if flex == "enumeratedShapes":
        shapes = [list(s.shape) for s in arr.enumeratedShapes.shapes]
        if not shapes or any(not s for s in shapes):
            out.error(where, "array.bad-enumerated-shapes",
                      f"{label}: enumeratedShapes must list at least one shape and no empty shape")
        elif shape and shape not in shapes:
            out.error(where, "array.default-not-enumerated",
                      f"{label}: default shape {_fmt_shape(shape)} is not one of the enumerated shapes "
                      + ", ".join(_fmt_shape(s) for s in shapes) + "; add it or change the default")
    elif flex == "shapeRange":
        ranges = list(arr.shapeRange.sizeRanges)
        for i, r in enumerate(ranges):
            if r.upperBound >= 0 and r.lowerBound > r.upperBound:
                out.error(where, "array.bad-range",
                          f"{label}: dim {i} range [{r.lowerBound},{r.upperBound}] has lower > upper; "
                          "use -1 for an unbounded upper bound")
        if shape:
            if len(shape) != len(ranges):
                out.error(where, "array.default-outside-range",
                          f"{label}: default shape {_fmt_shape(shape)} has rank {len(shape)} but the "
                          f"shape range has {len(ranges)} dims")
            else:
                for i, (d, r) in enumerate(zip(shape, ranges)):
                    if d < r.lowerBound or (r.upperBound >= 0 and d > r.upperBound):
                        out.error(where, "array.default-outside-range",
                                  f"{label}: default shape {_fmt_shape(shape)} outside range dim {i} "
                                  f"[{r.lowerBound},{r.upperBound}]; use -1 for unbounded")
                        break
    default = arr.WhichOneof("defaultOptionalValue")
    if default:
        fits = {"intDefaultValue": (INT32, INT8), "floatDefaultValue": (FLOAT32, FLOAT16),
                "doubleDefaultValue": (DOUBLE,)}[default]
        if arr.dataType not in fits:
            out.error(where, "array.default-value-type",
                      f"{label}: {default} does not fit dataType {DTYPES.get(arr.dataType, arr.dataType)}; "
                      "int goes with INT32/INT8, float with FLOAT32/FLOAT16, double with DOUBLE")
        elif arr.dataType == INT8 and not -128 <= arr.intDefaultValue <= 127:
            out.error(where, "array.default-value-type",
                      f"{label}: intDefaultValue {arr.intDefaultValue} is outside INT8 [-128, 127]")
        if kind not in DEFAULT_VALUE_TYPES and optional:
            out.error(where, "array.default-value-model",
                      f"{label}: default values for optional inputs are allowed only on neural "
                      f"networks, mlProgram and serializedModel, not {kind}")


def check_image(img, where: str, name: str, role: str, out: Findings, version: int = 10) -> None:
    label = f"{role} '{name}'"
    if img.colorSpace not in COLOR_SPACES:
        out.error(where, "image.bad-colorspace",
                  f"{label}: colorSpace {img.colorSpace} is not valid; use RGB, BGR, GRAYSCALE or "
                  "GRAYSCALE_FLOAT16 (v7+)")
    flex = img.WhichOneof("SizeFlexibility") if version >= 3 else None  # ignored below v3
    w, h = int(img.width), int(img.height)
    if flex == "enumeratedSizes":
        sizes = [(int(s.width), int(s.height)) for s in img.enumeratedSizes.sizes]
        if not sizes:
            out.error(where, "image.bad-enumerated-sizes", f"{label}: enumeratedSizes is empty")
        elif (w or h) and (w, h) not in sizes:
            out.error(where, "image.default-not-enumerated",
                      f"{label}: default size {w}x{h} is not one of the enumerated sizes "
                      + ", ".join(f"{a}x{b}" for a, b in sizes))
        elif not (w or h):
            w, h = sizes[0]
    elif flex == "imageSizeRange":
        wr, hr = img.imageSizeRange.widthRange, img.imageSizeRange.heightRange
        for axis, r, d in (("width", wr, w), ("height", hr, h)):
            if r.upperBound > 0 and r.lowerBound > r.upperBound:
                out.error(where, "image.bad-range",
                          f"{label}: {axis} range [{r.lowerBound},{r.upperBound}] has lower > upper")
            elif d and (d < r.lowerBound or (r.upperBound >= 0 and d > r.upperBound)):
                out.error(where, "image.default-outside-range",
                          f"{label}: default {axis} {d} outside range [{r.lowerBound},{r.upperBound}]")
        if not (w or h):
            w, h = int(wr.lowerBound), int(hr.lowerBound)
    if w <= 0 or h <= 0:
        out.error(where, "image.bad-size",
                  f"{label}: image size {w}x{h} is not positive; set width and height (> 0)")


def check_feature(f, where: str, role: str, out: Findings, kind: str, version: int = 10) -> None:
    """Rules for one FeatureDescription (``role``: input, output, state, training input)."""
    if not f.name:
        out.error(where, "feature.no-name", f"a model {role} has no name; every feature needs one")
    ft = f.type
    which = ft.WhichOneof("Type")
    label = f"{role} '{f.name}'"
    if which is None:
        out.error(where, "feature.no-type",
                  f"{label} has no type; set one of int64Type, doubleType, stringType, imageType, "
                  "multiArrayType, dictionaryType, sequenceType")
        return
    if which == "multiArrayType":
        check_array(ft.multiArrayType, where, f.name, role, out, kind, version,
                    optional=ft.isOptional and role == "input")
    elif which == "imageType":
        check_image(ft.imageType, where, f.name, role, out, version)
    elif which == "dictionaryType":
        if ft.dictionaryType.WhichOneof("KeyType") is None:
            out.error(where, "dictionary.no-key-type",
                      f"{label}: dictionary needs a key type (int64KeyType or stringKeyType)")
    elif which == "sequenceType":
        if ft.sequenceType.WhichOneof("Type") is None:
            out.error(where, "sequence.no-element-type",
                      f"{label}: sequence needs an element type (int64Type or stringType)")
    elif which == "stateType":
        check_state(f, where, role, out)


def check_state(f, where: str, role: str, out: Findings) -> None:
    label = f"{role} '{f.name}'"
    st = f.type.stateType
    if st.WhichOneof("Type") is None:
        out.error(where, "state.no-array", f"{label}: a state feature wraps a multiarray (arrayType)")
        return
    arr = st.arrayType
    if f.type.isOptional:
        out.error(where, "state.optional", f"{label}: a state cannot be optional")
    if not len(arr.shape) or any(d < 0 for d in arr.shape) or arr.WhichOneof("ShapeFlexibility") \
            or arr.WhichOneof("defaultOptionalValue"):
        out.error(where, "state.bad-shape",
                  f"{label}: a state needs an explicit non-negative shape, no flexibility and no default value")
    if arr.dataType not in (FLOAT16, INT8):
        out.error(where, "state.bad-dtype",
                  f"{label}: state dataType must be FLOAT16 (or INT8), not "
                  f"{DTYPES.get(arr.dataType, arr.dataType)}")


def check_interface(spec, out: Findings, kind: str | None, version: int) -> None:
    """The generic description rules of one (non-multifunction) model."""
    desc = spec.description
    multifunction = len(desc.functions) > 0 or bool(desc.defaultFunctionName)
    if multifunction:
        check_multifunction(spec, out, kind, version)
        return
    _check_io(desc.input, desc.output, desc.state, "", out, kind, version)
    # Core ML's validator never validates training input descriptions (only the
    # updatable-NN validator compares them with the inputs), so what is wrong
    # in one is a warning here.
    training = Findings()
    for i, f in enumerate(desc.trainingInput):
        check_feature(f, f"trainingInput:{f.name or i}", "training input", training, kind, version)
    for f in training:
        out.warning(f.path, f.rule, f"{f.message} (Core ML's validator does not check training "
                    "input descriptions; on-device training reads them)" if f.severity == "error"
                    else f.message)


def _check_io(inputs, outputs, states, prefix: str, out: Findings, kind, version) -> None:
    if len(inputs) == 0:
        if kind in EMPTY_INPUT_TYPES:
            if version < 9:
                out.error(prefix + "description", "interface.no-inputs",
                          f"the model has no inputs; an empty input list needs v9 (declared v{version}); "
                          "add an input or raise specificationVersion to 9")
        elif kind is not None:
            out.error(prefix + "description", "interface.no-inputs",
                      f"the model has no inputs; {kind} models need at least one input")
    if len(outputs) == 0:
        out.error(prefix + "description", "interface.no-outputs",
                  "the model has no outputs; declare at least one output")
    for role, feats in (("input", inputs), ("output", outputs), ("state", states)):
        seen = set()
        for i, f in enumerate(feats):
            where = f"{prefix}{role}:{f.name or i}"
            check_feature(f, where, role, out, kind, version)
            if f.name and f.name in seen:
                out.warning(where, "feature.duplicate-name",
                            f"{role} name '{f.name}' is declared twice; Core ML's validator accepts "
                            "it, but features are looked up by name, so one of them is unreachable: "
                            "rename it")
            seen.add(f.name)
    for f in outputs:
        if f.type.isOptional:
            out.error(f"{prefix}output:{f.name}", "feature.optional-output",
                      f"output '{f.name}' is marked optional; outputs can never be optional "
                      "(clear type.isOptional)")
    for f in states:
        if f.type.WhichOneof("Type") != "stateType":
            out.error(f"{prefix}state:{f.name}", "state.not-state-type",
                      f"state '{f.name}' has type {describe_type(f.type)}; every state entry must be a "
                      "StateFeatureType")
    optional = [f for f in inputs if f.type.isOptional]
    if optional and kind is not None:
        names = ", ".join(f"'{f.name}'" for f in optional)
        if kind in OPTIONAL_NEEDS_REQUIRED:
            required = [f for f in inputs if not f.type.isOptional]
            if not required:
                out.error(prefix + "description", "feature.all-inputs-optional",
                          f"every input ({names}) is optional; {kind} needs at least one required input")
        elif kind not in OPTIONAL_FREE:
            out.error(prefix + "description", "feature.optional-input",
                      f"optional input {names}: features cannot be optional for {kind} models; "
                      "clear type.isOptional")


def check_multifunction(spec, out: Findings, kind, version) -> None:
    desc = spec.description
    if kind != "mlProgram":
        out.error("description", "multifunction.wrong-type",
                  f"{kind} models do not support multifunction descriptions (functions / "
                  "defaultFunctionName); only mlProgram does")
    if version < 9:
        out.error("description", "multifunction.version",
                  f"a multifunction description needs v9 (declared v{version})")
    for field in ("input", "output", "state", "trainingInput"):
        if len(getattr(desc, field)):
            out.error("description", "multifunction.top-level",
                      f"a multifunction model must not use top-level description.{field}; declare it "
                      "per function")
    for field in ("predictedFeatureName", "predictedProbabilitiesName"):
        if getattr(desc, field):
            out.error("description", "multifunction.top-level",
                      f"a multifunction model must not use top-level description.{field}")
    names = [fn.name for fn in desc.functions]
    if desc.defaultFunctionName not in names:
        out.error("description", "multifunction.bad-default",
                  f"defaultFunctionName '{desc.defaultFunctionName}' is not one of the functions "
                  f"{names}; set it to one of them")
    programs = set(spec.mlProgram.functions.keys()) if kind == "mlProgram" else None
    for fn in desc.functions:
        _check_io(fn.input, fn.output, fn.state, f"function:{fn.name}/", out, kind, version)
        if programs is not None and fn.name not in programs:
            out.error(f"function:{fn.name}", "multifunction.unknown-function",
                      f"function '{fn.name}' is described but mlProgram has no such function "
                      f"(functions: {sorted(programs)})")


def check_metadata(spec, out: Findings) -> None:
    md = spec.description.metadata
    for key, value in md.userDefined.items():
        if not key:
            out.warning("metadata", "metadata.empty-key", "metadata.userDefined has an empty key")
        for text, what in ((key, "key"), (value, "value")):
            if isinstance(text, bytes):  # pragma: no cover - proto3 strings are str in Python
                out.error("metadata", "metadata.not-utf8", f"metadata.userDefined {what} is not UTF-8")
            elif "\x00" in text:
                out.warning("metadata", "metadata.not-utf8",
                            f"metadata.userDefined {what} {text!r} contains a NUL character; Core "
                            "ML's validator accepts it, but tools that read metadata as C strings "
                            "cut the text there")


#: FeatureType oneof member -> the name Core ML's messages use.
TYPE_NAMES = {"int64Type": "Int64", "doubleType": "Double", "stringType": "String",
              "imageType": "Image", "multiArrayType": "MultiArray", "dictionaryType": "Dictionary",
              "sequenceType": "Sequence", "stateType": "State"}


def check_feature_types(feats, role: str, allowed, kind: str, out: Findings, max_count: int = 0) -> None:
    """Feature types a model type accepts, and how many features it takes
    (``validateSchemaTypes`` / ``validateDescriptionsContainFeatureWithTypes`` in
    Core ML's ValidatorUtils-inl.hpp).  ``max_count`` 0 = any number."""
    feats = list(feats)
    if max_count and len(feats) > max_count:
        names = ", ".join(f"'{f.name}'" for f in feats)
        out.error("description", "interface.too-many-features",
                  f"{kind} takes {'one' if max_count == 1 else max_count} {role}"
                  f"{'' if max_count == 1 else 's'} but has {len(feats)} ({names}); remove the extra")
    want = " or ".join(TYPE_NAMES[t] for t in allowed)
    for f in feats:
        t = f.type.WhichOneof("Type")
        if t is not None and t not in allowed:
            out.error(f"{role}:{f.name}", "interface.feature-type",
                      f"{role} '{f.name}' is {describe_type(f.type)}, but {kind} {role}s must be "
                      f"{want}; change its type")
