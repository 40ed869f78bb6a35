"""The offline validator: the Core ML compiler's rules that can be checked
without it (see docs/check.md for every rule id).

``check(model)`` returns every :class:`Finding` (errors, warnings, infos) of a
model and all its nested stages; ``assert_valid(model)`` raises
:class:`~specsurgery.errors.CheckError` listing every error.
``min_spec_version(spec)`` computes the minimum specification version from
the features the model uses, with the reasons.

The rules live in one module per area: ``features`` (interface and feature
types), ``versions``, ``nn`` (graph and weights), ``classifier``,
``pipeline``, ``linked``, ``package``; ML Program bodies are checked by
``mlprogram.check_program`` when that module is present.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import CheckError
from ..spec import NN_TYPES, PIPELINE_TYPES, pipeline_of
from .findings import Finding, Findings, errors, join
from .severity import demote
from .versions import NEWEST, min_spec_version, own_needs, version_needs

__all__ = ["Finding", "check", "assert_valid", "min_spec_version", "CheckError", "errors"]

UPDATABLE_TYPES = set(NN_TYPES) | set(PIPELINE_TYPES) | {"kNearestNeighborsClassifier"}
CLASSIFIERS = ("neuralNetworkClassifier", "glmClassifier", "supportVectorClassifier",
               "treeEnsembleClassifier")
REGRESSORS = ("neuralNetworkRegressor", "glmRegressor", "supportVectorRegressor",
              "treeEnsembleRegressor")


class _Context:
    def __init__(self, package, search_path, base_dir, bundle=None, bundle_ids=None):
        self.package = package
        self.search_path = search_path
        self.base_dir = base_dir
        self.bundle = bundle
        self.bundle_ids = bundle_ids


def _program_checker():
    """(``check_program`` from check/mlprogram.py or None, import problem or "").

    Imported only when an mlProgram is met, so neural-network checks never
    pay for (or break on) the ML Program machinery.
    """
    try:
        module = importlib.import_module(".mlprogram", __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("check.mlprogram"):
            return None, ""
        return None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken module must not break every check
        return None, f"{type(exc).__name__}: {exc}"
    return getattr(module, "check_program", None), ""


def check(model, search_path=None, *, bundle=None, bundle_ids=None, base_dir=None) -> list[Finding]:
    """Every finding about ``model`` (a spec, path, bytes, MLPackage or MLModel).

    With ``search_path`` (a ':'-separated string like a linkedModel's; it
    replaces the stubs' own search paths, as ``MLModelConfiguration`` does on
    device), each linked-model stub's target is resolved (relative entries
    from the model file's folder; ``bundle`` is what ``$BUNDLE_MAIN`` means,
    ``bundle_ids`` maps ``$BUNDLE_IDENTIFIER(id)`` ids to folders) and its
    interface compared with the stub's.  Without ``search_path`` linked stubs
    are checked for syntax only: their targets are compiled models that need
    not be present.  ``base_dir`` is the folder relative search-path entries
    start from; it defaults to the model file's folder (for a spec in memory:
    the current directory).
    """
    from ..io import load, split_model

    loaded = load(model)
    spec, package = split_model(loaded)
    if base_dir is None:
        if isinstance(model, (str, Path)):
            base_dir = Path(model).resolve().parent
        elif package is not None and package.path is not None:
            base_dir = package.path.resolve().parent
    ctx = _Context(package, search_path, base_dir, bundle, bundle_ids)
    out: list[Finding] = []
    _check_model(spec, "", ctx, out)
    if package is not None:
        from .package import check_package

        found = Findings()
        check_package(package, found)
        out.extend(found)
    return out


def assert_valid(model, search_path=None, where=None, *, base_dir=None) -> None:
    """Raise :class:`CheckError` listing every error of ``model`` (warnings pass).

    ``where`` (usually the file about to be written) prefixes the message.
    """
    found = errors(check(model, search_path=search_path, base_dir=base_dir))
    if found:
        head = f"{where}: " if where else ""
        plural = "s" if len(found) != 1 else ""
        raise CheckError(f"{head}{len(found)} check error{plural}: " + "; ".join(str(f) for f in found),
                         found)


# --------------------------------------------------------------------------- one model

def _check_model(spec, path: str, ctx: _Context, sink: list) -> None:
    out = Findings(path)
    kind = spec.WhichOneof("Type")
    version = spec.specificationVersion
    _check_version(spec, kind, version, out)
    if kind is None:
        unknown = _unknown_fields(spec)
        if unknown:
            out.error("", "model.no-type",
                      "no known model type: the model carries field number(s) "
                      + ", ".join(str(n) for n in unknown) + " that this Core ML format version does "
                      "not know (a newer or pre-release model type); convert it with matching tools")
        else:
            out.error("", "model.no-type",
                      "no model type set (the Type oneof is empty); set neuralNetwork, pipeline, "
                      "mlProgram, ...")
    if spec.isUpdatable and kind not in UPDATABLE_TYPES and kind != "linkedModel":
        out.error("", "model.updatable-type",
                  f"{kind} models cannot be updatable; only neural networks, kNN classifiers and "
                  "pipelines can")
    from .features import check_interface, check_metadata

    check_interface(spec, out, kind, version or NEWEST)
    check_metadata(spec, out)
    if kind in NN_TYPES:
        from .nn import check_arity, check_graph, check_updatable, check_weights

        nn = getattr(spec, kind)
        check_graph(spec, kind, nn, out)
        check_arity(nn, out)
        check_weights(nn, out, spec)
        check_updatable(spec, nn, out)
        from .nn_extra import check_activations, check_input_ranks
        from .updatable import check_updatable_nn

        check_activations(nn, out)
        check_input_ranks(spec, nn, out)
        check_updatable_nn(spec, nn, out)
    if kind in CLASSIFIERS:
        from .classifier import check_classifier

        check_classifier(spec, kind, out)
    elif kind in REGRESSORS:
        from .classifier import check_regressor

        check_regressor(spec, kind, out)
    elif kind in ("pipelineClassifier", "pipelineRegressor"):
        from .classifier import check_pipeline_interface

        check_pipeline_interface(spec, kind, out)
    if kind in CLASSIC_TYPES:
        _check_classic(spec, kind, out)
    if kind == "nonMaximumSuppression" or kind in PIPELINE_TYPES:   # detectors: check/nms.py
        from .nms import check_detector

        check_detector(spec, kind, out)
    if kind == "linkedModel":
        from .linked import check_linked, check_target, check_target_beside

        check_linked(spec, out)
        if ctx.search_path is not None:
            check_target(spec, out, ctx.search_path, ctx.base_dir, ctx.bundle, ctx.bundle_ids,
                         check_model=check)
        elif ctx.base_dir is not None:
            check_target_beside(spec, out, ctx.base_dir, ctx.bundle, ctx.bundle_ids)
    if kind == "mlProgram":
        checker, problem = _program_checker()
        if problem:
            out.error("mlProgram", "mlprogram.checker-crashed",
                      f"the ML Program checker cannot be loaded: {problem}")
        elif checker is not None:
            try:
                out.extend(checker(spec, ctx.package, path))
            except Exception as exc:  # a crash in a rule must not hide the other findings
                out.error("mlProgram", "mlprogram.checker-crashed",
                          f"the ML Program checker failed: {type(exc).__name__}: {exc}")
    sink.extend(demote(out, spec))
    if kind in PIPELINE_TYPES:
        from .pipeline import check_pipeline, stage_labels

        check_pipeline(spec, out := Findings(path))
        sink.extend(out)
        pipe = pipeline_of(spec)
        for name, stage in zip(stage_labels(pipe), pipe.models):
            _check_model(stage, join(path, name), ctx, sink)


#: Model types with rules of their own beyond the interface (check/trees.py,
#: knn.py, glm.py, classic.py, others.py).
CLASSIC_TYPES = {"treeEnsembleClassifier", "treeEnsembleRegressor", "glmClassifier", "glmRegressor",
                 "kNearestNeighborsClassifier", "featureVectorizer", "scaler", "oneHotEncoder",
                 "visionFeaturePrint", "audioFeaturePrint", "textClassifier",
                 # check/others.py
                 "imputer", "dictVectorizer", "arrayFeatureExtractor", "normalizer",
                 "categoricalMapping", "customModel", "wordTagger", "gazetteer", "wordEmbedding",
                 "soundAnalysisPreprocessing", "classConfidenceThresholding",
                 "itemSimilarityRecommender", "bayesianProbitRegressor",
                 "supportVectorClassifier", "supportVectorRegressor"}


def _check_classic(spec, kind: str, out: Findings) -> None:
    if kind in ("treeEnsembleClassifier", "treeEnsembleRegressor"):
        from .trees import check_tree_ensemble

        check_tree_ensemble(spec, kind, out)
    elif kind == "glmClassifier":
        from .glm import check_glm_classifier

        check_glm_classifier(spec, out)
    elif kind == "glmRegressor":
        from .glm import check_glm_regressor

        check_glm_regressor(spec, out)
    elif kind == "kNearestNeighborsClassifier":
        from .classifier import check_predicted
        from .knn import check_knn

        check_predicted(spec, check_knn(spec, out), out, kind)
    else:
        from .classic import CHECKERS

        if kind in CHECKERS:
            CHECKERS[kind](spec, out)
        else:
            from .others import CHECKERS as OTHERS

            OTHERS[kind](spec, out)


def _unknown_fields(spec) -> list[int]:
    """Top-level field numbers the protobuf classes do not know (sorted)."""
    try:
        from google.protobuf import unknown_fields

        return sorted({f.field_number for f in unknown_fields.UnknownFieldSet(spec)})
    except Exception:  # older protobuf without the module: just say "no type"
        return []


def _check_version(spec, kind, version: int, out: Findings) -> None:
    if version == 0:
        out.error("specificationVersion", "version.missing",
                  "specificationVersion is 0 (missing or corrupt); set it to the minimum the model "
                  f"needs (v{min_spec_version(spec)[0]})")
        return
    if version > NEWEST:
        out.error("specificationVersion", "version.too-new",
                  f"specificationVersion {version} is newer than supported (max {NEWEST}); lower it to "
                  f"v{min_spec_version(spec)[0]}, the minimum this model needs")
        return
    needs = own_needs(spec)
    strict = [n for n in needs if n.strict and n.version > version]
    if strict:
        top = max(n.version for n in strict)
        why = "; ".join(n.reason() for n in strict if n.version == top)
        out.error("specificationVersion", "version.below-minimum",
                  f"declares v{version} but {why}; set specificationVersion to {top}")
    # Soft needs already covered by the version the error asks for add nothing.
    floor = max([version] + [n.version for n in strict])
    soft = [n for n in needs if not n.strict and n.version > floor]
    if soft:
        top = max(n.version for n in soft)
        why = "; ".join(n.reason() for n in soft if n.version == top)
        out.warning("specificationVersion", "version.below-recommended",
                    f"declares v{version} but {why}; older Core ML versions ignore or misread it; "
                    f"set specificationVersion to {top}")
    pipe = pipeline_of(spec)
    if pipe is not None and len(pipe.models):
        declared = max(m.specificationVersion for m in pipe.models)
        nested = [n for n in version_needs(spec) if n.path and n.version > version]
        if declared > version or nested:
            top = max([declared] + [n.version for n in nested])
            out.warning("specificationVersion", "version.outer-below-stage",
                        f"the pipeline declares v{version} but its stages need or declare up to v{top}; "
                        f"set the pipeline's specificationVersion to {top}")


from .._callable import make_callable  # noqa: E402

make_callable(__name__, "check")
