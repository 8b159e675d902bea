"""Tests of the fitted Cascade through its public API, on the synthetic data of conftest.py.

Fit, plan, judge, replay, the knob (property-tested with hypothesis), pool changes, persistence,
parameter validation, and the dispatch loop driven by a real fitted cascade.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from synthetic_records import (
    MODELS,
    N_TRAIN,
    PRICE_PER_MTOK,
    TOPIC_NAMES,
    TOPICS,
    card,
    make_cascade,
    make_prompts,
    make_records,
)

from crescade import (
    Answer,
    ArtifactError,
    Cascade,
    ConfigError,
    ModelCard,
    NotFittedError,
    Outcomes,
    Plan,
    PoolError,
    Record,
    ReplayResult,
)
from crescade.serving.dispatch import adispatch, dispatch

EXPECTED_KEYS = {"accuracy", "retention", "cost_ratio", "escalation_rate", "strong_call_share", "target_met"}
HEDGE = "I'm not sure, but it might be B."
OFF_FORMAT = "It depends on the context of the question."


def ladders(c: Cascade, queries: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(p.ladder for p in c.plan_batch(queries))


def extra_model(name: str, accuracy: float, per_mtok: float, which: str, seed: int) -> Outcomes:
    """Records of a new model on half of the train prompts (``which="half-train"``) or on the test prompts."""
    ps = make_prompts()
    subset = ps[:N_TRAIN:2] if which == "half-train" else ps[N_TRAIN:]
    return Outcomes.from_records(
        make_records(name, (accuracy,) * 3, per_mtok, subset, seed=seed, all_prompts=ps))


# --------------------------------------------------------------------------- fit


def test_fit_reports_expectations(cascade: Cascade) -> None:
    e = cascade.expected_
    assert set(e) >= EXPECTED_KEYS
    assert e["target_met"] is True
    for k in ("accuracy", "retention", "cost_ratio", "escalation_rate", "strong_call_share"):
        assert isinstance(e[k], float) and math.isfinite(e[k]), k
    assert 0.0 <= e["accuracy"] <= 1.0
    assert 0.0 <= e["escalation_rate"] <= 1.0
    assert 0.0 <= e["strong_call_share"] <= 1.0
    assert e["retention"] >= 0.95 - 1e-9  # the quality target
    # the cascade is far cheaper than always calling the strongest model (cheap/mid are 1/25, 1/5)
    assert 0.0 < e["cost_ratio"] < 0.8


def test_fit_returns_self_and_is_deterministic(train: Outcomes, test_set: Outcomes, cascade: Cascade) -> None:
    c = make_cascade()
    assert c.fit(train) is c
    assert c.plan_batch(test_set.prompts) == cascade.plan_batch(test_set.prompts)
    assert c.expected_ == cascade.expected_


def test_cluster_report(cascade: Cascade, train: Outcomes) -> None:
    rows = cascade.cluster_report(train.prompts, n_examples=2)
    assert len(rows) == 3
    assert sum(r["size"] for r in rows) == train.n_prompts
    for r in rows:
        assert r["ladder"][0] == r["routed_model"]
        assert r["ladder"][-1] == "strong"
        assert 0.0 <= r["threshold"] <= 1.01
        assert len(r["examples"]) <= 2
    assert {r["cluster"] for r in rows} == {0, 1, 2}
    assert all(r["routed_model"] in MODELS for r in rows)


def test_clusters_follow_topics(cascade: Cascade, test_set: Outcomes) -> None:
    clusters = [p.cluster for p in cascade.plan_batch(test_set.prompts)]
    by_topic: dict[str, Counter[int]] = {}
    for topic, k in zip(test_set.tasks, clusters, strict=True):
        by_topic.setdefault(str(topic), Counter())[k] += 1
    # each topic lands (almost) entirely in one cluster, and different topics in different clusters
    majority = {t: c.most_common(1)[0] for t, c in by_topic.items()}
    assert all(n >= 0.9 * sum(by_topic[t].values()) for t, (_, n) in majority.items())
    assert len({k for k, _ in majority.values()}) == 3


# --------------------------------------------------------------------------- plan


def test_plans_end_at_the_strongest(cascade: Cascade, test_set: Outcomes) -> None:
    plans = cascade.plan_batch(test_set.prompts)
    assert len(plans) == test_set.n_prompts
    for p in plans:
        assert isinstance(p, Plan)
        assert p.ladder[-1] == "strong"
        assert 1 <= len(p.ladder) <= 2  # max_depth=2
        assert len(set(p.ladder)) == len(p.ladder)
        assert set(p.ladder) <= set(MODELS)
        assert len(p.thresholds) == len(p.ladder)
        assert p.thresholds[-1] == 0.0
        assert all(0.0 <= t <= 1.01 for t in p.thresholds)
        assert p.routed_model == p.ladder[0]
    assert plans == [cascade.plan(q) for q in test_set.prompts]
    assert cascade.plan_batch([]) == []
    # a cheap first tier is used somewhere: the plan is not "always strongest"
    assert any(p.ladder[0] != "strong" for p in plans)


def test_plan_min_model(cascade: Cascade, test_set: Outcomes) -> None:
    q = test_set.prompts[0]
    p = cascade.plan(q)
    assert cascade.plan(q, min_model=p.ladder[0]) == p
    top = cascade.plan(q, min_model="strong")
    assert top.ladder == ("strong",) and top.cluster == p.cluster
    with pytest.raises(PoolError):
        cascade.plan(q, min_model="nope")


def test_plan_of_huge_and_empty_queries(cascade: Cascade) -> None:
    for q in ("", "river " * 200_000 + "molecule", "\x00\ud7ff ☃ " * 10):
        p = cascade.plan(q)
        assert p.ladder[-1] == "strong"


# --------------------------------------------------------------------------- judge


def _routed(cascade: Cascade, test_set: Outcomes) -> tuple[str, Plan]:
    """A test prompt whose plan has two tiers and a positive gate threshold."""
    for q in test_set.prompts:
        p = cascade.plan(q)
        if len(p.ladder) == 2 and p.thresholds[0] > 0:
            return q, p
    raise AssertionError("no test prompt is routed below the strongest model")


def test_judge_probabilities_and_consistency(cascade: Cascade, test_set: Outcomes) -> None:
    seen = 0
    for i, q in enumerate(test_set.prompts[:40]):
        plan = cascade.plan(q)
        if len(plan.ladder) < 2:
            continue
        routed = plan.ladder[0]
        j = test_set.models.index(routed)
        ans = Answer(text=test_set.responses[i][j], model=routed)
        v = cascade.judge(q, ans, plan=plan, tier=0)
        assert 0.0 <= v.p <= 1.0
        assert v.threshold == plan.thresholds[0]
        assert v.escalate == (v.p < v.threshold)
        # pure: the same input gives the same verdict
        assert cascade.judge(q, ans, plan=plan, tier=0) == v
        seen += 1
    assert seen > 0


def test_judge_learned_the_answer_signal(cascade: Cascade, test_set: Outcomes) -> None:
    q, plan = _routed(cascade, test_set)
    m = plan.ladder[0]
    p_clean = cascade.judge(q, Answer(text="B", model=m), plan=plan, tier=0).p
    p_hedge = cascade.judge(q, Answer(text=HEDGE, model=m), plan=plan, tier=0).p
    p_off = cascade.judge(q, Answer(text=OFF_FORMAT, model=m), plan=plan, tier=0).p
    assert p_hedge < p_clean and p_off < p_clean
    v = cascade.judge(q, Answer(text=HEDGE, model=m), plan=plan, tier=0)
    assert v.escalate
    assert not cascade.judge(q, Answer(text="B", model=m), plan=plan, tier=0).escalate


def test_judge_qe_auc_on_test_answers(cascade: Cascade, test_set: Outcomes) -> None:
    from sklearn.metrics import roc_auc_score

    ps, ys = [], []
    for i, q in enumerate(test_set.prompts):
        plan = cascade.plan(q)
        if len(plan.ladder) < 2:
            continue
        for j, m in enumerate(test_set.models):
            if m == plan.ladder[-1]:
                continue
            ps.append(cascade.judge(q, Answer(text=test_set.responses[i][j], model=m), plan=plan, tier=0).p)
            ys.append(test_set.correct[i, j])
    assert roc_auc_score(ys, ps) > 0.8


def test_last_tier_never_escalates(cascade: Cascade, test_set: Outcomes) -> None:
    q = test_set.prompts[0]
    plan = cascade.plan(q)
    last = len(plan.ladder) - 1
    for text in ("", HEDGE, OFF_FORMAT, "B"):
        v = cascade.judge(q, Answer(text=text, model=plan.ladder[-1]), plan=plan, tier=last)
        assert v.escalate is False
    with pytest.raises(ConfigError):
        cascade.judge(q, Answer(text="B", model=plan.ladder[-1]), plan=plan, tier=last + 1)
    with pytest.raises(ConfigError):
        cascade.judge(q, Answer(text="B", model=plan.ladder[0]), plan=plan, tier=-1)


def test_judge_unknown_model_is_a_pool_error(cascade: Cascade, test_set: Outcomes) -> None:
    q, plan = _routed(cascade, test_set)
    with pytest.raises(PoolError):
        cascade.judge(q, Answer(text="B", model="not-in-pool"), plan=plan, tier=0)


def test_plan_and_judge_are_thread_safe(cascade: Cascade, test_set: Outcomes) -> None:
    queries = test_set.prompts[:60]

    def work(i: int) -> tuple[Plan, float]:
        q = queries[i]
        plan = cascade.plan(q)
        ans = Answer(text=test_set.responses[i][0], model="cheap")
        two = Plan(cluster=plan.cluster, ladder=("cheap", "strong"), thresholds=(0.5, 0.0))
        return plan, cascade.judge(q, ans, plan=two, tier=0).p

    sequential = [work(i) for i in range(len(queries))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(work, range(len(queries)))) == sequential


# --------------------------------------------------------------------------- replay


def test_replay_is_sane_and_self_consistent(cascade: Cascade, test_set: Outcomes) -> None:
    r = cascade.replay(test_set)
    assert isinstance(r, ReplayResult)
    n = test_set.n_prompts
    s = r.summary()
    assert set(s) >= {"accuracy", "cost_per_query_usd", "escalation_rate", "strong_call_share", "mean_calls"}
    assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["escalation_rate"] <= 1.0
    assert 1.0 <= s["mean_calls"] <= 2.0
    assert list(test_set.models) == list(MODELS)  # pool indices are column indices here
    plans = cascade.plan_batch(test_set.prompts)
    for i in range(n):
        ladder = [MODELS.index(m) for m in plans[i].ladder]
        calls = int(r.calls[i])
        assert 1 <= calls <= len(ladder)
        assert r.routed[i] == ladder[0]
        assert r.model[i] == ladder[calls - 1]
        assert r.escalated[i] == (calls > 1)
        assert r.strong_call[i] == (MODELS.index("strong") in ladder[:calls])
        assert r.cost[i] == pytest.approx(sum(test_set.cost[i, j] for j in ladder[:calls]))
        assert r.correct[i] == test_set.correct[i, r.model[i]]
        assert r.cluster[i] == plans[i].cluster
    # held-out quality: close to the target, far cheaper than always-strongest, better than cheap-only
    strong_acc = test_set.correct[:, MODELS.index("strong")].mean()
    assert s["accuracy"] >= 0.88 * strong_acc
    assert s["accuracy"] > test_set.correct[:, MODELS.index("cheap")].mean()
    assert s["cost_per_query_usd"] < 0.8 * test_set.cost[:, MODELS.index("strong")].mean()
    assert s["strong_call_share"] == pytest.approx(r.strong_call.mean())


def test_replay_on_calibration_data_matches_expectations(cascade: Cascade, train: Outcomes) -> None:
    s = cascade.replay(train).summary()
    e = cascade.expected_
    assert abs(s["accuracy"] - e["accuracy"]) < 0.08
    assert abs(s["escalation_rate"] - e["escalation_rate"]) < 0.1


def test_replay_needs_every_pool_model(cascade: Cascade, test_set: Outcomes) -> None:
    with pytest.raises(PoolError):
        cascade.replay(test_set.select_models(["cheap", "strong"]))


# --------------------------------------------------------------------------- the knob


@pytest.fixture(scope="module")
def cost_mode(cascade: Cascade) -> Cascade:
    return cascade.retarget(cost_target=0.5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(q1=0.5, q2=1.0)
@example(q1=0.9, q2=0.95)
@example(q1=0.95, q2=0.99)
@given(q1=st.floats(0.5, 1.0), q2=st.floats(0.5, 1.0))
def test_higher_quality_target_never_cheaper(cascade: Cascade, q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    a, b = cascade.retarget(quality_target=lo).expected_, cascade.retarget(quality_target=hi).expected_
    assert b["cost_ratio"] >= a["cost_ratio"] - 1e-12, (lo, a, hi, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(c1=0.1, c2=1.0)
@example(c1=0.5, c2=0.8)
@example(c1=0.3, c2=0.5)
@given(c1=st.floats(0.02, 1.5), c2=st.floats(0.02, 1.5))
def test_higher_budget_never_less_accurate(cost_mode: Cascade, c1: float, c2: float) -> None:
    lo, hi = sorted((c1, c2))
    a, b = cost_mode.retarget(cost_target=lo).expected_, cost_mode.retarget(cost_target=hi).expected_
    assert b["accuracy"] >= a["accuracy"] - 1e-12, (lo, a, hi, b)


def test_retarget_extremes_and_budget_respected(cascade: Cascade, cost_mode: Cascade) -> None:
    e = cascade.retarget(quality_target=1.0).expected_
    assert e["retention"] >= cascade.expected_["retention"] - 1e-12
    for ct in (0.1, 0.3, 0.6):
        ex = cost_mode.retarget(cost_target=ct).expected_
        if ex["target_met"]:
            assert ex["cost_ratio"] <= ct + 1e-9


def test_retarget_returns_a_copy(cascade: Cascade, test_set: Outcomes) -> None:
    before_plans = cascade.plan_batch(test_set.prompts)
    before = dict(cascade.expected_)
    low = cascade.retarget(quality_target=0.5)
    assert low is not cascade
    assert low.quality_target == 0.5 and cascade.quality_target == 0.95
    assert cascade.expected_ == before
    assert cascade.plan_batch(test_set.prompts) == before_plans
    # nothing is refitted
    assert low.centroids_ is cascade.centroids_
    assert low.qe_ is cascade.qe_
    assert low.embedder_ is cascade.embedder_


@pytest.mark.parametrize(
    "kw", [{"quality_target": 0.9, "cost_target": 0.5}, {}, {"quality_target": 0.0}, {"cost_target": -1.0},
           {"quality_target": float("nan")}],
)
def test_retarget_validates(cascade: Cascade, kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        cascade.retarget(**kw)
    assert cascade.quality_target == 0.95 and cascade.cost_target is None


# --------------------------------------------------------------------------- pool changes


def test_remove_cheap_model(cascade: Cascade, test_set: Outcomes) -> None:
    new = cascade.remove_model("cheap")
    plans = new.plan_batch(test_set.prompts)
    assert all("cheap" not in p.ladder for p in plans)
    assert all(p.ladder[-1] == "strong" for p in plans)
    # nothing is refitted
    assert new.centroids_ is cascade.centroids_
    np.testing.assert_array_equal(new.centroids_, cascade.centroids_)
    assert new.qe_ is cascade.qe_
    assert new.embedder_ is cascade.embedder_
    # clusters are unchanged
    assert [p.cluster for p in plans] == [p.cluster for p in cascade.plan_batch(test_set.prompts)]
    # the original is untouched
    assert any("cheap" in p.ladder for p in cascade.plan_batch(test_set.prompts))
    # without its cheapest model, the cascade can only cost more
    assert new.expected_["cost_ratio"] >= cascade.expected_["cost_ratio"] - 0.05
    with pytest.raises(PoolError):
        new.judge(test_set.prompts[0], Answer(text="B", model="cheap"),
                  plan=Plan(cluster=0, ladder=("cheap", "strong"), thresholds=(0.5, 0.0)), tier=0)
    r = new.replay(test_set)
    assert set(np.unique(r.model).tolist()) <= {0, 1}


def test_remove_strongest_model(cascade: Cascade, test_set: Outcomes) -> None:
    new = cascade.remove_model("strong")
    assert new.expected_["strongest_model"] == "mid"
    plans = new.plan_batch(test_set.prompts)
    assert all("strong" not in p.ladder for p in plans)
    assert all(p.ladder[-1] == "mid" for p in plans)
    assert new.centroids_ is cascade.centroids_ and new.qe_ is cascade.qe_
    assert cascade.expected_["strongest_model"] == "strong"


def test_remove_model_errors(cascade: Cascade) -> None:
    with pytest.raises(PoolError):
        cascade.remove_model("nope")
    only = cascade.remove_model("cheap").remove_model("mid")
    assert only.plan("river").ladder == ("strong",)
    with pytest.raises(PoolError):
        only.remove_model("strong")


def test_add_cheap_good_model_on_half_the_prompts(
    cascade: Cascade, test_set: Outcomes, records: list[Record]
) -> None:
    extra = extra_model("bargain", 0.95, PRICE_PER_MTOK["cheap"] / 2, "half-train", seed=7)
    assert extra.n_prompts == N_TRAIN // 2
    new = cascade.add_model("bargain", extra)
    routed = Counter(p.ladder[0] for p in new.plan_batch(test_set.prompts))
    assert routed["bargain"] > test_set.n_prompts / 2  # cheapest and as good as the strongest
    # nothing is refitted
    assert new.centroids_ is cascade.centroids_
    assert new.qe_ is cascade.qe_
    assert new.embedder_ is cascade.embedder_
    assert [p.cluster for p in new.plan_batch(test_set.prompts)] == [
        p.cluster for p in cascade.plan_batch(test_set.prompts)]
    # replayed on the prompts it was profiled on: cheaper than before, as accurate as the strongest
    half = set(extra.prompt_ids)
    both = Outcomes.from_records([r for r in records if r.prompt_id in half] + extra.to_records())
    before, after = cascade.replay(both).summary(), new.replay(both).summary()
    assert after["cost_per_query_usd"] < before["cost_per_query_usd"]
    assert after["accuracy"] >= 0.95 * both.correct[:, both.models.index("strong")].mean()
    # the original is untouched
    assert all("bargain" not in p.ladder for p in cascade.plan_batch(test_set.prompts))
    # the new model is judged through its profile
    q = test_set.prompts[0]
    plan = Plan(cluster=new.plan(q).cluster, ladder=("bargain", "strong"), thresholds=(0.5, 0.0))
    v = new.judge(q, Answer(text="B", model="bargain"), plan=plan, tier=0)
    assert 0.0 <= v.p <= 1.0


def test_add_a_model_more_accurate_than_the_strongest(cascade: Cascade, test_set: Outcomes) -> None:
    extra = extra_model("ace", 1.0, PRICE_PER_MTOK["strong"], "half-train", seed=8)
    new = cascade.add_model("ace", extra)
    assert new.expected_["strongest_model"] == "ace"
    assert all(p.ladder[-1] == "ace" for p in new.plan_batch(test_set.prompts))


def test_add_a_weak_expensive_model_is_never_routed_to(cascade: Cascade, test_set: Outcomes) -> None:
    extra = extra_model("dud", 0.1, PRICE_PER_MTOK["strong"] * 2, "half-train", seed=9)
    new = cascade.add_model("dud", extra)
    assert all("dud" not in p.ladder for p in new.plan_batch(test_set.prompts))


def test_add_model_without_overlap_is_a_pool_error(cascade: Cascade) -> None:
    extra = extra_model("bargain", 0.95, 0.5, "test", seed=7)
    with pytest.raises(PoolError):
        cascade.add_model("bargain", extra)


def test_add_model_errors(cascade: Cascade, train: Outcomes) -> None:
    with pytest.raises(PoolError):
        cascade.add_model("mid", train)  # already in the pool
    with pytest.raises(PoolError):
        cascade.add_model("ghost", train)  # no records of it


@pytest.fixture(scope="module")
def priced(train: Outcomes, prices: dict[str, ModelCard]) -> Cascade:
    return make_cascade(n_folds=2).fit(train, prices=prices)


def test_priced_cascade_needs_a_card_for_a_new_model(
    priced: Cascade, train: Outcomes, prices: dict[str, ModelCard]
) -> None:
    c = priced
    extra = extra_model("bargain", 0.95, 0.5, "half-train", seed=7)
    with pytest.raises(PoolError):
        c.add_model("bargain", extra)
    added = c.add_model("bargain", extra, card=card("bargain", 0.5))
    assert "bargain" in {p.ladder[0] for p in added.plan_batch(train.prompts)}
    with pytest.raises(PoolError):
        make_cascade(n_folds=2).fit(train, prices={"cheap": prices["cheap"]})


# --------------------------------------------------------------------------- persistence


@pytest.fixture(scope="module")
def saved(cascade: Cascade, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("artifact") / "cascade"
    cascade.save(d)
    return d


def test_save_load_round_trip(cascade: Cascade, saved: Path, test_set: Outcomes) -> None:
    loaded = Cascade.load(saved)
    assert loaded.plan_batch(test_set.prompts) == cascade.plan_batch(test_set.prompts)
    for i, q in enumerate(test_set.prompts[:30]):
        plan = cascade.plan(q)
        for j, m in enumerate(test_set.models):
            ans = Answer(text=test_set.responses[i][j], model=m)
            assert loaded.judge(q, ans, plan=plan, tier=0) == cascade.judge(q, ans, plan=plan, tier=0)
    assert loaded.expected_ == cascade.expected_
    r1, r2 = loaded.replay(test_set), cascade.replay(test_set)
    np.testing.assert_array_equal(r1.model, r2.model)
    np.testing.assert_array_equal(r1.cost, r2.cost)
    # pool changes and retargeting work on a loaded cascade as on the original
    assert loaded.retarget(quality_target=0.8).plan_batch(test_set.prompts) == cascade.retarget(
        quality_target=0.8).plan_batch(test_set.prompts)
    assert loaded.remove_model("cheap").plan_batch(test_set.prompts) == cascade.remove_model(
        "cheap").plan_batch(test_set.prompts)
    # saving again over an existing artifact works, and reloads identically
    loaded.save(saved.parent / "again")
    assert Cascade.load(saved.parent / "again").plan_batch(test_set.prompts) == loaded.plan_batch(
        test_set.prompts)


def test_save_load_priced_cascade(priced: Cascade, test_set: Outcomes, tmp_path: Path) -> None:
    priced.save(tmp_path / "priced")
    loaded = Cascade.load(tmp_path / "priced")
    assert loaded.plan_batch(test_set.prompts) == priced.plan_batch(test_set.prompts)
    assert loaded.fingerprint() == priced.fingerprint()


def topic_embedding(texts: list[str]) -> list[list[float]]:
    """A user-supplied embedder: topic keyword counts (stands in for LangChain ``embed_documents``)."""
    return [[sum(w in t for w in TOPICS[k]) + 0.1 for k in TOPIC_NAMES] for t in texts]


def test_save_load_with_a_custom_embedder(train: Outcomes, test_set: Outcomes, tmp_path: Path) -> None:
    c = make_cascade(embedder=topic_embedding, n_folds=2).fit(train)
    plans = c.plan_batch(test_set.prompts)
    assert all(p.ladder[-1] == "strong" for p in plans)
    # The load error says "pass it to Cascade.load(..., embedder=...)": saving must work.
    c.save(tmp_path / "custom")
    loaded = Cascade.load(tmp_path / "custom", embedder=topic_embedding)
    assert loaded.plan_batch(test_set.prompts) == plans
    with pytest.raises(ArtifactError):
        Cascade.load(tmp_path / "custom")  # the embedder is not inside the artifact


def _copy_artifact(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_load_rejects_edited_meta(saved: Path, tmp_path: Path) -> None:
    d = _copy_artifact(saved, tmp_path / "edited")
    meta = json.loads((d / "meta.json").read_text())
    meta["params"]["shrinkage"] = 0.0
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        Cascade.load(d)


def test_load_rejects_a_flipped_byte(saved: Path, tmp_path: Path) -> None:
    d = _copy_artifact(saved, tmp_path / "flipped")
    raw = bytearray((d / "arrays.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (d / "arrays.npz").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError):
        Cascade.load(d)


def test_load_rejects_missing_or_foreign(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        Cascade.load(tmp_path / "does-not-exist")
    d = _copy_artifact(saved, tmp_path / "nomanifest")
    (d / "manifest.json").unlink()
    with pytest.raises(ArtifactError):
        Cascade.load(d)
    d2 = _copy_artifact(saved, tmp_path / "truncated")
    (d2 / "arrays.npz").write_bytes((d2 / "arrays.npz").read_bytes()[:100])
    with pytest.raises(ArtifactError):
        Cascade.load(d2)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kw",
    [
        {"quality_target": 0.9, "cost_target": 0.5},
        {"quality_target": None, "cost_target": None},
        {"quality_target": 0},
        {"quality_target": -0.5},
        {"quality_target": None, "cost_target": 0},
        {"max_depth": 5},
        {"max_depth": 0},
        {"n_folds": 1},
        {"n_clusters": 0},
        {"cluster_grid": ()},
        {"threshold_mode": "bogus"},
        {"shrinkage": -1.0},
    ],
)
def test_bad_parameters_are_config_errors(train: Outcomes, kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_cascade(**kw).fit(train)


def test_too_few_prompts(train: Outcomes) -> None:
    with pytest.raises(ConfigError):
        make_cascade().fit(train.subset(np.arange(4)))


def test_unknown_start_model(train: Outcomes) -> None:
    with pytest.raises(PoolError):
        make_cascade(start_model="nope").fit(train)


def test_not_fitted_errors(tmp_path: Path) -> None:
    c = Cascade(progress=False)
    ans = Answer(text="B", model="cheap")
    plan = Plan(cluster=0, ladder=("cheap", "strong"), thresholds=(0.5, 0.0))
    calls = [
        lambda: c.plan("q"),
        lambda: c.plan_batch(["q"]),
        lambda: c.judge("q", ans, plan=plan, tier=0),
        lambda: c.retarget(quality_target=0.9),
        lambda: c.remove_model("cheap"),
        lambda: c.cluster_report(),
        lambda: c.save(tmp_path / "x"),
    ]
    for call in calls:
        with pytest.raises(NotFittedError):
            call()


def test_not_fitted_replay_and_add_model(train: Outcomes) -> None:
    c = Cascade(progress=False)
    with pytest.raises(NotFittedError):
        c.replay(train)
    with pytest.raises(NotFittedError):
        c.add_model("x", train)


# --------------------------------------------------------------------------- variants


def test_depth_three_per_cluster_auto_clusters(train: Outcomes, test_set: Outcomes) -> None:
    c = make_cascade(max_depth=3, threshold_mode="per_cluster", n_clusters="auto", cluster_grid=(2, 3),
                     quality_target=0.97).fit(train)
    plans = c.plan_batch(test_set.prompts)
    assert all(1 <= len(p.ladder) <= 3 and p.ladder[-1] == "strong" for p in plans)
    s = c.replay(test_set).summary()
    assert 1.0 <= s["mean_calls"] <= 3.0
    assert s["accuracy"] >= 0.85 * test_set.correct[:, MODELS.index("strong")].mean()
    # a three-tier plan judges its middle tier with the first tier's answer as history
    three = next((p for p in plans if len(p.ladder) == 3), None)
    if three is not None:
        q = test_set.prompts[plans.index(three)]
        first = Answer(text="B", model=three.ladder[0])
        v = c.judge(q, Answer(text="B", model=three.ladder[1]), plan=three, tier=1, history=[first])
        assert 0.0 <= v.p <= 1.0 and v.escalate == (v.p < v.threshold)


def test_start_model_forces_the_routed_model(train: Outcomes, test_set: Outcomes) -> None:
    c = make_cascade(start_model="cheap", n_folds=2).fit(train)
    assert all(p.ladder[0] == "cheap" for p in c.plan_batch(test_set.prompts))


# --------------------------------------------------------------------------- dispatch


def _scripted(plan: Plan, first_text: str, calls: list[str]) -> Callable[[str, bool], Answer]:
    def call(model: str, is_last: bool) -> Answer:
        calls.append(model)
        text = first_text if model == plan.ladder[0] else "B"
        return Answer(text=text, model=model, input_tokens=120, output_tokens=8)

    return call


def test_dispatch_escalates_a_low_scored_answer(
    cascade: Cascade, test_set: Outcomes, prices: dict[str, ModelCard]
) -> None:
    q, plan = _routed(cascade, test_set)
    calls: list[str] = []
    res = dispatch(cascade, q, _scripted(plan, HEDGE, calls), prices=prices)
    assert calls == list(plan.ladder)
    assert res.escalated
    assert res.model == plan.ladder[-1] and res.routed_model == plan.ladder[0]
    assert [a.model for a in res.attempts] == list(plan.ladder)
    first, last = res.attempts
    assert not first.accepted and last.accepted
    assert first.verdict is not None and first.verdict.p < plan.thresholds[0]
    assert first.verdict.p == cascade.judge(q, Answer(text=HEDGE, model=plan.ladder[0]), plan=plan, tier=0).p
    expected_cost = sum(prices[m].cost(120, 8) for m in plan.ladder)
    assert res.total_cost_usd == pytest.approx(expected_cost)
    assert first.cost_usd == pytest.approx(prices[plan.ladder[0]].cost(120, 8))
    acct = res.to_dict()
    assert [t["model"] for t in acct["tiers"]] == list(plan.ladder)
    assert acct["totals"]["cost_usd"] == pytest.approx(expected_cost)
    assert acct["tiers"][0]["accepted"] is False and acct["tiers"][0]["p"] < acct["tiers"][0]["threshold"]
    assert json.loads(json.dumps(acct)) == acct


def test_dispatch_accepts_a_good_answer_at_the_routed_tier(
    cascade: Cascade, test_set: Outcomes, prices: dict[str, ModelCard]
) -> None:
    q, plan = _routed(cascade, test_set)
    calls: list[str] = []
    res = dispatch(cascade, q, _scripted(plan, "B", calls), prices=prices)
    assert calls == [plan.ladder[0]]
    assert not res.escalated and res.model == plan.ladder[0]
    assert res.total_cost_usd == pytest.approx(prices[plan.ladder[0]].cost(120, 8))


def test_dispatch_provider_error_escalates(
    cascade: Cascade, test_set: Outcomes, prices: dict[str, ModelCard]
) -> None:
    q, plan = _routed(cascade, test_set)

    def call(model: str, is_last: bool) -> Answer:
        if not is_last:
            raise TimeoutError("provider timed out")
        return Answer(text="B", model=model, input_tokens=10, output_tokens=1)

    res = dispatch(cascade, q, call, prices=prices)
    assert res.escalated and res.model == plan.ladder[-1]
    assert res.attempts[0].error is not None and "TimeoutError" in res.attempts[0].error
    assert res.total_cost_usd == pytest.approx(prices[plan.ladder[-1]].cost(10, 1))


async def test_adispatch_matches_dispatch(
    cascade: Cascade, test_set: Outcomes, prices: dict[str, ModelCard]
) -> None:
    q, plan = _routed(cascade, test_set)
    sync_calls: list[str] = []
    sync = dispatch(cascade, q, _scripted(plan, OFF_FORMAT, sync_calls), prices=prices)
    call = _scripted(plan, OFF_FORMAT, [])

    async def acall(model: str, is_last: bool) -> Answer:
        return call(model, is_last)

    res = await adispatch(cascade, q, acall, prices=prices)
    assert [a.model for a in res.attempts] == [a.model for a in sync.attempts] == list(plan.ladder)
    assert res.total_cost_usd == pytest.approx(sync.total_cost_usd)
