"""Tests of the dispatch loop (sync and async) with a scripted judge and fake model callers."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from dispatch_fakes import LADDER, PLAN, PRICES, Card, FakeJudge, acaller, answer, caller, ticker

from crescade.common.errors import AllTiersFailedError, ConfigError, PricingError
from crescade.engine.decisions import Answer, Plan, Verdict
from crescade.serving.dispatch import (
    AnswerRejectedError,
    DispatchFailedError,
    DispatchResult,
    TierAttempt,
    adispatch,
    default_counter,
    dispatch,
)


async def run_both(judge: FakeJudge, script=None, **kw) -> tuple[DispatchResult, DispatchResult]:
    """Run the same scenario through dispatch and adispatch; they must agree on everything but identity."""
    kw.setdefault("prices", PRICES)
    clock_step = kw.pop("clock_step", 0.5)
    a = dispatch(judge, "what is six times seven?", caller(script), clock=ticker(clock_step), **kw)
    b = await adispatch(judge, "what is six times seven?", acaller(script), clock=ticker(clock_step), **kw)
    assert a.to_dict() == b.to_dict()
    return a, b


# -- acceptance and escalation -------------------------------------------------------------------


async def test_accept_at_tier_0():
    log: list = []
    judge = FakeJudge({"small": 0.9})
    res = dispatch(judge, "q", caller(log=log), prices=PRICES, clock=ticker())
    assert res.model == "small" and res.routed_model == "small" and res.cluster == 3
    assert not res.escalated and res.reason == "accepted at tier 0"
    assert log == [("small", False)]
    [att] = res.attempts
    assert att.accepted and att.verdict is not None and att.verdict.p == 0.9
    assert att.latency_s == pytest.approx(0.5)
    assert judge.plan_calls == [None]
    await run_both(FakeJudge({"small": 0.9}))


async def test_escalate_on_low_p():
    log: list = []
    judge = FakeJudge({"small": 0.41, "medium": 0.8})
    res = dispatch(judge, "q", caller(log=log), prices=PRICES)
    assert res.model == "medium" and res.escalated
    assert res.reason == "escalated: p=0.41 < 0.6 at tier 0 (model small); accepted at tier 1"
    assert [a.accepted for a in res.attempts] == [False, True]
    assert log == [("small", False), ("medium", False)]
    # the judge saw the earlier (rejected) answer as history
    assert judge.calls == [("small", 0, ()), ("medium", 1, ("small",))]
    await run_both(FakeJudge({"small": 0.41, "medium": 0.8}))


async def test_escalate_to_last_tier_which_is_not_judged():
    log: list = []
    judge = FakeJudge({"small": 0.1, "medium": 0.2})
    res = dispatch(judge, "q", caller(log=log), prices=PRICES)
    assert res.model == "large"
    assert log == [("small", False), ("medium", False), ("large", True)]
    assert [c[0] for c in judge.calls] == ["small", "medium"]  # large never judged
    last = res.attempts[-1]
    assert last.accepted and last.verdict is None and last.reason == "last tier"
    assert res.reason.endswith("; last tier")
    assert res.reason.count("escalated:") == 2
    await run_both(FakeJudge({"small": 0.1, "medium": 0.2}))


async def test_last_tier_accepted_as_is_even_if_empty_or_invalid():
    script = {"small": TimeoutError("t"), "medium": TimeoutError("t"),
              "large": answer("large", text="  ", tool_calls_valid=False)}
    res, _ = await run_both(FakeJudge(), script)
    assert res.model == "large" and res.answer.text == "  " and res.attempts[-1].accepted


async def test_escalate_on_exception():
    script = {"small": TimeoutError("provider timed out")}
    res, _ = await run_both(FakeJudge({"medium": 0.9}), script)
    assert res.model == "medium" and res.escalated
    assert res.reason == "escalated: tier 0 (small) raised TimeoutError; accepted at tier 1"
    first = res.attempts[0]
    assert first.answer is None and first.error == "TimeoutError: provider timed out"
    assert first.cost_usd == 0 and first.input_tokens == 0 and not first.accepted


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (answer("small", text=""), "empty answer"),
        (answer("small", text=" \n\t"), "empty answer"),
        (answer("small", tool_calls_valid=False), "invalid tool call"),
        (answer("small", text="", tool_calls_valid=False), "invalid tool call"),
        (answer("small", structured_valid=False), "invalid structured output"),
    ],
)
async def test_escalate_on_bad_answer_without_judging(bad: Answer, why: str):
    judge = FakeJudge({"small": 0.99, "medium": 0.9})
    res = dispatch(judge, "q", caller({"small": bad}), prices=PRICES)
    assert res.model == "medium"
    assert res.attempts[0].reason == why and res.attempts[0].verdict is None
    assert res.reason.startswith(f"escalated: {why} at tier 0 (model small)")
    assert [c[0] for c in judge.calls] == ["medium"]  # small was never judged
    assert res.attempts[0].cost_usd > 0  # it was paid for
    await run_both(FakeJudge({"small": 0.99, "medium": 0.9}), {"small": bad})


async def test_empty_text_with_valid_tool_call_is_judged_not_escalated():
    tool = answer("small", text="", tool_calls_valid=True)
    res, _ = await run_both(FakeJudge({"small": 0.9}), {"small": tool})
    assert res.model == "small" and not res.escalated


# -- failures --------------------------------------------------------------------------------------


async def test_all_tiers_fail_lists_every_tier_in_order():
    excs = {"small": TimeoutError("a"), "medium": ConnectionError("b"), "large": RuntimeError("c")}
    with pytest.raises(AllTiersFailedError) as info:
        dispatch(FakeJudge(), "q", caller(excs), prices=PRICES)
    fails = info.value.failures
    assert [(f.tier, f.model) for f in fails] == [(0, "small"), (1, "medium"), (2, "large")]
    assert [f.error for f in fails] == [excs["small"], excs["medium"], excs["large"]]
    msg = str(info.value)
    assert msg.index("TimeoutError") < msg.index("ConnectionError") < msg.index("RuntimeError")
    with pytest.raises(AllTiersFailedError) as ainfo:
        await adispatch(FakeJudge(), "q", acaller(excs), prices=PRICES)
    assert [f.error for f in ainfo.value.failures] == [f.error for f in fails]


async def test_last_tier_raising_after_rejected_answers_raises_with_full_account():
    script = {"large": RuntimeError("down")}
    judge = FakeJudge({"small": 0.1, "medium": 0.2})
    with pytest.raises(DispatchFailedError) as info:
        dispatch(judge, "q", caller(script), prices=PRICES)
    err = info.value
    assert isinstance(err, AllTiersFailedError)
    assert [f.model for f in err.failures] == list(LADDER)
    assert isinstance(err.failures[0].error, AnswerRejectedError)
    assert "p=0.1 < 0.6" in str(err.failures[0].error)
    assert isinstance(err.failures[2].error, RuntimeError)
    assert len(err.attempts) == 3 and err.total_cost_usd == pytest.approx(
        PRICES["small"].cost(100, 10) + PRICES["medium"].cost(100, 10))


def test_error_text_is_truncated_and_redacted():
    long = RuntimeError("x" * 2000)
    secret = PermissionError("bad key sk-abcdefghijklmnop1234 with api_key=hunter2hunter2 Bearer abc.def")
    res = dispatch(FakeJudge(), "q", caller({"small": long, "medium": secret}), prices=PRICES)
    e0, e1 = res.attempts[0].error, res.attempts[1].error
    assert e0 is not None and e0.startswith("RuntimeError: xxx") and len(e0) <= 500 + len("RuntimeError: ")
    assert e1 is not None and "sk-abc" not in e1 and "hunter2" not in e1 and "abc.def" not in e1
    assert "Traceback" not in e0 + e1


async def test_judge_raising_or_nan_escalates_with_reason():
    for bad, expect in [(ValueError("boom"), "quality estimator failed: ValueError: boom"),
                        (float("nan"), "quality estimator failed: non-finite p=nan"),
                        (float("inf"), "quality estimator failed: non-finite p=inf")]:
        judge = FakeJudge({"small": bad, "medium": 0.9})  # type: ignore[dict-item]
        res = dispatch(judge, "q", caller(), prices=PRICES)
        assert res.model == "medium", expect
        assert res.attempts[0].reason == expect
        assert res.reason.startswith(f"escalated: {expect} at tier 0 (model small)")
        json.dumps(res.to_dict(), allow_nan=False)  # NaN never leaks into the account
        await run_both(FakeJudge({"small": bad, "medium": 0.9}))  # type: ignore[dict-item]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_interrupts_propagate_from_call(exc_type: type[BaseException]):
    log: list = []
    with pytest.raises(exc_type):
        dispatch(FakeJudge(), "q", caller({"small": exc_type()}, log), prices=PRICES)
    assert log == [("small", False)]  # no further tier was tried


def test_keyboard_interrupt_propagates_from_judge():
    with pytest.raises(KeyboardInterrupt):
        dispatch(FakeJudge({"small": KeyboardInterrupt()}), "q", caller(), prices=PRICES)


async def test_cancelled_error_propagates_from_acall():
    log: list = []
    with pytest.raises(asyncio.CancelledError):
        await adispatch(FakeJudge(), "q", acaller({"small": asyncio.CancelledError()}, log), prices=PRICES)
    assert log == [("small", False)]


async def test_task_cancellation_is_not_swallowed():
    started = asyncio.Event()

    async def slow(model: str, is_last: bool) -> Answer:
        started.set()
        await asyncio.sleep(10)
        return answer(model)

    task = asyncio.create_task(adispatch(FakeJudge(), "q", slow, prices=PRICES))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- plan handling ---------------------------------------------------------------------------------


async def test_max_depth_keeps_strongest():
    log: list = []
    judge = FakeJudge({"small": 0.1})
    res = dispatch(judge, "q", caller(log=log), prices=PRICES, max_depth=2)
    assert log == [("small", False), ("large", True)]
    assert res.plan.ladder == ("small", "large") and res.plan.thresholds == (0.6, 0.0)
    assert "max_depth=2" in res.plan.reason
    assert res.to_dict()["ladder"] == ["small", "large"]

    log.clear()
    res = dispatch(judge, "q", caller(log=log), prices=PRICES, max_depth=1)
    assert log == [("large", True)] and res.reason == "last tier" and not res.escalated

    res = dispatch(judge, "q", caller(), prices=PRICES, max_depth=10)
    assert res.plan == PLAN
    await run_both(FakeJudge({"small": 0.1}), max_depth=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            dispatch(judge, "q", caller(), prices=PRICES, max_depth=bad)  # type: ignore[arg-type]


def test_explicit_plan_and_min_model():
    judge = FakeJudge()
    mine = Plan(cluster=7, ladder=("medium", "large"), thresholds=(0.5, 0.0))
    res = dispatch(judge, "q", caller(), prices=PRICES, plan=mine)
    assert judge.plan_calls == [] and res.cluster == 7 and res.routed_model == "medium"
    dispatch(judge, "q", caller(), prices=PRICES, min_model="medium")
    assert judge.plan_calls == ["medium"]
    with pytest.raises(ConfigError):
        dispatch(judge, "q", caller(), prices=PRICES, plan=mine, min_model="medium")
    with pytest.raises(ConfigError):
        dispatch(judge, "q", caller(), prices=PRICES, plan=Plan(0, (), ()))


async def test_unknown_price_raises_before_any_call():
    log: list = []
    prices = {k: v for k, v in PRICES.items() if k != "large"}
    with pytest.raises(PricingError, match="large"):
        dispatch(FakeJudge(), "q", caller(log=log), prices=prices)
    with pytest.raises(PricingError):
        await adispatch(FakeJudge(), "q", acaller(log=log), prices=prices)
    assert log == []


def test_pricing_error_from_card_is_not_a_tier_failure():
    class BadCard(Card):
        def cost(self, input_tokens: int, output_tokens: int) -> float:
            raise PricingError("malformed price")

    log: list = []
    prices = {**PRICES, "small": BadCard("small", 0, 0)}
    with pytest.raises(PricingError, match="malformed"):
        dispatch(FakeJudge(), "q", caller(log=log), prices=prices)
    assert log == [("small", False)]


def test_non_answer_return_is_a_type_error():
    with pytest.raises(TypeError, match="expected Answer"):
        dispatch(FakeJudge(), "q", lambda m, last: "text", prices=PRICES)  # type: ignore[arg-type,return-value]


# -- usage, cost, timing, account ------------------------------------------------------------------


async def test_token_fallback_when_answer_lacks_counts():
    seen: list[tuple[str, str | None]] = []

    def counter(text: str, model: str | None) -> int:
        seen.append((text, model))
        return len(text)

    script = {"small": answer("small", text="abcdef", n_in=None, n_out=None)}
    res = dispatch(FakeJudge(), "query!", caller(script), prices=PRICES, counter=counter)
    att = res.attempts[0]
    assert (att.input_tokens, att.output_tokens, att.usage_source) == (6, 6, "estimate")
    assert seen == [("query!", "small"), ("abcdef", "small")]
    assert res.answer.input_tokens == 6 and res.answer.usage_source == "estimate"
    assert att.cost_usd == pytest.approx(PRICES["small"].cost(6, 6))

    # a counter naming its source; a partial provider count keeps the provider's number
    def tik(text: str, model: str | None) -> tuple[int, str]:
        return 3, "tiktoken"

    script = {"small": answer("small", n_in=50, n_out=None)}
    res = dispatch(FakeJudge(), "q", caller(script), prices=PRICES, counter=tik, clock=ticker())
    att = res.attempts[0]
    assert (att.input_tokens, att.output_tokens, att.usage_source) == (50, 3, "tiktoken")
    b = await adispatch(FakeJudge(), "q", acaller(script), prices=PRICES, counter=tik, clock=ticker())
    assert b.to_dict() == res.to_dict()

    # provider counts are used untouched
    res = dispatch(FakeJudge(), "q", caller(), prices=PRICES, counter=tik)
    assert res.attempts[0].usage_source == "provider" and res.attempts[0].input_tokens == 100


@dataclass(frozen=True)
class _TokenCount:
    n: int
    source: str


def test_default_counter_marks_estimates(monkeypatch: pytest.MonkeyPatch):
    """When the token counter can only estimate (no BPE file), dispatch records the estimate as such."""
    from crescade.serving import dispatch as dispatch_module

    monkeypatch.setattr(dispatch_module, "count_tokens",
                        lambda text, model=None: _TokenCount(math.ceil(len(text) / 4), "estimate"))
    assert default_counter("x" * 9, "gpt-4o") == (3, "estimate")
    assert default_counter("", None) == (0, "estimate")
    script = {"small": answer("small", text="y" * 8, n_in=None, n_out=None)}
    res = dispatch(FakeJudge(), "q" * 40, caller(script), prices=PRICES)
    att = res.attempts[0]
    assert (att.input_tokens, att.output_tokens, att.usage_source) == (10, 2, "estimate")


def test_default_counter_uses_the_token_counter(monkeypatch: pytest.MonkeyPatch):
    from crescade.serving import dispatch as dispatch_module

    monkeypatch.setattr(dispatch_module, "count_tokens",
                        lambda text, model=None: _TokenCount(len(text.split()), "tiktoken"))
    assert default_counter("a b c", "gpt-4o") == (3, "tiktoken")


async def test_costs_summed_including_rejected_answers():
    judge = FakeJudge({"small": 0.1, "medium": 0.2})
    script = {m: answer(m, n_in=1000, n_out=100) for m in LADDER}
    res, _ = await run_both(judge, script, clock_step=0.25)
    expected = sum(PRICES[m].cost(1000, 100) for m in LADDER)
    assert res.total_cost_usd == pytest.approx(expected)
    assert res.total_input_tokens == 3000 and res.total_output_tokens == 300
    assert res.latency_s == pytest.approx(0.75)
    assert all(a.cost_usd > 0 for a in res.attempts)
    assert res.to_dict()["totals"]["cost_usd"] == pytest.approx(expected)


def test_timing_fields():
    script = {"small": answer("small", n_out=11, ttft_s=0.1),
              "medium": answer("medium", n_out=4, tpot_s=0.05)}
    res = dispatch(FakeJudge({"small": 0.1, "medium": 0.9}), "q", caller(script), prices=PRICES,
                   clock=ticker(1.0))
    a0, a1 = res.attempts
    assert a0.latency_s == pytest.approx(1.0) and a0.ttft_s == 0.1
    assert a0.tpot_s == pytest.approx((1.0 - 0.1) / 10)  # streamed: (latency - ttft) / (n - 1)
    assert a1.tpot_s == 0.05 and a1.ttft_s is None  # provider value kept
    assert res.answer.latency_s == pytest.approx(1.0)
    res = dispatch(FakeJudge(), "q", caller(), prices=PRICES, clock=ticker(2.0))
    assert res.attempts[0].tpot_s == pytest.approx(2.0 / 10)  # non-streamed: latency / n


async def test_to_dict_is_json_and_complete():
    script = {"small": TimeoutError("t")}
    res, _ = await run_both(FakeJudge({"medium": 0.3}), script)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["cluster"] == 3 and d["routed_model"] == "small" and d["model"] == "large"
    assert d["escalated"] is True and d["answering_tier"] == 2 and d["ladder"] == list(LADDER)
    assert d["reason"] == res.reason
    keys = {"tier", "model", "p", "threshold", "accepted", "reason", "error", "input_tokens", "output_tokens",
            "usage_source", "cost_usd", "latency_s", "ttft_s", "tpot_s", "error_kind", "retry"}
    assert [set(t) for t in d["tiers"]] == [keys] * 3
    assert [t["error_kind"] for t in d["tiers"]] == ["timeout", None, None]
    assert d["degraded"] is None and d["spend_guard"] is None
    t0, t1, t2 = d["tiers"]
    assert t0["error"] == "TimeoutError: t" and t0["p"] is None and t0["threshold"] == 0.6
    assert t1["p"] == 0.3 and t1["threshold"] == 0.7 and t1["accepted"] is False
    assert t2["accepted"] is True and t2["p"] is None and t2["threshold"] == 0.0
    assert set(d["totals"]) == {"cost_usd", "input_tokens", "output_tokens", "latency_s"}
    assert d["totals"]["input_tokens"] == 200
    assert isinstance(res.attempts[0], TierAttempt)


# -- concurrency -----------------------------------------------------------------------------------


def _scenario(i: int) -> tuple[dict[str, float], dict[str, Answer | BaseException], str]:
    """Per-query scripted outcome and the model that must answer."""
    kind = i % 4
    q = f"q{i}"
    if kind == 0:
        return {"small": 0.9}, {}, "small"
    if kind == 1:
        return {"small": 0.1, "medium": 0.9}, {}, "medium"
    if kind == 2:
        return {"medium": 0.1}, {"small": TimeoutError(q)}, "large"
    return {}, {"small": answer("small", text="", n_in=i + 1), "medium": ConnectionError(q)}, "large"


class QueryJudge:
    """A judge whose scores depend on the query text, shared by every concurrent dispatch."""

    def plan(self, query: str, *, min_model: str | None = None) -> Plan:
        return PLAN

    def judge(
        self, query: str, answer: Answer, *, plan: Plan, tier: int, history: Sequence[Answer]
    ) -> Verdict:
        assert all(h.text.endswith(query) or h.text == "" for h in history)
        p = _scenario(int(query[1:]))[0].get(answer.model, 0.9)
        return Verdict(p=p, threshold=plan.thresholds[tier], escalate=p < plan.thresholds[tier], reason="")


def _script_for(query: str) -> dict[str, Answer | BaseException]:
    i = int(query[1:])
    script = dict(_scenario(i)[1])
    for m in LADDER:
        script.setdefault(m, answer(m, text=f"{m}:{query}", n_in=i + 1, n_out=1))
    return script


def _check(res: DispatchResult, i: int) -> None:
    q = f"q{i}"
    expected = _scenario(i)[2]
    assert res.model == expected and res.answer.text == f"{expected}:{q}"
    for a in res.attempts:
        if a.answer is not None:
            assert a.answer.text in (f"{a.model}:{q}", "")
        if a.error is not None:
            assert a.error.endswith(q)
    assert res.total_input_tokens == sum(i + 1 for a in res.attempts if a.answer is not None)


async def test_100_concurrent_adispatch():
    judge = QueryJudge()

    async def run(i: int) -> DispatchResult:
        q = f"q{i}"
        script = _script_for(q)

        async def acall(model: str, is_last: bool) -> Answer:
            await asyncio.sleep(0.001 * ((i * 7 + len(model)) % 5))  # interleave the tasks
            out = script[model]
            if isinstance(out, BaseException):
                raise out
            return out

        return await adispatch(judge, q, acall, prices=PRICES)

    results = await asyncio.gather(*(run(i) for i in range(100)))
    for i, res in enumerate(results):
        _check(res, i)


def test_50_concurrent_sync_dispatch_in_threads():
    judge = QueryJudge()
    barrier = threading.Barrier(10)

    def run(i: int) -> DispatchResult:
        q = f"q{i}"
        script = _script_for(q)

        def call(model: str, is_last: bool) -> Answer:
            if i < 10 and model == "small":
                barrier.wait(timeout=5)  # make the first ten really overlap
            out = script[model]
            if isinstance(out, BaseException):
                raise out
            return out

        return dispatch(judge, q, call, prices=PRICES)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(run, range(50)))
    for i, res in enumerate(results):
        _check(res, i)
    assert not math.isnan(sum(r.total_cost_usd for r in results))


def test_invalid_tool_call_reason_names_the_problems() -> None:
    from crescade.serving.dispatch import _with_problems

    assert _with_problems("invalid tool call", ()) == "invalid tool call"
    assert _with_problems("invalid tool call", ("tool 'add': $.a: expected integer, got str", "x")) == (
        "invalid tool call: tool 'add': $.a: expected integer, got str; x")
