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

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

from .decisions import Answer, Plan, UsageSource, Verdict
from .errors import AllTiersFailedError, ConfigError, CrescadeError, PricingError, TierFailure

if TYPE_CHECKING:
    from .pricing import ModelCard

__all__ = [
    "AnswerRejectedError",
    "DispatchFailedError",
    "DispatchResult",
    "Judge",
    "TierAttempt",
    "TokenCounter",
    "adispatch",
    "default_counter",
    "dispatch",
]

TokenCounter = Callable[[str, "str | None"], Any]
"""``counter(text, model) -> int | (n, source)``. A bare int is recorded as usage source ``"estimate"``;
a pair (or an object with ``n`` and ``source``, such as ``crescade.tokens.TokenCount``) names its source."""

_MAX_ERROR_CHARS = 500
_SOURCE_RANK = {"provider": 0, "tiktoken": 1, "estimate": 2}
_SECRET_PATTERNS = (
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/\-]+=*"),
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|secret|password)(\s*[=:]\s*)['\"]?[^\s'\",;]+"),
)


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
            "ladder": list(self.plan.ladder),
            "tiers": [
                a.to_dict(thresholds[a.tier] if a.tier < len(thresholds) else None) for a in self.attempts
            ],
            "totals": {
                "cost_usd": _finite(self.total_cost_usd),
                "input_tokens": self.total_input_tokens,
                "output_tokens": self.total_output_tokens,
                "latency_s": _finite(self.latency_s),
            },
        }


def default_counter(text: str, model: str | None) -> tuple[int, str]:
    """Count with ``crescade.tokens`` when importable, else estimate ``ceil(len(text) / 4)``."""
    try:
        from .tokens import count_tokens
    except ImportError:
        return math.ceil(len(text) / 4), "estimate"
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
    clock: Callable[[], float] = time.perf_counter,
) -> DispatchResult:
    """Answer ``query`` through the cascade, calling ``call(model, is_last)`` tier by tier.

    ``plan`` defaults to ``judge.plan(query, min_model=min_model)`` (give one or the other). ``max_depth``
    caps the number of tiers tried, always keeping the strongest model as the last one. Raises
    :class:`~crescade.errors.PricingError` before any call if a ladder model has no price,
    :class:`~crescade.errors.AllTiersFailedError` (a :class:`DispatchFailedError`) if the last tier raised
    and no earlier tier was accepted. ``KeyboardInterrupt``/``SystemExit`` propagate at once.
    """
    walk = DispatchSession.start(judge, query, prices, plan, min_model, max_depth, counter)
    for tier, model, is_last in walk.steps():
        t0 = clock()
        try:
            answer = call(model, is_last)
        except Exception as exc:
            walk.failed(tier, model, exc, clock() - t0)
            continue
        if walk.answered(tier, model, answer, clock() - t0):
            break
    return walk.result()


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
    clock: Callable[[], float] = time.perf_counter,
) -> DispatchResult:
    """Async :func:`dispatch`: same policy, awaiting ``acall(model, is_last)``.

    ``asyncio.CancelledError`` (like ``KeyboardInterrupt``) propagates immediately and is never recorded
    as a tier failure. The judge and counter are called synchronously; they are pure and fast.
    """
    walk = DispatchSession.start(judge, query, prices, plan, min_model, max_depth, counter)
    for tier, model, is_last in walk.steps():
        t0 = clock()
        try:
            answer = await acall(model, is_last)
        except Exception as exc:
            walk.failed(tier, model, exc, clock() - t0)
            continue
        if walk.answered(tier, model, answer, clock() - t0):
            break
    return walk.result()


