"""``rename_feature``: rename a feature, blob or program value everywhere it is named.

A name is written in many places: the model description (inputs, outputs,
states, training inputs, predicted feature names, per-function descriptions),
and then in the model's body, which each backend knows:

* NeuralNetwork (:mod:`.nn`): layer inputs and outputs (inside branch and
  loop bodies too), preprocessing ``featureName``, a classifier's
  ``labelProbabilityLayerName``, loss layers, feature vectorizer columns, NMS
  feature names;
* ML Program (:mod:`.mlprogram`): function inputs, op outputs, every op
  argument that reads the value, block outputs, nested blocks included.

In a pipeline every stage shares the namespace, so every stage is renamed,
nested pipelines and linked stubs' descriptions included (coremltools'
rename misses the nested ones, #2494).  A feature of a program renames both
its description entry and the program value; an internal value renames its
producing op and every use.
"""

from __future__ import annotations

from typing import Mapping

from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import MLPackage, copy_spec, load
from ...mil.program import IDENTIFIER
from . import mlprogram, nn

__all__ = ["rename_feature", "rename_features", "check_renames", "names_in"]


def _desc_lists(desc):
    lists = [desc.input, desc.output, desc.trainingInput, desc.state]
    for fd in desc.functions:
        lists += [fd.input, fd.output, fd.state]
    return lists


def _predicted_holders(desc):
    return [desc] + list(desc.functions)


def names_in(spec) -> dict:
    """Every feature, blob and program value name of a model (nested stages
    included) -> where it is first seen."""
    out: dict = {}
    for info in S.iter_models(spec):
        where = f"stage {info.path!r}: " if info.path else ""
        m = info.model
        for lst in _desc_lists(m.description):
            for f in lst:
                out.setdefault(f.name, f"{where}feature")
        for holder in _predicted_holders(m.description):
            for name in (holder.predictedFeatureName, holder.predictedProbabilitiesName):
                if name:
                    out.setdefault(name, f"{where}predicted feature")
        nn.collect_names(m, out, where)
        mlprogram.collect_names(m, out, where)
    return out


def _rename_description(desc, old, new) -> None:
    for lst in _desc_lists(desc):
        for f in lst:
            if f.name == old:
                f.name = new
    for holder in _predicted_holders(desc):
        if holder.predictedFeatureName == old:
            holder.predictedFeatureName = new
        if holder.predictedProbabilitiesName == old:
            holder.predictedProbabilitiesName = new


def _program_paths(root, old) -> list[str]:
    """Where ``old`` names something in an ML Program (stage paths)."""
    paths = []
    for info in S.iter_models(root):
        if S.model_type(info.model) != "mlProgram":
            continue
        names: dict = {}
        mlprogram.collect_names(info.model, names, "")
        if old in names or any(f.name == old for lst in _desc_lists(info.model.description) for f in lst):
            paths.append(info.path or "the model")
    return paths


LINKED_MODES = ("refuse", "stubs")


def linked_uses(spec, name: str) -> list[tuple[str, str]]:
    """(stage path, linkedModelFileName) of every linked stub whose interface names ``name``."""
    root = spec.spec if isinstance(spec, MLPackage) else spec
    out = []
    for info in S.iter_models(root):
        if S.model_type(info.model) != "linkedModel":
            continue
        desc = info.model.description
        if any(f.name == name for f in list(desc.input) + list(desc.output)):
            out.append((info.path or "(top)",
                        info.model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue))
    return out


def _refuse_linked(root, olds) -> None:
    hits = [(old, path, target) for old in olds for path, target in linked_uses(root, old)]
    if hits:
        parts = [f"{old!r} is a feature of the linked stage {path!r}, whose target {target} holds it too"
                 for old, path, target in hits]
        raise UnsupportedError(
            "rename: " + "; ".join(parts) + ". Renaming only the stub would break the link: rename "
            "the targets as well with rename_linked(model, pairs, targets={file name: target model}), "
            "or from the command line pass --search-path with the folder that holds "
            + ", ".join(sorted({t.replace('.mlmodelc', '.mlmodel') for _, _, t in hits}))
            + " (it is found beside the model by default)")


def rename_feature(spec, old: str, new: str, *, inplace: bool = False, linked: str = "refuse"):
    """Rename feature/blob/value ``old`` to ``new`` everywhere in the model.

    Returns a spec, or an MLPackage (weights unchanged) when given one.

    Errors: ``old`` names nothing (with near matches); ``new`` is already a
    name in the model (renaming would merge two values); ``new`` is not a
    valid MIL identifier where ``old`` is an ML Program value; ``old`` is a
    feature of a linked stub (``linked="refuse"``, the default: the target
    file would keep the old name; :func:`rename_linked` renames both), unless
    ``linked="stubs"`` says the caller renames the targets itself.
    """
    if linked not in LINKED_MODES:
        raise SpecSurgeryError(f"rename: linked={linked!r}; allowed: {', '.join(LINKED_MODES)}")
    if not new or not isinstance(new, str):
        raise SpecSurgeryError(f"rename: the new name for {old!r} is empty")
    model = load(spec)
    root = model.spec if isinstance(model, MLPackage) else model
    names = names_in(root)
    if old not in names:
        raise NotFoundError(missing_message("feature or blob", [old], names) + " (rename)")
    if linked == "refuse":
        _refuse_linked(root, [old])
    if old == new:
        return model if inplace else (model.copy() if isinstance(model, MLPackage) else copy_spec(root))
    if new in names:
        raise SpecSurgeryError(
            f"rename: {new!r} already names a value in this model ({names[new]}); renaming {old!r} to "
            f"it would merge two values. Pick another name, or rename {new!r} first")
    programs = _program_paths(root, old)
    if programs and not IDENTIFIER.match(new):
        raise SpecSurgeryError(
            f"rename: {new!r} is not a valid ML Program value name ({old!r} is a value of the ML Program "
            f"in {', '.join(programs)}); use letters, digits, '_' and '@', not starting with a digit")
    pkg = model if inplace or not isinstance(model, MLPackage) else model.copy()
    out = pkg.spec if isinstance(pkg, MLPackage) else (root if inplace else copy_spec(root))
    for info in S.iter_models(out):
        _rename_description(info.model.description, old, new)
        nn.rename_in_model(info.model, old, new)
        mlprogram.rename_in_model(info.model, old, new)
    return pkg if isinstance(pkg, MLPackage) else out


