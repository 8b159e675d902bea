"""End to end on the real recorded outcomes in ../shared/data: fit on train, replay on test.

These assert behaviour that must hold on real data (not the benchmark targets, which live in
benchmarks/): the knob is honoured with margin, the cascade is cheaper than always-strongest, the
artifact round-trips, pool changes work, and a file without responses still calibrates.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from crescade import Cascade, Outcomes, load_prices

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def prices():  # type: ignore[no-untyped-def]
    return load_prices(DATA / "prices.json")


def _strongest(c: Cascade, test: Outcomes) -> tuple[float, float]:
    j = test.models.index(c.models_[c.strongest_])
    return float(test.correct[:, j].mean()), float(test.cost[:, j].mean())


def test_gsm8k_keeps_quality_at_lower_cost(prices, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = Outcomes.load(DATA / "routellm-gsm8k.csv.gz", prices=prices)
    train, test = data.split("train"), data.split("test")
    c = Cascade(quality_target=0.97, progress=False).fit(train, prices)
    acc, cost = _strongest(c, test)
    s = c.replay(test).summary()
    assert s["accuracy"] >= 0.95 * acc  # 97% asked; allow test noise
    assert s["cost_per_query_usd"] < 0.8 * cost
    assert 0 < s["escalation_rate"] < 1  # the gate is used, not bypassed
    c.save(tmp_path / "a")
    back = Cascade.load(tmp_path / "a")
    np.testing.assert_array_equal(back.replay(test).model, c.replay(test).model)


def test_routerbench_multi_model_and_pool_changes(prices) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UserWarning, match="dropped 8"):
        data = Outcomes.load(DATA / "routerbench-3task.csv.gz", prices=prices, incomplete="drop")
    train, test = data.split("train"), data.split("test")
    c = Cascade(quality_target=0.97, n_clusters=16, progress=False).fit(train, prices)
    acc, cost = _strongest(c, test)
    s = c.replay(test).summary()
    assert s["accuracy"] >= 0.95 * acc and s["cost_per_query_usd"] < 0.7 * cost
    routed = {c.models_[lad[0]] for lad in c.ladders_}
    assert len(routed) >= 2  # clusters really are served by different models
    gone = next(iter(routed - {c.models_[c.strongest_]}))
    smaller = c.remove_model(gone)
    assert gone not in {m for p in smaller.plan_batch(test.prompts[:200]) for m in p.ladder}
    np.testing.assert_array_equal(smaller.centroids_, c.centroids_)  # nothing refitted
    assert smaller.qe_ is c.qe_
    # add it back from records on half of the calibration prompts only
    half = train.select_models([gone]).subset(np.arange(0, train.n_prompts, 2))
    back = smaller.add_model(gone, half, prices[gone])
    assert gone in back.models_ and back.qe_ is c.qe_
    assert back.replay(test).summary()["accuracy"] >= 0.95 * acc


def test_mmlu_without_responses_calibrates(prices) -> None:  # type: ignore[no-untyped-def]
    data = Outcomes.load(DATA / "routellm-mmlu.csv.gz", prices=prices)
    train, test = data.split("train"), data.split("test")
    c = Cascade(quality_target=0.97, n_clusters=16, progress=False).fit(train, prices)
    acc, cost = _strongest(c, test)
    s = c.replay(test).summary()
    assert s["accuracy"] >= 0.95 * acc and s["cost_per_query_usd"] < 0.9 * cost


def test_higher_target_never_cheaper_on_real_data(prices) -> None:  # type: ignore[no-untyped-def]
    data = Outcomes.load(DATA / "routellm-gsm8k.csv.gz", prices=prices)
    c = Cascade(quality_target=0.9, progress=False).fit(data.split("train"), prices)
    costs = [c.retarget(quality_target=q).expected_["cost_ratio"] for q in np.arange(0.85, 1.0001, 0.01)]
    assert all(b >= a for a, b in itertools.pairwise(costs))
