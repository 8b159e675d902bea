"""Cost–quality metrics of routers and cascades: RouteLLM (PGR, APGR, AUC, CPT) and RouterBench (NDCH, AIQ).

Pure functions on numpy arrays, no I/O. Conventions:

* RouteLLM's cost axis is the percentage of queries sent to the strong model (``strong_pct``, 0–100).
  ``accuracy``, ``acc_weak`` and ``acc_strong`` must share one unit (percent from :func:`routellm_points`);
  PGR and APGR are unit-free.
* RouterBench's plane is (cost, quality) in the caller's units; AIQ is in quality units.
* Invalid arguments raise :class:`~crescade.errors.ConfigError` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from ..common.errors import ConfigError

__all__ = [
    "LatencySummary",
    "aiq",
    "apgr",
    "auc",
    "bootstrap_ci",
    "bootstrap_indices",
    "cost_at_quality",
    "cpt",
    "latency_summary",
    "ndch",
    "oracle",
    "pgr",
    "routellm_points",
    "zero_router",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class LatencySummary(TypedDict):
    """Summary of latency samples (same unit as the input, typically seconds)."""

    p50: float
    p95: float
    mean: float
    n: int


# ------------------------------------------------------------------------------------ validation


def _vector(
    name: str, values: npt.ArrayLike, *, allow_nan: bool = False, allow_empty: bool = False
) -> FloatArray:
    """``values`` as a 1-D float64 array, or ConfigError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ConfigError(f"{name} must not be empty")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        raise ConfigError(f"{name} must be finite (bad value at index {int(np.argmax(bad))})")
    return arr


