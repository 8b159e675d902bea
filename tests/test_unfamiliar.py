"""Queries unlike every calibration cluster get the cascade's documented policy, and the account says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from dispatch_fakes import answer, caller

from crescade import Answer, Cascade, ConfigError, ModelCard, Outcomes
from crescade.serving.dispatch import dispatch

UNFAMILIAR = "zqxv wkjh plmb"  # no word the calibration prompts used: a zero embedding


def test_unfamiliar_query_gets_the_general_plan(cascade: Cascade) -> None:
    plan = cascade.plan(UNFAMILIAR)
    assert plan.unfamiliar and "unfamiliar query" in plan.reason and "general plan" in plan.reason
    assert plan.ladder == tuple(cascade.models_[j] for j in cascade.general_ladder_)
    assert plan.ladder[-1] == cascade.models_[cascade.strongest_] or len(plan.ladder) == 1
    assert cascade.plan_batch([UNFAMILIAR])[0] == plan


def test_calibration_like_queries_are_familiar(cascade: Cascade, test_set: Outcomes) -> None:
    plans = cascade.plan_batch(test_set.prompts)
    assert sum(p.unfamiliar for p in plans) <= 0.01 * len(plans)
    assert cascade.unfamiliar_threshold_ > 0


@pytest.mark.parametrize("policy", ["nearest", "strongest"])
def test_other_policies(cascade: Cascade, policy: str) -> None:
    c = cascade.retarget(quality_target=0.95)
    c.unfamiliar = policy
    c._resolve()
    plan = c.plan(UNFAMILIAR)
    if policy == "nearest":
        assert not plan.unfamiliar and plan.reason.startswith("cluster ")
    else:
        assert plan.unfamiliar and plan.ladder == (c.models_[c.strongest_],) and "strongest model" in plan.reason


def test_policy_is_validated(train: Outcomes) -> None:
    with pytest.raises(ConfigError, match="unfamiliar must be"):
        Cascade(unfamiliar="cheapest", progress=False).fit(train)  # type: ignore[arg-type]


def test_the_account_says_so(cascade: Cascade, test_set: Outcomes) -> None:
    prices = {m: ModelCard(name=m, input_per_mtok=1.0, output_per_mtok=1.0) for m in cascade.models_}
    script = {m: answer(m) for m in cascade.models_}
    result = dispatch(cascade, UNFAMILIAR, caller(script), prices=prices)
    acc = result.to_dict()
    assert acc["unfamiliar"] is True and "unfamiliar query" in acc["route"]
    familiar = dispatch(cascade, test_set.prompts[0], caller(script), prices=prices).to_dict()
    assert familiar["unfamiliar"] is False and familiar["route"].startswith("cluster ")


def test_replay_takes_the_same_decisions_as_plan_and_judge(cascade: Cascade, test_set: Outcomes) -> None:
    records = test_set.subset(np.arange(30)).to_records()
    odd = {r.prompt_id for r in records[: 3 * len(cascade.models_)]}
    mixed = Outcomes.from_records([dataclasses.replace(r, prompt=UNFAMILIAR + " " + r.prompt_id)
                                   if r.prompt_id in odd else r for r in records])
    c = cascade.retarget(quality_target=0.99)
    res = c.replay(mixed)
    col = {name: mixed.models.index(name) for name in c.models_}
    seen_unfamiliar = 0
    for i, query in enumerate(mixed.prompts):
        plan = c.plan(query)
        seen_unfamiliar += plan.unfamiliar
        history: list[Answer] = []
        for tier, name in enumerate(plan.ladder):
            ans = Answer(text=mixed.responses[i][col[name]], model=name)
            if not c.judge(query, ans, plan=plan, tier=tier, history=history).escalate:
                break
            history.append(ans)
        assert c.models_[res.model[i]] == name
        assert res.routed[i] == c.models_.index(plan.ladder[0])
    assert seen_unfamiliar >= 1
