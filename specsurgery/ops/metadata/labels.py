"""Where a classifier keeps its class labels, for reading and replacing them.

NeuralNetwork and classic classifiers hold ``stringClassLabels`` or
``int64ClassLabels``; a pipeline classifier's labels are those of its last
classifying stage; an ML Program classifier holds them in the ``classes``
list of its ``classify`` op.
"""

from __future__ import annotations

from typing import Optional

from ... import spec as S
from ...errors import SpecSurgeryError, UnsupportedError

_CLASSIC = ("neuralNetworkClassifier", "glmClassifier", "supportVectorClassifier",
            "treeEnsembleClassifier", "kNearestNeighborsClassifier")


def _program_classes(spec):
    """The ``classes`` argument values of every ``classify`` op of an ML Program."""
    from ...mil.program import iter_functions, iter_ops, main_block

    out = []
    for _, function in iter_functions(spec):
        for op in iter_ops(main_block(function)):
            if op.type != "classify" or "classes" not in op.inputs:
                continue
            for arg in op.inputs["classes"].arguments:
                if arg.WhichOneof("binding") == "value":
                    out.append(arg.value)
    return out


def _list_items(value):
    """(items, is_string) of a MIL list-of-scalars value."""
    items = list(value.immediateValue.list.values)
    is_string = bool(items) and items[0].immediateValue.tensor.WhichOneof("value") == "strings"
    return items, is_string


def _holder(spec):
    """(kind, message) of the model (or stage) that holds the labels."""
    kind = S.model_type(spec)
    if kind in _CLASSIC:
        return kind, getattr(spec, kind)
    if kind == "mlProgram":
        return (kind, spec) if _program_classes(spec) else (None, None)
    pipe = S.pipeline_of(spec)
    if pipe is not None:
        for stage in reversed(pipe.models):
            found = _holder(stage)
            if found[0] is not None:
                return found
    return None, None


def read_labels(spec) -> Optional[list]:
    """The class labels of a classifier (spec or MLPackage), ``None`` for other models."""
    kind, holder = _holder(getattr(spec, "spec", spec))
    if kind is None:
        return None
    if kind == "mlProgram":
        items, is_string = _list_items(_program_classes(holder)[0])
        return [(i.immediateValue.tensor.strings.values[0] if is_string
                 else int(i.immediateValue.tensor.ints.values[0] if i.immediateValue.tensor.ints.values
                          else i.immediateValue.tensor.longInts.values[0]))
                for i in items]
    which = holder.WhichOneof("ClassLabels")
    return list(getattr(holder, which).vector) if which else []


def write_labels(spec, labels: list) -> None:
    """Replace the labels of ``spec`` (in place), keeping their count and type."""
    kind, holder = _holder(spec)
    if kind is None:
        raise UnsupportedError(
            f"--labels: this {S.model_type(spec) or 'model'} is not a classifier (no class labels to "
            "replace); labels belong to classifiers (neuralNetworkClassifier, pipelineClassifier, "
            "glm/tree/SVM/kNN classifiers, ML Programs with a classify op)")
    old = read_labels(spec)
    if len(labels) != len(old):
        raise SpecSurgeryError(f"--labels: {len(labels)} label(s) given but the classifier has {len(old)} "
                               "classes; give exactly one label per class, in class order")
    strings = bool(old) and isinstance(old[0], str)
    if not strings:
        try:
            labels = [int(x) for x in labels]
        except (TypeError, ValueError):
            raise SpecSurgeryError("--labels: this classifier has integer (int64) class labels; give "
                                   "whole numbers") from None
    else:
        labels = [str(x) for x in labels]
    dupes = sorted({x for x in labels if labels.count(x) > 1}, key=str)
    if dupes:
        raise SpecSurgeryError(f"--labels: duplicate label(s) {', '.join(map(repr, dupes))}; "
                               "each class needs its own label")
    if kind == "mlProgram":
        for value in _program_classes(holder):
            items, is_string = _list_items(value)
            for item, label in zip(items, labels):
                tensor = item.immediateValue.tensor
                if is_string:
                    tensor.strings.values[0] = label
                elif tensor.ints.values:
                    tensor.ints.values[0] = label
                else:
                    tensor.longInts.values[0] = label
        return
    which = holder.WhichOneof("ClassLabels")
    vector = getattr(holder, which).vector
    del vector[:]
    vector.extend(labels)
