"""``split_at`` for neural networks: cut at blobs into a backbone and a head.

The backbone holds every layer needed to compute the cut blobs (image
preprocessing stays with it, the image input does too) and outputs the cut
blobs as MultiArrays typed by shape inference.  The head holds the rest: its
inputs are the cut blobs plus any original input it still reads; it keeps the
classifier or regressor semantics (labels, predicted feature names).  A
classifier's backbone becomes a plain neuralNetwork (coremltools #601).  Each
layer goes to exactly one half, so no weight is duplicated.

Shape mappings: both halves keep the original's mapping modes, so a blob has
the same shape inside each half as in the original.  In the legacy rank-5
mapping a blob held as [1,1,C,H,W] is declared [C,H,W] on both sides of the
cut (the head maps it back to rank 5); in exact-rank networks it is declared
as is.  A head that gains a MultiArray input next to RANK4 images switches its
array mapping to exact rank, which is the mode the network already runs in.
"""

from __future__ import annotations

from ... import spec as S
from ...errors import NotFoundError, SpecSurgeryError, UnsupportedError, missing_message
from ...io import copy_spec
from .. import _nn
from ..extract.nn import interface_targets, typed_features

__all__ = ["split_at"]


def split_at(spec, cuts: list, *, shapes=None, freeze_backbone: bool = False, drop_updatable: bool = False):
    """(backbone, head) of the network ``spec`` cut at the blobs ``cuts``
    (see :func:`specsurgery.ops.split.split_at`); ``spec`` is not edited."""
    nn = S.require_nn(spec, "split")
    if drop_updatable and spec.isUpdatable:
        spec = copy_spec(spec)
        spec.isUpdatable = False
        del spec.description.trainingInput[:]
        _freeze(spec)
        S.nn_of(spec).ClearField("updateParams")
        nn = S.nn_of(spec)
        _nn.note("split: dropped on-device training (isUpdatable, update parameters, training inputs); "
                 "predictions are unchanged")
    known = _nn.blob_names(spec, nn)
    missing = [b for b in cuts if b not in known]
    if missing:
        raise NotFoundError(missing_message("blob", missing, known) + " (split)")
    _nn.require_wired(spec, nn, "split")
    desc = spec.description
    model_inputs = [f.name for f in desc.input]
    at_input = [b for b in cuts if b in model_inputs]
    if at_input:
        raise SpecSurgeryError(
            f"split: {', '.join(map(repr, at_input))} is a model input; the backbone would be empty. "
            "Cut at a blob some layer produces (see suggest-cuts)")

    head_targets, synthetic = interface_targets(spec)
    kind = S.model_type(spec)
    backbone_cl = _nn.closure(nn, cuts, model_inputs=model_inputs)
    head_cl = _nn.closure(nn, [t for t in head_targets if t not in cuts], stops=cuts, model_inputs=model_inputs)
    if backbone_cl.unknown or head_cl.unknown:
        undefined = sorted(set(backbone_cl.unknown) | set(head_cl.unknown))
        raise SpecSurgeryError(f"split: blob(s) {', '.join(map(repr, undefined))} are read but never "
                               "produced; fix the network first (see check)")
    output_names = [f.name for f in desc.output]
    unused = [b for b in cuts if b not in head_cl.stops and b not in output_names]
    if unused:
        raise SpecSurgeryError(
            f"split: cut blob(s) {', '.join(map(repr, unused))} are not used after the cut (no path "
            "from them to an output); cut at blobs on the way to the outputs (see suggest-cuts)")
    shared = backbone_cl.layers & head_cl.layers
    if shared:
        raise SpecSurgeryError(_bypass_message(nn, cuts, backbone_cl, head_cl, model_inputs))
    head_outputs = [f.name for f in desc.output if f.name not in cuts]
    if not head_outputs or not head_cl.layers:
        raise SpecSurgeryError(
            f"split: cutting at {', '.join(map(repr, cuts))} leaves the head without layers; cut "
            "before the last layer")
    frozen = []
    if spec.isUpdatable:
        frozen = [nn.layers[i].name for i in sorted(backbone_cl.layers) if nn.layers[i].isUpdatable]
        if frozen and not freeze_backbone:
            raise UnsupportedError(
                f"split: updatable layer(s) {', '.join(map(repr, frozen))} would go to the backbone; "
                "in an updatable pipeline only the last stage may be updatable: cut after them, or pass "
                "freeze_backbone=True (--freeze-backbone) so on-device training updates the head only")

    # ---- backbone: inputs it reads, the cut blobs as MultiArray outputs
    cut_feats = typed_features(spec, cuts, role="output", shapes=shapes)
    for f in cut_feats:
        if f.type.WhichOneof("Type") != "multiArrayType":
            raise UnsupportedError(f"split: blob {f.name!r} is a {S.describe_type(f.type)} model output; "
                                   "only MultiArray blobs can cross a cut")
    bb_inputs = [f for f in desc.input if f.name in backbone_cl.inputs]
    backbone = _nn.sub_network(spec, backbone_cl.layers, bb_inputs, cut_feats, kind="neuralNetwork")
    if frozen:
        _freeze(backbone)
        _nn.note(f"split: froze updatable layer(s) {', '.join(map(repr, frozen))} in the backbone; "
                 "on-device training now updates the head only")
    _nn.set_needed_version(backbone, spec.specificationVersion)

    # ---- head: cut blobs it reads + original inputs it reads; original semantics
    head_in = [f for f in cut_feats if f.name in head_cl.stops]
    for f in head_in:
        f.type.isOptional = False
    head_in += [f for f in desc.input if f.name in head_cl.inputs]
    head_out = [f for f in desc.output if f.name in head_outputs]
    head = _nn.sub_network(spec, head_cl.layers, head_in, head_out, kind=kind,
                           classifier_from=nn if kind == "neuralNetworkClassifier" else None,
                           updatable=True)
    head.description.predictedFeatureName = desc.predictedFeatureName
    head.description.predictedProbabilitiesName = desc.predictedProbabilitiesName
    if spec.isUpdatable:
        if not any(l.isUpdatable for l in S.nn_of(head).layers):
            head.isUpdatable = False
            S.nn_of(head).ClearField("updateParams")
            del head.description.trainingInput[:]
            _nn.note("split: no updatable layer is left after the cut, so the head (and the pipeline) "
                     "is not updatable")
        else:
            _fix_training_inputs(spec, head)
    _nn.fit_shape_mapping(head)
    _nn.set_needed_version(head, spec.specificationVersion)
    return backbone, head


