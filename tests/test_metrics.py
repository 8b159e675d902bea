"""Tests of crescade.evaluation.metrics: hand-computed examples, properties, pandas agreement, error cases."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from crescade.common.errors import ConfigError
from crescade.evaluation.metrics import (
    aiq,
    apgr,
    auc,
    bootstrap_ci,
    bootstrap_indices,
    cost_at_quality,
    cpt,
    latency_summary,
    ndch,
    oracle,
    pgr,
    routellm_points,
    zero_router,
)

# ------------------------------------------------------------------------------------ PGR


def test_pgr_hand() -> None:
    assert pgr(60.0, 50.0, 70.0) == pytest.approx(0.5)
    assert pgr(50.0, 50.0, 70.0) == 0.0  # the weak model itself
    assert pgr(70.0, 50.0, 70.0) == 1.0  # the strong model itself
    assert pgr(0.75, 0.5, 0.7) == pytest.approx(1.25)  # beating the strong model is allowed


def test_pgr_errors() -> None:
    with pytest.raises(ConfigError, match="acc_strong"):
        pgr(0.6, 0.5, 0.5)
    with pytest.raises(ConfigError, match="acc"):
        pgr(float("nan"), 0.5, 0.7)


# ------------------------------------------------------------------------------------ RouteLLM points


def test_routellm_points_hand() -> None:
    # scores 0.1..0.5, num_results=2: edges at positions (n-1)·i/2 = 0, 2, 4 -> 0.1, 0.3, 0.5.
    #   >= 0.1: all 5 strong (100 %): strong correct on 4/5 -> 80 %
    #   >= 0.3: prompts 2,3,4 strong (60 %): weak right on 0,1, strong right on 2,3 -> 4/5 = 80 %
    #   >  0.5: nobody strong (0 %): weak correct on 2/5 -> 40 %
    score = [0.1, 0.2, 0.3, 0.4, 0.5]
    weak = [True, True, False, False, False]
    strong = [True, True, True, True, False]
    sp, acc = routellm_points(score, weak, strong, num_results=2)
    np.testing.assert_allclose(sp, [0.0, 60.0, 100.0])
    np.testing.assert_allclose(acc, [40.0, 80.0, 80.0])


def test_routellm_points_interpolated_edge() -> None:
    # n=4, q=2: middle edge at position 1.5 -> (0.2 + 0.3) / 2 = 0.25 -> prompts 2,3 strong (50 %).
    sp, acc = routellm_points([0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0], [0, 1, 1, 1], num_results=2)
    np.testing.assert_allclose(sp, [0.0, 50.0, 100.0])
    np.testing.assert_allclose(acc, [25.0, 75.0, 75.0])


def test_routellm_points_ties_are_kept_gracefully() -> None:
    # All scores equal: every edge is 0.5 (pd.qcut would raise). All but the last edge use >= -> 100 %,
    # the last uses > -> 0 %. Repeated points, no error, and the metrics still work on them.
    sp, acc = routellm_points([0.5] * 6, [0, 0, 1, 1, 1, 0], [1] * 6, num_results=4)
    assert sp.shape == (5,)
    np.testing.assert_allclose(sp, [0.0, 100.0, 100.0, 100.0, 100.0])
    np.testing.assert_allclose(acc, [50.0, 100.0, 100.0, 100.0, 100.0])
    assert apgr(sp, acc, 50.0, 100.0) == pytest.approx(0.5)


def _routellm_reference(score: np.ndarray, weak: np.ndarray, strong: np.ndarray, q: int) -> list[tuple]:
    """RouteLLM's evaluation loop rewritten directly on pandas.qcut."""
    pd = pytest.importorskip("pandas")
    _, thresholds = pd.qcut(score, q, retbins=True, duplicates="drop")
    out = []
    for i, t in enumerate(thresholds):
        sel = score >= t if i != len(thresholds) - 1 else score > t
        out.append((float(sel.mean() * 100), float(np.where(sel, strong, weak).mean() * 100)))
    return sorted(out)


