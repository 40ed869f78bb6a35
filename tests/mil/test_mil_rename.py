"""rename_feature on ML Programs: features and internal values renamed everywhere, nested
blocks and pipelines included; the renamed model checks clean and computes the same."""

from __future__ import annotations

import numpy as np
import pytest

import mil_models as M
from specsurgery import io
from specsurgery.check import check
from specsurgery.cli import main
from specsurgery.errors import NotFoundError, SpecSurgeryError
from specsurgery.mil import program as P
from specsurgery.ops import make_pipeline, rename_feature, split_at
from specsurgery.ops.rename import names_in
from specsurgery.runtime import predict, random_inputs


def _errors(model):
    return [str(f) for f in check(model) if f.severity == "error"]


def _all_names(spec):
    """Every name written in the program: definitions, reads, block outputs, op names."""
    out = []
    for _, fn in P.iter_functions(spec):
        out += [i.name for i in fn.inputs]
        for block in fn.block_specializations.values():
            blocks = [block] + [sub for op in P.iter_ops(block) for sub in op.blocks]
            for b in blocks:
                out += [i.name for i in b.inputs] + list(b.outputs)
            for op in P.iter_ops(block):
                out += [o.name for o in op.outputs] + [n for _, n in P.input_names(op)] + [P.op_name(op)]
    return out


def _same_outputs(a, b, inputs_a, inputs_b, rename_out=None):
    ra, rb = predict(a, inputs_a), predict(b, inputs_b)
    for name, value in ra.items():
        np.testing.assert_array_equal(rb[(rename_out or {}).get(name, name)], value)


def test_features_are_renamed_in_description_function_and_ops():
    path = M.converted("resnet", "fp32")
    pkg = io.load(path)
    out = rename_feature(pkg, "x", "image_in")
    out = rename_feature(out, "out", "probs")
    assert isinstance(out, io.MLPackage) and out is not pkg
    spec = out.spec
    fn = P.get_function(spec)[1]
    assert [f.name for f in spec.description.input] == ["image_in"] == [i.name for i in fn.inputs]
    assert [f.name for f in spec.description.output] == ["probs"] == list(P.main_block(fn).outputs)
    names = _all_names(spec)
    assert "x" not in names and "out" not in names and "image_in" in names
    assert out.weights.keys() == pkg.weights.keys()                       # weights untouched
    assert [f.name for f in pkg.spec.description.input] == ["x"]          # original untouched
    assert _errors(out) == []
    x = random_inputs(pkg, seed=1)
    _same_outputs(pkg, out, x, {"image_in": x["x"]}, {"out": "probs"})


def test_internal_value_renames_its_op_and_every_use_and_back_is_identity():
    pkg = io.load(M.converted("unet", "fp32"))
    block = P.main_block(P.get_function(pkg.spec)[1])
    concat = next(op for op in block.operations if op.type == "concat")
    value = concat.inputs["values"].arguments[1].name     # the skip connection: read twice
    readers = [op for op in block.operations if value in [n for _, n in P.input_names(op)]]
    assert len(readers) >= 2
    out = rename_feature(pkg, value, "skip")
    names = _all_names(out.spec)
    assert value not in names
    new_block = P.main_block(P.get_function(out.spec)[1])
    producer = next(op for op in new_block.operations if "skip" in [o.name for o in op.outputs])
    assert P.op_name(producer) in ("skip", P.op_name(P.producers(block)[value]))
    assert sum("skip" in [n for _, n in P.input_names(op)] for op in new_block.operations) == len(readers)
    assert _errors(out) == []
    x = random_inputs(pkg, seed=0)
    _same_outputs(pkg, out, x, x)
    assert rename_feature(out, "skip", value).spec == pkg.spec


def test_values_of_nested_blocks_and_values_they_read():
    pkg = io.load(M.zoo_converted("scripted_loop"))
    loop = next(op for op in P.main_block(P.get_function(pkg.spec)[1]).operations if op.type == "while_loop")
    inner = loop.blocks[1].inputs[1].name        # a loop body's block input, read inside the body
    after = loop.outputs[1].name                 # the loop's result, read inside cond's branches
    out = pkg
    for old, new in [(inner, "body_x"), (after, "looped"), ("x", "seed")]:
        out = rename_feature(out, old, new)
        assert old not in _all_names(out.spec)
    names = names_in(out.spec)
    assert "body_x" in names and "looped" in names and names["seed"] == "feature"
    assert _errors(out) == []
    x = random_inputs(pkg, seed=3)
    _same_outputs(pkg, out, x, {"seed": x["x"]})


