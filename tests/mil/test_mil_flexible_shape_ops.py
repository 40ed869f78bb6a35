"""ct.convert builds shape vectors by concatenating scalars (``torch.ones(T, T)``
with T read from a flexible input): the MIL runtime must treat them as length-1."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from specsurgery.convert import Range, from_torch  # noqa: E402
from specsurgery.runtime import predict  # noqa: E402


class CausalMix(torch.nn.Module):
    def forward(self, x):
        t = x.shape[1]
        return torch.tril(torch.ones(t, t)) @ x


def test_concat_of_scalars_from_a_flexible_length():
    pkg = from_torch(CausalMix().eval(), torch.rand(1, 5, 4), backend="mlprogram",
                     flexible={"x": (1, Range(1, 16), 4)})
    ops = [op.type for block in pkg.spec.mlProgram.functions["main"].block_specializations.values()
           for op in block.operations]
    assert "concat" in ops and "fill" in ops  # the shape is built at run time
    for length in (3, 9):
        x = torch.rand(1, length, 4)
        got = next(iter(predict(pkg, {"x": x.numpy()}).values()))
        np.testing.assert_allclose(got, CausalMix()(x).numpy(), rtol=1e-5, atol=1e-5)
