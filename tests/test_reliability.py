"""Serving safeguards of the dispatch loop: error kinds, timeouts and deadlines, retries, rate-limit
cool-downs, the spend cap, cancellation. Scripted judge and callers; no framework."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from dispatch_fakes import PRICES, FakeJudge, answer, caller

from crescade.common.errors import ConfigError
from crescade.engine.decisions import Answer
from crescade.serving.dispatch import DispatchFailedError, adispatch, dispatch
from crescade.serving.reliability import (
    Cooldowns,
    Reliability,
    SpendGuard,
    SpendLimitError,
    TierSkippedError,
    TierTimeoutError,
    classify_error,
)
from crescade.serving.timeouts import abandoned_calls, call_with_timeout, iterate_with_timeout


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Headers(dict):
    def get(self, key: str, default: Any = None) -> Any:  # case-insensitive, like httpx.Headers
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.headers = status, Headers(headers or {})


class ProviderError(Exception):
    """Shaped like openai/anthropic APIStatusError: ``status_code`` and a ``response`` with headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"Error code: {status}")
        self.status_code = status
        self.response = FakeResponse(status, headers)


class APITimeoutError(Exception):
    pass


class APIConnectionError(Exception):
    pass


class RateLimitError(Exception):
    pass


# -- classify_error -------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "kind", "retry_after"), [
    (ProviderError(429, {"Retry-After": "7"}), "rate_limit", 7.0),
    (ProviderError(429, {"retry-after-ms": "1500", "retry-after": "9"}), "rate_limit", 1.5),
    (ProviderError(429), "rate_limit", None),
    (ProviderError(429, {"Retry-After": "soon"}), "rate_limit", None),
    (ProviderError(429, {"Retry-After": "99999999"}), "rate_limit", 3600.0),
    (RateLimitError("slow down"), "rate_limit", None),
    (ProviderError(503), "server", None),
    (ProviderError(500), "server", None),
    (ProviderError(504), "timeout", None),
    (ProviderError(400), "client", None),
    (ProviderError(401), "client", None),
    (TimeoutError("read timed out"), "timeout", None),
    (APITimeoutError("Request timed out."), "timeout", None),
    (TierTimeoutError("m", 1.0), "timeout", None),
    (ConnectionResetError("peer reset"), "connection", None),
    (APIConnectionError("Connection error."), "connection", None),
    (ValueError("Expecting value: line 1 column 1"), "malformed", None),
    (RuntimeError("boom"), "other", None),
])
def test_classify_error(exc: BaseException, kind: str, retry_after: float | None) -> None:
    info = classify_error(exc)
    assert info.kind == kind
    assert info.retry_after_s == retry_after
    assert info.retryable is (kind in ("connection", "server"))


def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    info = classify_error(ProviderError(429, {"Retry-After": when}))
    assert info.kind == "rate_limit" and info.retry_after_s is not None and 25 <= info.retry_after_s <= 31


def test_classify_error_reads_real_openai_and_httpx_errors() -> None:
    import httpx
    import openai

    req = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    limited = openai.RateLimitError("limited", response=httpx.Response(429, headers={"retry-after": "3"}, request=req),
                                    body=None)
    assert classify_error(limited) == classify_error(limited) and classify_error(limited).retry_after_s == 3.0
    assert classify_error(openai.InternalServerError("x", response=httpx.Response(502, request=req),
                                                     body=None)).kind == "server"
    assert classify_error(openai.BadRequestError("x", response=httpx.Response(400, request=req),
                                                 body=None)).kind == "client"
    assert classify_error(openai.APIConnectionError(request=req)).kind == "connection"
    assert classify_error(openai.APITimeoutError(request=req)).kind == "timeout"
    assert classify_error(httpx.ConnectError("refused")).kind == "connection"
    assert classify_error(httpx.ReadTimeout("slow")).kind == "timeout"
    assert classify_error(httpx.RemoteProtocolError("peer closed")).kind == "connection"


# -- Cooldowns and SpendGuard ---------------------------------------------------------------------

