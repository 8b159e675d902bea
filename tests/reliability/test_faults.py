"""Injected provider faults through both adapters, every calling mode: timeouts and hangs escalate (and leave
no thread behind), mid-stream failures of a draft escalate and of the live tier end the request with one
error, rate limits cool their model down, retries are bounded, the spend guard speaks in the account."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lc_scripted import ScriptedChatModel
from li_scripted import ScriptedLLM
from li_support import POOL, fitted_cascade, topic_query

from crescade.serving.dispatch import DispatchFailedError
from crescade.serving.faults import FaultSchedule
from crescade.serving.reliability import Cooldowns, Reliability, SpendGuard, SpendLimitError, TierTimeoutError
from crescade.serving.timeouts import abandoned_calls

MODES = ("sync", "async", "stream", "astream")
LONG = "B " + "and some more words to stream " * 4  # enough chunks for a break after two
QUERY = next(q for q in (topic_query("geography", s) for s in range(40))
             if fitted_cascade().plan(q).ladder == POOL)  # routed to cheap, with two tiers above


class Adapter:
    """One adapter's cascade over fault-wrapped scripted children, called in any mode."""

    def __init__(self, kind: str, faults: FaultSchedule, reliability: Reliability, **answers: str) -> None:
        self.kind = kind
        text = {m: answers.get(m, "B") for m in POOL}
        if kind == "langchain":
            from crescade_langchain import CascadeChatModel
            from crescade_langchain.testing import FaultInjectingChatModel

            kids = {m: FaultInjectingChatModel(inner=ScriptedChatModel(model_name=m, answer=text[m]), faults=faults,
                                               fault_key=m) for m in POOL}
            self.model: Any = CascadeChatModel(models=kids, cascade=fitted_cascade(), reliability=reliability)
        else:
            from crescade_llamaindex import CascadeLLM
            from crescade_llamaindex.testing import FaultInjectingLLM

            kids = {m: FaultInjectingLLM(inner=ScriptedLLM(model_name=m, answer=text[m]), faults=faults,
                                         fault_key=m) for m in POOL}
            self.model = CascadeLLM(llms=kids, cascade=fitted_cascade(), reliability=reliability)

    def call(self, mode: str, query: str = QUERY) -> tuple[dict[str, Any], str, int]:
        """``(account, answer text, chunks seen)``; raises what the cascade raised."""
        out: Any
        if self.kind == "langchain":
            if mode == "sync":
                out, n = self.model.invoke(query), 1
            elif mode == "async":
                out, n = asyncio.run(self.model.ainvoke(query)), 1
            else:
                chunks = list(self.model.stream(query)) if mode == "stream" else asyncio.run(_acollect(
                    self.model.astream(query)))
                out, n = _sum(chunks), len(chunks)
            return out.response_metadata["crescade"], str(out.content), n
        from llama_index.core.base.llms.types import ChatMessage, MessageRole

        msgs = [ChatMessage(role=MessageRole.USER, content=query)]
        if mode == "sync":
            out, n = self.model.chat(msgs), 1
        elif mode == "async":
            out, n = asyncio.run(self.model.achat(msgs)), 1
        else:
            if mode == "stream":
                chunks = list(self.model.stream_chat(msgs))
            else:
                chunks = asyncio.run(_acollect_coro(self.model.astream_chat(msgs)))
            out, n = chunks[-1], len(chunks)
        return out.additional_kwargs["crescade"], out.message.content or "", n


async def _acollect(agen: Any) -> list[Any]:
    return [c async for c in agen]


async def _acollect_coro(coro: Any) -> list[Any]:
    return [c async for c in await coro]


def _sum(chunks: list[Any]) -> Any:
    out = chunks[0]
    for c in chunks[1:]:
        out = out + c
    return out


@pytest.fixture(params=["langchain", "llamaindex"])
def adapter_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def faults_factory() -> Iterator[Callable[..., FaultSchedule]]:
    made: list[FaultSchedule] = []

    def make(kinds: list[str], models: list[str], **kw: Any) -> FaultSchedule:
        s = FaultSchedule(rate=1.0, kinds=kinds, models=models, seed=0, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.release()
    end = time.monotonic() + 10
    while abandoned_calls() and time.monotonic() < end:
        time.sleep(0.02)
    assert abandoned_calls() == 0, "a timed-out tier's thread is still running after its hang ended"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["hang", "stream_hang"])
