"""Plain-data types exchanged between the fitted cascade, the dispatch loop and the adapters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..common.errors import ConfigError
from .logprobs import LogprobSummary

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
    ``logprobs`` is the summary of the answer's token logprobs when the provider returned them (an adapter
    builds it with :func:`crescade.seam.summary_from_provider`); ``logprob_mean`` mirrors its mean, or is
    given alone by a caller that knows only the mean.
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
    logprobs: LogprobSummary | None = None
    payload: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.logprobs is not None:
            if not isinstance(self.logprobs, LogprobSummary):
                raise ConfigError(f"Answer.logprobs must be a LogprobSummary (crescade.seam.summary_from_provider "
                                  f"builds one from a response's tokens), got {type(self.logprobs).__name__}")
            self.logprob_mean = self.logprobs.mean
        elif isinstance(self.logprob_mean, (int, float)) and not isinstance(self.logprob_mean, bool) \
                and math.isfinite(self.logprob_mean) and self.logprob_mean <= 0:
            self.logprobs = LogprobSummary(mean=float(self.logprob_mean))


@dataclass(frozen=True)
class Verdict:
    """The quality estimator's judgement of one answer."""

    p: float
    threshold: float
    escalate: bool
    reason: str
