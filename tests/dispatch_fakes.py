"""Scripted judge, price cards and model callers shared by the dispatch and reliability tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from crescade.engine.decisions import Answer, Plan, Verdict

LADDER = ("small", "medium", "large")
PLAN = Plan(cluster=3, ladder=LADDER, thresholds=(0.6, 0.7, 0.0), reason="cluster 3")


@dataclass(frozen=True)
class Card:
    """Stand-in for crescade.engine.pricing.ModelCard: $ per million tokens."""

    name: str
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


PRICES = {
    "small": Card("small", 1.0, 2.0),
    "medium": Card("medium", 10.0, 20.0),
    "large": Card("large", 100.0, 200.0),
}


@dataclass
class FakeJudge:
    """Scores come from ``scores[model]``: a float, or an exception to raise."""

    scores: Mapping[str, float | BaseException] = field(default_factory=dict)
    plan_: Plan = PLAN
    calls: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)
    plan_calls: list[str | None] = field(default_factory=list)

    def plan(self, query: str, *, min_model: str | None = None) -> Plan:
        self.plan_calls.append(min_model)
        return self.plan_

    def judge(
        self, query: str, answer: Answer, *, plan: Plan, tier: int, history: Sequence[Answer]
    ) -> Verdict:
        self.calls.append((answer.model, tier, tuple(a.model for a in history)))
        s = self.scores.get(answer.model, 0.9)
        if isinstance(s, BaseException):
            raise s
        th = plan.thresholds[tier]
        return Verdict(p=s, threshold=th, escalate=not s >= th, reason="")


def answer(
    model: str, text: str = "forty-two", n_in: int | None = 100, n_out: int | None = 10, **kw
) -> Answer:
    return Answer(text=text, model=model, input_tokens=n_in, output_tokens=n_out, **kw)


def caller(script: Mapping[str, Answer | BaseException] | None = None, log: list | None = None
           ) -> Callable[[str, bool], Answer]:
    """A sync model caller: returns ``script[model]`` (default a good answer) or raises it."""

    def call(model: str, is_last: bool) -> Answer:
        if log is not None:
            log.append((model, is_last))
        out = (script or {}).get(model, answer(model))
        if isinstance(out, BaseException):
            raise out
        return out

    return call


def acaller(script: Mapping[str, Answer | BaseException] | None = None, log: list | None = None):
    sync = caller(script, log)

    async def acall(model: str, is_last: bool) -> Answer:
        await asyncio.sleep(0)
        return sync(model, is_last)

    return acall


def ticker(step: float = 0.5) -> Callable[[], float]:
    t = [0.0]

    def clock() -> float:
        t[0] += step
        return t[0]

    return clock