class DispatchSession:
    """One dispatch's state: the effective plan, the attempts so far, and the policy for each step.

    :func:`dispatch` and :func:`adispatch` drive it; an adapter that streams drives it itself::

        session = DispatchSession.start(judge, query, prices, None, floor, None, None)
        for tier, model, is_last in session.steps():
            ...  # call the model (buffered, or streamed live when is_last), then:
            if session.answered(tier, model, answer, elapsed):   # or session.failed(...)
                break
        result = session.result()
    """

    __slots__ = ("_attempts", "_counter", "_errors", "_judge", "_plan", "_prices", "_query")

    def __init__(
        self, judge: Judge, query: str, plan: Plan, prices: Mapping[str, ModelCard], counter: TokenCounter
    ) -> None:
        self._judge, self._query, self._plan = judge, query, plan
        self._prices, self._counter = prices, counter
        self._attempts: list[TierAttempt] = []
        self._errors: list[BaseException] = []  # parallel to _attempts: what each tier failed with

    @classmethod
    def start(
        cls,
        judge: Judge,
        query: str,
        prices: Mapping[str, ModelCard],
        plan: Plan | None,
        min_model: str | None,
        max_depth: int | None,
        counter: TokenCounter | None,
    ) -> DispatchSession:
        if plan is not None and min_model is not None:
            raise ConfigError("pass either plan or min_model, not both (min_model is given to judge.plan)")
        if plan is None:
            plan = judge.plan(query, min_model=min_model)
        if not plan.ladder:
            raise ConfigError("the plan's ladder is empty")
        plan = _truncate(plan, max_depth)
        missing = [m for m in dict.fromkeys(plan.ladder) if m not in prices]
        if missing:
            raise PricingError(f"no price for model(s) {', '.join(map(repr, missing))}; "
                               "an unknown price is never a silent zero")
        return cls(judge, query, plan, prices, counter or default_counter)

    @property
    def plan(self) -> Plan:
        """The effective plan (after ``max_depth`` truncation)."""
        return self._plan

    @property
    def attempts(self) -> tuple[TierAttempt, ...]:
        """The tiers recorded so far, in order (a snapshot; for adapters that report each step)."""
        return tuple(self._attempts)

    def steps(self) -> list[tuple[int, str, bool]]:
        """``(tier, model, is_last)`` for every tier of the effective ladder."""
        last = len(self._plan.ladder) - 1
        return [(i, m, i == last) for i, m in enumerate(self._plan.ladder)]

    def failed(self, tier: int, model: str, exc: Exception, elapsed: float) -> None:
        """Record a tier whose call raised."""
        self._record(TierAttempt(
            tier=tier, model=model, answer=None, error=describe_error(exc), verdict=None,
            input_tokens=0, output_tokens=0, usage_source="none", cost_usd=0.0,
            latency_s=elapsed, ttft_s=None, tpot_s=None, accepted=False,
            reason=f"raised {type(exc).__name__}",
        ), exc)

    def answered(self, tier: int, model: str, answer: Answer, elapsed: float) -> bool:
        """Account for, check and judge an answer; return whether it is accepted."""
        if not isinstance(answer, Answer):
            raise TypeError(f"call({model!r}, ...) returned {type(answer).__name__}, expected Answer")
        answer, in_tok, out_tok, source = self._usage(model, answer)
        card = self._prices.get(model)
        if card is None:
            raise PricingError(f"no price for model {model!r}; an unknown price is never a silent zero")
        cost = float(card.cost(in_tok, out_tok))
        ttft = answer.ttft_s
        tpot = answer.tpot_s
        if tpot is None and out_tok > 1 and ttft is not None:  # streamed: time after the first token
            tpot = max(0.0, elapsed - ttft) / (out_tok - 1)
        elif tpot is None and out_tok > 0:  # not streamed: only latency / tokens is known
            tpot = elapsed / out_tok
        if answer.latency_s is None:
            answer = replace(answer, latency_s=elapsed)

        is_last = tier == len(self._plan.ladder) - 1
        verdict: Verdict | None = None
        if is_last:
            accepted, why = True, "last tier"
        elif answer.tool_calls_valid is False:
            accepted, why = False, _with_problems("invalid tool call", answer.problems)
        elif answer.structured_valid is False:
            accepted, why = False, _with_problems("invalid structured output", answer.problems)
        elif not answer.text.strip() and answer.tool_calls_valid is not True:
            accepted, why = False, "empty answer"
        else:
            verdict, accepted, why = self._judge_answer(tier, answer)

        self._record(TierAttempt(
            tier=tier, model=model, answer=answer, error=None, verdict=verdict,
            input_tokens=in_tok, output_tokens=out_tok, usage_source=source, cost_usd=cost,
            latency_s=elapsed, ttft_s=ttft, tpot_s=tpot, accepted=accepted, reason=why,
        ), AnswerRejectedError(why))
        return accepted

    def result(self) -> DispatchResult:
        """The result once the loop stopped; raises if no answer was accepted."""
        plan, attempts = self._plan, self._attempts
        final = attempts[-1] if attempts else None
        if final is None or not final.accepted or final.answer is None:
            failures = [TierFailure(a.tier, a.model, e) for a, e in zip(attempts, self._errors, strict=True)]
            raise DispatchFailedError(failures, attempts)
        parts = [f"escalated: {_where(a)}" for a in attempts[:-1]]
        if final.reason == "last tier":
            parts.append("last tier")
        else:
            parts.append(f"accepted at tier {final.tier}")
        return DispatchResult(
            answer=final.answer, model=final.model, routed_model=plan.routed_model, cluster=plan.cluster,
            plan=plan, escalated=len(attempts) > 1, reason="; ".join(parts), attempts=list(attempts),
        )

    def _record(self, attempt: TierAttempt, error: BaseException) -> None:
        self._attempts.append(attempt)
        self._errors.append(error)

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
            return verdict, True, f"accepted: p={p:.4g} >= {threshold:.4g}"
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


def _where(a: TierAttempt) -> str:
    if a.error is not None:
        return f"tier {a.tier} ({a.model}) {a.reason}"
    return f"{a.reason} at tier {a.tier} (model {a.model})"


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``, message truncated and with common secret shapes redacted."""
    try:
        msg = str(exc)
    except Exception:
        msg = "<unprintable>"
    for pattern in _SECRET_PATTERNS:
        msg = pattern.sub(_redact, msg)
    if len(msg) > _MAX_ERROR_CHARS:
        msg = msg[: _MAX_ERROR_CHARS - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _redact(m: re.Match[str]) -> str:
    if m.lastindex:  # key=value: keep the key name
        return f"{m.group(1)}{m.group(2)}[redacted]"
    return "[redacted]"


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
