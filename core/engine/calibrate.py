"""The knob: simulate every (threshold, cluster, routed model) option on calibration data, then pick
the cheapest joint Stage-1 assignment + Stage-2 threshold that meets the target.

Options are scored on out-of-fold quality-estimator outputs, so the simulated accuracy is what the
gate would do on prompts it was not trained on. Candidate plans come from a Lagrangian sweep
(per cluster, maximise hits − λ·cost); the candidate set does not depend on the target, so a
higher quality target can only select a plan at least as expensive (the knob is monotone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common.errors import ConfigError
from .stage1 import efficient_ladder

MIN_CLUSTER_SIZE = 25
"""Fewest calibration prompts per cluster, on average, for a number of clusters to be tried."""
DEFAULT_THRESHOLDS = np.round(np.concatenate([[0.0], np.arange(0.30, 0.951, 0.025), [1.01]]), 4)
_LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 160)])


@dataclass
class CalibrationData:
    """Per-prompt calibration arrays (all plain numpy, persisted in the artifact)."""

    labels: np.ndarray      # [n] cluster of each calibration prompt
    correct: np.ndarray     # [n, m] 0/1, NaN where a model has no record
    cost: np.ndarray        # [n, m] $ of the call, NaN where unknown
    p0: np.ndarray          # [n, m] out-of-fold QE score of the model's answer, no history
    p1: np.ndarray | None   # [n, m, m] QE score of answer j given the answer of model `prev` (depth 3)
    folds: np.ndarray       # [n] cross-fitting fold of each prompt
    unfamiliar: np.ndarray | None = None  # [n] served by the plan for unfamiliar queries (replayed records only)


@dataclass
class OptionTable:
    """Simulated totals of every option: index ``[threshold, cluster, first model]``."""

    hits: np.ndarray
    cost: np.ndarray
    escalations: np.ndarray
    strong_calls: np.ndarray
    ladders: list[list[list[int]]]  # [cluster][first model] -> ladder
    sizes: np.ndarray               # [cluster] number of calibration prompts


def simulate(
    data: CalibrationData, acc: np.ndarray, mean_cost: np.ndarray, thresholds: np.ndarray,
    max_depth: int, strongest: int, start_model: int | None = None, rows: np.ndarray | None = None,
) -> OptionTable:
    """Replay every option on the calibration prompts (vectorised over thresholds).

    ``rows`` restricts the replay to a subset of the prompts (a cross-fitting fold).
    """
    n_k, n_m = acc.shape
    in_rows = np.zeros(len(data.labels), dtype=bool)
    in_rows[np.arange(len(data.labels)) if rows is None else rows] = True
    t = len(thresholds)
    shape = (t, n_k, n_m)
    hits, cost = np.full(shape, -np.inf), np.full(shape, np.inf)
    esc, strong = np.zeros(shape), np.zeros(shape)
    sizes = np.bincount(data.labels[in_rows], minlength=n_k).astype(float)
    ladders: list[list[list[int]]] = []
    for k in range(n_k):
        rows_k = np.flatnonzero((data.labels == k) & in_rows)
        lk: list[list[int]] = []
        if len(rows_k) == 0:  # no prompt here (a small fold): contributes nothing; default to the strongest
            hits[:, k, :], cost[:, k, :] = 0.0, 0.0
            hits[:, k, strongest] = 1e-9
        for m in range(n_m):
            ladder = efficient_ladder(m, acc[k], mean_cost[k], max_depth)
            lk.append(ladder)
            if len(rows_k) == 0 or (start_model is not None and m != start_model):
                continue
            cols = np.asarray(ladder, dtype=np.int64)
            ok = np.all(~np.isnan(data.correct[np.ix_(rows_k, cols)]), axis=1)
            ok &= np.all(~np.isnan(data.cost[np.ix_(rows_k, cols)]), axis=1)
            r = rows_k[ok]
            if len(r) == 0:
                continue
            scale = len(rows_k) / len(r)
            # walk the ladder for every threshold at once: state [len(r), t]
            pending = np.ones((len(r), t), dtype=bool)
            got = np.zeros((len(r), t))
            spent = np.zeros((len(r), t))
            escalated = np.zeros((len(r), t), dtype=bool)
            reached_strong = np.zeros((len(r), t), dtype=bool)
            for tier, j in enumerate(ladder):
                spent += pending * data.cost[r, j][:, None]
                if j == strongest:
                    reached_strong |= pending
                if tier == len(ladder) - 1:
                    accept = pending
                else:
                    if tier == 0:
                        p = data.p0[r, j]
                    elif data.p1 is not None:
                        p = data.p1[r, j, ladder[tier - 1]]
                    else:
                        raise ConfigError("ladders deeper than 2 need history scores (p1)")
                    accept = pending & (p[:, None] >= thresholds[None, :])
                got += accept * data.correct[r, j][:, None]
                if tier == 0:
                    escalated = pending & ~accept
                pending = pending & ~accept
            hits[:, k, m] = got.sum(axis=0) * scale
            cost[:, k, m] = spent.sum(axis=0) * scale
            esc[:, k, m] = escalated.sum(axis=0) * scale
            strong[:, k, m] = reached_strong.sum(axis=0) * scale
        ladders.append(lk)
    return OptionTable(hits, cost, esc, strong, ladders, sizes)


@dataclass
class Solution:
    """One joint plan: the routed model and threshold index of every cluster, and its totals."""

    first: np.ndarray        # [K] routed model per cluster
    tau_index: np.ndarray    # [K] threshold index per cluster
    hits: float
    cost: float
    escalations: float
    strong_calls: float


def shrunk_hits(table: OptionTable, strength: float) -> np.ndarray:
    """Option hits shrunk toward the same option's rate over all clusters (tames selection noise)."""
    finite = np.isfinite(table.hits)
    h0 = np.where(finite, table.hits, 0.0)
    sizes = table.sizes[None, :, None] * finite
    rate = h0.sum(axis=1, keepdims=True) / np.maximum(sizes.sum(axis=1, keepdims=True), 1e-12)
    size = table.sizes[None, :, None]
    shr = (h0 + strength * rate) / (size + strength) * size
    return np.where(finite, shr, -np.inf)


