"""Token confidence: a small fixed summary of an answer's top-1 token logprobs, the form the QE reads.

A provider that returns token logprobs (OpenAI-compatible servers, llama.cpp) gives, per generated token,
its text and the log-probability the model gave it. :func:`summarize_logprobs` turns that list into a
:class:`LogprobSummary`: the mean, the minimum and the 10th and 25th percentiles over the whole answer, and
the mean and minimum over the tokens of the *final answer* (located by
:func:`crescade.engine.features.final_answer_span` on the text the tokens spell; absent when none is
found). The same function serves calibration (``crescade collect`` records the summary) and serving (the
adapters pass a live response's tokens through the seam), so the quality estimator sees the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..common.errors import ConfigError
from .features import final_answer_span

__all__ = [
    "LOGPROB_COLUMNS",
    "LOGPROB_FLOOR",
    "LOGPROB_STATS",
    "LogprobSummary",
    "summarize_logprobs",
    "summary_from_provider",
]

#: The statistics of a summary, in order (:meth:`LogprobSummary.values`).
LOGPROB_STATS: tuple[str, ...] = ("mean", "min", "p10", "p25", "final_mean", "final_min")
#: Their record columns: ``logprob_mean`` (the column older record files have alone), ``logprob_min``, ...
LOGPROB_COLUMNS: tuple[str, ...] = tuple(f"logprob_{s}" for s in LOGPROB_STATS)
#: Token logprobs below this (``-inf`` included: a token the model gave no chance) count as this value, so
#: one freak token cannot dominate a summary.
LOGPROB_FLOOR = -20.0
_POSITIVE_TOLERANCE = 1e-4  # a log-probability is <= 0; providers round, so a hair above 0 reads as 0


@dataclass(frozen=True)
class LogprobSummary:
    """The token-logprob statistics of one answer.

    ``mean`` is always known. ``min``, ``p10`` and ``p25`` are ``None`` only for a summary read from an
    older record that kept the mean alone; ``final_mean`` and ``final_min`` are ``None`` when the answer
    has no final answer that could be located.
    """

    mean: float
    min: float | None = None
    p10: float | None = None
    p25: float | None = None
    final_mean: float | None = None
    final_min: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name != "mean":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > 0:
                raise ConfigError(f"LogprobSummary.{f.name} must be a finite log-probability (<= 0), got {v!r}")

    def values(self) -> tuple[float, ...]:
        """The statistics in :data:`LOGPROB_STATS` order, ``NaN`` where absent."""
        return tuple(float("nan") if (v := getattr(self, s)) is None else float(v) for s in LOGPROB_STATS)

    def columns(self) -> dict[str, float | None]:
        """The record columns (:data:`LOGPROB_COLUMNS`) and their values, ``None`` where absent."""
        return {c: getattr(self, s) for c, s in zip(LOGPROB_COLUMNS, LOGPROB_STATS, strict=True)}

    @classmethod
    def from_values(cls, values: Sequence[float]) -> LogprobSummary | None:
        """The summary of :meth:`values` (``NaN`` where absent); ``None`` when the mean is absent."""
        if len(values) != len(LOGPROB_STATS):
            raise ConfigError(f"a logprob summary has {len(LOGPROB_STATS)} values, got {len(values)}")
        opt = [None if not math.isfinite(float(v)) else float(v) for v in values]
        if opt[0] is None:
            return None
        return cls(*opt)  # type: ignore[arg-type]


def _check(tokens: Sequence[str], logprobs: Sequence[float]) -> np.ndarray:
    if isinstance(tokens, str):
        raise ConfigError("tokens must be a sequence of token strings, not one string")
    if len(tokens) != len(logprobs):
        raise ConfigError(f"{len(tokens)} token(s) but {len(logprobs)} logprob(s): they must pair up")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise ConfigError(f"token {i} is a {type(t).__name__}, not a string")
    values = np.empty(len(logprobs))
    for i, v in enumerate(logprobs):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise ConfigError(f"logprob {i} is not a number: {v!r}")
        x = float(v)
        if math.isnan(x) or x > _POSITIVE_TOLERANCE:
            raise ConfigError(f"logprob {i} must be a log-probability (<= 0), got {v!r}")
        values[i] = x
    return np.clip(values, LOGPROB_FLOOR, 0.0)


def summarize_logprobs(tokens: Sequence[str], logprobs: Sequence[float]) -> LogprobSummary | None:
    """The summary of one answer's top-1 token logprobs (``tokens[i]`` is the text of token ``i``).

    ``None`` for an answer without tokens. The final-answer span is found on ``"".join(tokens)`` and
    mapped to the tokens whose characters overlap it (a token's characters are where the accumulated
    token strings put them). Values below :data:`LOGPROB_FLOOR` count as the floor. Raises
    :class:`~crescade.ConfigError` on unpaired lists, a token that is not a string, or a logprob that is
    not a number <= 0.
    """
    lp = _check(tokens, logprobs)
    if not len(lp):
        return None
    p10, p25 = np.percentile(lp, [10.0, 25.0])
    final_mean = final_min = None
    span = final_answer_span("".join(tokens))
    if span is not None:
        start, end = span
        ends = np.cumsum([len(t) for t in tokens])
        starts = ends - np.array([len(t) for t in tokens])
        # a token overlaps [start, end), or is an empty token placed inside it
        inside = ((starts < end) & (ends > start)) | ((starts == ends) & (starts >= start) & (starts < end))
        if inside.any():
            final_mean, final_min = float(lp[inside].mean()), float(lp[inside].min())
    return LogprobSummary(mean=float(lp.mean()), min=float(lp.min()), p10=float(p10), p25=float(p25),
                          final_mean=final_mean, final_min=final_min)


def summary_from_provider(entries: Iterable[Any]) -> LogprobSummary | None:
    """The summary of a live response's token logprobs, as a provider returned them: ``(token, logprob)``
    pairs, or OpenAI-style mappings / objects with ``token`` and ``logprob``.

    A provider's odd output is no signal, never an error: ``None`` when there are no entries or any entry
    is malformed (no token text, a logprob that is not a number <= 0).
    """
    tokens: list[str] = []
    values: list[float] = []
    for e in entries:
        if isinstance(e, tuple) and len(e) == 2:
            tok, v = e
        elif isinstance(e, Mapping):
            tok, v = e.get("token"), e.get("logprob")
        else:
            tok, v = getattr(e, "token", None), getattr(e, "logprob", None)
        if not isinstance(tok, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        tokens.append(tok)
        values.append(float(v))
    try:
        return summarize_logprobs(tokens, values)
    except ConfigError:
        return None
