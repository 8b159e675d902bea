"""Latency, TTFT and TPOT of a cascade versus always-strongest: by replay of recorded calls, or from live runs.

Definitions (the same for replay and live, so the two can be compared):

* **latency**: wall time of the whole query, every tier called included.
* **TTFT**: time until the first token reaches the user when streaming. A draft is held until judged,
  so an accepted draft arrives whole after its full latency; the last tier of a ladder streams live
  (earlier tiers' latency plus its own TTFT).
* **TPOT**: per query, decoding time over tokens decoded, summed over every tier called
  (``sum tpot_j * (out_j - 1) / sum (out_j - 1)``); a held-back draft is not credited as instant.

Summaries are plain dicts: ``mean_latency_s``, ``p50/p95_latency_s``, ``p50/p95_ttft_s``, ``mean_tpot_s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..common.errors import ConfigError
from ..engine.cascade import Cascade, ReplayResult
from ..engine.records import Outcomes

__all__ = ["query_tpot", "reduction", "replay_timing", "timing_summary"]


def query_tpot(tpots: Sequence[float], output_tokens: Sequence[int]) -> float:
    """One query's TPOT from its calls: decoding time over decoded tokens (``nan`` when nothing decoded)."""
    decode = steps = 0.0
    for t, n in zip(tpots, output_tokens, strict=True):
        if t is None or not np.isfinite(t) or n <= 1:
            continue
        decode += float(t) * (n - 1)
        steps += n - 1
    return decode / steps if steps else float("nan")


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else None


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def timing_summary(latency: npt.ArrayLike, ttft: npt.ArrayLike, tpot: npt.ArrayLike) -> dict[str, Any]:
    """Mean and p50/p95 latency, p50/p95 TTFT and mean TPOT of per-query values (``nan`` = unknown)."""
    lat, tt, tp = (np.asarray(v, dtype=float) for v in (latency, ttft, tpot))
    if not (len(lat) == len(tt) == len(tp)):
        raise ConfigError(f"latency, ttft and tpot differ in length: {len(lat)}, {len(tt)}, {len(tp)}")
    return {"n": len(lat), "mean_latency_s": _mean(lat), "p50_latency_s": _pct(lat, 50),
            "p95_latency_s": _pct(lat, 95), "p50_ttft_s": _pct(tt, 50), "p95_ttft_s": _pct(tt, 95),
            "mean_tpot_s": _mean(tp)}


def reduction(cascade: Mapping[str, Any], strong: Mapping[str, Any]) -> dict[str, float | None]:
    """Relative reductions vs always-strongest (0.3 = 30% lower): mean latency and mean TPOT."""
    def red(key: str) -> float | None:
        a, b = cascade.get(key), strong.get(key)
        return None if a is None or not b else 1.0 - float(a) / float(b)
    return {"latency": red("mean_latency_s"), "tpot": red("mean_tpot_s")}


def replay_timing(cascade: Cascade, outcomes: Outcomes, result: ReplayResult | None = None) -> dict[str, Any]:
    """Replay ``cascade`` on ``outcomes`` (which must carry latency, TTFT and TPOT) and summarise its timing
    against always-strongest, with accuracy retention and relative cost."""
    res = result if result is not None else cascade.replay(outcomes)
    cols = [outcomes.models.index(m) for m in cascade.models_]
    lat, ttft, tpot = (np.asarray(a, dtype=float)[:, cols] for a in (outcomes.latency_s, outcomes.ttft_s,
                                                                        outcomes.tpot_s))
    if np.isnan(lat).all() or np.isnan(ttft).all() or np.isnan(tpot).all():
        raise ConfigError("the records carry no latency/TTFT/TPOT (collect them streamed: crescade collect)")
    out_tok = np.asarray(outcomes.output_tokens)[:, cols]
    n = len(res.correct)
    c_lat, c_ttft, c_tpot = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        called = np.flatnonzero(res.called[i])
        final = int(res.model[i])
        before = [j for j in called if j != final]
        c_lat[i] = lat[i, called].sum()
        c_ttft[i] = lat[i, before].sum() + (ttft[i, final] if res.last_tier[i] else lat[i, final])
        c_tpot[i] = query_tpot(tpot[i, called].tolist(), out_tok[i, called].tolist())
    s = cascade.strongest_
    strong_tpot = [query_tpot([tpot[i, s]], [int(out_tok[i, s])]) for i in range(n)]
    ours = timing_summary(c_lat, c_ttft, c_tpot)
    strong = timing_summary(lat[:, s], ttft[:, s], strong_tpot)
    acc_strong = float(np.asarray(outcomes.correct)[:, cols][:, s].mean())
    cost_strong = float(np.asarray(outcomes.cost)[:, cols][:, s].mean())
    return {
        "cascade": {**ours, "accuracy": float(res.correct.mean()), "cost_per_query_usd": float(res.cost.mean()),
                    "escalation_rate": float(res.escalated.mean()), "mean_calls": float(res.calls.mean())},
        "always_strong": {**strong, "model": cascade.models_[s], "accuracy": acc_strong,
                          "cost_per_query_usd": cost_strong},
        "retention": float(res.correct.mean()) / acc_strong if acc_strong else None,
        "relative_cost": float(res.cost.mean()) / cost_strong if cost_strong else None,
        "reduction": reduction(ours, strong),
    }
