"""The dispatch loop every adapter reuses: call a tier, judge its answer, escalate, account for everything.

:func:`dispatch` and :func:`adispatch` walk a :class:`~crescade.decisions.Plan` ladder from the routed model
up to the strongest one. The adapter supplies ``call(model, is_last)``, which asks one model and returns an
:class:`~crescade.decisions.Answer`; the fitted cascade (any :class:`Judge`) plans and judges. A provider
error, an empty answer, an invalid tool call or structured output, or a failing quality estimator all
escalate; the last tier's answer is accepted as-is. Every attempt, rejected answers included (they were
paid for), is recorded in :class:`DispatchResult`.

Both loops drive one private state machine (:class:`DispatchSession`), so their policy cannot diverge. Nothing is
shared between calls: each dispatch builds its own state, so concurrent threads and tasks are safe as long as
the judge, the price mapping and the counter are safe to read concurrently.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..common.errors import AllTiersFailedError, ConfigError, CrescadeError, InputError, PricingError, TierFailure
from ..common.redact import redact
from ..engine.decisions import Answer, Plan, UsageSource, Verdict
from ..engine.tokens import count_tokens
from .inputs import restrict_to_inputs
from .reliability import (
    DEFAULT_RELIABILITY,
    Reliability,
    Reservation,
    SpendGuard,
    SpendLimitError,
    TierSkippedError,
    classify_error,
)
from .timeouts import acall_with_timeout, aiterate_with_timeout, call_with_timeout, iterate_with_timeout

if TYPE_CHECKING:
    from ..engine.pricing import ModelCard

__all__ = [
    "AnswerRejectedError",
    "DispatchFailedError",
    "DispatchResult",
    "Judge",
    "TierAttempt",
    "TierBuffer",
    "TokenCounter",
    "adispatch",
    "arun_session",
    "astream_session",
    "default_counter",
    "dispatch",
    "run_session",
    "stream_session",
]

TokenCounter = Callable[[str, "str | None"], Any]
"""``counter(text, model) -> int | (n, source)``. A bare int is recorded as usage source ``"estimate"``;
a pair (or an object with ``n`` and ``source``, such as ``crescade.tokens.TokenCount``) names its source."""

_MAX_ERROR_CHARS = 500
_SOURCE_RANK = {"provider": 0, "tiktoken": 1, "estimate": 2}


class Judge(Protocol):
    """What dispatch needs from the fitted cascade."""

    def plan(self, query: str, *, min_model: str | None = None) -> Plan:
        """Route ``query``; never start below ``min_model``'s tier when it is given."""
        ...

    def judge(
        self, query: str, answer: Answer, *, plan: Plan, tier: int, history: Sequence[Answer]
    ) -> Verdict:
        """Judge ``answer`` given at ``tier`` of ``plan``; ``history`` holds the earlier tiers' answers."""
        ...


class AnswerRejectedError(CrescadeError):
    """Stands for a tier that answered but was rejected, inside :class:`DispatchFailedError` failures."""


class DispatchFailedError(AllTiersFailedError):
    """No tier produced an acceptable answer and the last tier raised.

    ``failures`` lists every tier in order: the exception a tier raised, or an :class:`AnswerRejectedError`
    for a tier whose answer was rejected. ``attempts`` is the full account, so the spend is never lost.
    """

    def __init__(self, failures: Sequence[TierFailure], attempts: Sequence[TierAttempt]) -> None:
        super().__init__(failures)
        self.attempts = list(attempts)

    @property
    def total_cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)


