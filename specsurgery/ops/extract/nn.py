"""``extract``'s NeuralNetwork part: the sub-network between blobs, as a model of its own.

Like ``onnx.utils.extract_model``: give the blobs that become inputs and the
blobs that become outputs; the result holds exactly the layers needed to
compute the outputs from the inputs.  Interface types come from the original
where a blob is an original feature, else MultiArray with shapes from the
runtime's shape inference (flexible where the original inputs are).
"""

from __future__ import annotations

from typing import Sequence

from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, missing_message
from .. import _nn

__all__ = ["extract_network", "classifier_prob_blob", "interface_targets", "typed_features"]

_names = _nn.name_list


def classifier_prob_blob(spec) -> str:
    """The blob a neuralNetworkClassifier turns into labels and probabilities."""
    nn = spec.neuralNetworkClassifier
    if nn.labelProbabilityLayerName:
        return nn.labelProbabilityLayerName
    if not len(nn.layers) or not len(nn.layers[-1].output):
        raise SpecSurgeryError("classifier has no layers to read probabilities from")
    return nn.layers[-1].output[0]


def interface_targets(spec) -> tuple[list[str], list[str]]:
    """(blobs the outputs need, names of outputs the classifier makes itself)."""
    kind = S.model_type(spec)
    desc = spec.description
    synthetic = []
    if kind == "neuralNetworkClassifier":
        synthetic = [n for n in (desc.predictedFeatureName, desc.predictedProbabilitiesName) if n]
    blobs = [f.name for f in desc.output if f.name not in synthetic]
    if kind == "neuralNetworkClassifier":
        prob = classifier_prob_blob(spec)
        if prob not in blobs:
            blobs.append(prob)
    return blobs, synthetic


def typed_features(spec, blobs: Sequence[str], *, role: str, shapes=None) -> list:
    """FeatureDescriptions for ``blobs``: the original's description where the
    blob is a model input/output with a full type, else a MultiArray typed by
    shape inference (the original dtype kept for original outputs)."""
    from ..._proto import Model_pb2

    desc = spec.description
    originals = {f.name: f for f in list(desc.input) + list(desc.output)}
    need_shape = []
    for b in blobs:
        f = originals.get(b)
        if f is None or (f.type.WhichOneof("Type") == "multiArrayType" and not S.feature_shape(f.type)):
            need_shape.append(b)
    given = shapes
    shapes, flex = _nn.blob_shapes(spec, need_shape, given) if need_shape else ({}, {})
    out = []
    for b in blobs:
        fd = Model_pb2.FeatureDescription()
        f = originals.get(b)
        if b in shapes:
            dtype = _nn.FLOAT32
            if f is not None and f.type.multiArrayType.dataType:
                dtype = f.type.multiArrayType.dataType
            fd.name = b
            fd.type.CopyFrom(_nn.array_type(shapes[b], dtype, flex.get(b)))
            if f is not None:
                fd.shortDescription = f.shortDescription
        else:
            fd.CopyFrom(f)
            if role == "output":
                fd.type.isOptional = False
        out.append(fd)
    return out


def extract_network(spec, inputs: list[str], outputs: list[str], *, shapes=None, inplace: bool = False):
    """The sub-network of ``spec`` (a loaded spec) computing ``outputs`` from
    ``inputs`` (blob names).  The result is a neuralNetwork, or a
    classifier/regressor when the outputs include the original's predicted
    feature.  ``shapes`` ({blob: declared shape}) types blobs that shape
    inference cannot (after custom layers)."""
    nn = S.require_nn(spec, "extract")
    if not outputs:
        raise SpecSurgeryError("extract: give at least one output blob")
    kind = S.model_type(spec)
    desc = spec.description
    synthetic_all = []
    if kind == "neuralNetworkClassifier":
        synthetic_all = [n for n in (desc.predictedFeatureName, desc.predictedProbabilitiesName) if n]
    known = _nn.blob_names(spec, nn)
    missing = [b for b in inputs + outputs if b not in known and b not in synthetic_all]
    if missing:
        raise NotFoundError(missing_message("blob", missing, known) + " (extract)")
    _nn.require_wired(spec, nn, "extract")
    synthetic = [o for o in outputs if o in synthetic_all]
    targets = [o for o in outputs if o not in synthetic]
    if synthetic:
        prob = classifier_prob_blob(spec)
        if prob not in targets:
            targets.append(prob)
    _nn.refuse_passthrough("extract", inputs, targets, "a network output must be produced by a layer")
    cl = _nn.closure(nn, targets, stops=inputs, model_inputs=[f.name for f in desc.input])
    leaks = sorted(cl.inputs) + cl.unknown
    if leaks:
        paths = []
        for leak in leaks:
            paths.append(_nn.format_path(_nn.path_to_target(nn, cl, leak)))
        raise SpecSurgeryError(
            f"extract: outputs {', '.join(map(repr, outputs))} also depend on "
            f"{', '.join(map(repr, leaks))}, which is not among the inputs "
            f"{', '.join(map(repr, inputs)) or '(none)'} (path: {'; '.join(paths)}); add it to --inputs")

    in_feats = typed_features(spec, inputs, role="input", shapes=shapes)
    out_feats = typed_features(spec, targets if not synthetic else [o for o in outputs if o not in synthetic],
                               role="output", shapes=shapes)
    if synthetic:
        by_name = {f.name: f for f in desc.output}
        for o in synthetic:
            out_feats.append(by_name[o])
        new_kind = "neuralNetworkClassifier"
    elif kind == "neuralNetworkRegressor" and desc.predictedFeatureName in outputs:
        new_kind = "neuralNetworkRegressor"
    else:
        new_kind = "neuralNetwork"
    out = _nn.sub_network(spec, cl.layers, in_feats, out_feats, kind=new_kind,
                          classifier_from=nn if new_kind == "neuralNetworkClassifier" else None)
    if new_kind != "neuralNetwork":
        out.description.predictedFeatureName = desc.predictedFeatureName
        if new_kind == "neuralNetworkClassifier" and desc.predictedProbabilitiesName in outputs:
            out.description.predictedProbabilitiesName = desc.predictedProbabilitiesName
    _nn.fit_shape_mapping(out)
    _nn.set_needed_version(out, spec.specificationVersion)
    if inplace:
        spec.CopyFrom(out)
        return spec
    return out
