"""Plain-data types exchanged between the fitted cascade, the dispatch loop and the adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

UsageSource = Literal["provider", "tiktoken", "estimate"]


@dataclass(frozen=True)
class Plan:
    """Where a query goes: its cluster and the ordered ladder of models to try.

    ``ladder[0]`` is the routed model; the last entry is the strongest model the cascade may reach.
    ``thresholds[i]`` is the acceptance threshold of the quality estimator at tier ``i``
    (the last tier is always accepted, so its threshold is 0).
    """

    cluster: int
    ladder: tuple[str, ...]
    thresholds: tuple[float, ...]
    reason: str = ""
    unfamiliar: bool = False
    """The query is unlike every calibration cluster: the plan is the cascade's policy for such queries
    (``Cascade(unfamiliar=...)``) and ``cluster`` is only the nearest one."""
    cost_unit: str = "usd"
    """What the knob that chose this plan counts as cost (``Cascade(cost_unit=...)``)."""

    @property
    def routed_model(self) -> str:
        return self.ladder[0]


@dataclass
class Answer:
    """What one model call returned, as the core needs to see it.

    ``payload`` carries the framework's own message object untouched (the core never reads it).
    Token counts are ``None`` when the provider did not report them; the dispatch loop then counts.
    """

    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage_source: UsageSource = "provider"
    finish_reason: str | None = None
    logprob_mean: float | None = None
    tool_calls_valid: bool | None = None
    structured_valid: bool | None = None
    problems: tuple[str, ...] = ()  # why the tool calls / structured output are invalid, for the account
    latency_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    payload: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Verdict:
    """The quality estimator's judgement of one answer."""

    p: float
    threshold: float
    escalate: bool
    reason: str