@dataclass
class TierAttempt:
    """One tier's call: what it returned or raised, the verdict, usage, cost and timing.

    ``error`` is ``"TypeName: message"`` (message truncated, common secret shapes redacted), never a
    traceback. ``reason`` says why the tier was accepted or escalated.
    """

    tier: int
    model: str
    answer: Answer | None
    error: str | None
    verdict: Verdict | None
    input_tokens: int
    output_tokens: int
    usage_source: str
    cost_usd: float
    latency_s: float
    ttft_s: float | None
    tpot_s: float | None
    accepted: bool
    reason: str = ""
    error_kind: str | None = None  # classify_error's kind for a failure, "skipped" for a tier not called
    retry: int = 0  # 0 for the first call of this tier, n for its n-th retry

    def to_dict(self, threshold: float | None = None) -> dict[str, Any]:
        """Plain, JSON-serialisable view (non-finite floats become ``None``)."""
        v = self.verdict
        return {
            "tier": self.tier,
            "model": self.model,
            "p": _finite(v.p) if v is not None else None,
            "threshold": _finite(v.threshold) if v is not None else _finite(threshold),
            "accepted": self.accepted,
            "reason": self.reason,
            "error": self.error,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usage_source": self.usage_source,
            "cost_usd": _finite(self.cost_usd),
            "latency_s": _finite(self.latency_s),
            "ttft_s": _finite(self.ttft_s),
            "tpot_s": _finite(self.tpot_s),
            "error_kind": self.error_kind,
            "retry": self.retry,
        }


