"""extract on ML Programs: the sub-program between values computes what the original computed
for those values (numpy runtime), with exactly the weights it reads."""

from __future__ import annotations

import numpy as np
import pytest

import mil_models as M
from conftest import CORPUS
from specsurgery import io
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.mil import blobs as B
from specsurgery.mil import program as P
from specsurgery.ops import extract
from specsurgery.runtime import predict, random_inputs, verify
from specsurgery.runtime.mil import run_block


def _errors(model):
    return [str(f) for f in check(model) if f.severity == "error"]


def _block(pkg):
    return P.main_block(P.get_function(pkg.spec)[1])


def _values(pkg, inputs):
    """Every value the original program computes for ``inputs``."""
    env = {k: np.asarray(v) for k, v in inputs.items()}
    run_block(_block(pkg), env, pkg)
    return env


def _computed(pkg, op_type):
    return [op.outputs[0].name for op in _block(pkg).operations if op.type == op_type]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_middle_of_a_resnet_computes_the_original_values(precision):
    pkg = io.load(M.converted("resnet", precision))
    relus = _computed(pkg, "relu")
    start, end = relus[1], _computed(pkg, "reduce_mean")[0]      # after the first residual block
    sub = extract(pkg, start, end)
    assert isinstance(sub, io.MLPackage)
    assert [i.name for i in P.get_function(sub.spec)[1].inputs] == [start]
    assert list(_block(sub).outputs) == [end]
    assert _errors(sub) == []
    env = _values(pkg, random_inputs(pkg, seed=4))
    got = predict(sub, {start: env[start]})[end]
    np.testing.assert_array_equal(got, env[end].astype(got.dtype))
    # exactly the weights the kept ops read: fewer than the whole model's, each stored once
    refs = {(v.blobFileValue.offset) for _, _, _, v in P.blob_refs(sub.spec)}
    records = list(B.iter_records(sub.weights["weights/weight.bin"]))
    assert len(records) == len(refs) > 0
    whole = sum(r.size for w in pkg.weights.values() for r in B.iter_records(w))
    assert sum(r.size for r in records) < whole


def test_whole_program_verifies_against_the_original(tmp_path):
    path = M.converted("unet", "fp32")
    pkg = io.load(path)
    sub = extract(pkg, "x", [f.name for f in pkg.spec.description.output])
    io.save(sub, tmp_path / "whole.mlpackage")              # save checks it
    assert verify(path, tmp_path / "whole.mlpackage", samples=1).ok


def test_several_inputs_across_a_skip_connection():
    pkg = io.load(M.converted("unet", "fp32"))
    concat = next(op for op in _block(pkg).operations if op.type == "concat")
    halves = [b.name for b in concat.inputs["values"].arguments]
    out = pkg.spec.description.output[0].name
    with pytest.raises(SpecSurgeryError, match=r"also depend on 'x', which is not among the inputs .*"
                                               r"\(path: x -> \[conv .* -> out\); add it to --inputs"):
        extract(pkg, [halves[0]], [out])
    sub = extract(pkg, halves, [out])
    assert [f.name for f in sub.spec.description.input] == halves
    assert _errors(sub) == []
    env = _values(pkg, random_inputs(pkg, seed=1))
    got = predict(sub, {h: env[h] for h in halves})[out]
    np.testing.assert_allclose(got, env[out], rtol=1e-6, atol=1e-6)


def test_values_read_inside_nested_blocks_are_followed():
    pkg = io.load(M.zoo_converted("scripted_loop"))
    loop = next(op for op in _block(pkg).operations if op.type == "while_loop")
    start = loop.outputs[1].name                            # read only inside cond's branches
    sub = extract(pkg, start, "y")
    assert [op.type for op in _block(sub).operations if op.type != "const"] == ["reduce_sum", "greater", "cond"]
    assert _errors(sub) == []
    env = _values(pkg, random_inputs(pkg, seed=5))
    np.testing.assert_array_equal(predict(sub, {start: env[start]})["y"], env["y"])
    inner = loop.blocks[1].operations[0].outputs[0].name
    with pytest.raises(NotFoundError, match=rf"'{inner}' is inside the nested blocks of while_loop"):
        extract(pkg, "x", inner)