def candidates(table: OptionTable, *, per_cluster_threshold: bool, cost_scale: float,
               shrinkage: float = 0.0) -> list[Solution]:
    """All Lagrangian solutions (the lower convex frontier of cost vs hits), deduplicated.

    The choice uses hits shrunk by ``shrinkage``; the totals reported are the raw simulated ones.
    """
    t, n_k, n_m = table.hits.shape
    chosen_hits = shrunk_hits(table, shrinkage) if shrinkage > 0 else table.hits
    hits = np.where(np.isfinite(chosen_hits), chosen_hits, -1e18)
    cost = np.where(np.isfinite(table.cost), table.cost / cost_scale, 1e18)
    out: dict[tuple[int, ...], Solution] = {}
    kk = np.arange(n_k)
    for lam in _LAMBDAS:
        score = hits - lam * cost  # [t, k, m]
        if per_cluster_threshold:
            flat = score.transpose(1, 0, 2).reshape(n_k, t * n_m)
            best = np.argmax(flat, axis=1)
            tau_i, first = best // n_m, best % n_m
            sols = [(tau_i, first)]
        else:
            sols = []
            for ti in range(t):
                first = np.argmax(score[ti], axis=1)
                sols.append((np.full(n_k, ti), first))
        for tau_i, first in sols:
            key = (*tau_i.tolist(), *first.tolist())
            if key in out:
                continue
            if not np.all(np.isfinite(table.hits[tau_i, kk, first])):
                continue
            out[key] = Solution(
                first=first.astype(np.int64), tau_index=tau_i.astype(np.int64),
                hits=float(table.hits[tau_i, kk, first].sum()), cost=float(table.cost[tau_i, kk, first].sum()),
                escalations=float(table.escalations[tau_i, kk, first].sum()),
                strong_calls=float(table.strong_calls[tau_i, kk, first].sum()),
            )
    return list(out.values())


def route_only(table: OptionTable) -> OptionTable:
    """The options that never escalate (threshold index 0 accepts every first answer): a Stage-1 router."""
    return OptionTable(table.hits[:1], table.cost[:1], table.escalations[:1], table.strong_calls[:1],
                       table.ladders, table.sizes)


