"""``make_pipeline`` for stages without ML Programs (the interface rules for
every pipeline: the ML Program part runs its stages through here as stand-ins).

The pipeline's interface is computed the way Core ML reads a pipeline: a
table of features seeded by the pipeline inputs, each stage reading from it
and adding its outputs.  Inputs are the stage inputs no earlier stage
produces; outputs are the last stage's outputs plus earlier outputs no later
stage reads (or, with ``interface=``, exactly another model's interface).

Type mismatches between a producer and a consumer are reported with the fix
(all of them at once); ``coerce=True`` applies the fixes Core ML allows
without touching any computation: a neural network's declared MultiArray
dtype at an interface (DOUBLE <-> FLOAT32: the network computes in float32
either way) and an unspecified output shape filled from its consumer.  Name
collisions are never renamed silently: pass ``prefixes=`` to prefix a stage's
output names (the stage's internal blobs of those names follow).
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..._proto import Model_pb2
from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError
from ...io import MLPackage, copy_spec, load
from .. import _nn

__all__ = ["make_pipeline", "types_equivalent", "type_difference", "pipeline_interface"]

KINDS = ("auto", "pipeline", "classifier", "regressor")
_NN_LIKE = S.NN_TYPES


# --------------------------------------------------------------------------- type comparison

def type_difference(a, b) -> Optional[str]:
    """None when Core ML's pipeline check (``isEquivalent``) accepts FeatureType
    ``b`` where ``a`` is declared, else what differs (the rule itself lives in
    :func:`specsurgery.check.pipeline.type_differences`)."""
    from ...check.pipeline import type_differences

    diffs = type_differences(a, b)
    if not diffs:
        return None
    return "; ".join(f"{aspect} differs ({x} vs {y})" for aspect, x, y in diffs)


def types_equivalent(a, b) -> bool:
    return type_difference(a, b) is None


def _stage_label(i: int, names: Sequence[str]) -> str:
    return f"stage {i} {names[i]!r}"


def _coerce(producer: Optional[Model_pb2.Model], consumer: Model_pb2.Model, name: str,
            have, want) -> Optional[str]:
    """Apply a safe fix so the consumer's input ``name`` matches ``have`` (the
    table's type).  Returns what was done, or None when no safe fix exists."""
    if have.WhichOneof("Type") != "multiArrayType" or want.WhichOneof("Type") != "multiArrayType":
        return None
    h, w = have.multiArrayType, want.multiArrayType
    allowed = {_nn.FLOAT32, _nn.DOUBLE}
    if h.dataType != w.dataType:
        if not (h.dataType in allowed and w.dataType in allowed):
            return None
        if S.model_type(consumer) in _NN_LIKE:
            for f in consumer.description.input:
                if f.name == name:
                    f.type.multiArrayType.dataType = h.dataType
            done = f"declared input {name!r} as {S.array_dtype_name(h.dataType)}"
        elif producer is not None and S.model_type(producer) in _NN_LIKE:
            for f in producer.description.output:
                if f.name == name:
                    f.type.multiArrayType.dataType = w.dataType
            h.dataType = w.dataType
            done = f"declared the producer's output {name!r} as {S.array_dtype_name(w.dataType)}"
        else:
            return None
        if type_difference(have, want) is None:
            return done
    # an unspecified producer output shape: take the consumer's declaration
    if (producer is not None and S.model_type(producer) in _NN_LIKE and not len(h.shape)
            and not h.WhichOneof("ShapeFlexibility") and h.dataType == w.dataType):
        for f in producer.description.output:
            if f.name == name:
                f.type.multiArrayType.CopyFrom(w)
        have.multiArrayType.CopyFrom(w)
        return f"gave the producer's output {name!r} the consumer's shape {list(w.shape)}"
    return None


def _fix_text(i, names, name, have, want, producer_label) -> str:
    ka, kb = have.WhichOneof("Type"), want.WhichOneof("Type")
    consumer = _stage_label(i, names)
    if ka != kb:
        return (f"Core ML never converts between {S.describe_type(have)} and {S.describe_type(want)} "
                f"inside a pipeline: make {producer_label} produce {S.describe_type(want)} or convert "
                f"{consumer} with a {S.describe_type(have).split('<')[0]} input")
    if ka == "multiArrayType":
        h, w = have.multiArrayType, want.multiArrayType
        if h.dataType != w.dataType:
            return (f"declare {consumer}'s input {name!r} as {S.array_dtype_name(h.dataType)} "
                    f"(make_pipeline(..., coerce=True) / --coerce does this for neural networks)")
        return (f"declare {consumer}'s input {name!r} with {producer_label}'s shape "
                f"{list(h.shape)} (or give one side a flexible shape), or re-export the models so the "
                "shapes agree")
    if ka == "imageType":
        return (f"declare {consumer}'s image input {name!r} as {S.describe_type(have)}")
    return f"declare {consumer}'s input {name!r} as {S.describe_type(have)}"