@pytest.mark.parametrize("seed", range(20))
def test_routellm_points_agrees_with_pandas_qcut(seed: int) -> None:
    # n − 1 coprime with q: no edge falls exactly on a sample position, where pandas' float quantile
    # levels can land an ulp above the tied sample (we compute positions exactly; see the docstring).
    rng = np.random.default_rng(seed)
    q = int(rng.choice([5, 10, 20]))
    n = int(rng.choice([52, 102, 398]))
    assert math.gcd(n - 1, q) == 1
    score = rng.random(n)
    weak, strong = rng.random(n) < 0.5, rng.random(n) < 0.8
    sp, acc = routellm_points(score, weak, strong, num_results=q)
    assert sp.shape == acc.shape == (q + 1,)
    assert np.all(np.diff(sp) >= 0)
    assert sp[0] == 0.0 and sp[-1] == 100.0
    mine = sorted(zip(sp.tolist(), acc.tolist(), strict=True))
    ref = _routellm_reference(score, weak, strong, q)
    np.testing.assert_allclose(np.array(mine), np.array(ref))


@pytest.mark.parametrize("seed", range(10))
def test_routellm_points_with_ties_contains_pandas_drop_points(seed: int) -> None:
    # With tied scores pd.qcut needs duplicates="drop"; every point it yields is one of ours.
    rng = np.random.default_rng(100 + seed)
    n, q = 61, 7  # gcd(60, 7) == 1
    score = rng.integers(0, 4, n) / 4.0
    weak, strong = rng.random(n) < 0.4, rng.random(n) < 0.7
    sp, acc = routellm_points(score, weak, strong, num_results=q)
    mine = {(round(a, 9), round(b, 9)) for a, b in zip(sp.tolist(), acc.tolist(), strict=True)}
    ref = {(round(a, 9), round(b, 9)) for a, b in _routellm_reference(score, weak, strong, q)}
    assert ref <= mine


def test_routellm_points_errors() -> None:
    with pytest.raises(ConfigError, match="num_results"):
        routellm_points([0.1, 0.2], [1, 0], [1, 1], num_results=0)
    with pytest.raises(ConfigError, match="strong_score"):
        routellm_points([0.1, 0.2, 0.3], [1, 0], [1, 1])
    with pytest.raises(ConfigError, match="correct_strong"):
        routellm_points([0.1, 0.2], [1, 0], [1, 1, 0])
    with pytest.raises(ConfigError, match="strong_score"):
        routellm_points([0.1, float("nan")], [1, 0], [1, 1])
    with pytest.raises(ConfigError, match="strong_score"):
        routellm_points([], [], [])


# ------------------------------------------------------------------------------------ AUC, APGR, CPT


def test_auc_hand_and_unsorted_input() -> None:
    # Trapezoid over fractions: [0,0.5] (40+80)/2·0.5 = 30, [0.5,1] (80+90)/2·0.5 = 42.5 -> 72.5.
    assert auc([0, 50, 100], [40, 80, 90]) == pytest.approx(72.5)
    assert auc([100, 0, 50], [90, 40, 80]) == pytest.approx(72.5)


def test_apgr_linear_mixture_is_half() -> None:
    # The all-weak/all-strong mixture is the line acc(c) = w + c·(s − w), c in [0, 1]; its AUC is
    # (w + s)/2, while AUC_weak = w and AUC_strong = s, so APGR = ((w+s)/2 − w)/(s − w) = 1/2,
    # however many points sample the line.
    w, s = 55.0, 82.0
    for k in (2, 3, 11):
        sp = np.linspace(0.0, 100.0, k)
        assert apgr(sp, w + sp / 100.0 * (s - w), w, s) == pytest.approx(0.5)


def test_apgr_hand() -> None:
    # Curve (0,40) (50,80) (100,90): AUC = 72.5; weak 40 -> 40, strong 90 -> 90; APGR = 32.5/50 = 0.65.
    assert apgr([0, 50, 100], [40, 80, 90], 40.0, 90.0) == pytest.approx(0.65)


def test_apgr_errors() -> None:
    with pytest.raises(ConfigError, match="acc_strong"):
        apgr([0, 100], [50, 60], 50.0, 50.0)
    with pytest.raises(ConfigError, match="strong_pct"):
        apgr([30, 30], [50, 60], 50.0, 60.0)
    with pytest.raises(ConfigError, match="same length"):
        apgr([0, 50, 100], [50, 60], 50.0, 60.0)