def test_a_hung_draft_tier_times_out_and_escalates(adapter_kind: str, faults_factory: Callable[..., FaultSchedule],
                                                   mode: str, fault: str) -> None:
    faults = faults_factory([fault], ["cheap"], hang_s=20)
    a = Adapter(adapter_kind, faults, Reliability(tier_timeout={"cheap": 0.3}, cooldowns=Cooldowns()), cheap=LONG)
    t0 = time.monotonic()
    account, text, _ = a.call(mode)
    assert time.monotonic() - t0 < 5
    first = account["tiers"][0]
    assert first["model"] == "cheap" and first["error_kind"] == "timeout"
    assert "did not finish within 0.3 s" in first["error"]
    assert account["model"] in ("mid", "strong") and account["escalated"] is True and text.strip()


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_the_live_tier_breaking_mid_stream_ends_the_request_with_one_error(
        adapter_kind: str, faults_factory: Callable[..., FaultSchedule], mode: str) -> None:
    faults = faults_factory(["stream_error"], ["strong"])
    a = Adapter(adapter_kind, faults, Reliability(max_retries=2, cooldowns=Cooldowns()), strong=LONG)
    with pytest.raises(DispatchFailedError) as info:
        # max_depth=1 in effect: a query routed straight to the strongest model streams it live
        a.model.max_depth = 1
        a.call(mode)
    err = info.value
    assert [f.model for f in err.failures] == ["strong"]  # no retry once output reached the caller
    assert "peer closed connection" in str(err)


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_draft_is_retried_once_then_served(adapter_kind: str, faults_factory: Callable[..., FaultSchedule],
                                                     mode: str) -> None:
    faults = faults_factory(["connection_reset"], ["cheap"], limit=1)  # only the first call to cheap fails
    a = Adapter(adapter_kind, faults, Reliability(max_retries=1, retry_backoff_s=0.0, cooldowns=Cooldowns()))
    account, _, _ = a.call(mode)
    tiers = account["tiers"]
    assert [(t["model"], t["retry"], t["error_kind"]) for t in tiers] == [("cheap", 0, "connection"),
                                                                          ("cheap", 1, None)]
    assert account["model"] == "cheap" and account["escalated"] is False
    assert "retried: tier 0 (cheap)" in account["reason"]


@pytest.mark.parametrize("mode", MODES)
def test_rate_limited_tier_cools_down_and_the_next_request_skips_it(
        adapter_kind: str, faults_factory: Callable[..., FaultSchedule], mode: str) -> None:
    faults = faults_factory(["rate_limit"], ["cheap"], retry_after_s=30)
    cd = Cooldowns()
    a = Adapter(adapter_kind, faults, Reliability(cooldowns=cd))
    first, _, _ = a.call(mode)
    assert first["tiers"][0]["error_kind"] == "rate_limit" and "cools down for 30 s" in first["tiers"][0]["reason"]
    assert cd.remaining("cheap") > 25
    calls_to_cheap = sum(1 for m, _, _ in faults.log if m == "cheap")
    second, _, _ = a.call(mode)
    assert second["tiers"][0]["error_kind"] == "skipped" and second["escalated"] is False
    assert sum(1 for m, _, _ in faults.log if m == "cheap") == calls_to_cheap  # not called again


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["malformed", "empty", "server_error", "timeout"])
def test_bad_responses_escalate_with_their_kind(adapter_kind: str, faults_factory: Callable[..., FaultSchedule],
                                                mode: str, fault: str) -> None:
    faults = faults_factory([fault], ["cheap"], slow_s=0.01)
    account, text, _ = Adapter(adapter_kind, faults, Reliability(cooldowns=Cooldowns())).call(mode)
    first = account["tiers"][0]
    if fault == "empty":
        assert first["error"] is None and first["reason"] == "empty answer" and first["accepted"] is False
    else:
        assert first["error_kind"] == {"malformed": "malformed", "server_error": "server",
                                       "timeout": "timeout"}[fault]
    assert account["model"] != "cheap" and text.strip()