# --------------------------------------------------------------------------- main entry

def _classify_kind(kind: str, last) -> str:
    if kind not in KINDS:
        raise SpecSurgeryError(f"make_pipeline: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    last_kind = S.model_type(last)
    if kind == "auto":
        if last_kind in S.CLASSIFIER_TYPES:
            return "pipelineClassifier"
        if last_kind in S.REGRESSOR_TYPES:
            return "pipelineRegressor"
        return "pipeline"
    return {"pipeline": "pipeline", "classifier": "pipelineClassifier", "regressor": "pipelineRegressor"}[kind]


def make_pipeline(stages, names=None, kind: str = "auto", coerce: bool = False, prefixes=None,
                  *, interface=None):
    """A pipeline of ``stages`` (specs, paths, MLPackages or MLModels) that
    hold no ML Program (see :func:`specsurgery.ops.pipeline.make_pipeline`).

    ``names``: stage names (unique; default ``model0``, ``model1``...).
    ``kind``: auto (PipelineClassifier when the last stage classifies,
    PipelineRegressor when it regresses), pipeline, classifier or regressor.
    ``coerce``: apply the safe interface fixes instead of reporting them.
    ``prefixes``: per stage, a prefix for that stage's output names (None to
    leave a stage alone); resolves output-name collisions explicitly.
    ``interface``: a model (or ModelDescription) whose inputs, outputs,
    predicted feature names, metadata and updatability the pipeline adopts
    (``split`` and ``dedupe`` keep the original's interface this way).
    """
    loaded = [load(s) for s in stages]
    if not loaded:
        raise SpecSurgeryError("make_pipeline: give at least one stage (Core ML needs one or more models)")
    specs = [copy_spec(m.spec if isinstance(m, MLPackage) else m) for m in loaded]
    n = len(specs)
    if names is not None:
        names = list(names.split(",") if isinstance(names, str) else names)
        if len(names) != n:
            raise SpecSurgeryError(f"make_pipeline: {len(names)} names for {n} stages; give one name per stage")
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup or any(not x for x in names):
            raise SpecSurgeryError(f"make_pipeline: stage names must be unique and non-empty; repeated: "
                                   f"{', '.join(map(repr, dup)) or 'an empty name'}")
    labels = list(names) if names is not None else [f"model{i}" for i in range(n)]
    if prefixes is not None:
        prefixes = list(prefixes)
        if len(prefixes) != n:
            raise SpecSurgeryError(f"make_pipeline: {len(prefixes)} prefixes for {n} stages; use None "
                                   "for stages to leave alone")
        from ..rename import rename_feature

        for i, p in enumerate(prefixes):
            if p:
                for f in list(specs[i].description.output):
                    specs[i] = rename_feature(specs[i], f.name, p + f.name)

    pipe_kind = _classify_kind(kind, specs[-1])
    table: dict = {}            # name -> (FeatureType, producer index or None)
    pipe_inputs: list = []
    problems: list[str] = []
    notes: list[str] = []
    consumed_later: set = set()
    for i, stage in enumerate(specs):
        for f in stage.description.input:
            if f.name in table:
                have, producer = table[f.name]
                consumed_later.add((f.name, producer))
                diff = type_difference(have, f.type)
                if diff is None:
                    continue
                plabel = "the pipeline input" if producer is None else _stage_label(producer, labels)
                if coerce:
                    done = _coerce(None if producer is None else specs[producer], stage, f.name, have, f.type)
                    if done and type_difference(table[f.name][0], f.type) is None:
                        notes.append(f"{_stage_label(i, labels)}: {done}")
                        continue
                problems.append(
                    f"{_stage_label(i, labels)} reads {f.name!r} as {S.describe_type(f.type)} but "
                    f"{plabel} provides {S.describe_type(have)}: {diff}; fix: "
                    + _fix_text(i, labels, f.name, have, f.type, plabel))
            else:
                table[f.name] = (f.type, None)
                pipe_inputs.append(f)
        for f in stage.description.output:
            if f.name in table:
                _, producer = table[f.name]
                other = "a pipeline input" if producer is None else _stage_label(producer, labels)
                problems.append(
                    f"{_stage_label(i, labels)} output {f.name!r} collides with {other} of the same name; "
                    f"Core ML would silently shadow it. Pass prefixes= to prefix a stage's output names "
                    f"(e.g. prefixes={[None] * i + [labels[i] + '_'] + [None] * (n - i - 1)}, on the command "
                    f"line --prefixes {','.join([''] * i + [labels[i] + '_'] + [''] * (n - i - 1))}) or "
                    "rename_feature one of them")
                continue
            table[f.name] = (f.type, i)
    if problems:
        raise SpecSurgeryError("make_pipeline: " + str(len(problems)) + " interface problem"
                               + ("s" if len(problems) > 1 else "") + ": " + " | ".join(problems))
    for text in notes:
        _nn.note("make_pipeline coerced an interface: " + text)

    out = Model_pb2.Model()
    container = getattr(out, pipe_kind)
    pipe = container if pipe_kind == "pipeline" else container.pipeline
    for stage in specs:
        pipe.models.add().CopyFrom(stage)
    if names is not None:
        pipe.names.extend(labels)

    desc = out.description
    if interface is not None:
        _adopt_interface(out, interface, table, pipe_inputs)
    else:
        for f in pipe_inputs:
            desc.input.add().CopyFrom(f)
        outputs = []
        for i, stage in enumerate(specs):
            for f in stage.description.output:
                if i == n - 1 or (f.name, i) not in consumed_later:
                    outputs.append(f)
        for f in outputs:
            g = desc.output.add()
            g.CopyFrom(table_feature(f.name, table, f))
        last = specs[-1].description
        if pipe_kind != "pipeline":
            if not last.predictedFeatureName:
                raise SpecSurgeryError(
                    f"make_pipeline: kind {pipe_kind} needs a predicted feature, but the last stage "
                    f"({S.model_type(specs[-1])}) names none; use kind='pipeline' or end with a "
                    "classifier/regressor")
            desc.predictedFeatureName = last.predictedFeatureName
            if pipe_kind == "pipelineClassifier":
                desc.predictedProbabilitiesName = last.predictedProbabilitiesName
    needed = max(s.specificationVersion for s in specs)
    out.specificationVersion = needed
    _nn.set_min_version(out, needed)
    return out


def table_feature(name, table, template):
    """``template`` (a FeatureDescription) with the type the table holds."""
    fd = Model_pb2.FeatureDescription()
    fd.CopyFrom(template)
    fd.type.CopyFrom(table[name][0])
    fd.type.isOptional = False
    return fd


def _adopt_interface(out, interface, table, pipe_inputs) -> None:
    """Give the pipeline ``interface``'s description, checking it is one the
    stages can serve."""
    if isinstance(interface, Model_pb2.ModelDescription):
        idesc, updatable = interface, False
    else:
        ispec = load(interface)
        ispec = ispec.spec if isinstance(ispec, MLPackage) else ispec
        idesc, updatable = ispec.description, ispec.isUpdatable
    desc = out.description
    problems = []
    provided = {f.name for f in pipe_inputs}
    declared = {f.name for f in idesc.input}
    missing_inputs = sorted(provided - declared)
    if missing_inputs:
        problems.append(f"the stages read {', '.join(map(repr, missing_inputs))}, which the interface "
                        "does not declare as inputs")
    for f in idesc.input:
        desc.input.add().CopyFrom(f)
        if f.name in table and table[f.name][1] is None:
            diff = type_difference(f.type, table[f.name][0])
            if diff:
                problems.append(f"input {f.name!r}: interface {S.describe_type(f.type)} vs stages "
                                f"{S.describe_type(table[f.name][0])} ({diff})")
    for f in idesc.output:
        g = desc.output.add()
        g.CopyFrom(f)
        if f.name not in table:
            problems.append(f"output {f.name!r} is produced by no stage")
            continue
        have = table[f.name][0]
        if type_difference(f.type, have):
            unspecified = (f.type.WhichOneof("Type") == "multiArrayType" == have.WhichOneof("Type")
                           and not len(f.type.multiArrayType.shape)
                           and f.type.multiArrayType.dataType == have.multiArrayType.dataType)
            if unspecified:   # the interface left the shape open: state what the stage produces
                g.type.CopyFrom(have)
            else:
                problems.append(f"output {f.name!r}: interface {S.describe_type(f.type)} vs stage "
                                f"{S.describe_type(have)} ({type_difference(f.type, have)})")
    if problems:
        raise SpecSurgeryError("make_pipeline: the stages do not serve the requested interface: "
                               + "; ".join(problems))
    desc.predictedFeatureName = idesc.predictedFeatureName
    desc.predictedProbabilitiesName = idesc.predictedProbabilitiesName
    desc.metadata.CopyFrom(idesc.metadata)
    for f in idesc.trainingInput:
        desc.trainingInput.add().CopyFrom(f)
    if updatable:
        out.isUpdatable = True


def pipeline_interface(spec) -> dict:
    """{name: (FeatureType, producer stage index or None)} after every stage
    of a pipeline (a view for callers that want the type table)."""
    pipe = S.pipeline_of(spec)
    if pipe is None:
        raise UnsupportedError(f"model type {S.model_type(spec)!r} is not a pipeline")
    table = {f.name: (f.type, None) for f in spec.description.input}
    for i, stage in enumerate(pipe.models):
        for f in stage.description.output:
            table[f.name] = (f.type, i)
    return table