def check_renames(spec, pairs) -> None:
    """Refuse a list of (old, new) renames, applied in order, naming every
    culprit at once: each old name that names nothing (with near matches),
    each new name already taken, each new name that is no MIL identifier
    where the old one is an ML Program value."""
    root = load(spec)
    root = root.spec if isinstance(root, MLPackage) else root
    names = dict(names_in(root))
    missing, clashes, invalid = [], [], []
    renamed, origin = {}, {}           # old -> new (for the message), current name -> original name
    for old, new in pairs:
        if old not in names:
            missing.append(old)
            continue
        if new != old and new in names:
            clashes.append(f"{new!r} (for {old!r}) already names a value ({names[new]})")
        first = origin.pop(old, old)
        if not IDENTIFIER.match(new) and _program_paths(root, first):
            invalid.append(repr(new))
        names[new] = names.pop(old)
        origin[new] = first
        renamed[old] = new
    if missing:
        message = missing_message("feature or blob", missing, sorted(names)) + " (rename)"
        earlier = [f"{o!r} is already {renamed[o]!r}" for o in missing if o in renamed]
        if earlier:
            message += "; renames apply in order and " + ", ".join(earlier)
        raise NotFoundError(message)
    problems = []
    if clashes:
        problems.append("; ".join(clashes) + "; renaming to a taken name would merge two values: pick other "
                        "names, or rename the taken ones first")
    if invalid:
        what = "are not valid ML Program value names" if len(invalid) > 1 else "is not a valid ML Program value name"
        problems.append(f"{', '.join(invalid)} {what}: use letters, digits, '_' and '@', not starting with a digit")
    if problems:
        raise SpecSurgeryError("rename: " + "; ".join(problems))


def rename_features(spec, pairs, *, inplace: bool = False, linked: str = "refuse"):
    """Apply (old, new) renames in order, after :func:`check_renames` has
    refused the whole list if any of them is wrong."""
    model = load(spec)
    pairs = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    check_renames(model, pairs)
    if linked == "refuse":
        _refuse_linked(model, _originals(pairs))
    for i, (old, new) in enumerate(pairs):
        model = rename_feature(model, old, new, inplace=inplace or i > 0, linked="stubs")
    return model


def _originals(pairs) -> list[str]:
    """The names, as the model has them now, that a list of in-order renames touches."""
    seen, origin = [], {}
    for old, new in pairs:
        first = origin.pop(old, old)
        if first not in seen:
            seen.append(first)
        origin[new] = first
    return seen


def rename_linked(spec, pairs, targets: Mapping[str, object], *, inplace: bool = False):
    """Rename features of a pipeline and of the linked targets its stubs name.

    ``targets`` maps a stub's ``linkedModelFileName`` (``"Backbone.mlmodelc"``)
    to the target model (spec, path or MLPackage). Returns ``(pipeline,
    {file name: renamed target})`` with only the targets a rename touched.
    Every other model that links the same target must be renamed the same way.
    """
    model = load(spec)
    pairs = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    check_renames(model, pairs)
    root = model.spec if isinstance(model, MLPackage) else model
    needed: dict = {}
    for first in _originals(pairs):
        for _, target in linked_uses(root, first):
            needed.setdefault(target, None)
    missing = [t for t in needed if t not in targets]
    if missing:
        raise NotFoundError(f"rename_linked: no target given for {', '.join(map(repr, missing))}; pass "
                            "targets={file name: model} for every linked target a rename touches")
    renamed = {}
    for target in needed:
        theirs = load(targets[target])
        troot = theirs.spec if isinstance(theirs, MLPackage) else theirs
        tnames = names_in(troot)
        mine = [(o, n) for o, n in _chain_for(pairs, tnames)]
        renamed[target] = rename_features(theirs, mine, linked="refuse") if mine else theirs
    out = rename_features(model, pairs, inplace=inplace, linked="stubs")
    return out, renamed


def _chain_for(pairs, names) -> list:
    """The renames of ``pairs`` that apply to a model with ``names`` (followed in order)."""
    live = set(names)
    out = []
    for old, new in pairs:
        if old in live:
            out.append((old, new))
            live.discard(old)
            live.add(new)
    return out
