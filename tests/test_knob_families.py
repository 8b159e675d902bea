"""The knob's safety net: plan families chosen on out-of-fold data, the whole range, small data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from synthetic_records import make_cascade

from crescade import Cascade, ConfigError, Outcomes
from crescade.engine.calibrate import MIN_CLUSTER_SIZE
from crescade.engine.cascade import QE_C_GRID, SHRINKAGE_GRID

TARGETS = (0.80, 0.90, 0.95, 0.97, 0.98, 0.99, 1.0)


@pytest.mark.parametrize("target", TARGETS)
def test_chosen_family_is_never_dominated_out_of_fold(cascade: Cascade, target: float) -> None:
    """Property: no family of plans (full cascade, routing only, any single model) meets the target more
    cheaply on the honest (cross-fitted) calibration curves than the one chosen."""
    e = cascade.retarget(quality_target=target).expected_
    families = e["families"]
    assert set(families) == {"cascade", "route", *(f"single:{m}" for m in cascade.models_)}
    assert e["family"] in families and e["target_met"]
    chosen = families[e["family"]]
    assert (chosen["retention"], chosen["cost_ratio"]) == (e["retention"], e["cost_ratio"])
    assert chosen["retention"] >= target - 1e-9
    for name, f in families.items():
        if f["retention"] >= target - 1e-9:
            assert chosen["cost_ratio"] <= f["cost_ratio"] + 1e-12, (name, f, e["family"], chosen)


@pytest.mark.parametrize("budget", (0.05, 0.2, 0.5, 1.0))
def test_budget_mode_picks_the_most_accurate_family_within_budget(cascade: Cascade, budget: float) -> None:
    e = cascade.retarget(cost_target=budget).expected_
    chosen = e["families"][e["family"]]
    assert chosen["cost_ratio"] <= budget + 1e-9
    for f in e["families"].values():
        if f["cost_ratio"] <= budget + 1e-9:
            assert chosen["retention"] >= f["retention"] - 1e-12


def test_full_retention_is_always_reachable(cascade: Cascade, test_set: Outcomes) -> None:
    """quality_target=1.0 is met on calibration data by construction (the strongest model alone is a candidate)."""
    e = cascade.retarget(quality_target=1.0).expected_
    assert e["target_met"] and e["retention"] >= 1.0 - 1e-9
    res = cascade.retarget(quality_target=1.0).replay(test_set)
    strong = float(np.mean(test_set.correct[:, cascade.strongest_]))
    assert float(np.mean(res.correct)) >= strong - 0.05


@pytest.mark.parametrize("kw", [{"quality_target": 1.01}, {"quality_target": 1.5}, {"quality_target": -0.1},
                                {"quality_target": 0.0}, {"quality_target": None, "cost_target": 0.0}])
def test_targets_out_of_range_are_clear_errors(cascade: Cascade, kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"quality_target must be a fraction in \(0, 1\]|cost_target must be"):
        cascade.retarget(**kw)


def test_tiny_data_works_or_says_it_is_too_small(train: Outcomes) -> None:
    with pytest.raises(ConfigError, match=r"too little data to calibrate: 9 prompts"):
        Cascade(progress=False).fit(train.subset(np.arange(9)))
    c = Cascade(progress=False).fit(train.subset(np.arange(12)))
    assert c.n_clusters_ == 1
    assert c.expected_["target_met"] and c.expected_["family"] in c.expected_["families"]
    assert c.plan("anything at all").ladder  # it serves


def test_number_of_clusters_follows_the_data_size(train: Outcomes) -> None:
    n = 3 * MIN_CLUSTER_SIZE + 5
    c = Cascade(cluster_grid=(1, 2, 3, 4, 8), n_folds=3, progress=False).fit(train.subset(np.arange(n)))
    tried = [(r["space"], r["n_clusters"]) for r in c.grid_report_]
    # one cluster is the same plan in either space, so it is tried once
    assert tried == [("embedding", 1), ("embedding", 2), ("embedding", 3), ("profile", 2), ("profile", 3)]
    assert (c.space_, c.n_clusters_) in tried
    # a fixed n_clusters is the user's choice and is kept
    fixed = make_cascade(n_clusters=4).fit(train.subset(np.arange(n)))
    assert fixed.n_clusters_ == 4


def test_knob_is_monotone_across_families(cascade: Cascade) -> None:
    targets = np.round(np.arange(0.5, 1.0001, 0.01), 3)
    costs = [cascade.retarget(quality_target=q).expected_["cost_ratio"] for q in targets]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(costs))


def test_auto_shrinkage_follows_how_real_the_cluster_differences_are() -> None:
    rng = np.random.default_rng(0)
    n, k = 2000, 8
    labels = np.arange(n) % k
    folds = rng.permutation(n) % 5
    c = Cascade(progress=False)
    same = (rng.random((n, 1)) < 0.6).astype(float)  # every cluster alike: their differences are noise
    apart = (rng.random(n) < np.where(labels % 2 == 0, 0.1, 0.9)).astype(float)[:, None]  # truly different
    assert c._choose_shrinkage(labels, k, same, folds) >= 30.0
    assert c._choose_shrinkage(labels, k, apart, folds) <= 3.0
    assert Cascade(shrinkage=5.0)._choose_shrinkage(labels, k, apart, folds) == 5.0  # a number is kept


def test_fitted_shrinkage_is_reported_and_persisted(train: Outcomes, tmp_path: Path) -> None:
    c = Cascade(0.95, cluster_grid=(1, 3), n_folds=3, progress=False).fit(train)
    assert c.shrinkage_ in SHRINKAGE_GRID
    chosen = next(r for r in c.grid_report_ if (r["space"], r["n_clusters"]) == (c.space_, c.n_clusters_))
    assert chosen["shrinkage"] == c.shrinkage_
    c.save(tmp_path / "c")
    assert Cascade.load(tmp_path / "c").shrinkage_ == c.shrinkage_
    fixed = Cascade(0.95, shrinkage=7.0, cluster_grid=(1, 3), n_folds=3, progress=False).fit(train)
    assert fixed.shrinkage_ == 7.0 and {r["shrinkage"] for r in fixed.grid_report_} == {7.0}
    with pytest.raises(ConfigError, match="shrinkage must be 'auto' or a finite number >= 0"):
        Cascade(shrinkage="lots").fit(train)  # type: ignore[arg-type]


def test_quality_estimator_capacity_is_chosen_out_of_fold(train: Outcomes, tmp_path: Path) -> None:
    c = Cascade(0.95, cluster_grid=(1, 3), n_folds=3, progress=False).fit(train)
    assert c.qe_C_ in QE_C_GRID and c.qe_report()["C"] == c.qe_C_
    assert c.qe_C_ == c.qe_.C  # the final estimator is fitted with the chosen value
    c.save(tmp_path / "c")
    assert Cascade.load(tmp_path / "c").qe_C_ == c.qe_C_
    fixed = Cascade(0.95, qe_C=0.5, cluster_grid=(1, 3), n_folds=3, progress=False).fit(train)
    assert fixed.qe_C_ is None and fixed.qe_.C == 0.5 and fixed.qe_report()["C"] == 0.5
    with pytest.raises(ConfigError, match="qe_C must be 'auto' or a finite number > 0"):
        Cascade(qe_C=0.0).fit(train)