def single_model(table: OptionTable, model: int) -> list[Solution]:
    """The plan that sends every cluster to ``model`` and never escalates ([] if it has no usable records)."""
    n_k = table.hits.shape[1]
    kk = np.arange(n_k)
    first, tau = np.full(n_k, model, dtype=np.int64), np.zeros(n_k, dtype=np.int64)
    h = table.hits[0, kk, first]
    if not np.all(np.isfinite(h)):
        return []
    return [Solution(first=first, tau_index=tau, hits=float(h.sum()), cost=float(table.cost[0, kk, first].sum()),
                     escalations=0.0, strong_calls=float(table.strong_calls[0, kk, first].sum()))]


def choose(
    sols: list[Solution], *, n: float, strong_acc: float, strong_cost: float,
    quality_target: float | None, cost_target: float | None,
) -> tuple[Solution, bool]:
    """Pick the plan for the knob. Returns ``(solution, target_met)``."""
    if not sols:
        raise ConfigError("no feasible plan: the calibration data has no usable option")
    if (quality_target is None) == (cost_target is None):
        raise ConfigError("set exactly one of quality_target or cost_target")
    accs = np.array([s.hits for s in sols]) / n
    costs = np.array([s.cost for s in sols]) / n
    if quality_target is not None:
        ok = accs >= quality_target * strong_acc - 1e-12
        if ok.any():
            idx = np.flatnonzero(ok)
            best = idx[np.lexsort((-accs[idx], costs[idx]))[0]]
            return sols[int(best)], True
        return sols[int(np.lexsort((costs, -accs))[0])], False
    ok = costs <= cost_target * strong_cost + 1e-15  # type: ignore[operator]
    if ok.any():
        idx = np.flatnonzero(ok)
        best = idx[np.lexsort((costs[idx], -accs[idx]))[0]]
        return sols[int(best)], True
    return sols[int(np.argmin(costs))], False


def expectations(sol: Solution, *, n: float, strong_acc: float, strong_cost: float, unit: str = "usd"
                 ) -> dict[str, Any]:
    """What the chosen plan is expected to do, in user units (cost per query in ``unit``)."""
    return {
        "accuracy": sol.hits / n,
        "retention": sol.hits / n / strong_acc if strong_acc > 0 else float("nan"),
        f"cost_per_query_{unit}": sol.cost / n,
        "cost_ratio": sol.cost / n / strong_cost if strong_cost > 0 else float("nan"),
        "escalation_rate": sol.escalations / n,
        "strong_call_share": sol.strong_calls / n,
    }


def plan_totals(table: OptionTable, sol: Solution) -> tuple[float, float]:
    """Hits and cost of a fixed plan replayed on the prompts ``table`` was simulated on."""
    kk = np.arange(len(sol.first))
    h = table.hits[sol.tau_index, kk, sol.first]
    c = table.cost[sol.tau_index, kk, sol.first]
    h = np.where(np.isfinite(h), h, 0.0)
    c = np.where(np.isfinite(c), c, 0.0)
    return float(h.sum()), float(c.sum())


QUALITY_GRID = np.round(np.arange(0.50, 1.1001, 0.005), 4)
COST_GRID = np.round(np.geomspace(0.002, 2.0, 70), 6)


def nominal_for(target: float, honest: np.ndarray, grid: np.ndarray, *, quality: bool) -> tuple[float, bool]:
    """Map the user's target to the nominal knob whose honest (cross-fitted) outcome meets it.

    Quality: the smallest nominal target whose honest retention reaches ``target``.
    Cost: the largest nominal budget whose honest cost ratio stays within ``target``.
    Both maps are monotone, so the knob stays monotone.
    """
    if quality:
        ok = np.flatnonzero(honest >= target - 1e-12)
        return (float(grid[ok[0]]), True) if len(ok) else (float(grid[int(np.argmax(honest))]), False)
    ok = np.flatnonzero(honest <= target + 1e-12)
    return (float(grid[ok[-1]]), True) if len(ok) else (float(grid[0]), False)