@dataclass
class DispatchResult:
    """The answer a dispatch returned and the full account of how it got there."""

    answer: Answer
    model: str
    routed_model: str
    cluster: int
    plan: Plan
    escalated: bool
    reason: str
    attempts: list[TierAttempt] = field(default_factory=list)
    degraded: str | None = None  # why a tier below the strongest was accepted as the last available one
    spend_guard: dict[str, Any] | None = None  # the spend guard's state after the call, when one is set

    @property
    def total_cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    @property
    def total_input_tokens(self) -> int:
        return sum(a.input_tokens for a in self.attempts)

    @property
    def total_output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.attempts)

    @property
    def latency_s(self) -> float:
        """Wall time summed over every tier called."""
        return sum(a.latency_s for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        """The account adapters put into response metadata; plain JSON types only."""
        thresholds = self.plan.thresholds
        return {
            "cluster": int(self.cluster),
            "routed_model": self.routed_model,
            "model": self.model,
            "answering_tier": self.attempts[-1].tier if self.attempts else None,
            "escalated": self.escalated,
            "reason": self.reason,
            "route": self.plan.reason,
            "unfamiliar": self.plan.unfamiliar,
            "knob_cost_unit": self.plan.cost_unit,
            "ladder": list(self.plan.ladder),
            "tiers": [
                a.to_dict(thresholds[a.tier] if a.tier < len(thresholds) else None) for a in self.attempts
            ],
            "degraded": self.degraded,
            "spend_guard": self.spend_guard,
            "totals": {
                "cost_usd": _finite(self.total_cost_usd),
                "input_tokens": self.total_input_tokens,
                "output_tokens": self.total_output_tokens,
                "latency_s": _finite(self.latency_s),
            },
        }


def default_counter(text: str, model: str | None) -> tuple[int, str]:
    """Count with :func:`crescade.engine.tokens.count_tokens` (tiktoken from a local BPE file, else an estimate)."""
    tc = count_tokens(text, model=model)
    return int(tc.n), str(tc.source)


def dispatch(
    judge: Judge,
    query: str,
    call: Callable[[str, bool], Answer],
    *,
    prices: Mapping[str, ModelCard],
    plan: Plan | None = None,
    min_model: str | None = None,
    max_depth: int | None = None,
    counter: TokenCounter | None = None,
    reliability: Reliability | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> DispatchResult:
    """Answer ``query`` through the cascade, calling ``call(model, is_last)`` tier by tier.

    ``plan`` defaults to ``judge.plan(query, min_model=min_model)`` (give one or the other). ``max_depth``
    caps the number of tiers tried, always keeping the strongest model as the last one. ``reliability``
    sets timeouts, a deadline, retries, cool-downs and a spend cap (:class:`~crescade.reliability.Reliability`).
    Raises :class:`~crescade.errors.PricingError` before any call if a ladder model has no price,
    :class:`~crescade.errors.AllTiersFailedError` (a :class:`DispatchFailedError`) if no tier's answer
    was accepted. ``KeyboardInterrupt``/``SystemExit`` propagate at once.
    """
    session = DispatchSession.start(judge, query, prices=prices, plan=plan, min_model=min_model,
                                    max_depth=max_depth, counter=counter, reliability=reliability, clock=clock)
    return run_session(session, lambda tier, model, is_last: call(model, is_last), clock=clock)


async def adispatch(
    judge: Judge,
    query: str,
    acall: Callable[[str, bool], Awaitable[Answer]],
    *,
    prices: Mapping[str, ModelCard],
    plan: Plan | None = None,
    min_model: str | None = None,
    max_depth: int | None = None,
    counter: TokenCounter | None = None,
    reliability: Reliability | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> DispatchResult:
    """Async :func:`dispatch`: same policy, awaiting ``acall(model, is_last)``.

    ``asyncio.CancelledError`` (like ``KeyboardInterrupt``) propagates immediately and is never recorded
    as a tier failure. The judge and counter are called synchronously; they are pure and fast.
    """
    session = DispatchSession.start(judge, query, prices=prices, plan=plan, min_model=min_model,
                                    max_depth=max_depth, counter=counter, reliability=reliability, clock=clock)
    return await arun_session(session, lambda tier, model, is_last: acall(model, is_last), clock=clock)


# ---------------------------------------------------------------------- drivers (shared by the adapters)

TierCall = Callable[[int, str, bool], Answer]
"""``call(tier, model, is_last) -> Answer``: ask one tier (raise on failure)."""


class TierBuffer(Protocol):
    """An adapter's buffer for one tier's stream (see :func:`stream_session`)."""

    @property
    def t_first(self) -> float | None:
        """When the first output chunk arrived."""
        ...

    def add(self, chunk: Any) -> Any:
        """Take one child chunk; return what to emit if this tier streams live (``None``: nothing)."""
        ...

    def answer(self) -> Answer:
        """The tier's whole answer, once its stream ended (raise if it is unusable)."""
        ...


StreamEvent = tuple[str, Any]
"""``("chunk", out)`` -- emit ``out`` now (the tier streams live); ``("draft", buffer)`` -- a buffered
tier was accepted, emit it whole; ``("done", (result, t_first_out))`` -- the last event."""


def run_session(session: DispatchSession, call: TierCall, *,
                clock: Callable[[], float] = time.perf_counter) -> DispatchResult:
    """Walk ``session``'s ladder with ``call`` (timed out, retried and skipped as its policy says)."""
    try:
        for tier, model, is_last in session.steps():
            if session.pause_s:
                time.sleep(session.pause_s)
            budget, by_deadline = session.budget(model)
            t0 = clock()
            try:
                answer = call_with_timeout(partial(call, tier, model, is_last), budget, model=model,
                                           by_deadline=by_deadline)
            except Exception as exc:
                session.failed(tier, model, exc, clock() - t0)
                continue
            if session.answered(tier, model, answer, clock() - t0):
                break
        return session.result()
    finally:
        session.close()


async def arun_session(session: DispatchSession, acall: Callable[[int, str, bool], Awaitable[Answer]], *,
                       clock: Callable[[], float] = time.perf_counter) -> DispatchResult:
    """Async :func:`run_session`; a timed-out tier's coroutine is cancelled."""
    try:
        for tier, model, is_last in session.steps():
            if session.pause_s:
                await asyncio.sleep(session.pause_s)
            budget, by_deadline = session.budget(model)
            t0 = clock()
            try:
                answer = await acall_with_timeout(partial(acall, tier, model, is_last), budget, model=model,
                                                  by_deadline=by_deadline)
            except Exception as exc:
                session.failed(tier, model, exc, clock() - t0)
                continue
            if session.answered(tier, model, answer, clock() - t0):
                break
        return session.result()
    finally:
        session.close()


def stream_session(session: DispatchSession, open_stream: Callable[[int, str], Iterable[Any]],
                   new_buffer: Callable[[int, str, float], TierBuffer], *,
                   clock: Callable[[], float] = time.perf_counter) -> Iterator[StreamEvent]:
    """Walk the ladder streaming: earlier tiers fill a buffer (timed) and are judged; the last reachable
    tier streams live. A tier that fails before emitting anything escalates (or is retried); one that
    fails mid-way through a live stream ends the request with the error."""
    first_out: float | None = None
    try:
        for tier, model, is_last in session.steps():
            if session.pause_s:
                time.sleep(session.pause_s)
            budget, by_deadline = session.budget(model)
            t0 = clock()
            buf = new_buffer(tier, model, t0)
            emitted = False
            try:
                for chunk in iterate_with_timeout(partial(open_stream, tier, model), budget, model=model,
                                                  by_deadline=by_deadline, clock=clock):
                    out = buf.add(chunk)
                    if is_last and out is not None:
                        if not emitted:
                            first_out = buf.t_first or clock()
                            emitted = True
                        yield "chunk", out
                answer = buf.answer()
            except Exception as exc:
                session.failed(tier, model, exc, clock() - t0, retryable=not emitted)
                if emitted:
                    break
                continue
            if session.answered(tier, model, answer, clock() - t0):
                if not is_last:
                    first_out = clock()
                    yield "draft", buf
                break
        yield "done", (session.result(), first_out)
    finally:
        session.close()


async def astream_session(session: DispatchSession, open_stream: Callable[[int, str], AsyncIterator[Any]],
                          new_buffer: Callable[[int, str, float], TierBuffer], *,
                          clock: Callable[[], float] = time.perf_counter) -> AsyncIterator[StreamEvent]:
    """Async :func:`stream_session`."""
    first_out: float | None = None
    try:
        for tier, model, is_last in session.steps():
            if session.pause_s:
                await asyncio.sleep(session.pause_s)
            budget, by_deadline = session.budget(model)
            t0 = clock()
            buf = new_buffer(tier, model, t0)
            emitted = False
            try:
                async for chunk in aiterate_with_timeout(partial(open_stream, tier, model), budget, model=model,
                                                         by_deadline=by_deadline, clock=clock):
                    out = buf.add(chunk)
                    if is_last and out is not None:
                        if not emitted:
                            first_out = buf.t_first or clock()
                            emitted = True
                        yield "chunk", out
                answer = buf.answer()
            except Exception as exc:
                session.failed(tier, model, exc, clock() - t0, retryable=not emitted)
                if emitted:
                    break
                continue
            if session.answered(tier, model, answer, clock() - t0):
                if not is_last:
                    first_out = clock()
                    yield "draft", buf
                break
        yield "done", (session.result(), first_out)
    finally:
        session.close()


# ---------------------------------------------------------------------- the session

class DispatchSession:
    """One dispatch's state: the effective plan, the attempts so far, and the policy for each step.

    The drivers above (:func:`run_session`, :func:`stream_session` and their async twins) walk it; the
    same policy holds for each of them::

        session = DispatchSession.start(judge, query, prices=prices, min_model=floor, reliability=rel)
        for tier, model, is_last in session.steps():      # skips cooling-down / over-budget tiers
            budget, _ = session.budget(model)             # the tier's timeout, capped by the deadline
            ...  # call the model, then:
            if session.answered(tier, model, answer, elapsed):   # or session.failed(...)
                break
        result = session.result()

    ``is_last`` is true for the last tier that can still be reached: the strongest one, or an earlier one
    when every tier above it is cooling down or the spend cap forbids escalating (the answer is then
    accepted as it is and the result says why in ``degraded``).
    """

    __slots__ = ("_accepted", "_attempts", "_clock", "_counter", "_degraded", "_errors", "_judge",
                 "_last_flag", "_on_record", "_pause", "_plan", "_prices", "_query", "_rel", "_reservation",
                 "_retries", "_retry_delay", "_retry_same", "_t_start", "_waited")

    def __init__(
        self, judge: Judge, query: str, plan: Plan, prices: Mapping[str, ModelCard], counter: TokenCounter,
        reliability: Reliability | None = None, clock: Callable[[], float] = time.perf_counter,
        on_record: Callable[[TierAttempt], None] | None = None,
    ) -> None:
        self._judge, self._query, self._plan = judge, query, plan
        self._prices, self._counter = prices, counter
        self._rel = reliability or DEFAULT_RELIABILITY
        self._clock, self._t_start = clock, clock()
        self._on_record = on_record
        self._attempts: list[TierAttempt] = []
        self._errors: list[BaseException] = []  # parallel to _attempts: what each tier failed with
        self._accepted = False
        self._degraded: str | None = None
        self._last_flag = False
        self._reservation: Reservation | None = None
        self._retries: dict[int, int] = {}
        self._retry_same = False
        self._retry_delay = 0.0
        self._pause = 0.0
        self._waited = 0.0

    @classmethod
    def start(
        cls,
        judge: Judge,
        query: str,
        *,
        prices: Mapping[str, ModelCard],
        plan: Plan | None = None,
        min_model: str | None = None,
        max_depth: int | None = None,
        counter: TokenCounter | None = None,
        reliability: Reliability | None = None,
        clock: Callable[[], float] = time.perf_counter,
        on_record: Callable[[TierAttempt], None] | None = None,
        needs: set[str] | frozenset[str] | None = None,
    ) -> DispatchSession:
        """Plan (unless ``plan`` is given) and check a request; ``needs`` are the kinds of content it carries
        (``{"text", "image"}``...): the ladder keeps only the tiers whose card accepts them all."""
        if plan is not None and min_model is not None:
            raise ConfigError("pass either plan or min_model, not both (min_model is given to judge.plan)")
        if not isinstance(query, str):
            raise InputError(f"the query must be text (str), got {type(query).__name__}")
        if reliability is not None and not isinstance(reliability, Reliability):
            raise ConfigError(f"reliability must be a crescade.Reliability, got {type(reliability).__name__}")
        guard = reliability.spend_guard if reliability is not None else None
        if guard is not None and guard.action == "refuse" and guard.over():
            raise SpendLimitError(f"{_cap_note(guard)}; refusing new requests")
        if plan is None:
            plan = judge.plan(query, min_model=min_model)
        if not plan.ladder:
            raise ConfigError("the plan's ladder is empty")
        plan = _truncate(plan, max_depth)
        missing = [m for m in dict.fromkeys(plan.ladder) if m not in prices]
        if missing:
            raise PricingError(f"no price for model(s) {', '.join(map(repr, missing))}; "
                               "an unknown price is never a silent zero")
        if needs:
            plan = restrict_to_inputs(plan, prices, set(needs))
        return cls(judge, query, plan, prices, counter or default_counter, reliability, clock, on_record)

    @property
    def plan(self) -> Plan:
        """The effective plan (after ``max_depth`` truncation)."""
        return self._plan

    @property
    def attempts(self) -> tuple[TierAttempt, ...]:
        """The tiers recorded so far, in order (a snapshot; for adapters that report each step)."""
        return tuple(self._attempts)

    @property
    def pause_s(self) -> float:
        """Seconds the driver must wait before calling the tier :meth:`steps` just yielded: a retry's backoff,
        or the end of a short cool-down when no tier can be called sooner (0: call at once)."""
        return self._pause

    # -- the walk --------------------------------------------------------------------------------
    def steps(self) -> Iterator[tuple[int, str, bool]]:
        """``(tier, model, is_last)`` for each tier to call now, in ladder order (a tier again when a retry
        was scheduled). Tiers that cannot be called are recorded as skipped and not yielded; when no tier
        left can be called now but one comes out of a cool-down within ``cooldown_wait_s``, the walk waits
        for it (:attr:`pause_s`)."""
        ladder = self._plan.ladder
        i = 0
        while i < len(ladder) and not self._accepted:
            self._pause, self._waited = (self._retry_delay if self._retry_same else 0.0), 0.0
            left = self.time_left()
            if left is not None and left <= self._pause:
                for j in range(i, len(ladder)):
                    self._skip(j, ladder[j], f"skipped: the request's deadline of {self._rel.deadline:g} s passed")
                return
            if not self._retry_same:
                waits = [self._rel.registry.remaining(m) for m in ladder[i:]]
                if waits[0] > 0:
                    ready = next((k for k, w in enumerate(waits) if w <= 0), None)
                    soonest = min(range(len(waits)), key=waits.__getitem__)
                    if ready is None and waits[soonest] <= self._rel.cooldown_wait_s and (
                            left is None or waits[soonest] < left):
                        ready, self._pause = soonest, waits[soonest]
                        self._waited = self._pause
                    if ready is None:
                        for k in range(i, len(ladder)):
                            self._skip(k, ladder[k], f"skipped: {self._unavailable(ladder[k]) or 'cooling down'}")
                        return
                    for k in range(i, i + ready):
                        self._skip(k, ladder[k], f"skipped: {self._unavailable(ladder[k]) or 'cooling down'}")
                    i += ready
            model = ladder[i]
            guard = self._rel.spend_guard
            if guard is not None:
                reservation = guard.reserve(model)
                if reservation is None and self._attempts_called():  # never escalate past the cap
                    self._skip(i, model, f"skipped: {_cap_note(guard)}: not escalated")
                    i += 1
                    continue
                if reservation is None and guard.action == "refuse":
                    raise SpendLimitError(f"{_cap_note(guard)}; refusing new requests")
                self._reservation = reservation or Reservation(model, 0.0)  # the routed tier still answers
            self._retry_same = False
            self._last_flag = self._last_reachable(i)
            yield i, model, self._last_flag
            if self._accepted:
                return
            if not self._retry_same:
                i += 1

    def time_left(self) -> float | None:
        """Seconds left of the request's deadline (``None``: no deadline)."""
        if self._rel.deadline is None:
            return None
        return self._rel.deadline - (self._clock() - self._t_start)

    def budget(self, model: str) -> tuple[float | None, bool]:
        """``(seconds, by_deadline)``: how long ``model``'s call may take now, and whether the deadline
        (rather than the tier's own timeout) sets it. ``(None, False)``: no limit."""
        own, left = self._rel.timeout_of(model), self.time_left()
        if left is None:
            return own, False
        left = max(left, 0.0)
        return (left, True) if own is None or left < own else (own, False)

    def failed(self, tier: int, model: str, exc: Exception, elapsed: float, *, retryable: bool = True) -> None:
        """Record a tier whose call raised; a rate limit cools the model down, a connection error or 5xx
        may schedule a retry of the same tier (see :attr:`retry_delay`)."""
        info = classify_error(exc)
        reason = f"raised {type(exc).__name__}"
        if info.kind == "rate_limit":
            wait = self._rel.registry.rate_limited(model, info.retry_after_s)
            reason += f" (rate limited: {model} cools down for {wait:.3g} s)"
        self._settle(0.0)
        attempt = self._retries.get(tier, 0)
        self._retry_same = False
        left = self.time_left()
        if (retryable and info.retryable and attempt < self._rel.max_retries
                and (left is None or left > self._rel.retry_backoff_s * 2 ** attempt)):
            self._retries[tier] = attempt + 1
            self._retry_same = True
            self._retry_delay = self._rel.retry_backoff_s * 2 ** attempt
            reason += f"; retrying (retry {attempt + 1} of {self._rel.max_retries})"
        self._record(TierAttempt(
            tier=tier, model=model, answer=None, error=describe_error(exc), verdict=None,
            input_tokens=0, output_tokens=0, usage_source="none", cost_usd=0.0,
            latency_s=elapsed, ttft_s=None, tpot_s=None, accepted=False, reason=reason,
            error_kind=info.kind, retry=attempt,
        ), exc)

    def answered(self, tier: int, model: str, answer: Answer, elapsed: float) -> bool:
        """Account for, check and judge an answer; return whether it is accepted."""
        if not isinstance(answer, Answer):
            self._settle(0.0)
            raise TypeError(f"call({model!r}, ...) returned {type(answer).__name__}, expected Answer")
        answer, in_tok, out_tok, source = self._usage(model, answer)
        card = self._prices.get(model)
        if card is None:
            self._settle(0.0)
            raise PricingError(f"no price for model {model!r}; an unknown price is never a silent zero")
        cost = float(card.cost(in_tok, out_tok))
        self._settle(cost)
        self._rel.registry.succeeded(model)
        ttft = answer.ttft_s
        tpot = answer.tpot_s
        if tpot is None and out_tok > 1 and ttft is not None:  # streamed: time after the first token
            tpot = max(0.0, elapsed - ttft) / (out_tok - 1)
        elif tpot is None and out_tok > 0:  # not streamed: only latency / tokens is known
            tpot = elapsed / out_tok
        if answer.latency_s is None:
            answer = replace(answer, latency_s=elapsed)

        verdict: Verdict | None = None
        top = tier == len(self._plan.ladder) - 1
        if top:
            accepted, why = True, "last tier"
        elif self._last_flag or self._last_reachable(tier):
            verdict, _, judged = self._judge_answer(tier, answer)
            self._degraded = f"no tier above {model} could be called ({self._blocked_above(tier)})"
            accepted, why = True, f"last available tier ({self._blocked_above(tier)}); QE: {judged}"
        elif answer.tool_calls_valid is False:
            accepted, why = False, _with_problems("invalid tool call", answer.problems)
        elif answer.structured_valid is False:
            accepted, why = False, _with_problems("invalid structured output", answer.problems)
        elif not answer.text.strip() and answer.tool_calls_valid is not True:
            accepted, why = False, "empty answer"
        else:
            verdict, accepted, why = self._judge_answer(tier, answer)

        self._accepted = accepted
        if self._waited:
            why += f" (after waiting {self._waited:.3g} s for its cool-down)"
        self._record(TierAttempt(
            tier=tier, model=model, answer=answer, error=None, verdict=verdict,
            input_tokens=in_tok, output_tokens=out_tok, usage_source=source, cost_usd=cost,
            latency_s=elapsed, ttft_s=ttft, tpot_s=tpot, accepted=accepted, reason=why,
            retry=self._retries.get(tier, 0),
        ), AnswerRejectedError(why))
        return accepted

    def result(self) -> DispatchResult:
        """The result once the loop stopped; raises if no answer was accepted."""
        plan, attempts = self._plan, self._attempts
        final = attempts[-1] if attempts else None
        if final is None or not final.accepted or final.answer is None:
            failures = [TierFailure(a.tier, a.model, e) for a, e in zip(attempts, self._errors, strict=True)]
            raise DispatchFailedError(failures, attempts)
        parts = [f"{_why_moved_on(a, attempts[i + 1])}: {_where(a)}" if a.error_kind != "skipped" else _where(a)
                 for i, a in enumerate(attempts[:-1])]
        if final.reason == "last tier" or final.reason.startswith("last available tier"):
            parts.append(final.reason.split(";")[0])
        else:
            parts.append(f"accepted at tier {final.tier}")
        guard = self._rel.spend_guard
        return DispatchResult(
            answer=final.answer, model=final.model, routed_model=plan.routed_model, cluster=plan.cluster,
            plan=plan, escalated=final.tier > next(a.tier for a in attempts if a.error_kind != "skipped"),
            reason="; ".join(parts), attempts=list(attempts), degraded=self._degraded,
            spend_guard=guard.snapshot() if guard is not None else None,
        )

    def close(self) -> None:
        """Release what an interrupted call still holds (its spend reservation)."""
        self._settle(0.0)

    # -- policy helpers ---------------------------------------------------------------------------
    def _attempts_called(self) -> bool:
        return any(a.error_kind != "skipped" for a in self._attempts)

    def _unavailable(self, model: str) -> str | None:
        wait = self._rel.registry.remaining(model)
        if wait > 0:
            return f"rate limited, cooling down for {wait:.3g} s more"
        return None

    def _blocked(self, model: str) -> str | None:
        why = self._unavailable(model) if self._rel.registry.remaining(model) > self._rel.cooldown_wait_s else None
        if why is None and self._rel.spend_guard is not None and self._rel.spend_guard.over():
            why = f"{_cap_note(self._rel.spend_guard)}: not escalated"
        return why

    def _last_reachable(self, tier: int) -> bool:
        ladder = self._plan.ladder
        return all(self._blocked(m) is not None for m in ladder[tier + 1:])

    def _blocked_above(self, tier: int) -> str:
        ladder = self._plan.ladder
        return "; ".join(f"{m}: {self._blocked(m) or 'available again'}" for m in ladder[tier + 1:])

    def _settle(self, cost: float) -> None:
        guard, res = self._rel.spend_guard, self._reservation
        if guard is not None and res is not None:
            guard.settle(res, cost)
        self._reservation = None

    def _skip(self, tier: int, model: str, reason: str) -> None:
        self._record(TierAttempt(
            tier=tier, model=model, answer=None, error=None, verdict=None, input_tokens=0, output_tokens=0,
            usage_source="none", cost_usd=0.0, latency_s=0.0, ttft_s=None, tpot_s=None, accepted=False,
            reason=reason, error_kind="skipped",
        ), TierSkippedError(reason))

    def _record(self, attempt: TierAttempt, error: BaseException) -> None:
        self._attempts.append(attempt)
        self._errors.append(error)
        if self._on_record is not None:
            self._on_record(attempt)

    def _judge_answer(self, tier: int, answer: Answer) -> tuple[Verdict | None, bool, str]:
        history = tuple(a.answer for a in self._attempts if a.answer is not None)
        try:
            verdict = self._judge.judge(self._query, answer, plan=self._plan, tier=tier, history=history)
            p, threshold, escalate = float(verdict.p), float(verdict.threshold), bool(verdict.escalate)
        except Exception as exc:
            return None, False, f"quality estimator failed: {describe_error(exc)}"
        if not math.isfinite(p):
            return verdict, False, f"quality estimator failed: non-finite p={p}"
        if not escalate:
            why = f"accepted: p={p:.4g} >= {threshold:.4g}"
            return verdict, True, f"{why} ({verdict.reason})" if verdict.reason else why
        if p < threshold:
            return verdict, False, f"p={p:.4g} < {threshold:.4g}"
        return verdict, False, f"p={p:.4g} (threshold {threshold:.4g}): {verdict.reason or 'judge escalated'}"

    def _usage(self, model: str, answer: Answer) -> tuple[Answer, int, int, str]:
        """Fill missing token counts with the counter; return the answer, counts and usage source."""
        in_tok, out_tok, source = answer.input_tokens, answer.output_tokens, str(answer.usage_source)
        if in_tok is not None and out_tok is not None:
            return answer, int(in_tok), int(out_tok), source
        sources = [source] if in_tok is not None or out_tok is not None else []
        if in_tok is None:
            in_tok, src = _count(self._counter, self._query, model)
            sources.append(src)
        if out_tok is None:
            out_tok, src = _count(self._counter, answer.text, model)
            sources.append(src)
        source = max(sources, key=lambda s: _SOURCE_RANK.get(s, len(_SOURCE_RANK)))
        answer = replace(answer, input_tokens=in_tok, output_tokens=out_tok,
                         usage_source=cast(UsageSource, source))
        return answer, int(in_tok), int(out_tok), source


def _with_problems(why: str, problems: tuple[str, ...]) -> str:
    return f"{why}: {'; '.join(problems)[:300]}" if problems else why


def _truncate(plan: Plan, max_depth: int | None) -> Plan:
    """Keep the first ``max_depth - 1`` tiers and the strongest one."""
    if max_depth is None:
        return plan
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ConfigError(f"max_depth must be a positive int or None, got {max_depth!r}")
    n = len(plan.ladder)
    if max_depth >= n:
        return plan
    keep = [*range(max_depth - 1), n - 1]
    th = plan.thresholds
    thresholds = tuple(th[i] for i in keep) if len(th) == n else tuple(th)
    note = f"truncated to max_depth={max_depth}"
    return replace(plan, ladder=tuple(plan.ladder[i] for i in keep), thresholds=thresholds,
                   reason=f"{plan.reason}; {note}" if plan.reason else note)


def _count(counter: TokenCounter, text: str, model: str) -> tuple[int, str]:
    got = counter(text, model)
    if isinstance(got, int) and not isinstance(got, bool):
        n, source = got, "estimate"
    elif hasattr(got, "n") and hasattr(got, "source"):
        n, source = got.n, got.source
    else:
        n, source = got
    n = int(n)
    if n < 0:
        raise ValueError(f"token counter returned a negative count ({n}) for model {model!r}")
    return n, str(source)


def _cap_note(guard: SpendGuard) -> str:
    return f"spend cap reached (${guard.spent():.6g} of ${guard.limit_usd:.6g} in the last {guard.window_s:g} s)"


def _why_moved_on(a: TierAttempt, after: TierAttempt) -> str:
    return "retried" if after.tier == a.tier else "escalated"


def _where(a: TierAttempt) -> str:
    if a.error is not None or a.error_kind == "skipped":
        return f"tier {a.tier} ({a.model}) {a.reason}"
    return f"{a.reason} at tier {a.tier} (model {a.model})"


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``, message truncated and with common secret shapes redacted."""
    try:
        msg = str(exc)
    except Exception:
        msg = "<unprintable>"
    msg = redact(msg)
    if len(msg) > _MAX_ERROR_CHARS:
        msg = msg[: _MAX_ERROR_CHARS - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