def test_cooldowns_follow_retry_after_then_back_off_exponentially() -> None:
    clock = FakeClock()
    cd = Cooldowns(base_s=2, max_s=10, clock=clock)
    assert cd.remaining("m") == 0
    assert cd.rate_limited("m", retry_after_s=3) == 3
    assert cd.remaining("m") == 3
    clock.t += 3
    assert cd.remaining("m") == 0
    assert [cd.rate_limited("m") for _ in range(4)] == [4, 8, 10, 10]  # strikes 2..5: 2 * 2^(n-1), capped
    cd.succeeded("m")
    clock.t += 100
    assert cd.rate_limited("m") == 2  # strikes reset by the success
    cd.clear()
    assert cd.remaining("m") == 0
    with pytest.raises(ConfigError):
        Cooldowns(base_s=0)


def test_spend_guard_window_reservations_and_validation() -> None:
    clock = FakeClock()
    g = SpendGuard(1.0, window_s=60, clock=clock)
    r = g.reserve("a")
    assert r is not None and r.usd == 0  # nothing known about "a" yet
    g.settle(r, 0.4)
    r2 = g.reserve("a")  # reserves a's last cost
    assert r2 is not None and r2.usd == pytest.approx(0.4)
    assert g.snapshot()["reserved_usd"] == pytest.approx(0.4)
    assert g.reserve("a") is None  # 0.4 spent + 0.4 reserved + 0.4 > 1.0
    g.settle(r2, 0.5)
    g.settle(r2, 9.9)  # settling twice changes nothing
    assert g.spent() == pytest.approx(0.9) and g.snapshot()["reserved_usd"] == 0
    assert not g.over()
    g.settle(None, 0.2, model="b")
    assert g.over() and g.reserve("b") is None
    clock.t += 61
    assert g.spent() == 0 and not g.over()
    for bad in ({"limit_usd": -1}, {"limit_usd": float("nan")}, {"limit_usd": 1, "window_s": 0},
                {"limit_usd": 1, "action": "shout"}):
        with pytest.raises(ConfigError):
            SpendGuard(**bad)  # type: ignore[arg-type]


