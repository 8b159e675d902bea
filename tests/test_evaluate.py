"""Tests of crescade.evaluation.evaluate and .baselines on small synthetic outcomes (2 topics, 3 models)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from crescade.common.errors import ConfigError, PoolError
from crescade.engine.records import Outcomes, Record
from crescade.evaluation.baselines import KnnRouter, LearnedRouter, mix_for_quality, random_mix, single_model
from crescade.evaluation.evaluate import POINT_METRICS, EvalReport, beats_baselines, evaluate
from crescade.evaluation.metrics import ndch

# accuracy per (model, topic) and $ per call: "small" is good at history, "mid" at math, "large" at both.
ACC = {"small": {"math": 0.25, "history": 0.85}, "mid": {"math": 0.85, "history": 0.35},
       "large": {"math": 0.92, "history": 0.92}}
PRICE = {"small": 1e-5, "mid": 1e-4, "large": 1e-3}
TOPIC_WORDS = {
    "math": ["compute", "sum", "product", "integer", "equation", "solve", "divide", "fraction", "algebra"],
    "history": ["king", "empire", "century", "war", "dynasty", "treaty", "revolution", "ancient", "battle"],
}


def _records(n: int = 200, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = "math" if i % 2 else "history"
        words = rng.choice(TOPIC_WORDS[topic], size=6)
        prompt = f"{topic} question {i}: " + " ".join(words) + f" {int(rng.integers(0, 50))}?"
        truth = "ABCD"[int(rng.integers(0, 4))]
        split = "test" if i % 10 >= 7 else "train"
        for model, acc in ACC.items():
            ok = bool(rng.random() < acc[topic])
            answer = truth if ok else "ABCD"[("ABCD".index(truth) + int(rng.integers(1, 4))) % 4]
            out_tok = int(rng.integers(5, 40))
            out.append(Record(
                prompt_id=f"p{i}", prompt=prompt, model=model, response=f"The answer is {answer}.",
                correct=float(ok), input_tokens=30, output_tokens=out_tok,
                cost_usd=PRICE[model] * (1 + out_tok / 40), task=topic, split=split))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[Outcomes, Outcomes]:
    o = Outcomes.from_records(_records())
    return o.split("train"), o.split("test")


@pytest.fixture(scope="module")
def report(data: tuple[Outcomes, Outcomes]) -> EvalReport:
    train, test = data
    return evaluate(train, test, params={"n_clusters": 2, "n_folds": 3},
                    sweep=np.round(np.arange(0.85, 1.0001, 0.02), 3), n_boot=200, progress=False,
                    name="synthetic")


# ------------------------------------------------------------------------------------ baselines


def test_knn_router_learns_topics(data: tuple[Outcomes, Outcomes]) -> None:
    train, test = data
    knn = KnnRouter(k=10).fit(train)
    assert knn.models_ == ["large", "mid", "small"] and knn.strongest_ == 0
    acc, cost = knn.estimate(test.prompts)
    assert acc.shape == cost.shape == (test.n_prompts, 3)
    is_math = np.array([t == "math" for t in test.tasks])
    # with a moderate λ, math goes to "mid" and history to "small" (cheap, accurate enough)
    (correct, spent, chosen), = knn.curve(test, [0.5])
    assert (chosen[is_math] == 1).mean() > 0.8 and (chosen[~is_math] == 2).mean() > 0.8
    assert correct.shape == spent.shape == (test.n_prompts,)
    # λ = 0 buys accuracy only; a huge λ always picks the cheapest model
    (_, _, c0), (_, _, c_big) = knn.curve(test, [0.0, 1e6])
    assert (c_big == 2).all() and spent.mean() < test.cost[:, 0].mean()
    assert set(np.unique(c0)) <= {0, 1, 2}
    lam = knn.calibrate(0.95)
    assert lam >= 0.0


def test_learned_router_learns_topics(data: tuple[Outcomes, Outcomes]) -> None:
    train, test = data
    router = LearnedRouter(C_grid=(0.1, 10.0), n_folds=3).fit(train)
    assert router.C_ in (0.1, 10.0)
    acc, cost = router.estimate(test.prompts)
    assert acc.shape == cost.shape == (test.n_prompts, 3) and ((acc > 0) & (acc < 1)).all()
    is_math = np.array([t == "math" for t in test.tasks])
    small = router.models_.index("small")
    assert acc[~is_math, small].mean() > acc[is_math, small].mean() + 0.2  # it learned where small is weak
    (_, _, chosen), = router.curve(test, [0.5])
    assert (chosen[~is_math] == small).mean() > 0.8 and (chosen[is_math] != small).mean() > 0.8
    oof, _ = router.loo_estimate()
    assert oof.shape == train.correct.shape
    assert router.calibrate(0.95) >= 0.0 and router.calibrate(0.5) >= router.calibrate(0.99)


def test_evaluate_reports_the_learned_router_up_to_always_strongest(report: EvalReport) -> None:
    learned = next(p for p in report.policies if p.name == "learned-router")
    assert learned.kind == "router" and learned.info["C"] > 0
    strongest = next(p for p in report.policies if p.kind == "single" and p.point["retention"] == 1.0)
    assert learned.curve[-1]["cost_ratio"] == pytest.approx(strongest.point["cost_ratio"])
    assert learned.cost_at[0.99] is not None  # the sweep reaches every level any single model reaches


def test_knn_router_errors(data: tuple[Outcomes, Outcomes]) -> None:
    train, test = data
    with pytest.raises(Exception, match="not fitted"):
        KnnRouter().estimate(["x"])
    with pytest.raises(ConfigError):
        KnnRouter(k=0).fit(train)
    with pytest.raises(PoolError):
        KnnRouter(k=5).fit(train).curve(test.select_models(["large", "mid"]), [0.0])


def test_single_model_and_mix(data: tuple[Outcomes, Outcomes]) -> None:
    _, test = data
    c, cost, j = single_model(test, 1)
    np.testing.assert_array_equal(cost, test.cost[:, 1])
    np.testing.assert_array_equal(c, test.correct[:, 1])
    assert (j == 1).all()
    mc, mk = random_mix(test, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(mc.mean(), test.correct[:, [0, 2]].mean())
    np.testing.assert_allclose(mk, test.cost[:, [0, 2]].mean(axis=1))
    with pytest.raises(ConfigError):
        random_mix(test, [0.5, 0.5, 0.5])
    # mixing weights on the hull reach the requested accuracy exactly (between two vertices)
    acc, cost = np.array([0.9, 0.6, 0.5]), np.array([1.0, 0.1, 0.01])
    w = mix_for_quality(acc, cost, 0.75)
    assert w @ acc == pytest.approx(0.75) and w.sum() == pytest.approx(1.0)
    assert mix_for_quality(acc, cost, 0.99)[0] == 1.0 and mix_for_quality(acc, cost, 0.1)[2] == 1.0


# ------------------------------------------------------------------------------------ evaluate


def test_report_structure(report: EvalReport) -> None:
    names = [p.name for p in report.policies]
    assert names[:4] == ["crescade", "stage1-only", "stage2-only", "knn"]
    assert {"large", "mid", "small", "zero-router", "oracle"} <= set(names)
    assert report.meta["strongest"] == "large" and report.meta["weak"] == "small"
    targets = report.meta["targets"]
    for p in report.policies:
        assert set(p.point) >= set(POINT_METRICS) and set(p.ci) == set(POINT_METRICS)
        assert set(p.cost_at) == set(p.cost_at_hull) == set(p.calibrated_at) == set(targets)
        assert set(p.cpt) == {50, 80, 95} and p.curve
        for t in targets:  # the NDCH is never more expensive than the cheapest observed point
            if not math.isnan(p.cost_at[t]):
                assert p.cost_at_hull[t] <= p.cost_at[t] + 1e-12
        assert 0.0 <= p.aiq <= p.aiq_anchored + 1e-12 <= 1.0 + 1e-12
    cres = report.policy("crescade")
    # one point per distinct plan of the 8 knob settings, labelled with the first setting that chose it
    knobs = [pt["knob"] for pt in cres.curve]
    sweep = np.round(np.arange(0.85, 1.0001, 0.02), 3).tolist()
    assert 1 <= len(knobs) <= 8 and knobs == sorted(set(knobs)) and set(knobs) <= set(sweep)
    assert knobs[0] == sweep[0] and cres.point["knob"] == 0.98
    fitted = report.cascade
    plans = [(tuple(c.first_), tuple(c.tau_index_), tuple(c.general_ladder_), c.general_tau_index_)
             for c in (fitted.retarget(quality_target=q) for q in sweep)]
    assert len(set(plans)) == len(knobs)
    assert report.policy("large").point["retention"] == pytest.approx(1.0)
    assert report.policy("large").point["cost_ratio"] == pytest.approx(1.0)
    # the strongest model alone reaches every target below 100 % at cost ratio <= 1
    assert all(report.policy("large").cost_at[t] == pytest.approx(1.0) for t in targets)
    table = report.table()
    assert len(table.splitlines()) == len(report.policies) + 4
    assert "c@97" in table and "APGR" in table


def test_oracle_dominates(report: EvalReport) -> None:
    best = report.policy("oracle").point["accuracy"]
    for p in report.policies:
        assert best >= p.point["accuracy"] - 1e-12, p.name
        assert all(best >= c["accuracy"] - 1e-12 for c in p.curve), p.name


def test_single_models_under_zero_router_hull(report: EvalReport) -> None:
    zero = report.policy("zero-router")
    hx, hy = ndch([c["cost_ratio"] for c in zero.curve], [c["accuracy"] for c in zero.curve])
    for p in report.policies:
        if p.kind == "single":
            x, y = p.point["cost_ratio"], p.point["accuracy"]
            assert y <= np.interp(x, hx, hy) + 1e-9, p.name


def test_cis_bracket_points(report: EvalReport) -> None:
    for p in report.policies:
        for k in POINT_METRICS:
            lo, hi = p.ci[k]
            assert lo - 1e-9 <= p.point[k] <= hi + 1e-9, (p.name, k)


def test_to_dict_is_strict_json(report: EvalReport) -> None:
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["meta"]["conventions"]["aiq"]
    assert set(back["policies"][0]["cost_at"]) == {"0.95", "0.97", "0.98", "0.99"}


def test_beats_baselines_shape(report: EvalReport) -> None:
    res = beats_baselines(report)
    assert set(res) == set(report.meta["targets"]) and all(isinstance(v, bool) for v in res.values())
    # crescade never "beats" a baseline that reaches a target it cannot reach
    for t, ok in res.items():
        if math.isnan(report.policy("crescade").cost_at[t]):
            assert not ok


def test_plot_writes_png(report: EvalReport, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "eval.png"
    report.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rejects_bad_inputs(data: tuple[Outcomes, Outcomes]) -> None:
    train, test = data
    with pytest.raises(ConfigError):
        evaluate(train, test, targets=(), progress=False)
    with pytest.raises(ConfigError):
        evaluate(train, test, n_boot=0, progress=False)
    with pytest.raises(PoolError):
        evaluate(train, test.select_models(["large", "small"]), progress=False)


def test_weak_model_on_a_cost_tie_is_the_least_accurate_and_apgr_needs_a_gap() -> None:
    """RouteLLM's weak model: with two equally cheap models the least accurate one; with weak and strong
    equally accurate, APGR and CPT are undefined (null in the JSON), never a number."""
    recs = _records(120, seed=3)
    small_cost = {r.prompt_id: r.cost_usd for r in recs if r.model == "small"}
    tied = [dataclasses.replace(r, cost_usd=small_cost[r.prompt_id]) if r.model == "mid" else r for r in recs]
    o = Outcomes.from_records(tied)
    rep = evaluate(o.split("train"), o.split("test"), params={"n_clusters": 2, "n_folds": 3},
                   sweep=[0.9, 1.0], n_boot=20, progress=False)
    assert rep.meta["weak"] == "small"  # as cheap as mid on average here, and less accurate
    same = [dataclasses.replace(r, correct=1.0) for r in _records(120, seed=4)]
    o2 = Outcomes.from_records(same)
    rep2 = evaluate(o2.split("train"), o2.split("test"), params={"n_clusters": 2, "n_folds": 3},
                    sweep=[0.9, 1.0], n_boot=20, progress=False)
    assert all(p.apgr is None or math.isnan(p.apgr) for p in rep2.policies)
    assert json.loads(json.dumps(rep2.to_dict()))["policies"][0]["apgr"] is None
