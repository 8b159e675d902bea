"""Baseline policies for the replay evaluation: a kNN router (RouterBench-style), a learned router
(RouteLLM/RouterDC-style: P(correct | query) per model from the query embedding), single models and
input-independent random mixing of models (RouterBench's Zero router).

Every policy yields per-prompt arrays on recorded outcomes: the correctness and the cost of the answer
it returns, and the index of the answering model. Random mixing is scored in expectation (per prompt,
the weighted mean over the mixed models), which is what it achieves on average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..common.errors import ConfigError, NotFittedError, PoolError
from ..engine.embed import TfidfSvdEmbedder, as_embedder
from ..engine.profile import QueryProfiler
from ..engine.records import Outcomes
from .metrics import zero_router

__all__ = ["DEFAULT_LAMBDAS", "KnnRouter", "LearnedRouter", "mix_for_quality", "random_mix", "single_model"]

# λ grid for the kNN router: cost is normalised by the strongest model's mean cost, quality is in [0, 1].
DEFAULT_LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 97)])

PolicyArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (correct[n], cost[n], model[n])


def _l2_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class KnnRouter:
    """Predictive router: per prompt, each model's accuracy (and cost) is the mean over the ``k`` most
    cosine-similar train prompts; it picks ``argmax(acc − λ·cost / strong_cost)`` (ties to the cheaper
    model), where ``strong_cost`` is the train mean cost of the most accurate model on train.

    ``embedder``: ``None`` fits a :class:`~crescade.embed.TfidfSvdEmbedder` on the train prompts; any
    other embedder (or callable) is used as given (an unfitted ``TfidfSvdEmbedder`` is fitted).
    """

    def __init__(self, k: int = 20, embedder: Any = None) -> None:
        self.k = k
        self.embedder = embedder

    def fit(self, outcomes: Outcomes) -> KnnRouter:
        """Embed the train prompts and keep their correctness and cost."""
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ConfigError(f"k must be a positive int, got {self.k!r}")
        if outcomes.n_prompts < 2:
            raise ConfigError(f"KnnRouter needs at least 2 train prompts, got {outcomes.n_prompts}")
        correct = np.asarray(outcomes.correct, dtype=float)
        cost = np.asarray(outcomes.cost, dtype=float)
        if not (np.isfinite(correct).all() and np.isfinite(cost).all()):
            raise ConfigError("KnnRouter needs complete outcomes (load with incomplete='drop')")
        if self.embedder is None:
            emb: Any = TfidfSvdEmbedder().fit(outcomes.prompts)
        else:
            emb = as_embedder(self.embedder)
            if isinstance(emb, TfidfSvdEmbedder) and not hasattr(emb, "components_"):
                emb.fit(outcomes.prompts)
        self.embedder_ = emb
        self.models_ = list(outcomes.models)
        self.correct_ = correct
        self.cost_ = cost
        self.embeddings_ = _l2_rows(np.asarray(emb.embed(list(outcomes.prompts)), dtype=np.float64))
        self.strongest_ = int(np.argmax(correct.mean(axis=0)))
        self.strong_cost_ = float(cost[:, self.strongest_].mean())
        self._loo: tuple[np.ndarray, np.ndarray] | None = None
        return self

    def _check(self) -> None:
        if not hasattr(self, "embeddings_"):
            raise NotFittedError("KnnRouter is not fitted: call fit(train_outcomes) first")

    def _neighbour_means(self, queries: np.ndarray, exclude_self: bool, chunk: int = 1024
                         ) -> tuple[np.ndarray, np.ndarray]:
        n, n_train = queries.shape[0], self.embeddings_.shape[0]
        k = min(self.k, n_train - 1 if exclude_self else n_train)
        acc = np.empty((n, self.correct_.shape[1]))
        cost = np.empty_like(acc)
        for lo in range(0, n, chunk):
            sims = queries[lo:lo + chunk] @ self.embeddings_.T
            if exclude_self:
                rows = np.arange(sims.shape[0])
                sims[rows, rows + lo] = -np.inf
            nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            acc[lo:lo + chunk] = self.correct_[nn].mean(axis=1)
            cost[lo:lo + chunk] = self.cost_[nn].mean(axis=1)
        return acc, cost

    def estimate(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """kNN estimates ``(accuracy[n, m], cost[n, m])`` for new prompts."""
        self._check()
        q = _l2_rows(np.asarray(self.embedder_.embed(list(prompts)), dtype=np.float64))
        return self._neighbour_means(q, exclude_self=False)

    def loo_estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out estimates for the train prompts themselves (each prompt's own row excluded)."""
        self._check()
        if self._loo is None:
            self._loo = self._neighbour_means(self.embeddings_, exclude_self=True)
        return self._loo

    def choose(self, acc: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
        """Model index per prompt: ``argmax(acc − λ·cost/strong_cost)``, ties to the cheaper model."""
        self._check()
        score = acc - lam * cost / max(self.strong_cost_, 1e-300)
        best = score >= score.max(axis=1, keepdims=True) - 1e-12
        return np.argmin(np.where(best, cost, np.inf), axis=1).astype(np.int64)

    def _columns(self, outcomes: Outcomes) -> list[int]:
        missing = [x for x in self.models_ if x not in outcomes.models]
        if missing:
            raise PoolError(f"the records lack model(s) {missing} of the router's pool")
        return [outcomes.models.index(x) for x in self.models_]

    def curve(self, outcomes: Outcomes, lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS
              ) -> list[PolicyArrays]:
        """For each λ: ``(per_prompt_correct[n], per_prompt_cost[n], chosen_model[n])`` on ``outcomes``.

        ``chosen_model`` indexes the router's pool (``models_``, the train model order).
        """
        cols = np.asarray(self._columns(outcomes))
        acc, cost = self.estimate(outcomes.prompts)
        rows = np.arange(outcomes.n_prompts)
        out = []
        for lam in lambdas:
            j = self.choose(acc, cost, float(lam))
            c = cols[j]
            out.append((outcomes.correct[rows, c].astype(float), outcomes.cost[rows, c].astype(float), j))
        return out

    def calibrate(self, quality_target: float,
                  lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS) -> float:
        """The λ whose leave-one-out train accuracy keeps ``quality_target`` of the strongest model's train
        accuracy at the least train cost (the most accurate λ when no λ reaches it)."""
        self._check()
        acc, cost = self.loo_estimate()
        rows = np.arange(self.correct_.shape[0])
        target = quality_target * float(self.correct_[:, self.strongest_].mean()) - 1e-12
        best: tuple[tuple[float, float], float] | None = None
        for lam in lambdas:
            j = self.choose(acc, cost, float(lam))
            a, c = float(self.correct_[rows, j].mean()), float(self.cost_[rows, j].mean())
            key = (c, -a) if a >= target else (math.inf, -a)
            if best is None or key < best[0]:
                best = (key, float(lam))
        if best is None:
            raise ConfigError("lambdas must not be empty")
        return best[1]


class LearnedRouter(KnnRouter):
    """Predictive router with a learned quality model: per model, a logistic regression of P(correct) on the
    query embedding (the RouteLLM/RouterDC family, without a neural encoder), its cost the model's mean
    train cost; it picks ``argmax(P̂ − λ·cost / strong_cost)`` like :class:`KnnRouter`, whose λ sweep and
    calibration it shares. Calibration reads out-of-fold estimates (``n_folds`` folds) instead of
    leave-one-out, and the regularisation ``C`` is chosen from ``C_grid`` by out-of-fold log-loss.
    """

    def __init__(self, embedder: Any = None, *, C_grid: Sequence[float] = (0.1, 1.0, 10.0), n_folds: int = 5,
                 random_state: int = 0) -> None:
        super().__init__(k=1, embedder=embedder)
        self.C_grid = C_grid
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, outcomes: Outcomes) -> LearnedRouter:
        """Embed the train prompts, choose C out of fold, fit one classifier per model."""
        super().fit(outcomes)
        n = self.correct_.shape[0]
        folds = np.random.default_rng(self.random_state).permutation(n) % max(2, min(self.n_folds, n))
        self.profiler_ = QueryProfiler(C_grid=self.C_grid)
        self._oof = self.profiler_.fit(self.embeddings_, self.correct_, folds)
        self.C_ = self.profiler_.C_
        self.cost_means_ = self.cost_.mean(axis=0)
        return self

    def estimate(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Learned ``(P(correct)[n, m], cost[n, m])`` for new prompts."""
        self._check()
        acc = self.profiler_.transform(_l2_rows(np.asarray(self.embedder_.embed(list(prompts)), dtype=np.float64)))
        return acc, np.broadcast_to(self.cost_means_, acc.shape).copy()

    def loo_estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold estimates for the train prompts (what :meth:`calibrate` reads)."""
        self._check()
        return self._oof, np.broadcast_to(self.cost_means_, self._oof.shape).copy()


def single_model(outcomes: Outcomes, j: int) -> PolicyArrays:
    """Always model ``j``: ``(correct[n], cost[n], model[n])``."""
    if not 0 <= j < outcomes.n_models:
        raise PoolError(f"model index {j} is outside the pool of {outcomes.n_models}")
    n = outcomes.n_prompts
    return (np.asarray(outcomes.correct[:, j], dtype=float), np.asarray(outcomes.cost[:, j], dtype=float),
            np.full(n, j, dtype=np.int64))


def random_mix(outcomes: Outcomes, weights: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input-independent random mixing, in expectation: per prompt ``(correct @ w, cost @ w)``."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (outcomes.n_models,) or (w < 0).any() or not math.isclose(float(w.sum()), 1.0):
        raise ConfigError(f"weights must be {outcomes.n_models} non-negative numbers summing to 1, got {w}")
    return np.asarray(outcomes.correct, dtype=float) @ w, np.asarray(outcomes.cost, dtype=float) @ w


def mix_for_quality(accuracy: Sequence[float] | np.ndarray, cost: Sequence[float] | np.ndarray,
                    target: float) -> np.ndarray:
    """Weights of the cheapest random mix on the Zero-router hull (NDCH of the single-model points) whose
    accuracy reaches ``target``; the most accurate model alone when none does."""
    a, c = np.asarray(accuracy, dtype=float), np.asarray(cost, dtype=float)
    hx, hy = zero_router(c, a)

    def model_at(i: int) -> int:
        hits = np.flatnonzero((c == hx[i]) & (a == hy[i]))
        return int(hits[np.argmin(c[hits])])

    w = np.zeros(len(a))
    if target <= hy[0]:
        w[model_at(0)] = 1.0
        return w
    if target > hy[-1]:
        w[model_at(len(hy) - 1)] = 1.0
        return w
    i = int(np.argmax(hy >= target))
    p = (target - hy[i - 1]) / (hy[i] - hy[i - 1])  # weight on the better vertex
    w[model_at(i - 1)] += 1.0 - p
    w[model_at(i)] += p
    return w
