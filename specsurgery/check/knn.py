"""k-nearest-neighbours classifier rules, after Core ML's
``KNearestNeighborsClassifierValidator.cpp`` (labels, data points, index) and
``ParameterValidator.cpp`` (the numberOfNeighbors parameter and its allowed
values)."""

from __future__ import annotations

from .findings import Findings


def check_int64_parameter(param, name: str, where: str, rule: str, out: Findings,
                          positive: bool = True) -> None:
    """An Int64Parameter: default value, allowed set or range (ParameterValidator.cpp)."""
    default = int(param.defaultValue)
    if positive and default <= 0:
        out.error(where, rule, f"{name} default value {default} must be positive (>= 1)")
    which = param.WhichOneof("AllowedValues")
    if which == "set":
        values = [int(v) for v in param.set.values]
        bad = [v for v in values if v <= 0] if positive else []
        if bad:
            out.error(where, rule, f"{name} allowed set holds non-positive value(s) "
                      f"{', '.join(map(str, bad))}; list values >= 1")
        if default not in values:
            out.error(where, rule, f"{name} default value {default} is not in its allowed set "
                      f"{values}; add it or change the default")
    elif which == "range":
        lo, hi = int(param.range.minValue), int(param.range.maxValue)
        if positive and (lo <= 0 or hi <= 0):
            out.error(where, rule, f"{name} allowed range [{lo}, {hi}] must be positive (min and "
                      "max >= 1)")
        if lo > hi:
            out.error(where, rule, f"{name} allowed range [{lo}, {hi}] has min > max")
        elif not lo <= default <= hi:
            out.error(where, rule, f"{name} default value {default} is outside its allowed range "
                      f"[{lo}, {hi}]")


def label_kind(msg) -> tuple[str | None, int]:
    """("string"|"int64"|None, count) of a ClassLabels oneof."""
    which = msg.WhichOneof("ClassLabels")
    if which is None:
        return None, 0
    return ("string" if which == "stringClassLabels" else "int64"), len(getattr(msg, which).vector)


def check_knn(spec, out: Findings) -> str:
    """Every kNN rule; returns the predicted label kind ("int64" or "string")."""
    knn = spec.kNearestNeighborsClassifier
    check_int64_parameter(knn.numberOfNeighbors, "numberOfNeighbors", "numberOfNeighbors",
                          "knn.neighbors", out)
    if knn.WhichOneof("WeightingScheme") is None:
        out.error("weightingScheme", "knn.no-weighting",
                  "no weighting scheme set; set uniformWeighting or inverseDistanceWeighting")
    kind, count = label_kind(knn)
    default = knn.WhichOneof("DefaultClassLabel")
    predicted = kind or "string"
    if default is not None:
        dkind = "string" if default == "defaultStringLabel" else "int64"
        if kind is not None and kind != dkind:
            out.error("defaultClassLabel", "knn.default-label-type",
                      f"the class labels are {kind} but the default label is {dkind}; use a "
                      f"{'defaultStringLabel' if kind == 'string' else 'defaultInt64Label'}")
        predicted = kind or dkind
    elif count == 0:
        out.error("defaultClassLabel", "knn.no-default-label",
                  "no class labels and no default class label; set defaultStringLabel or "
                  "defaultInt64Label (the label returned before any example is added)")
    index = knn.nearestNeighborsIndex
    samples = len(index.floatSamples)
    if samples != count:
        if samples == 0:
            out.error("nearestNeighborsIndex", "knn.samples-labels",
                      f"{count} class labels but no data points (floatSamples); give one sample "
                      "per label or no labels")
        else:
            out.error("nearestNeighborsIndex", "knn.samples-labels",
                      f"{samples} data points (floatSamples) but {count} class labels; give one "
                      "label per data point")
    dims = int(index.numberOfDimensions)
    wrong = [i for i, s in enumerate(index.floatSamples) if len(s.vector) != dims]
    if wrong:
        out.error("nearestNeighborsIndex", "knn.sample-dimensions",
                  f"data point(s) {', '.join(map(str, wrong[:10]))}{', ...' if len(wrong) > 10 else ''} "
                  f"do not have numberOfDimensions = {dims} values; make every sample {dims} long "
                  "or fix numberOfDimensions")
    backend = index.WhichOneof("IndexType")
    if backend is None:
        out.error("nearestNeighborsIndex", "knn.no-index",
                  "no index type set; set linearIndex or singleKdTreeIndex")
    elif backend == "singleKdTreeIndex" and index.singleKdTreeIndex.leafSize <= 0:
        out.error("nearestNeighborsIndex", "knn.leaf-size",
                  f"singleKdTreeIndex.leafSize is {index.singleKdTreeIndex.leafSize}; it must be "
                  "a positive integer")
    if index.WhichOneof("DistanceFunction") is None:
        out.error("nearestNeighborsIndex", "knn.no-distance",
                  "no distance function set; set squaredEuclideanDistance")
    return predicted
