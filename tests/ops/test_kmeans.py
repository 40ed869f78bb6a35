"""The 1-D k-means: optimal on small inputs (checked against a brute-force
dynamic programme), near-optimal and deterministic on large ones."""

from __future__ import annotations

import numpy as np
import pytest

from specsurgery.errors import SpecSurgeryError
from specsurgery.ops.compress.kmeans import kmeans1d, lut_quantize, sse_of


def brute_force_sse(values, k, weights=None):
    """Least weighted SSE of k contiguous groups of the sorted values, O(k n^2)."""
    order = np.argsort(values, kind="stable")
    x = np.asarray(values, dtype=np.float64)[order]
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    n = x.size
    P0 = np.concatenate(([0.0], np.cumsum(w)))
    P1 = np.concatenate(([0.0], np.cumsum(w * x)))
    P2 = np.concatenate(([0.0], np.cumsum(w * x * x)))

    def cost(a, b):
        s0, s1 = P0[b] - P0[a], P1[b] - P1[a]
        return 0.0 if s0 == 0 else max(P2[b] - P2[a] - s1 * s1 / s0, 0.0)

    D = np.full((k + 1, n + 1), np.inf)
    D[0, 0] = 0.0
    for j in range(1, k + 1):
        for i in range(1, n + 1):
            D[j, i] = min(D[j - 1, m] + cost(m, i) for m in range(i))
    return float(D[1:, n].min())


@pytest.mark.parametrize("trial", range(12))
def test_optimal_on_small_inputs(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(3, 50))
    values = rng.standard_normal(n) * rng.uniform(0.01, 10)
    if trial % 3 == 0:  # duplicates
        values = np.round(values, 1)
    k = int(rng.integers(1, 9))
    result = kmeans1d(values, k)
    assert result.sse == pytest.approx(brute_force_sse(values, k), rel=1e-9, abs=1e-12)
    # labels and centroids agree with the reported error
    assert sse_of(values, result.centroids, result.labels) == pytest.approx(result.sse, rel=1e-9, abs=1e-12)


def test_optimal_with_weights():
    rng = np.random.default_rng(7)
    values = rng.laplace(size=30)
    weights = rng.integers(1, 5, size=30).astype(float)
    result = kmeans1d(values, 4, weights=weights)
    assert result.sse == pytest.approx(brute_force_sse(values, 4, weights), rel=1e-9)


def test_clusters_are_contiguous_and_nearest():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(5000).astype(np.float32)
    r = kmeans1d(values, 8)
    c = r.centroids
    assert np.all(np.diff(c) > 0)
    nearest = np.argmin(np.abs(values[:, None].astype(np.float64) - c[None, :]), axis=1)
    assert np.mean(nearest == r.labels) > 0.999  # ties at midpoints only


def test_large_input_reaches_the_optimum():
    """The atom path (values grouped into runs, DP, Lloyd, DP refinement
    around the boundaries) lands within 1e-5 of the exact optimum that the DP
    finds on every unique value."""
    rng = np.random.default_rng(11)
    values = rng.standard_t(4, size=20000).astype(np.float32)
    uniq, counts = np.unique(values, return_counts=True)
    exact = kmeans1d(uniq, 8, weights=counts, max_atoms=uniq.size)
    assert exact.method == "dp-exact"
    for atoms in (256, 1024):
        approx = kmeans1d(values, 8, max_atoms=atoms, refine=True)
        assert approx.method == "dp-atoms"
        assert exact.sse * (1 - 1e-12) <= approx.sse <= exact.sse * (1 + 1e-5)


def test_deterministic_and_seeded():
    rng = np.random.default_rng(5)
    values = rng.standard_normal(30000).astype(np.float32)
    a, b = kmeans1d(values, 16), kmeans1d(values, 16, seed=123)
    assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.labels, b.labels)
    p1 = kmeans1d(values, 16, method="kmeans++", seed=1)
    p2 = kmeans1d(values, 16, method="kmeans++", seed=1)
    assert np.array_equal(p1.centroids, p2.centroids)
    # the DP start is never worse than a k-means++ start
    assert a.sse <= p1.sse * (1 + 1e-9)


def test_fewer_unique_values_than_clusters():
    values = np.array([1.0, 1.0, 2.0, 5.0, 5.0, 5.0], dtype=np.float32)
    r = kmeans1d(values, 16)
    assert r.sse == 0.0 and r.k == 3
    table, codes = lut_quantize(values, 4)
    assert table.shape == (16,) and codes.dtype == np.uint8
    assert np.array_equal(table[codes], values)


def test_lut_quantize_shapes():
    values = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    table, codes = lut_quantize(values, 2)
    assert table.dtype == np.float32 and table.size == 4
    assert codes.shape == values.shape and codes.max() < 4


@pytest.mark.parametrize("bad, match", [
    (dict(values=[1.0, np.nan], k=2), "NaN"),
    (dict(values=[], k=2), "empty"),
    (dict(values=[1.0, 2.0], k=0), "k >= 1"),
    (dict(values=[1.0, 2.0], k=2, method="magic"), "unknown k-means method"),
])
def test_bad_input(bad, match):
    with pytest.raises(SpecSurgeryError, match=match):
        kmeans1d(**bad)


def test_lut_bits_range():
    with pytest.raises(SpecSurgeryError, match="1 to 8 bits"):
        lut_quantize([1.0, 2.0], 9)


def test_float16_tensor_counts_bits_and_matches_float32():
    rng = np.random.default_rng(4)
    half = (rng.standard_normal(200_000) * 0.05).astype(np.float16)
    a = kmeans1d(half, 16)
    assert a.method.endswith("+float16")
    b = kmeans1d(half.astype(np.float32), 16)
    assert a.sse == pytest.approx(b.sse, rel=1e-6)
    assert sse_of(half, a.centroids, a.labels) == pytest.approx(a.sse, rel=1e-9)
    assert a.labels.shape == half.shape