def test_reliability_validates_and_coerces() -> None:
    assert Reliability.coerce(None) is None
    rel = Reliability.coerce({"tier_timeout": {"small": 2}, "deadline": 5})
    assert isinstance(rel, Reliability) and rel.timeout_of("small") == 2 and rel.timeout_of("large") is None
    assert Reliability(tier_timeout=3).timeout_of("x") == 3
    for bad in ({"tier_timeout": 0}, {"tier_timeout": {"a": -1}}, {"deadline": float("inf")}, {"max_retries": -1},
                {"max_retries": True}, {"retry_backoff_s": -0.1}, {"spend_guard": 3}):
        with pytest.raises(ConfigError):
            Reliability(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown reliability setting"):
        Reliability.coerce({"timeout": 3})
    with pytest.raises(ConfigError):
        Reliability.coerce(3)


# -- timeouts ---------------------------------------------------------------------------------------

def hanging_caller(hang: set[str], release: threading.Event, log: list[tuple[str, bool]] | None = None
                   ) -> Callable[[str, bool], Answer]:
    base = caller(log=log)

    def call(model: str, is_last: bool) -> Answer:
        if model in hang:
            release.wait(30)
        return base(model, is_last)

    return call


def wait_for_no_abandoned(timeout: float = 5.0) -> int:
    end = time.monotonic() + timeout
    while abandoned_calls() and time.monotonic() < end:
        time.sleep(0.01)
    return abandoned_calls()


def test_a_hung_tier_escalates_when_its_timeout_fires_and_its_thread_ends() -> None:
    release = threading.Event()
    rel = Reliability(tier_timeout={"small": 0.05}, cooldowns=Cooldowns())
    try:
        res = dispatch(FakeJudge({"medium": 0.9}), "q", hanging_caller({"small"}, release), prices=PRICES,
                       reliability=rel)
    finally:
        release.set()
    a0, a1 = res.attempts
    assert a0.error_kind == "timeout" and a0.error is not None and "within 0.05 s (its timeout)" in a0.error
    assert a0.latency_s < 1 and a0.cost_usd == 0
    assert res.model == "medium" and res.escalated and "tier 0 (small) raised TierTimeoutError" in res.reason
    assert a1.accepted
    assert wait_for_no_abandoned() == 0


async def test_async_timeout_cancels_the_childs_coroutine() -> None:
    cancelled: list[str] = []

    async def acall(model: str, is_last: bool) -> Answer:
        if model == "small":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(model)
                raise
        return answer(model)

    rel = Reliability(tier_timeout=0.05, cooldowns=Cooldowns())
    res = await adispatch(FakeJudge({"medium": 0.9}), "q", acall, prices=PRICES, reliability=rel)
    assert cancelled == ["small"]
    assert res.attempts[0].error_kind == "timeout" and res.model == "medium"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_the_deadline_bounds_the_request_and_skips_what_is_left() -> None:
    release = threading.Event()
    log: list[tuple[str, bool]] = []
    rel = Reliability(deadline=0.1, cooldowns=Cooldowns())
    t0 = time.monotonic()
    try:
        with pytest.raises(DispatchFailedError) as info:
            dispatch(FakeJudge(), "q", hanging_caller({"small"}, release, log), prices=PRICES, reliability=rel)
    finally:
        release.set()
    assert time.monotonic() - t0 < 2
    err = info.value
    assert [f.model for f in err.failures] == ["small", "medium", "large"]
    assert isinstance(err.failures[0].error, TierTimeoutError) and err.failures[0].error.deadline
    assert all(isinstance(f.error, TierSkippedError) for f in err.failures[1:])
    assert "deadline of 0.1 s passed" in str(err)
    assert [a.error_kind for a in err.attempts] == ["timeout", "skipped", "skipped"]
    assert log == []  # small never returned to the caller; medium and large were never called
    assert wait_for_no_abandoned() == 0


def test_call_with_timeout_hands_back_results_errors_and_interrupts() -> None:
    assert call_with_timeout(lambda: 42, 1.0) == 42
    assert call_with_timeout(lambda: 42, None) == 42

    def boom() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_timeout(boom, 1.0)
    with pytest.raises(TierTimeoutError):
        call_with_timeout(lambda: 1, 0.0)


def test_iterate_with_timeout_stops_a_hung_stream_and_closes_it() -> None:
    release, closed = threading.Event(), threading.Event()

    def stream() -> Any:
        try:
            yield "a"
            yield "b"
            release.wait(30)
            yield "c"
        finally:
            closed.set()

    got: list[str] = []
    with pytest.raises(TierTimeoutError):
        for x in iterate_with_timeout(stream, 0.2, model="m"):
            got.append(x)
    assert got == ["a", "b"]
    release.set()
    assert closed.wait(5)
    assert wait_for_no_abandoned() == 0
    assert list(iterate_with_timeout(lambda: iter([1, 2, 3]), 5.0)) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError):
        list(iterate_with_timeout(lambda: (1 / 0 for _ in range(1)), 5.0))


# -- retries ----------------------------------------------------------------------------------------

def flaky(fail_first: dict[str, BaseException]) -> tuple[Callable[[str, bool], Answer], list[str]]:
    calls: list[str] = []

    def call(model: str, is_last: bool) -> Answer:
        calls.append(model)
        if model in fail_first and calls.count(model) == 1:
            raise fail_first[model]
        return answer(model)

    return call, calls


@pytest.mark.parametrize(("exc", "retried"), [
    (ConnectionResetError("reset"), True),
    (ProviderError(503), True),
    (ProviderError(400), False),
    (TimeoutError("slow"), False),
    (ProviderError(429), False),
])
def test_retries_only_transient_failures_of_the_same_tier(exc: BaseException, retried: bool) -> None:
    call, calls = flaky({"small": exc})
    rel = Reliability(max_retries=1, retry_backoff_s=0.0, cooldowns=Cooldowns())
    res = dispatch(FakeJudge({"small": 0.9, "medium": 0.9}), "q", call, prices=PRICES, reliability=rel)
    if retried:
        assert calls == ["small", "small"] and res.model == "small" and not res.escalated
        assert [(a.tier, a.retry, a.accepted) for a in res.attempts] == [(0, 0, False), (0, 1, True)]
        assert "retrying (retry 1 of 1)" in res.attempts[0].reason
    else:
        assert calls == ["small", "medium"] and res.model == "medium" and res.escalated