@pytest.mark.parametrize("mode", MODES)
def test_the_deadline_bounds_a_request_whose_tiers_all_hang(
        adapter_kind: str, faults_factory: Callable[..., FaultSchedule], mode: str) -> None:
    faults = faults_factory(["hang"], list(POOL), hang_s=20)
    a = Adapter(adapter_kind, faults, Reliability(tier_timeout=0.3, deadline=0.5, cooldowns=Cooldowns()))
    t0 = time.monotonic()
    with pytest.raises(DispatchFailedError) as info:
        a.call(mode)
    assert time.monotonic() - t0 < 3
    err = info.value
    assert [f.model for f in err.failures] == list(POOL)
    assert isinstance(err.failures[0].error, TierTimeoutError)
    assert "deadline" in str(err)


def test_spend_guard_in_the_account_and_refusal(adapter_kind: str, faults_factory: Callable[..., FaultSchedule]
                                                ) -> None:
    faults = faults_factory(["slow"], [], slow_s=0.0)  # no model faulted: the guard alone acts
    guard = SpendGuard(1e-9)  # the first call crosses it
    a = Adapter(adapter_kind, faults, Reliability(spend_guard=guard, cooldowns=Cooldowns()),
                cheap="I'm not sure, but it might be C? This is unclear.")
    account, _, _ = a.call("sync")
    assert account["model"] == "cheap" and account["degraded"] is not None
    assert "spend cap reached" in account["degraded"]
    assert account["spend_guard"]["spent_usd"] > account["spend_guard"]["limit_usd"]
    refuse = Adapter(adapter_kind, faults, Reliability(spend_guard=SpendGuard(1e-9, action="refuse"),
                                                       cooldowns=Cooldowns()))
    refuse.call("sync")
    with pytest.raises(SpendLimitError, match="refusing new requests"):
        refuse.call("async")


def test_llamaindex_reports_skipped_and_failed_tiers_as_escalation_events(
        faults_factory: Callable[..., FaultSchedule]) -> None:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from crescade_llamaindex import CascadeEscalationEvent

    seen: list[Any] = []

    class Handler(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, CascadeEscalationEvent):
                seen.append(event)

    handler = Handler()
    get_dispatcher().add_event_handler(handler)
    try:
        cd = Cooldowns()
        cd.rate_limited("cheap", 30)
        faults = faults_factory(["server_error"], ["mid"])
        Adapter("llamaindex", faults, Reliability(cooldowns=cd)).call("sync")
    finally:
        get_dispatcher().event_handlers.remove(handler)
    assert [(e.model, e.next_model) for e in seen] == [("cheap", "mid"), ("mid", "strong")]
    assert seen[0].reason.startswith("skipped: rate limited") and "InjectedServerError" in (seen[1].error or "")


@pytest.mark.parametrize("timed", [False, True])
def test_cancelling_a_request_cancels_its_tier_and_leaks_nothing(adapter_kind: str, timed: bool,
                                                                 faults_factory: Callable[..., FaultSchedule]) -> None:
    faults = faults_factory(["hang"], ["cheap"], hang_s=30)
    guard = SpendGuard(10.0)
    a = Adapter(adapter_kind, faults, Reliability(tier_timeout=20 if timed else None, spend_guard=guard,
                                                  cooldowns=Cooldowns()))

    async def run() -> int:
        if adapter_kind == "langchain":
            task = asyncio.ensure_future(a.model.ainvoke(QUERY))
        else:
            from llama_index.core.base.llms.types import ChatMessage, MessageRole

            task = asyncio.ensure_future(a.model.achat([ChatMessage(role=MessageRole.USER, content=QUERY)]))
        while not faults.log:  # the cheap tier was asked and is hanging
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return sum(1 for t in asyncio.all_tasks() if t is not asyncio.current_task())

    t0 = time.monotonic()
    assert asyncio.run(run()) == 0
    assert time.monotonic() - t0 < 5
    assert guard.snapshot()["reserved_usd"] == 0


@pytest.mark.parametrize("timed", [False, True])
def test_keyboard_interrupt_in_a_tier_reaches_the_caller(adapter_kind: str, timed: bool) -> None:
    class Interrupting(FaultSchedule):
        def decide(self, model: str, key: str) -> Any:
            raise KeyboardInterrupt

    a = Adapter(adapter_kind, Interrupting(rate=0.0), Reliability(tier_timeout=5 if timed else None,
                                                                  cooldowns=Cooldowns()))
    with pytest.raises(KeyboardInterrupt):
        a.call("sync")
