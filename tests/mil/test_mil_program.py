"""Program helpers: functions, ops, producers/consumers, values."""

import numpy as np
import pytest

from conftest import CORPUS
from specsurgery import io
from specsurgery.errors import NotFoundError
from specsurgery.mil import program as P


@pytest.fixture(scope="module")
def pkg():
    return io.load(CORPUS / "generated" / "shared_backbone_classifier.mlpackage")


@pytest.mark.corpus
def test_function_block_and_maps(pkg):
    name, fn = P.get_function(pkg.spec)
    assert name == "main"
    block = P.main_block(fn)
    prod = P.producers(block)
    cons = P.consumers(block)
    assert prod["image__scaled__"].type == "mul"
    assert [op.type for op in cons["image"]] == ["mul"]
    assert all(n in prod for n in block.outputs)
    with pytest.raises(NotFoundError, match="unknown function.*'mian' \(did you mean 'main'"):
        P.get_function(pkg.spec, "mian")


@pytest.mark.corpus
def test_value_types_and_consts(pkg):
    _, fn = P.get_function(pkg.spec)
    assert P.describe_value_type(fn.inputs[0].type) == "tensor<float32,[1,3,64,64]>"
    block = P.main_block(fn)
    consts = {op.outputs[0].name: P.const_value(op, pkg) for op in block.operations if op.type == "const"}
    assert consts["const_0_to_fp16"].dtype == np.float16 and consts["const_0_to_fp16"].ndim == 4
    assert consts["input_1_pad_type_0"].reshape(-1)[0] == "custom"


@pytest.mark.parametrize("arr", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int32),
                                 np.array(3.5, np.float16), np.array([True, False]), np.array("fp16")])
def test_numpy_value_round_trip(arr):
    back = P.immediate_to_numpy(P.numpy_to_value(arr))
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