def test_retries_are_bounded() -> None:
    calls: list[str] = []

    def call(model: str, is_last: bool) -> Answer:
        calls.append(model)
        if model == "small":
            raise ConnectionResetError("always")
        return answer(model)

    rel = Reliability(max_retries=2, retry_backoff_s=0.0, cooldowns=Cooldowns())
    res = dispatch(FakeJudge({"medium": 0.9}), "q", call, prices=PRICES, reliability=rel)
    assert calls == ["small", "small", "small", "medium"]
    assert [a.retry for a in res.attempts] == [0, 1, 2, 0]


# -- rate limits and cool-downs ---------------------------------------------------------------------

def test_a_rate_limited_tier_cools_down_and_is_skipped_not_hammered() -> None:
    cd = Cooldowns()
    rel = Reliability(cooldowns=cd)
    calls: list[str] = []

    def call(model: str, is_last: bool) -> Answer:
        calls.append(model)
        if model == "small":
            raise ProviderError(429, {"Retry-After": "30"})
        return answer(model)

    judge = FakeJudge({"medium": 0.9})
    first = dispatch(judge, "q", call, prices=PRICES, reliability=rel)
    assert first.model == "medium" and first.attempts[0].error_kind == "rate_limit"
    assert "cools down for 30 s" in first.attempts[0].reason
    assert 29 < cd.remaining("small") <= 30
    second = dispatch(judge, "q", call, prices=PRICES, reliability=rel)
    assert calls == ["small", "medium", "medium"]  # small not asked again
    skip = second.attempts[0]
    assert skip.error_kind == "skipped" and skip.reason.startswith("skipped: rate limited, cooling down for")
    assert second.routed_model == "small" and second.model == "medium"
    assert second.escalated is False  # a skipped tier is not an escalation (no conversation floor from it)
    d = second.to_dict()
    assert d["tiers"][0]["error_kind"] == "skipped" and d["tiers"][0]["cost_usd"] == 0


def test_when_every_tier_above_is_cooling_down_the_answer_is_accepted_as_degraded() -> None:
    cd = Cooldowns()
    cd.rate_limited("medium", 60)
    cd.rate_limited("large", 60)
    log: list[tuple[str, bool]] = []
    res = dispatch(FakeJudge({"small": 0.1}), "q", caller(log=log), prices=PRICES,
                   reliability=Reliability(cooldowns=cd))
    assert log == [("small", True)]  # called as the last reachable tier (so an adapter streams it live)
    assert res.model == "small" and res.attempts[0].accepted
    assert res.attempts[0].verdict is not None and res.attempts[0].verdict.p == 0.1  # judged for the account
    assert res.degraded is not None and "medium: rate limited" in res.degraded and "large: rate limited" in res.degraded
    assert res.to_dict()["degraded"] == res.degraded
    assert res.reason.startswith("last available tier")


def test_every_tier_cooling_down_is_one_clear_error() -> None:
    cd = Cooldowns()
    for m in ("small", "medium", "large"):
        cd.rate_limited(m, 60)
    log: list = []
    with pytest.raises(DispatchFailedError) as info:
        dispatch(FakeJudge(), "q", caller(log=log), prices=PRICES, reliability=Reliability(cooldowns=cd))
    assert log == []
    text = str(info.value)
    assert "all 3 tier(s) failed" in text and text.count("cooling down") == 3


# -- the spend guard --------------------------------------------------------------------------------

SMALL_COST = PRICES["small"].cost(100, 10)


