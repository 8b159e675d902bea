"""Query profiles: per model, a learned P(correct | query embedding), a second routing space for Stage 1.

A query's profile is the vector of predicted correctness of every calibration model (a per-model
logistic regression on the query embedding, RouteLLM/RouterDC-style without a neural encoder). Clusters
of profiles group queries that the pool finds equally hard, which embedding clusters only approximate.
The regularisation is chosen by out-of-fold log-loss; the fitted state is two arrays (no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..common.errors import ArtifactError, ConfigError, NotFittedError

PROFILE_C_GRID = (0.1, 1.0, 10.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _fit_one(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of one model's logistic regression (a constant when the labels are all equal)."""
    from sklearn.linear_model import LogisticRegression

    yb = (y >= 0.5).astype(int)
    if len(yb) == 0:
        return np.zeros(x.shape[1]), 0.0
    if yb.min() == yb.max():
        p = float(np.clip(yb.mean(), 1e-3, 1 - 1e-3))
        return np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    clf = LogisticRegression(C=c, max_iter=500).fit(x, yb)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def fit_logistic(x: np.ndarray, correct: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Per model (column of ``correct``, NaN = no record), weights ``[m, d]`` and intercepts ``[m]``."""
    ws, bs = [], []
    for j in range(correct.shape[1]):
        known = ~np.isnan(correct[:, j])
        w, b = _fit_one(x[known], correct[known, j], c)
        ws.append(w)
        bs.append(b)
    return np.vstack(ws), np.asarray(bs, dtype=np.float64)


class QueryProfiler:
    """Per-model P(correct | query embedding), with ``C`` chosen from ``C_grid`` by out-of-fold log-loss."""

    def __init__(self, C_grid: Sequence[float] = PROFILE_C_GRID) -> None:
        self.C_grid = C_grid

    def fit(self, x: np.ndarray, correct: np.ndarray, folds: np.ndarray) -> np.ndarray:
        """Fit on embeddings ``x[n, d]`` and labels ``correct[n, m]``; returns the out-of-fold profiles
        ``[n, m]`` of the same prompts (computed on ``folds``, what calibration must read)."""
        if not self.C_grid:
            raise ConfigError("QueryProfiler needs a non-empty C_grid")
        known = ~np.isnan(correct)
        y = np.where(known, correct, 0.0)
        best: tuple[float, float, np.ndarray] | None = None
        for c in self.C_grid:
            oof = np.empty(correct.shape)
            for f in np.unique(folds):
                tr, te = folds != f, folds == f
                w, b = fit_logistic(x[tr], correct[tr], float(c))
                oof[te] = _sigmoid(x[te] @ w.T + b)
            p = np.clip(oof, 1e-6, 1 - 1e-6)
            loss = float(-np.sum(known * (y * np.log(p) + (1 - y) * np.log(1 - p))) / max(known.sum(), 1))
            if best is None or loss < best[0]:
                best = (loss, float(c), oof)
        assert best is not None
        self.log_loss_, self.C_, oof = best
        self.coef_, self.intercept_ = fit_logistic(x, correct, self.C_)
        return oof

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Profiles ``[n, m]`` of embeddings ``x[n, d]``."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("QueryProfiler is not fitted")
        return _sigmoid(np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_)

    # --- persistence (plain data)
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"C": self.C_, "log_loss": self.log_loss_, "C_grid": [float(c) for c in self.C_grid]},
                {"profile_coef": self.coef_, "profile_intercept": self.intercept_})

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> QueryProfiler:
        coef, icpt = arrays["profile_coef"], arrays["profile_intercept"]
        if coef.ndim != 2 or icpt.shape != (coef.shape[0],):
            raise ArtifactError(f"query profiler arrays do not fit together: coef {coef.shape}, "
                                f"intercept {icpt.shape}")
        self = cls(C_grid=tuple(float(c) for c in meta["C_grid"]))
        self.C_, self.log_loss_ = float(meta["C"]), float(meta["log_loss"])
        self.coef_, self.intercept_ = coef.astype(np.float64), icpt.astype(np.float64)
        return self