def test_cpt_hand_non_monotone() -> None:
    # strong %:  0   25   50   75   100      weak 50, strong 80
    # accuracy: 50   70   60   75    80      running max: 50 70 70 75 80
    # x=0.5 -> target 65: first crossing between (0,50) and (25,70): 15/20·25 = 18.75
    # x=0.8 -> target 74: between (50,70) and (75,75) on the running max: 50 + 4/5·25 = 70
    # x=0 -> 50 reached at the first point (0); x=1 -> 80 at 100.
    sp, acc = [0, 25, 50, 75, 100], [50, 70, 60, 75, 80]
    assert cpt(sp, acc, 50.0, 80.0, 0.5) == pytest.approx(18.75)
    assert cpt(sp, acc, 50.0, 80.0, 0.8) == pytest.approx(70.0)
    assert cpt(sp, acc, 50.0, 80.0, 0.0) == 0.0
    assert cpt(sp, acc, 50.0, 80.0, 1.0) == pytest.approx(100.0)
    assert cpt(sp[::-1], acc[::-1], 50.0, 80.0, 0.5) == pytest.approx(18.75)  # order-free


def test_cpt_matches_np_interp_on_monotone_curve() -> None:
    sp = np.linspace(0, 100, 11)
    acc = 50 + 30 * np.sqrt(sp / 100)
    for x in (0.2, 0.5, 0.8, 0.95, 0.99):
        assert cpt(sp, acc, 50.0, 80.0, x) == pytest.approx(np.interp(50 + 30 * x, acc, sp))


def test_cpt_unreachable_is_nan_and_errors() -> None:
    assert math.isnan(cpt([0, 100], [50, 70], 50.0, 80.0, 0.99))
    with pytest.raises(ConfigError, match="x must"):
        cpt([0, 100], [50, 80], 50.0, 80.0, 50.0)  # percent instead of fraction


# ------------------------------------------------------------------------------------ NDCH, AIQ

# The 4-point router used below: (1, .5) (2, .55) (3, .8) (4, .7).
# Upper hull: (2, .55) lies under the chord (1,.5)-(3,.8) (0.65 at cost 2) -> dropped; (4, .7) is a
# hull vertex but past the maximum -> truncated. NDCH = (1, .5) -> (3, .8).
# AIQ on [0, 4]: 0 on [0,1] + (.5+.8)/2·2 = 1.3 on [1,3] + flat .8 on [3,4] -> 2.1 / 4 = 0.525.
# AIQ on [1, 3]: 1.3 / 2 = 0.65.  Cost to reach 0.65 on the hull: 1 + (.15/.3)·2 = 2.0;
# cheapest observed point with quality >= .65 is (3, .8) -> 3.
COSTS4, QUALS4 = [3.0, 1.0, 4.0, 2.0], [0.8, 0.5, 0.7, 0.55]


def test_ndch_hand() -> None:
    hx, hy = ndch(COSTS4, QUALS4)
    np.testing.assert_allclose(hx, [1.0, 3.0])
    np.testing.assert_allclose(hy, [0.5, 0.8])


def test_ndch_ties_and_degenerate() -> None:
    # Same cost: the best quality counts. Collinear middle point is not a vertex.
    hx, hy = ndch([1, 1, 2, 3], [0.2, 0.4, 0.5, 0.6])
    np.testing.assert_allclose(hx, [1, 3])
    np.testing.assert_allclose(hy, [0.4, 0.6])
    hx, hy = ndch([2.0], [0.3])
    np.testing.assert_allclose(hx, [2.0])
    np.testing.assert_allclose(hy, [0.3])
    # Cheapest point is also the best: the hull is that single point.
    hx, hy = ndch([1, 2, 3], [0.9, 0.5, 0.7])
    np.testing.assert_allclose(hx, [1.0])
    np.testing.assert_allclose(hy, [0.9])
    # Equal maximum at two costs: truncated at the cheaper one.
    hx, hy = ndch([1, 2, 3], [0.5, 0.9, 0.9])
    np.testing.assert_allclose(hx, [1, 2])


def _brute_hull_value(c: np.ndarray, q: np.ndarray, x: float) -> float:
    """Definition: the best of a point at cost x and every chord between two points spanning x."""
    best = q[c == x].max() if (c == x).any() else -np.inf
    for i, j in combinations(range(c.size), 2):
        (x1, y1), (x2, y2) = sorted([(c[i], q[i]), (c[j], q[j])])
        if x1 < x < x2:
            best = max(best, y1 + (y2 - y1) * (x - x1) / (x2 - x1))
    return float(best)


