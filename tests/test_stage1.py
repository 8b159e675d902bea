"""Tests of crescade.engine.stage1: centroids, assignment, shrunk accuracy, cluster means, escalation ladders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crescade.common.errors import ConfigError
from crescade.engine.stage1 import assign, cluster_means, efficient_ladder, fit_centroids, shrunk_accuracy

nan = np.nan


def test_shrunk_accuracy_by_hand() -> None:
    correct = np.array([[1.0, 0.0], [0.0, nan], [1.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    acc, counts, glob = shrunk_accuracy(correct, labels, n_clusters=3, strength=2.0)
    # global accuracy ignores NaN: model 0 3/4, model 1 1/3
    np.testing.assert_allclose(glob, [0.75, 1 / 3])
    np.testing.assert_array_equal(counts, [[2, 1], [2, 2], [0, 0]])
    expected = np.array([
        [(1 + 2 * 0.75) / (2 + 2), (0 + 2 * (1 / 3)) / (1 + 2)],
        [(2 + 2 * 0.75) / (2 + 2), (1 + 2 * (1 / 3)) / (2 + 2)],
        [0.75, 1 / 3],  # an empty cluster falls back to the global accuracy
    ])
    np.testing.assert_allclose(acc, expected)
    assert np.all(np.isfinite(acc))


def test_shrunk_accuracy_limits() -> None:
    correct = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    raw, _, _ = shrunk_accuracy(correct, labels, 2, 0.0)
    np.testing.assert_allclose(raw, [[0.5, 0.0], [1.0, 1.0]])
    heavy, _, glob = shrunk_accuracy(correct, labels, 2, 1e9)
    np.testing.assert_allclose(heavy, np.vstack([glob, glob]), atol=1e-6)


def test_shrunk_accuracy_model_without_records_gets_a_neutral_prior() -> None:
    correct = np.array([[1.0, nan], [0.0, nan]])
    acc, counts, glob = shrunk_accuracy(correct, np.array([0, 0]), 1, 1.0)
    assert glob[1] == 0.5
    assert counts[0, 1] == 0
    assert acc[0, 1] == pytest.approx(0.5)


def test_cluster_means_ignore_nan_and_fall_back_to_global() -> None:
    values = np.array([[1.0, nan], [3.0, 4.0], [5.0, 6.0]])
    labels = np.array([0, 0, 1])
    means = cluster_means(values, labels, 3)
    np.testing.assert_allclose(means, [[2.0, 4.0], [5.0, 6.0], [3.0, 5.0]])


def test_fit_centroids_and_assign() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(4)[:3]
    x = np.vstack([c + 0.05 * rng.standard_normal((20, 4)) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cents = fit_centroids(x, 3, random_state=0)
    assert cents.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0)
    labels = assign(x, cents)
    assert labels.dtype == np.int64
    # each true group maps to one cluster, and the three groups to three different clusters
    groups = [set(labels[i * 20:(i + 1) * 20].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups)
    assert len(set.union(*groups)) == 3
    one = fit_centroids(x, 1)
    assert one.shape == (1, 4)
    assert fit_centroids(x[:2], 5).shape[0] == 2  # k is capped at n
    with pytest.raises(ConfigError):
        fit_centroids(x, 0)


# --------------------------------------------------------------------------- ladders


def test_efficient_ladder_examples() -> None:
    acc = np.array([0.5, 0.7, 0.6, 0.9])
    cost = np.array([1.0, 3.0, 2.0, 10.0])
    assert efficient_ladder(0, acc, cost, 1) == [0]
    assert efficient_ladder(0, acc, cost, 2) == [0, 3]
    assert efficient_ladder(0, acc, cost, 3) == [0, 1, 3]  # the most accurate middle tier that fits
    assert efficient_ladder(2, acc, cost, 3) == [2, 1, 3]
    assert efficient_ladder(3, acc, cost, 3) == [3]  # already the most accurate
    assert efficient_ladder(1, acc, cost, 3) == [1, 3]  # model 2 is less accurate than model 1


def test_efficient_ladder_skips_middle_tiers_as_expensive_as_the_best() -> None:
    acc = np.array([0.5, 0.8, 0.9])
    cost = np.array([1.0, 10.0, 10.0])
    assert efficient_ladder(0, acc, cost, 3) == [0, 2]


def test_efficient_ladder_tied_accuracy_does_not_escalate() -> None:
    # "Later tiers are more accurate than every tier before them": with model 1 as accurate as the
    # most accurate model 0, there is no stronger tier to escalate to.
    acc = np.array([0.8, 0.8])
    cost = np.array([1.0, 5.0])
    ladder = efficient_ladder(1, acc, cost, 2)
    assert all(acc[b] > acc[a] for a, b in itertools.pairwise(ladder))


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 6),
    max_depth=st.integers(1, 3),
)
def test_efficient_ladder_properties(data: st.DataObject, m: int, max_depth: int) -> None:
    # distinct accuracies (ties are covered by the test above)
    acc = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=m, max_size=m, unique=True)))
    cost = np.array(data.draw(st.lists(st.floats(0.0, 100.0), min_size=m, max_size=m)))
    first = data.draw(st.integers(0, m - 1))
    ladder = efficient_ladder(first, acc, cost, max_depth)
    assert ladder[0] == first
    assert 1 <= len(ladder) <= max_depth
    assert len(set(ladder)) == len(ladder)
    assert all(0 <= j < m for j in ladder)
    if max_depth >= 2:
        assert ladder[-1] == int(np.argmax(acc))  # ends at the most accurate model
    # strictly increasing accuracy along the ladder
    assert all(acc[b] > acc[a] for a, b in itertools.pairwise(ladder))
    # middle tiers are cheaper than the last tier
    assert all(cost[j] < cost[ladder[-1]] for j in ladder[1:-1])