def test_past_the_cap_the_cascade_stops_escalating_and_says_so() -> None:
    guard = SpendGuard(SMALL_COST * 0.5)  # the first call already crosses it
    log: list[tuple[str, bool]] = []
    rel = Reliability(spend_guard=guard, cooldowns=Cooldowns())
    res = dispatch(FakeJudge({"small": 0.1}), "q", caller(log=log), prices=PRICES, reliability=rel)
    assert log == [("small", False)]  # routed tier answered (its cost crossed the cap) and was not escalated
    assert res.model == "small" and res.degraded is not None and "spend cap reached" in res.degraded
    assert res.spend_guard is not None and res.spend_guard["spent_usd"] == pytest.approx(SMALL_COST)
    assert res.to_dict()["spend_guard"]["limit_usd"] == pytest.approx(SMALL_COST * 0.5)
    again = dispatch(FakeJudge({"small": 0.1}), "q", caller(log=log), prices=PRICES, reliability=rel)
    assert log[1:] == [("small", True)] and again.model == "small"


def test_refuse_mode_refuses_new_requests_before_any_call() -> None:
    guard = SpendGuard(SMALL_COST * 2.5, action="refuse")  # a third call would cross it
    log: list = []
    rel = Reliability(spend_guard=guard, cooldowns=Cooldowns())
    dispatch(FakeJudge({"small": 0.9}), "q", caller(log=log), prices=PRICES, reliability=rel)
    dispatch(FakeJudge({"small": 0.9}), "q", caller(log=log), prices=PRICES, reliability=rel)
    with pytest.raises(SpendLimitError, match="spend cap reached"):
        dispatch(FakeJudge({"small": 0.9}), "q", caller(log=log), prices=PRICES, reliability=rel)
    assert len(log) == 2


def test_the_cap_holds_under_concurrency() -> None:
    guard = SpendGuard(SMALL_COST * 10.5, action="refuse")
    rel = Reliability(spend_guard=guard, cooldowns=Cooldowns())
    judge = FakeJudge({"small": 0.9})
    dispatch(judge, "q", caller(), prices=PRICES, reliability=rel)  # the guard learns what a call costs

    def one(_: int) -> str:
        try:
            dispatch(judge, "q", caller(), prices=PRICES, reliability=rel)
            return "answered"
        except SpendLimitError:
            return "refused"

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(one, range(50)))
    assert outcomes.count("answered") == 9 and outcomes.count("refused") == 41
    assert guard.spent() == pytest.approx(SMALL_COST * 10) and guard.snapshot()["reserved_usd"] == 0


# -- cancellation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("timed", [False, True])
async def test_cancelling_a_request_cancels_its_tier_and_leaves_no_task(timed: bool) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def acall(model: str, is_last: bool) -> Answer:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return answer(model)

    guard = SpendGuard(1.0)
    rel = Reliability(tier_timeout=10 if timed else None, spend_guard=guard, cooldowns=Cooldowns())
    task = asyncio.create_task(adispatch(FakeJudge(), "q", acall, prices=PRICES, reliability=rel))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert guard.snapshot()["reserved_usd"] == 0  # the interrupted call's reservation was released
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_a_short_cool_down_is_waited_out_when_no_tier_can_be_called_sooner() -> None:
    cd = Cooldowns()
    cd.rate_limited("medium", 0.2)
    cd.rate_limited("large", 0.2)
    log: list[tuple[str, bool]] = []
    t0 = time.monotonic()
    res = dispatch(FakeJudge({"small": 0.1, "medium": 0.9}), "q", caller(log=log), prices=PRICES,
                   reliability=Reliability(cooldowns=cd, cooldown_wait_s=1.0))
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert log == [("small", False), ("medium", False)]  # small was a draft: a tier above was reachable
    assert res.model == "medium" and res.degraded is None
    assert "after waiting" in res.attempts[-1].reason


def test_a_cooling_routed_tier_is_skipped_not_waited_for_when_a_tier_above_is_free() -> None:
    cd = Cooldowns()
    cd.rate_limited("small", 0.5)
    log: list[tuple[str, bool]] = []
    t0 = time.monotonic()
    res = dispatch(FakeJudge({"medium": 0.9}), "q", caller(log=log), prices=PRICES,
                   reliability=Reliability(cooldowns=cd))
    assert time.monotonic() - t0 < 0.4
    assert log == [("medium", False)] and res.model == "medium"
    assert res.attempts[0].error_kind == "skipped"