def test_bad_requests_name_every_culprit():
    pkg = io.load(M.converted("resnet", "fp32"))
    weight = next(op.outputs[0].name for op in _block(pkg).operations if op.type == "const")
    with pytest.raises(NotFoundError, match=r"unknown values in the ML Program: 'xx' \(did you mean 'x'.*; "
                                            r"'outt' \(did you mean 'out'"):
        extract(pkg, "xx", "outt")
    with pytest.raises(SpecSurgeryError, match=rf"input '{weight}' is a const"):
        extract(pkg, [weight, "x"], "out")
    with pytest.raises(SpecSurgeryError, match="'out' is both an input and an output"):
        extract(pkg, "out", "out")
    with pytest.raises(UnsupportedError, match=r"option shapes is not supported by the ML Program backend"):
        extract(pkg, "x", "out", shapes={"x": [1, 3, 32, 32]})
    with pytest.raises(SpecSurgeryError, match="at least one output"):
        extract(pkg, "x", "")


def test_inplace_replaces_the_package_program_and_weights():
    pkg = io.load(M.converted("resnet", "fp32"))
    start = _computed(pkg, "relu")[1]
    assert extract(pkg, start, "out", inplace=True) is pkg
    assert [f.name for f in pkg.spec.description.input] == [start]
    assert _errors(pkg) == []


@pytest.mark.corpus
def test_classifier_outputs_keep_the_classifier_semantics(tmp_path):
    src = CORPUS / "generated" / "shared_backbone_classifier.mlpackage"
    pkg = io.load(src)
    desc = pkg.spec.description
    outputs = [desc.predictedFeatureName, desc.predictedProbabilitiesName]
    sub = extract(pkg, [f.name for f in desc.input], outputs)
    assert sub.spec.description.predictedFeatureName == desc.predictedFeatureName
    assert [f.type.WhichOneof("Type") for f in sub.spec.description.input] == ["imageType"]
    io.save(sub, tmp_path / "c.mlpackage")
    assert verify(src, tmp_path / "c.mlpackage", samples=1).ok


def test_cli_extracts_a_package(tmp_path, capsys):
    src = M.converted("resnet", "fp32")
    start = _computed(io.load(src), "relu")[1]
    out = tmp_path / "e.mlpackage"
    assert main(["extract", str(src), "--inputs", start, "--outputs", "out", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ops," in printed and f"inputs {start} MultiArray" in printed
    assert _errors(out) == []


def test_state_writes_stay_with_the_reads_they_feed():
    path, _ = M.stateful_converted()
    pkg = io.load(path)
    sub = extract(pkg, ["x", "acc"], ["y"])          # write_state has no outputs: kept for its read
    assert [f.name for f in sub.spec.description.state] == ["acc"]
    assert "write_state" in [op.type for op in _block(sub).operations]
    assert _errors(sub) == []
    x = random_inputs(pkg, seed=0)
    np.testing.assert_array_equal(predict(sub, x)["y"], predict(pkg, x)["y"])
    with pytest.raises(SpecSurgeryError, match=r"depend on 'x'.*\[write_state .*\(writes a state the outputs read\)"):
        extract(pkg, ["acc"], ["y"])


def test_float16_values_cross_a_spec6_interface_as_float32():
    pkg = io.load(M.zoo_converted("resnet", "fp16"))
    assert pkg.spec.specificationVersion == 6                  # float16 features need 7
    start, end = _computed(pkg, "max_pool")[0], _computed(pkg, "linear")[0]
    sub = extract(pkg, start, end)
    assert [f.type.multiArrayType.dataType for f in
            list(sub.spec.description.input) + list(sub.spec.description.output)] == [65568, 65568]
    assert _errors(sub) == []
    env = _values(pkg, random_inputs(pkg, seed=2))
    got = predict(sub, {start: env[start]})[end]
    np.testing.assert_array_equal(got, env[end].astype(np.float32))     # the casts are exact
