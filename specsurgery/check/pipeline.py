"""Pipeline rules (format notes §4): stage input resolution with Core ML's
``isEquivalent``, pipeline outputs, stage names and updatable placement."""

from __future__ import annotations

from ..errors import near_matches
from ..spec import describe_type, pipeline_of, stage_names
from .features import COLOR_SPACES, DTYPES
from .findings import Findings


def _array_rank(arr) -> int:
    flex = arr.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes" and len(arr.enumeratedShapes.shapes):
        return len(arr.enumeratedShapes.shapes[0].shape)
    if flex == "shapeRange":
        return len(arr.shapeRange.sizeRanges)
    return len(arr.shape)


def type_differences(a, b) -> list[tuple[str, str, str]]:
    """How FeatureType ``b`` differs from ``a`` under Core ML's isEquivalent,
    as (aspect, value in a, value in b) triples; [] when equivalent.

    The one implementation of the rule: ``check`` and ``make_pipeline`` both
    use it.  ``isOptional`` and size flexibility are ignored, as Core ML does;
    a multiarray compares dtype and rank, and its exact shape only when
    neither side is flexible; an image compares size and colour space.
    """
    ka, kb = a.WhichOneof("Type"), b.WhichOneof("Type")
    if ka != kb:
        return [("kind", describe_type(a), describe_type(b))]
    diffs = []
    if ka in ("multiArrayType", "stateType"):
        x = a.multiArrayType if ka == "multiArrayType" else a.stateType.arrayType
        y = b.multiArrayType if ka == "multiArrayType" else b.stateType.arrayType
        if x.dataType != y.dataType:
            diffs.append(("dtype", DTYPES.get(x.dataType, str(x.dataType)), DTYPES.get(y.dataType, str(y.dataType))))
        ra, rb = _array_rank(x), _array_rank(y)
        if ra != rb:
            diffs.append(("rank", str(ra), str(rb)))
        elif (ka == "stateType" or (x.WhichOneof("ShapeFlexibility") is None
                                    and y.WhichOneof("ShapeFlexibility") is None)) \
                and list(x.shape) != list(y.shape):
            diffs.append(("shape", str(list(x.shape)), str(list(y.shape))))
    elif ka == "imageType":
        x, y = a.imageType, b.imageType
        if (x.width, x.height) != (y.width, y.height):
            diffs.append(("image size", f"{x.width}x{x.height}", f"{y.width}x{y.height}"))
        if x.colorSpace != y.colorSpace:
            diffs.append(("colour space", COLOR_SPACES.get(x.colorSpace, str(x.colorSpace)),
                          COLOR_SPACES.get(y.colorSpace, str(y.colorSpace))))
    elif ka == "dictionaryType":
        if a.dictionaryType.WhichOneof("KeyType") != b.dictionaryType.WhichOneof("KeyType"):
            diffs.append(("dictionary key", describe_type(a), describe_type(b)))
    elif ka == "sequenceType":
        if a.sequenceType.WhichOneof("Type") != b.sequenceType.WhichOneof("Type"):
            diffs.append(("sequence element", describe_type(a), describe_type(b)))
    return diffs


def crashes_compare(a, b) -> bool:
    """Whether Core ML's isEquivalent aborts comparing FeatureTypes ``a`` and ``b``:
    two multiarrays of one dataType, one with an enumeratedShapes list that is
    empty (its rankOf reads the first shape), at any specification version."""
    if a.WhichOneof("Type") != "multiArrayType" or b.WhichOneof("Type") != "multiArrayType":
        return False
    x, y = a.multiArrayType, b.multiArrayType
    if x.dataType != y.dataType:
        return False
    return any(t.WhichOneof("ShapeFlexibility") == "enumeratedShapes" and not len(t.enumeratedShapes.shapes)
               for t in (x, y))


def _shape_text(value: str) -> str:
    return "(" + value.strip("[]").replace(" ", "") + ")" if value.startswith("[") else value


def type_diff(a, b) -> list[str]:
    """:func:`type_differences` as text: ``"dtype DOUBLE vs FLOAT32"``."""
    return [f"{aspect} {_shape_text(x)} vs {_shape_text(y)}" for aspect, x, y in type_differences(a, b)]