def _pair(x_name: str, x: npt.ArrayLike, y_name: str, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xa, ya = _vector(x_name, x), _vector(y_name, y)
    if xa.shape != ya.shape:
        raise ConfigError(f"{x_name} and {y_name} must have the same length, got {xa.size} and {ya.size}")
    return xa, ya


def _scalar(name: str, value: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be finite, got {out}")
    return out


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    """Trapezoid rule (``np.trapz`` / ``np.trapezoid``, which differ across numpy versions)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _sorted_by_x(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    order = np.lexsort((y, x))  # by x, ties by y
    return x[order], y[order]


# ------------------------------------------------------------------------------------ RouteLLM


def pgr(acc: float, acc_weak: float, acc_strong: float) -> float:
    """Performance gap recovered: ``(acc − acc_weak) / (acc_strong − acc_weak)`` (0 = weak, 1 = strong)."""
    a, w, s = _scalar("acc", acc), _scalar("acc_weak", acc_weak), _scalar("acc_strong", acc_strong)
    if s == w:
        raise ConfigError("acc_strong must differ from acc_weak (PGR is undefined)")
    return (a - w) / (s - w)


def _linear_quantiles(sorted_values: FloatArray, q: int) -> FloatArray:
    """The ``q + 1`` edges of ``pd.qcut(values, q)``: linear-interpolation quantiles at ``i / q``.

    Positions ``(n − 1)·i / q`` are computed in exact integer arithmetic, so an edge that falls on a
    sample is that sample exactly (float quantile levels such as 0.30000000000000004 can otherwise nudge
    an edge past a tied value and flip a ``>=`` comparison).
    """
    n = sorted_values.size
    i = np.arange(q + 1, dtype=np.int64)
    lo, rem = np.divmod((n - 1) * i, q)
    hi = np.minimum(lo + 1, n - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    frac = rem / q
    return np.where(rem == 0, a, a + (b - a) * frac)


def routellm_points(
    strong_score: npt.ArrayLike,
    correct_weak: npt.ArrayLike,
    correct_strong: npt.ArrayLike,
    num_results: int = 10,
) -> tuple[FloatArray, FloatArray]:
    """RouteLLM's operating points of a two-model router (``routellm/evals/benchmarks.py``).

    Thresholds are the ``num_results + 1`` edges of ``pd.qcut(strong_score, num_results)`` (linear
    quantiles); a query goes to the strong model iff its score ``>=`` the threshold, strict ``>`` for the
    last (largest) one, so the points span 100 % … 0 % strong calls. Duplicate edges (tied scores), where
    ``pd.qcut`` would raise, are kept: they give repeated points, which add nothing to AUC or CPT.
    Quantile positions ``(n − 1)·i / num_results`` are exact, so an edge that falls on a sample equals
    it; pandas' float quantile levels can put such an edge an ulp above the sample (one prompt fewer
    goes strong). Elsewhere the points equal RouteLLM's.

    ``correct_*`` are per-prompt qualities (bool or 0/1; any numeric score is averaged the same way).
    Returns ``(strong_pct, accuracy)``, both in percent, ``num_results + 1`` points sorted by
    increasing ``strong_pct``.
    """
    q = _positive_int("num_results", num_results)
    score = _vector("strong_score", strong_score)
    weak, strong = _pair("correct_weak", correct_weak, "correct_strong", correct_strong)
    if weak.shape != score.shape:
        raise ConfigError(
            f"strong_score and correct_weak must have the same length, got {score.size} and {weak.size}"
        )
    edges = _linear_quantiles(np.sort(score), q)
    go_strong = score[None, :] >= edges[:, None]
    go_strong[-1] = score > edges[-1]
    strong_pct = go_strong.mean(axis=1) * 100.0
    accuracy = np.where(go_strong, strong[None, :], weak[None, :]).mean(axis=1) * 100.0
    # Edges increase, so strong_pct is non-increasing along them: reverse for increasing order.
    return strong_pct[::-1].copy(), accuracy[::-1].copy()


def auc(strong_pct: npt.ArrayLike, accuracy: npt.ArrayLike) -> float:
    """RouteLLM's AUC: trapezoid of ``accuracy`` over the strong fraction ``strong_pct / 100``.

    Points are sorted by ``strong_pct`` first. In ``accuracy`` units (× fraction of strong calls).
    """
    x, y = _pair("strong_pct", strong_pct, "accuracy", accuracy)
    x, y = _sorted_by_x(x, y)
    return _trapezoid(y, x / 100.0)


def apgr(strong_pct: npt.ArrayLike, accuracy: npt.ArrayLike, acc_weak: float, acc_strong: float) -> float:
    """Average PGR, RouteLLM's way: ``(AUC − AUC_weak) / (AUC_strong − AUC_weak)``.

    The reference AUCs integrate the constant weak/strong accuracies over the same strong-fraction span
    as the curve (``[0, 1]`` for :func:`routellm_points`), i.e. ``∫ PGR dc`` normalised by the span.
    """
    x, y = _pair("strong_pct", strong_pct, "accuracy", accuracy)
    w, s = _scalar("acc_weak", acc_weak), _scalar("acc_strong", acc_strong)
    if s == w:
        raise ConfigError("acc_strong must differ from acc_weak (APGR is undefined)")
    span = (float(x.max()) - float(x.min())) / 100.0
    if span <= 0.0:
        raise ConfigError("strong_pct must span a non-empty interval (APGR is undefined)")
    area = auc(x, y)
    return (area - w * span) / ((s - w) * span)


def cpt(
    strong_pct: npt.ArrayLike, accuracy: npt.ArrayLike, acc_weak: float, acc_strong: float, x: float
) -> float:
    """Call-performance threshold: the strong-call % needed to reach PGR ``x`` (a fraction, e.g. 0.5).

    Target accuracy ``acc_weak + x·(acc_strong − acc_weak)``. Unlike RouteLLM's ``np.interp`` (which
    assumes a monotone curve), this walks the running maximum of ``accuracy`` along increasing
    ``strong_pct`` and returns the first crossing, linearly interpolated between points. Returns the
    first point's ``strong_pct`` if it already reaches the target, NaN if no point does. Unit: percent.
    """
    sx, acc = _pair("strong_pct", strong_pct, "accuracy", accuracy)
    w, s, frac = _scalar("acc_weak", acc_weak), _scalar("acc_strong", acc_strong), _scalar("x", x)
    if not 0.0 <= frac <= 1.0:
        raise ConfigError(f"x must be a PGR fraction in [0, 1] (0.5 for CPT(50%)), got {frac}")
    sx, acc = _sorted_by_x(sx, acc)
    return _first_crossing(sx, np.maximum.accumulate(acc), w + frac * (s - w))


def _first_crossing(x: FloatArray, y_nondecreasing: FloatArray, target: float) -> float:
    """Least x on the polyline (x, y) with y ≥ target; NaN if never reached."""
    reached = y_nondecreasing >= target
    if not reached.any():
        return math.nan
    i = int(np.argmax(reached))
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y_nondecreasing[i - 1], y_nondecreasing[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))  # y0 < target <= y1


# ------------------------------------------------------------------------------------ RouterBench


def ndch(costs: npt.ArrayLike, qualities: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """RouterBench's non-decreasing convex hull of (cost, quality) points.

    The upper concave hull (monotone chain, O(n log n)) truncated at its first maximum-quality vertex:
    points under the hull are dropped, at equal cost the best quality counts, collinear points are
    dropped. Returns the vertices ``(hull_costs, hull_qualities)``, cost strictly increasing and quality
    strictly increasing. The area under it equals that of RouterBench's O(n³) construction.
    """
    c, q = _pair("costs", costs, "qualities", qualities)
    c, q = _sorted_by_x(c, q)
    last_of_cost = np.append(c[1:] != c[:-1], True)  # best quality at each cost (sorted ties by quality)
    c, q = c[last_of_cost], q[last_of_cost]
    hx: list[float] = []
    hy: list[float] = []
    for px, py in zip(c.tolist(), q.tolist(), strict=True):
        while len(hx) >= 2 and (hx[-1] - hx[-2]) * (py - hy[-2]) - (hy[-1] - hy[-2]) * (px - hx[-2]) >= 0:
            hx.pop()
            hy.pop()
        hx.append(px)
        hy.append(py)
    top = int(np.argmax(hy)) + 1
    return np.asarray(hx[:top], dtype=np.float64), np.asarray(hy[:top], dtype=np.float64)


def zero_router(model_costs: npt.ArrayLike, model_qualities: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """RouterBench's Zero router: the NDCH of the single-model points.

    It is what input-independent random mixing of the models achieves; a router adds value only above it.
    """
    return ndch(model_costs, model_qualities)


def aiq(costs: npt.ArrayLike, qualities: npt.ArrayLike, c_min: float, c_max: float) -> float:
    """Average improvement in quality: area under the NDCH over ``[c_min, c_max]``, divided by its width.

    Convention (RouterBench ``calc_AIQ``): the hull is extended flat from its last vertex to ``c_max``,
    and the interval left of the router's cheapest point counts as quality zero. Compare routers only on
    one common ``[c_min, c_max]``. RouterBench's own numbers correspond to ``c_min = 0`` and ``c_max`` =
    the largest last-hull-vertex cost among the routers compared.
    """
    lo, hi = _scalar("c_min", c_min), _scalar("c_max", c_max)
    if hi <= lo:
        raise ConfigError(f"c_max must exceed c_min, got c_min={lo}, c_max={hi}")
    hx, hy = ndch(costs, qualities)
    start = max(lo, float(hx[0]))
    if start >= hi:
        return 0.0
    inner = hx[(hx > start) & (hx < hi)]
    grid = np.concatenate(([start], inner, [hi]))
    return _trapezoid(np.interp(grid, hx, hy), grid) / (hi - lo)


def cost_at_quality(
    costs: npt.ArrayLike, qualities: npt.ArrayLike, target: float, *, hull: bool = True
) -> float:
    """Least cost reaching quality ``>= target``; NaN if unreachable.

    ``hull=True``: along the NDCH, linearly interpolated between hull vertices (mixing two operating
    points per query achieves any point on the chord). ``hull=False``: the cheapest observed point.
    """
    c, q = _pair("costs", costs, "qualities", qualities)
    t = _scalar("target", target)
    if hull:
        hx, hy = ndch(c, q)
        return _first_crossing(hx, hy, t)
    ok = q >= t
    return float(c[ok].min()) if ok.any() else math.nan


def oracle(
    correct: npt.ArrayLike, cost: npt.ArrayLike
) -> tuple[IntArray, npt.NDArray[np.generic], FloatArray]:
    """Per-prompt oracle over ``m`` models: ``correct`` and ``cost`` are ``[n_prompts, n_models]``.

    Picks the highest-scoring model, ties to the cheapest (then the lowest index) — for 0/1 labels,
    the cheapest correct model. When no model is correct (RouterBench's ``no_model_correct``) it picks
    the cheapest model, counted as wrong at that model's cost.
    Returns ``(model_index[n], chosen_correct[n], chosen_cost[n])``; ``chosen_correct`` keeps the dtype
    of ``correct``.
    """
    try:
        corr = np.asarray(correct)
        cst = np.asarray(cost, dtype=np.float64)
        corr_f = corr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"correct and cost must be numeric: {exc}") from None
    for name, arr in (("correct", corr_f), ("cost", cst)):
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ConfigError(f"{name} must be a non-empty 2-D [n_prompts, n_models] array, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ConfigError(f"{name} must be finite")
    if corr_f.shape != cst.shape:
        raise ConfigError(f"correct and cost must have the same shape, got {corr_f.shape} and {cst.shape}")
    rows = np.arange(corr_f.shape[0])
    best = corr_f == corr_f.max(axis=1, keepdims=True)
    idx = np.argmin(np.where(best, cst, np.inf), axis=1).astype(np.int64)
    return idx, corr[rows, idx], cst[rows, idx]


# ------------------------------------------------------------------------------------ uncertainty, latency


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> IntArray:
    """``[n_boot, n]`` prompt indices drawn with replacement; row ``b`` is the ``b``-th resample.

    Rows are drawn one at a time from ``np.random.default_rng(seed)``, exactly as :func:`bootstrap_ci`
    draws them, so a vectorised statistic over these rows reproduces its CI.
    """
    n, n_boot = _positive_int("n", n), _positive_int("n_boot", n_boot)
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, size=n, dtype=np.int64) for _ in range(n_boot)])


def bootstrap_ci(
    stat: Callable[[IntArray], float],
    n: int,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(lo, hi)`` at level ``1 − alpha`` of ``stat(indices)`` over prompts.

    ``stat`` receives one resample of prompt indices (length ``n``). A NaN statistic in any resample
    makes the CI NaN (e.g. an unreachable CPT); handle that inside ``stat`` if another rule is wanted.
    """
    n, n_boot = _positive_int("n", n), _positive_int("n_boot", n_boot)
    a = _scalar("alpha", alpha)
    if not 0.0 < a < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {a}")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        values[b] = float(stat(rng.integers(0, n, size=n, dtype=np.int64)))
    if np.isnan(values).any():
        return math.nan, math.nan
    lo, hi = np.quantile(values, [a / 2.0, 1.0 - a / 2.0])
    return float(lo), float(hi)


def latency_summary(values: npt.ArrayLike) -> LatencySummary:
    """p50, p95 (linear interpolation), mean and count of latency samples, ignoring NaN (= not measured).

    Empty or all-NaN input gives NaN statistics with ``n = 0``; infinite or negative values raise.
    """
    arr = _vector("values", values, allow_nan=True, allow_empty=True)
    arr = arr[~np.isnan(arr)]
    if (arr < 0).any():
        raise ConfigError("values must be non-negative latencies")
    if arr.size == 0:
        return {"p50": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    p50, p95 = np.percentile(arr, [50.0, 95.0])
    return {"p50": float(p50), "p95": float(p95), "mean": float(arr.mean()), "n": int(arr.size)}