@pytest.mark.parametrize("seed", range(25))
def test_ndch_properties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    c = np.round(rng.random(n) * 10, 1)  # rounding creates cost ties
    q = rng.random(n)
    hx, hy = ndch(c, q)
    assert np.all(np.diff(hx) > 0)
    assert np.all(np.diff(hy) > 0)  # non-decreasing (strictly, collinear points removed)
    slopes = np.diff(hy) / np.diff(hx)
    assert np.all(np.diff(slopes) <= 1e-12)  # concave
    assert hx[0] == c.min() and hy[-1] == q.max()
    # On [cheapest, argmax], every point is on or under the hull and the hull equals the brute-force
    # upper envelope of chords at every observed cost.
    grid = np.unique(c[(c >= hx[0]) & (c <= hx[-1])])
    np.testing.assert_allclose(np.interp(grid, hx, hy), [_brute_hull_value(c, q, g) for g in grid])


def test_aiq_hand() -> None:
    assert aiq(COSTS4, QUALS4, 0.0, 4.0) == pytest.approx(0.525)
    assert aiq(COSTS4, QUALS4, 1.0, 3.0) == pytest.approx(0.65)
    # Only part of the interval: [2, 3] under the chord: (.65 + .8)/2 = 0.725.
    assert aiq(COSTS4, QUALS4, 2.0, 3.0) == pytest.approx(0.725)
    # Interval entirely left of the router's cheapest point counts as zero.
    assert aiq(COSTS4, QUALS4, 0.0, 0.5) == 0.0


def test_aiq_matches_routerbench_normalisation() -> None:
    # RouterBench: hull extended flat to the max last-vertex cost over routers, trapezoid from the
    # hull's own first point, divided by that max cost: c_min = 0, c_max = that max.
    other_hx, _ = ndch([2.0, 5.0], [0.4, 0.9])
    c_max = max(3.0, float(other_hx[-1]))  # = 5
    hx, hy = ndch(COSTS4, QUALS4)
    ext_x, ext_y = np.append(hx, c_max), np.append(hy, hy[-1])
    routerbench = float(np.sum(np.diff(ext_x) * (ext_y[1:] + ext_y[:-1]) / 2)) / c_max
    assert aiq(COSTS4, QUALS4, 0.0, c_max) == pytest.approx(routerbench)
    assert routerbench == pytest.approx((1.3 + 0.8 * 2) / 5)


def test_aiq_constant_curve_is_that_constant() -> None:
    assert aiq([1.0, 2.0, 3.0], [0.7, 0.7, 0.7], 1.0, 3.0) == pytest.approx(0.7)
    assert aiq([1.0, 2.5], [0.7, 0.7], 1.0, 10.0) == pytest.approx(0.7)


@pytest.mark.parametrize("seed", range(15))
def test_aiq_dominance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = rng.random(12) * 5 + 0.5
    q = rng.random(12)
    better_q = q + rng.random(12) * 0.2  # same costs, every point at least as good
    cheaper_c = c * (1 - rng.random(12) * 0.3)  # same qualities, every point at most as costly
    for lo, hi in ((0.0, 6.0), (1.0, 4.0)):
        base = aiq(c, q, lo, hi)
        assert aiq(c, better_q, lo, hi) >= base - 1e-12
        assert aiq(cheaper_c, q, lo, hi) >= base - 1e-12


def test_aiq_errors() -> None:
    with pytest.raises(ConfigError, match="c_max"):
        aiq(COSTS4, QUALS4, 2.0, 2.0)
    with pytest.raises(ConfigError, match="qualities"):
        aiq(COSTS4, QUALS4[:3], 0.0, 4.0)
    with pytest.raises(ConfigError, match="costs"):
        aiq([1.0, float("inf")], [0.1, 0.2], 0.0, 4.0)


def test_cost_at_quality_hand() -> None:
    assert cost_at_quality(COSTS4, QUALS4, 0.65) == pytest.approx(2.0)
    assert cost_at_quality(COSTS4, QUALS4, 0.65, hull=False) == 3.0
    assert cost_at_quality(COSTS4, QUALS4, 0.4) == 1.0
    assert cost_at_quality(COSTS4, QUALS4, 0.8) == pytest.approx(3.0)
    assert math.isnan(cost_at_quality(COSTS4, QUALS4, 0.81))
    assert math.isnan(cost_at_quality(COSTS4, QUALS4, 0.81, hull=False))