def _freeze(model) -> None:
    """Mark every layer and weight of ``model`` not updatable."""
    from ...weights import layer_weights

    for layer in S.nn_of(model).layers:
        layer.isUpdatable = False
        for _, wp in layer_weights(layer):
            wp.isUpdatable = False


def _fix_training_inputs(spec, head) -> None:
    """A split head trains on the cut blobs instead of the original inputs."""
    original_inputs = {f.name for f in spec.description.input}
    head_inputs = list(head.description.input)
    keep = [f for f in spec.description.trainingInput if f.name not in original_inputs]
    del head.description.trainingInput[:]
    for f in head_inputs + keep:
        head.description.trainingInput.add().CopyFrom(f)


def _bypass_message(nn, cuts, backbone_cl, head_cl, model_inputs) -> str:
    """Name one path from an input to an output that avoids every cut blob."""
    shared = backbone_cl.layers & head_cl.layers
    # a blob the head reads that comes from the shared part, consumed by a head-only layer
    head_only = head_cl.layers - backbone_cl.layers
    culprit = None
    producers = _nn.producers(nn)
    for i in sorted(head_only):
        for b in _nn.layer_reads(nn.layers[i]):
            prods = [p for p in producers.get(b, []) if p in shared]
            if prods:
                culprit = (b, i)
                break
        if culprit:
            break
    if culprit is None:  # a head output computed entirely without the cut
        blob = next(b for i in sorted(shared) for b in nn.layers[i].output)
    else:
        blob = culprit[0]
    before = _nn.path_to_input(nn, blob, model_inputs, avoid=cuts) or [blob]
    after = _nn.path_to_target(nn, head_cl, blob)[1:]
    path = _nn.format_path(before + after)
    cut_text = ", ".join(map(repr, cuts))
    if culprit is None:
        return (f"split: cutting at {cut_text} does not separate the graph: an output does not "
                f"depend on the cut (path {path}); cut at a blob every path to the outputs passes "
                "through (see suggest-cuts)")
    layer = nn.layers[culprit[1]].name
    return (f"split: cutting at {cut_text} does not separate the graph: layer {layer!r} after the cut "
            f"reads {blob!r}, which is computed before it, so the path {path} bypasses the cut; "
            f"add {blob!r} to the cut (--at {','.join(cuts + [blob])}) or cut at a blob every path "
            "passes through (see suggest-cuts)")
