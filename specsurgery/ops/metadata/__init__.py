"""``set_metadata``: author, licence, description, version string, user-defined
metadata, feature descriptions, class labels and the spec version, in one call.

Everything but the labels lives in the model description, which both
backends share; the labels live in the body (:mod:`.labels` knows where, for
NeuralNetwork classifiers, the classic classifiers, pipelines and ML
Programs' ``classify`` op).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, missing_message
from ...io import working_copy
from . import labels as _labels

__all__ = ["set_metadata", "read_labels"]

read_labels = _labels.read_labels


def _features(spec) -> dict:
    out = {}
    for role in ("input", "output", "trainingInput", "state"):
        for f in getattr(spec.description, role):
            out.setdefault(f.name, f)
    return out


def set_metadata(model, *, author: Optional[str] = None, license: Optional[str] = None,
                 description: Optional[str] = None, version_string: Optional[str] = None,
                 meta: Optional[Mapping[str, str]] = None,
                 feature_descriptions: Optional[Mapping[str, str]] = None,
                 labels: Optional[Sequence] = None,
                 spec_version: Union[int, str, None] = None,
                 inplace: bool = False):
    """Set the given fields of ``model``'s description; ``None`` leaves a field as it is.

    ``meta`` adds or replaces user-defined metadata (a value of ``None``
    removes the key).  ``labels`` replaces a classifier's labels and must keep
    their count.  ``spec_version`` is a number, which may not go below what
    the model needs, or ``"min"``, which lowers (or raises) it to exactly that.
    Returns the edited spec (an :class:`MLPackage` for ML Programs).
    """
    result, spec = working_copy(model, inplace)
    md = spec.description.metadata
    for attr, value in (("author", author), ("license", license), ("shortDescription", description),
                        ("versionString", version_string)):
        if value is not None:
            setattr(md, attr, str(value))
    for key, value in (meta or {}).items():
        if not key:
            raise SpecSurgeryError("metadata key is empty; pass --meta KEY=VALUE with a non-empty KEY")
        if value is None:
            md.userDefined.pop(key, None)
        else:
            md.userDefined[key] = str(value)
    if feature_descriptions:
        features = _features(spec)
        unknown = [n for n in feature_descriptions if n not in features]
        if unknown:
            raise NotFoundError(missing_message("feature", unknown, features)
                                + "; --feature-description takes a model input or output name")
        for name, text in feature_descriptions.items():
            features[name].shortDescription = str(text)
    if labels is not None:
        _labels.write_labels(spec, list(labels))
    if spec_version is not None:
        _set_version(spec, spec_version)
    return result


def _set_version(spec, value) -> None:
    from ...check.versions import NEWEST, min_spec_version

    need, reasons = min_spec_version(spec)
    if isinstance(value, str) and value.strip().lower() == "min":
        target = need
    else:
        try:
            target = int(value)
        except (TypeError, ValueError):
            raise SpecSurgeryError(f"spec version {value!r}: give a whole number 1..{NEWEST} or 'min'") from None
        if not 1 <= target <= NEWEST:
            raise SpecSurgeryError(f"spec version {target}: Core ML knows versions 1..{NEWEST}; "
                                   "give one of those or 'min'")
        if target < need:
            raise SpecSurgeryError(
                f"spec version {target} is below what the model needs ({need}: "
                + "; ".join(reasons) + f"); use {need} or higher, or 'min'")
    _apply_version(spec, target)


def _apply_version(spec, version: int) -> None:
    """The top model gets ``version``; a nested stage that declares more is
    lowered to it (a stage may not declare more than its pipeline), and
    ``min_spec_version`` has already shown that no stage needs more."""
    spec.specificationVersion = version
    for info in S.iter_models(spec):
        if info.path and info.model.specificationVersion > version:
            info.model.specificationVersion = version