def test_pipeline_stages_share_the_renamed_value(tmp_path):
    path = M.converted("resnet", "fp32")
    pkg = io.load(path)
    block = P.main_block(P.get_function(pkg.spec)[1])
    cut = next(op.outputs[0].name for op in block.operations if op.type == "max_pool")
    backbone, head = split_at(pkg, [cut])
    pipe = make_pipeline([backbone, head])
    out = rename_feature(pipe, cut, "features")
    first, second = out.spec.pipeline.models
    assert [f.name for f in first.description.output] == ["features"]
    assert "features" in [f.name for f in second.description.input]
    assert "features" in list(P.main_block(P.get_function(first)[1]).outputs)
    assert "features" in [i.name for i in P.get_function(second)[1].inputs]
    assert cut not in _all_names(first) + _all_names(second)
    io.save(out, tmp_path / "p.mlpackage")           # save checks it
    x = random_inputs(pkg, seed=2)
    _same_outputs(pkg, io.load(tmp_path / "p.mlpackage"), x, x)


def test_unknown_clashing_and_invalid_names():
    pkg = io.load(M.converted("resnet", "fp32"))
    with pytest.raises(NotFoundError, match=r"unknown feature or blob: 'outt' \(did you mean 'out'"):
        rename_feature(pkg, "outt", "y")
    with pytest.raises(SpecSurgeryError, match=r"'out' already names a value in this model \(feature\).*merge"):
        rename_feature(pkg, "x", "out")
    with pytest.raises(SpecSurgeryError, match=r"'2 x' is not a valid ML Program value name"):
        rename_feature(pkg, "x", "2 x")


def test_inplace_edits_the_package_itself():
    pkg = io.load(M.converted("resnet", "fp32"))
    assert rename_feature(pkg, "x", "pixels", inplace=True) is pkg
    assert [i.name for i in P.get_function(pkg.spec)[1].inputs] == ["pixels"]


def test_cli_renames_a_package_and_lists_every_clash(tmp_path, capsys):
    src = M.converted("resnet", "fp32")
    out = tmp_path / "r.mlpackage"
    assert main(["rename", str(src), "x=pixels", "out=scores", "-o", str(out)]) == 0
    spec = io.load_spec(out)
    assert [f.name for f in spec.description.input] == ["pixels"]
    assert list(P.main_block(P.get_function(spec)[1]).outputs) == ["scores"]
    capsys.readouterr()
    block = P.main_block(P.get_function(io.load(src).spec)[1])
    convs = [op.outputs[0].name for op in block.operations if op.type == "conv"]
    assert main(["rename", str(src), f"x={convs[0]}", f"out={convs[1]}", "-o", str(tmp_path / "c.mlpackage")]) == 1
    err = capsys.readouterr().err
    assert f"{convs[0]!r} (for 'x') already names a value" in err
    assert f"{convs[1]!r} (for 'out') already names a value" in err
    assert not (tmp_path / "c.mlpackage").exists()


def test_state_features_are_renamed_with_their_reads_and_writes():
    path, _ = M.stateful_converted()
    pkg = io.load(path)
    out = rename_feature(pkg, "acc", "total")
    assert [f.name for f in out.spec.description.state] == ["total"]
    assert "acc" not in _all_names(out.spec)
    assert _errors(out) == []
    x = random_inputs(pkg, seed=0)
    _same_outputs(pkg, out, x, x)


def test_a_list_of_renames_is_refused_naming_every_culprit():
    from specsurgery.ops.rename import rename_features

    pkg = io.load(M.converted("resnet", "fp32"))
    convs = [op.outputs[0].name for op in P.main_block(P.get_function(pkg.spec)[1]).operations
             if op.type == "conv"]
    with pytest.raises(SpecSurgeryError, match=rf"'{convs[0]}' \(for 'x'\) already names.*"
                                               rf"'{convs[1]}' \(for 'out'\) already names"):
        rename_features(pkg, [("x", convs[0]), ("out", convs[1])])
    with pytest.raises(SpecSurgeryError, match=r"'a b', 'c-d' are not valid ML Program value names"):
        rename_features(pkg, {"x": "a b", "out": "c-d"})
    with pytest.raises(NotFoundError, match=r"'xx' \(did you mean 'x'.*'outt' \(did you mean 'out'"):
        rename_features(pkg, [("xx", "a"), ("outt", "b")])
    out = rename_features(pkg, [("x", "a"), ("a", "b"), ("out", "scores")])
    assert [f.name for f in out.spec.description.input] == ["b"]
    assert [f.name for f in pkg.spec.description.input] == ["x"]          # original untouched