def check_pipeline(spec, out: Findings) -> None:
    pipe = pipeline_of(spec)
    desc = spec.description
    models = list(pipe.models)
    if not models:
        out.error("pipeline", "pipeline.empty", "the pipeline has no stages; add one or more models")
        return
    names = list(pipe.names)
    if names and len(names) != len(models):
        out.error("pipeline.names", "pipeline.names-count",
                  f"pipeline has {len(models)} stages but {len(names)} names; give every stage a name "
                  "or none")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        out.error("pipeline.names", "pipeline.names-duplicate",
                  ("stage name " if len(dup) == 1 else "stage names ") + ", ".join(f"'{n}'" for n in dup)
                  + (" is" if len(dup) == 1 else " are") + " used by more than one stage; stage names "
                  "must be unique (Core ML scopes parameters by them)")
    labels = stage_labels(pipe)
    table = {f.name: (f.type, "pipeline input") for f in desc.input}
    for i, (stage, label) in enumerate(zip(models, labels)):
        where = f"stage:{label}"
        missing = []
        for f in stage.description.input:
            if f.name not in table:
                missing.append(f.name)
                continue
            known_type, source = table[f.name]
            if crashes_compare(f.type, known_type):
                out.error(f"{where}/input:{f.name}", "array.empty-enumeration",
                          f"stage {i} '{label}' input '{f.name}' or the {source} has an empty "
                          "enumeratedShapes list; Core ML's validator aborts comparing them; list "
                          "the shapes or clear the flexibility")
                continue
            diffs = type_diff(known_type, f.type)
            if diffs:
                out.error(f"{where}/input:{f.name}", "pipeline.type-mismatch",
                          f"stage {i} '{label}' input '{f.name}' is {describe_type(f.type)} but the "
                          f"{source} is {describe_type(known_type)}: " + "; ".join(
                              d.replace(" vs ", " (provided) vs ", 1) + " (expected)" for d in diffs))
        if missing:
            known = sorted(table)
            parts = []
            for m in missing:
                close = near_matches(m, known, n=3)
                parts.append(f"'{m}'" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
            out.error(where, "pipeline.input-missing",
                      f"stage {i} '{label}' needs input " + ", ".join(parts)
                      + " which is neither a pipeline input nor an output of an earlier stage; "
                      f"available: {known}")
        for f in stage.description.output:
            table[f.name] = (f.type, f"output of stage {i} '{label}'")
    for f in desc.output:
        if f.name not in table:
            out.error(f"output:{f.name}", "pipeline.output-missing",
                      f"pipeline output '{f.name}' is neither a pipeline input nor an output of any "
                      f"stage{_hint(f.name, table)}")
            continue
        known_type, source = table[f.name]
        if crashes_compare(f.type, known_type):
            out.error(f"output:{f.name}", "array.empty-enumeration",
                      f"pipeline output '{f.name}' or the {source} has an empty enumeratedShapes "
                      "list; Core ML's validator aborts comparing them; list the shapes or clear "
                      "the flexibility")
            continue
        diffs = type_diff(known_type, f.type)
        if diffs:
            out.error(f"output:{f.name}", "pipeline.output-type-mismatch",
                      f"pipeline output '{f.name}' is declared {describe_type(f.type)} but the "
                      f"{source} is {describe_type(known_type)}: " + "; ".join(diffs))
    # updatable placement
    flags = [m.isUpdatable for m in models]
    if spec.isUpdatable:
        if not flags[-1]:
            out.error(f"stage:{labels[-1]}", "pipeline.updatable",
                      "the pipeline is updatable, so its last stage must be updatable too")
        for i, flag in enumerate(flags[:-1]):
            if flag:
                out.error(f"stage:{labels[i]}", "pipeline.updatable",
                          f"stage {i} '{labels[i]}' is updatable; only the last stage of an updatable "
                          "pipeline may be")
    else:
        for i, flag in enumerate(flags):
            if flag:
                out.error(f"stage:{labels[i]}", "pipeline.updatable",
                          f"stage {i} '{labels[i]}' is updatable but the pipeline is not; set the "
                          "pipeline's isUpdatable (only the last stage may be updatable)")


def stage_labels(pipe) -> list[str]:
    """Stage names as Core ML scopes them, made unique for reporting: a repeated
    name gets ``#index`` (``backbone#1``) so every finding points at one stage."""
    names = stage_names(pipe)
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _hint(name, known) -> str:
    close = near_matches(name, known, n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