def test_zero_router_is_ndch_of_models() -> None:
    # Models (cost, acc): cheap (1, .6), mid (4, .7), big (10, .9). The chord cheap-big is .6 + .3·3/9 = .7
    # at cost 4: mid lies on it, so it is not a vertex: mixing cheap and big matches it.
    hx, hy = zero_router([10, 1, 4], [0.9, 0.6, 0.7])
    np.testing.assert_allclose(hx, [1, 10])
    np.testing.assert_allclose(hy, [0.6, 0.9])


# ------------------------------------------------------------------------------------ Oracle


def test_oracle_hand() -> None:
    correct = np.array(
        [
            [True, True, True],  # all right -> the cheapest model, 1 (cost 1)
            [True, False, True],  # 0 (cost 4) and 2 (cost 3) right -> cheapest correct is 2
            [False, False, False],  # nobody -> the cheapest model (1), counted wrong at its cost
            [False, False, True],  # only model 2
        ]
    )
    cost = np.array([[2.0, 1.0, 5.0], [4.0, 1.0, 3.0], [2.0, 1.0, 5.0], [2.0, 1.0, 5.0]])
    idx, ok, cst = oracle(correct, cost)
    np.testing.assert_array_equal(idx, [1, 2, 1, 2])
    np.testing.assert_array_equal(ok, [True, True, False, True])
    assert ok.dtype == bool
    np.testing.assert_allclose(cst, [1.0, 3.0, 1.0, 5.0])


def test_oracle_graded_scores_and_ties() -> None:
    # Highest score wins; equal scores at equal cost -> lowest index.
    idx, ok, cst = oracle([[0.2, 0.9, 0.9], [0.5, 0.5, 0.1]], [[1.0, 3.0, 2.0], [2.0, 2.0, 1.0]])
    np.testing.assert_array_equal(idx, [2, 0])
    np.testing.assert_allclose(ok, [0.9, 0.5])
    np.testing.assert_allclose(cst, [2.0, 2.0])


def test_oracle_errors() -> None:
    with pytest.raises(ConfigError, match="same shape"):
        oracle(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ConfigError, match="correct"):
        oracle(np.ones(3), np.ones(3))
    with pytest.raises(ConfigError, match="cost"):
        oracle(np.ones((2, 2)), [[1.0, np.nan], [1.0, 1.0]])


# ------------------------------------------------------------------------------------ bootstrap, latency


def test_bootstrap_indices_shape_and_determinism() -> None:
    a = bootstrap_indices(7, 50, seed=3)
    assert a.shape == (50, 7) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < 7
    np.testing.assert_array_equal(a, bootstrap_indices(7, 50, seed=3))
    assert not np.array_equal(a, bootstrap_indices(7, 50, seed=4))


def test_bootstrap_ci_matches_vectorised_indices() -> None:
    rng = np.random.default_rng(0)
    data = rng.random(40)
    lo, hi = bootstrap_ci(lambda idx: float(data[idx].mean()), 40, n_boot=500, alpha=0.1, seed=7)
    means = data[bootstrap_indices(40, 500, seed=7)].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert lo < data.mean() < hi


def test_bootstrap_ci_constant_and_nan() -> None:
    assert bootstrap_ci(lambda idx: 3.0, 5, n_boot=20) == (3.0, 3.0)
    lo, hi = bootstrap_ci(lambda idx: math.nan if 0 in idx else 1.0, 5, n_boot=50)
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_errors() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        bootstrap_ci(lambda idx: 0.0, 5, alpha=1.0)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci(lambda idx: 0.0, 5, n_boot=0)
    with pytest.raises(ConfigError, match="n must"):
        bootstrap_indices(0, 10)


def test_latency_summary_hand() -> None:
    # Non-NaN [1, 2, 3, 4]: p50 = 2.5; p95 at position 0.95·3 = 2.85 -> 3 + 0.85 = 3.85.
    s = latency_summary([1.0, 4.0, float("nan"), 2.0, 3.0])
    assert s == {"p50": pytest.approx(2.5), "p95": pytest.approx(3.85), "mean": pytest.approx(2.5), "n": 4}
    empty = latency_summary([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["p50"]) and math.isnan(empty["mean"])
    assert latency_summary([])["n"] == 0


def test_latency_summary_errors() -> None:
    with pytest.raises(ConfigError, match="values"):
        latency_summary([1.0, float("inf")])
    with pytest.raises(ConfigError, match="values"):
        latency_summary([1.0, -0.5])
    with pytest.raises(ConfigError, match="values"):
        latency_summary([[1.0, 2.0]])
