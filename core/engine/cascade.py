"""The fitted cascade: scikit-learn-style estimator (parameters in ``__init__``, ``fit`` learns,
fitted state ends in ``_``) whose ``plan`` and ``judge`` are pure, I/O-free and thread-safe."""

from __future__ import annotations

import copy
import inspect
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._version import __version__
from ..common.errors import ArtifactError, ConfigError, MissingExtraError, ModelFileError, NotFittedError, PoolError
from ..common.progress import Progress
from .calibrate import (
    COST_GRID,
    DEFAULT_THRESHOLDS,
    MIN_CLUSTER_SIZE,
    QUALITY_GRID,
    CalibrationData,
    OptionTable,
    Solution,
    candidates,
    choose,
    expectations,
    nominal_for,
    plan_totals,
    route_only,
    simulate,
    single_model,
)
from .decisions import Answer, Plan, Verdict
from .embed import as_embedder
from .features import answer_features, final_answer
from .logprobs import LogprobSummary
from .pricing import ModelCard
from .profile import QueryProfiler
from .records import Outcomes
from .stage1 import Geometry, assign, cluster_means, efficient_ladder, fit_centroids, shrunk_accuracy
from .stage2 import EXTRA_NAMES, AnswerTable, QualityEstimator, TextScorer, extra_features, fill_logprob_features
from .state import CascadeState
from .store import dump_fields, fingerprint, load_artifact, load_fields, save_artifact
from .units import CostUnit, check_unit, unit_cost

ARTIFACT_KIND = "crescade.cascade"
_NOT_SAVED = ("embedder", "progress")
QE_C_GRID = (0.03, 0.3, 3.0)
"""Regularisation strengths ``qe_C="auto"`` chooses the quality estimator's from (out-of-fold log-loss)."""
HONEST_REPEATS = 3
"""Partitions of the calibration prompts the honest (cross-fitted) knob curve is averaged over."""
SHRINKAGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
"""Pseudo-counts tried by ``shrinkage="auto"``."""
SELECTION_BAND = (-0.03, -0.02, -0.01, 0.0, 0.01)
"""Offsets around the quality target over which candidate clusterings are compared (for a cost target,
tenfold as relative offsets of the budget)."""  # a live object, and a display choice of this process


@dataclass
class ReplayResult:
    """Per-prompt outcome of replaying the cascade on recorded answers (plain arrays)."""

    correct: np.ndarray      # [n] 0/1 of the answer the cascade returned
    cost: np.ndarray         # [n] $ spent, rejected answers included
    model: np.ndarray        # [n] index (into the cascade's pool) of the answering model
    routed: np.ndarray       # [n] index of the routed (first) model
    cluster: np.ndarray      # [n]
    calls: np.ndarray        # [n] number of model calls
    escalated: np.ndarray    # [n] bool
    strong_call: np.ndarray  # [n] bool: the strongest model was called
    called: np.ndarray       # [n, m] bool: which models were called (pool order)
    last_tier: np.ndarray    # [n] bool: answered by its ladder's last tier (streamed live, not a held draft)
    cost_unit: str = "usd"   # what ``cost`` counts (the cascade's ``cost_unit``)

    def summary(self) -> dict[str, float]:
        return {"accuracy": float(self.correct.mean()), f"cost_per_query_{self.cost_unit}": float(self.cost.mean()),
                "escalation_rate": float(self.escalated.mean()),
                "strong_call_share": float(self.strong_call.mean()), "mean_calls": float(self.calls.mean())}


class Cascade:
    """Cluster → Route → Escalate, calibrated to one knob.

    Parameters
    ----------
    quality_target: keep at least this fraction of the strongest model's accuracy (e.g. 0.98).
    cost_target: or spend at most this fraction of always-strongest (set exactly one of the two).
    cost_unit: what the knob's cost counts: ``"usd"`` (the records' ``cost_usd``), or the measured
        ``"latency_s"`` (end-to-end seconds per call) or ``"tpot_s"`` (seconds per output token) of the
        records, summed over the calls a query makes. Plans, reports and the account say which.
    n_clusters: an int, or ``"auto"`` to choose from ``cluster_grid`` on out-of-fold calibration.
    shrinkage: pseudo-count pulling per-cluster accuracy toward the model's global accuracy, or ``"auto"``:
        per candidate clustering, the value of :data:`SHRINKAGE_GRID` whose shrunk accuracies predict held-out
        folds' correctness best (log-loss); the fitted value is ``shrinkage_``.
    max_depth: tiers in a ladder (1 = routing only, 2 = routed → strongest, 3 = one middle tier).
    threshold_mode: one gate threshold for all clusters (``"global"``) or one per cluster.
    start_model: force the routed model (e.g. the cheapest, for a FrugalGPT-style cascade).
    n_folds: cross-fitting folds: the knob is tuned on out-of-fold quality-estimator scores.
    embedder: ``None`` or ``"tfidf"`` (offline TF-IDF + SVD fitted on the calibration prompts), ``"minilm"``
        (all-MiniLM-L6-v2 int8 ONNX, needs ``pip install 'crescade[onnx]'``), or any embedder/callable.
    qe_C: the quality estimator's inverse regularisation, or ``"auto"``: chosen from :data:`QE_C_GRID` by
        out-of-fold log-loss on the calibration answers (``qe_C_``).
    tool_calls: how an answer made of schema-valid tool calls (``Answer.tool_calls_valid is True``, which
        includes structured output) is judged: ``"accept"`` it (the estimator is trained on prose and
        cannot read a tool call; invalid calls always escalate, in the dispatch loop) or ``"judge"`` it
        like text.
    unfamiliar: what a query unlike every calibration cluster gets (its similarity to the nearest centroid
        below ``unfamiliar_threshold_``, half the 1st percentile of the calibration prompts' own): the
        ``"general"`` plan (the cheapest single ladder that meets the knob on all calibration prompts taken
        as one cluster), the ``"strongest"`` model, or the ``"nearest"`` cluster's plan regardless. The plan's
        ``unfamiliar`` flag and reason, and so the response's account, say so.
    route_space: where queries are clustered: ``"embedding"`` (the query embeddings, as in the paper),
        ``"profile"`` (each query's learned profile: per calibration model, P(correct | query embedding) by a
        logistic regression chosen out of fold), or ``"auto"``: both are candidates, with every number of
        clusters, and the one that meets the knob most cheaply on cross-fitted data wins (``space_``).
        Unfamiliar queries are always measured against embedding clusters (``anchors_``).
    """

    def __init__(
        self, quality_target: float | None = 0.98, *, cost_target: float | None = None, cost_unit: CostUnit = "usd",
        n_clusters: int | Literal["auto"] = "auto", cluster_grid: Sequence[int] = (1, 4, 8, 16, 32),
        shrinkage: float | Literal["auto"] = "auto", max_depth: int = 3,
        threshold_mode: Literal["global", "per_cluster"] = "global", start_model: str | None = None,
        n_folds: int = 5, embedder: Any = None, qe_C: float | Literal["auto"] = "auto",
        tool_calls: Literal["accept", "judge"] = "accept",
        unfamiliar: Literal["general", "nearest", "strongest"] = "general",
        route_space: Literal["auto", "embedding", "profile"] = "auto", random_state: int = 0,
        progress: bool = True,
    ) -> None:
        self.quality_target = quality_target
        self.cost_target = cost_target
        self.cost_unit = cost_unit
        self.n_clusters = n_clusters
        self.cluster_grid = cluster_grid
        self.shrinkage = shrinkage
        self.max_depth = max_depth
        self.threshold_mode = threshold_mode
        self.start_model = start_model
        self.n_folds = n_folds
        self.embedder = embedder
        self.qe_C = qe_C
        self.tool_calls = tool_calls
        self.unfamiliar = unfamiliar
        self.route_space = route_space
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's parameters, read from its signature (so the list never drifts)."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind is not p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every constructor parameter and its value (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Cascade:
        """Set constructor parameters (they take effect at the next :meth:`fit`); returns ``self``."""
        valid = self._get_param_names()
        unknown = [k for k in params if k not in valid]
        if unknown:
            raise ConfigError(f"invalid parameter(s) {', '.join(map(repr, unknown))} for Cascade; "
                              f"valid parameters: {', '.join(valid)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _validate(self) -> None:
        qt, ct = self.quality_target, self.cost_target
        if (qt is None) == (ct is None):
            raise ConfigError("set exactly one of quality_target or cost_target (the other must be None)")
        if qt is not None and not (isinstance(qt, (int, float)) and 0.0 < qt <= 1.0 + 1e-9 and math.isfinite(qt)):
            raise ConfigError(f"quality_target must be a fraction in (0, 1] of the strongest model's accuracy "
                              f"(1.0: as accurate as always using it), got {qt!r}")
        if ct is not None and not (isinstance(ct, (int, float)) and 0.0 < ct <= 10.0 and math.isfinite(ct)):
            raise ConfigError(f"cost_target must be a number in (0, 10] (a fraction of always-strongest spend), "
                              f"got {ct!r}")
        check_unit(self.cost_unit)
        if self.n_clusters != "auto" and not (isinstance(self.n_clusters, int) and self.n_clusters >= 1):
            raise ConfigError(f"n_clusters must be a positive int or 'auto', got {self.n_clusters!r}")
        if not isinstance(self.cluster_grid, Sequence) or not self.cluster_grid or \
                any(not isinstance(k, int) or k < 1 for k in self.cluster_grid):
            raise ConfigError(f"cluster_grid must hold positive ints, got {self.cluster_grid!r}")
        if self.max_depth not in (1, 2, 3):
            raise ConfigError(f"max_depth must be 1, 2 or 3, got {self.max_depth!r}")
        if self.unfamiliar not in ("general", "nearest", "strongest"):
            raise ConfigError(f"unfamiliar must be 'general', 'nearest' or 'strongest', got {self.unfamiliar!r}")
        if self.route_space not in ("auto", "embedding", "profile"):
            raise ConfigError(f"route_space must be 'auto', 'embedding' or 'profile', got {self.route_space!r}")
        if self.tool_calls not in ("accept", "judge"):
            raise ConfigError(f"tool_calls must be 'accept' or 'judge', got {self.tool_calls!r}")
        if self.threshold_mode not in ("global", "per_cluster"):
            raise ConfigError(f"threshold_mode must be 'global' or 'per_cluster', got {self.threshold_mode!r}")
        if self.qe_C != "auto" and not (isinstance(self.qe_C, (int, float)) and self.qe_C > 0
                                        and math.isfinite(self.qe_C)):
            raise ConfigError(f"qe_C must be 'auto' or a finite number > 0, got {self.qe_C!r}")
        if not (isinstance(self.n_folds, int) and self.n_folds >= 2):
            raise ConfigError(f"n_folds must be an int >= 2, got {self.n_folds!r}")
        if self.shrinkage != "auto" and not (isinstance(self.shrinkage, (int, float))
                                             and self.shrinkage >= 0 and math.isfinite(self.shrinkage)):
            raise ConfigError(f"shrinkage must be 'auto' or a finite number >= 0, got {self.shrinkage!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, outcomes: Outcomes, prices: Mapping[str, ModelCard] | None = None) -> Cascade:
        """Learn clusters, the Stage-1 table and the quality estimator, then tune the knob."""
        self._validate()
        n, m = outcomes.n_prompts, outcomes.n_models
        if m < 1 or n < max(2 * self.n_folds, 10):
            raise ConfigError(f"too little data to calibrate: {n} prompts x {m} models; the cascade needs at least "
                              f"{max(2 * self.n_folds, 10)} prompts answered by the pool (2 per cross-fitting fold, "
                              f"n_folds={self.n_folds}) and at least 1 model")
        if self.start_model is not None and self.start_model not in outcomes.models:
            raise PoolError(f"start_model {self.start_model!r} is not in the pool {outcomes.models}")
        if prices is not None:
            missing = [x for x in outcomes.models if x not in prices]
            if missing:
                raise PoolError(f"no price for model(s) {missing}")
        self.models_ = list(outcomes.models)
        self.cards_ = {x: prices[x] for x in self.models_} if prices is not None else {}
        self._replay_cache: weakref.WeakKeyDictionary[Outcomes, CalibrationData] = weakref.WeakKeyDictionary()
        self._knob_cache: dict[str, Any] = {}
        correct = np.asarray(outcomes.correct, dtype=float)
        cost = unit_cost(outcomes, self.cost_unit)
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        # The matrices are small: one BLAS thread is faster than two fighting over 2 cores.
        n_steps = 6 + len(self._candidates_grid(n, self._spaces(m))) * self.n_folds
        with threadpool_limits(limits=1, user_api="blas"), \
                Progress(n_steps, desc="calibrate", enabled=self.progress) as bar:
            self.embedder_ = as_embedder(self.embedder)
            self.embedder_.fit(outcomes.prompts)
            emb = self.embedder_.embed(outcomes.prompts)
            bar.update(1)
            feats = self._text_features(outcomes.prompts, outcomes.responses, outcomes.finish_reason)
            finals = [[final_answer(r) for r in row] for row in outcomes.responses]
            logprob = np.asarray(outcomes.logprobs, dtype=float)  # [n, m, stats]: token-logprob summaries
            bar.update(1)
            folds = np.random.default_rng(self.random_state).permutation(n) % self.n_folds
            self.text_, text = self._fit_text(outcomes, correct, folds)
            self.strongest_ = int(np.argmax(np.nanmean(correct, axis=0)))
            spaces = self._spaces(m)
            oof_profiles = None
            self.profiler_ = None
            self.qe_C_: float | None = None
            if "profile" in spaces:
                self.profiler_ = QueryProfiler()
                oof_profiles = self.profiler_.fit(emb, correct, folds)
            best: tuple[tuple[float, float], str, np.ndarray, CalibrationData] | None = None
            self.honest_: dict[str, np.ndarray] | None = None
            self.grid_report_ = []
            failures = []
            anchors = None
            for space, k in self._candidates_grid(n, spaces):
                x = emb if space == "embedding" else oof_profiles
                assert x is not None
                geometry: Geometry = "cosine" if space == "embedding" else "euclidean"
                cents = fit_centroids(x, k, random_state=self.random_state, geometry=geometry)
                labels = assign(x, cents, geometry)
                if space == "embedding":
                    anchors = cents  # the finest embedding clusters: what "unfamiliar" is measured against
                self.shrinkage_ = self._choose_shrinkage(labels, len(cents), correct, folds)
                data = self._crossfit(labels, len(cents), correct, cost, feats, finals, logprob, text, folds, bar)
                try:
                    honest = self._honest_curve(data, len(cents))
                except ConfigError as exc:  # e.g. too few prompts per cluster for this K: try the others
                    failures.append(f"{space} n_clusters={len(cents)}: {exc}")
                    continue
                family, _, met, h_acc, h_cost = self._pick(self._family_outcomes(honest), clustered_only=True)
                band = self._band_score(honest)
                self.grid_report_.append({"space": space, "n_clusters": len(cents), "shrinkage": self.shrinkage_,
                                          "target_met": met,
                                          "family": family, "honest_retention": h_acc, "honest_cost_ratio": h_cost,
                                          "band_score": band})
                key = (0.0 if met else 1.0, band)
                if best is None or key < best[0]:
                    best = (key, space, cents, data)
                    self.honest_ = honest
                    best_s = self.shrinkage_
            if best is None:
                raise ConfigError("calibration failed for every number of clusters: " + "; ".join(failures))
            _, self.space_, self.centroids_, self.calib_ = best
            self.shrinkage_ = best_s
            self.n_clusters_ = len(self.centroids_)
            if self.space_ == "embedding":
                self.anchors_ = self.centroids_
            else:
                self.anchors_ = anchors if anchors is not None else fit_centroids(
                    emb, max(self._grid(n)), random_state=self.random_state)
            self.calib_prompt_ids_ = list(outcomes.prompt_ids)
            # final fit on every calibration prompt
            self._fit_tables(correct, cost, finals, self.calib_.labels)
            self.qe_ = self._fit_qe(np.arange(n), self.calib_.labels, correct, feats, finals, logprob, text,
                                    self.acc_table_, self.global_acc_, self.answer_tables_)
            bar.update(1)
            latency = np.asarray(outcomes.latency_s, dtype=float)
            self.latency_table_ = cluster_means(latency, self.calib_.labels, self.n_clusters_)
            own = np.max(emb @ self.anchors_.T, axis=1)
            self.unfamiliar_threshold_ = float(0.5 * np.quantile(own, 0.01))
            self._resolve()
            bar.update(3)
        return self

    @staticmethod
    def _fit_text(outcomes: Outcomes, correct: np.ndarray, folds: np.ndarray) -> tuple[TextScorer, np.ndarray]:
        """The learned text signal and the out-of-fold text logit of every recorded answer (``[n, m]``, 0 where
        a model has no record), on the same folds as the rest of the calibration."""
        ri, rj = np.nonzero(~np.isnan(correct))
        scorer = TextScorer()
        oof = scorer.fit([outcomes.responses[i][j] or "" for i, j in zip(ri, rj, strict=True)], correct[ri, rj],
                         folds[ri])
        text = np.zeros(correct.shape)
        text[ri, rj] = oof
        return scorer, text

    @property
    def _qe_c(self) -> float:
        """The QE's regularisation in use: the fitted one, else the parameter."""
        fitted = getattr(self, "qe_C_", None)
        return float(fitted) if fitted is not None else float(self.qe_C)

    @property
    def _s(self) -> float:
        """The shrinkage in use: the fitted one, else the parameter (an artifact from before ``"auto"``)."""
        fitted = getattr(self, "shrinkage_", None)
        return float(fitted) if fitted is not None else float(self.shrinkage)

    def _choose_shrinkage(self, labels: np.ndarray, k: int, correct: np.ndarray, folds: np.ndarray) -> float:
        """The parameter, or (``"auto"``) the grid value whose shrunk per-cluster accuracies, estimated on the
        other folds, give the lowest log-loss on each held-out fold's recorded correctness."""
        if self.shrinkage != "auto":
            return float(self.shrinkage)
        known = ~np.isnan(correct)
        y = np.where(known, correct, 0.0)
        losses = []
        for strength in SHRINKAGE_GRID:
            total = 0.0
            for f in np.unique(folds):
                tr, te = folds != f, folds == f
                acc, _, _ = shrunk_accuracy(correct[tr], labels[tr], k, strength)
                p = np.clip(acc[labels[te]], 1e-4, 1 - 1e-4)
                total -= float(np.sum(known[te] * (y[te] * np.log(p) + (1 - y[te]) * np.log(1 - p))))
            losses.append(total)
        return float(SHRINKAGE_GRID[int(np.argmin(losses))])

    def _spaces(self, m: int) -> list[str]:
        """The routing spaces to try: query embeddings, and (with two or more models) query profiles."""
        if self.route_space == "auto":
            return ["embedding", "profile"] if m >= 2 else ["embedding"]
        return [self.route_space]

    def _candidates_grid(self, n: int, spaces: Sequence[str]) -> list[tuple[str, int]]:
        """Every (space, number of clusters) to try; one cluster is the same plan in every space."""
        grid = self._grid(n)
        out = [("embedding", k) for k in grid] if "embedding" in spaces else []
        out += [("profile", k) for k in grid if k > 1 or "embedding" not in spaces] if "profile" in spaces else []
        return out

    def _grid(self, n: int) -> list[int]:
        """The numbers of clusters to try: a fixed ``n_clusters``, or the grid values that leave at least
        :data:`MIN_CLUSTER_SIZE` calibration prompts per cluster on average (a cluster too small to estimate
        is not a cluster; with too little data for any, one cluster)."""
        if self.n_clusters != "auto":
            return [int(self.n_clusters)]
        fits = sorted(k for k in set(self.cluster_grid) if k * MIN_CLUSTER_SIZE <= n)
        return fits or [min(self.cluster_grid)]

    @staticmethod
    def _text_features(prompts: Sequence[str], responses: Sequence[Sequence[str]],
                       finish: Sequence[Sequence[str | None]]) -> np.ndarray:
        return np.array([[answer_features(q, r, finish_reason=f) for r, f in zip(rs, fs, strict=True)]
                         for q, rs, fs in zip(prompts, responses, finish, strict=True)], dtype=float)

    def _fit_tables(self, correct: np.ndarray, cost: np.ndarray, finals: list[list[str | None]],
                    labels: np.ndarray) -> None:
        k = self.n_clusters_
        self.acc_table_, self.count_table_, self.global_acc_ = shrunk_accuracy(correct, labels, k, self._s)
        self.cost_table_ = cluster_means(cost, labels, k)
        self.answer_tables_ = self._answer_tables(labels, finals, k, ~np.isnan(correct))

    @staticmethod
    def _answer_tables(labels: np.ndarray, finals: list[list[str | None]], k: int,
                       known: np.ndarray) -> dict[tuple[int, int], AnswerTable]:
        out = {}
        m = known.shape[1]
        for c in range(k):
            rows = np.flatnonzero(labels == c)
            for j in range(m):
                out[(c, j)] = AnswerTable.build([finals[i][j] for i in rows if known[i, j]])
        return out

    @staticmethod
    def _logfreq(labels: np.ndarray, finals: list[list[str | None]],
                 tables: dict[tuple[int, int], AnswerTable]) -> np.ndarray:
        """``[n, m]`` log-frequency of each recorded final answer in its model's cluster table."""
        return np.array([[tables[(int(k), j)].logfreq(fa) for j, fa in enumerate(row)]
                         for k, row in zip(labels, finals, strict=True)], dtype=float)

    @staticmethod
    def _rows(rows: np.ndarray, models: np.ndarray, labels: np.ndarray, feats: np.ndarray, codes: np.ndarray,
              logfreq: np.ndarray, logprob: np.ndarray, text: np.ndarray, acc: np.ndarray, gacc: np.ndarray,
              prev: np.ndarray | None = None) -> np.ndarray:
        """QE rows for (prompt ``rows[r]``, model ``models[r]``), optionally with the answer of model
        ``prev[r]`` as history: the vectorised twin of :func:`crescade.stage2.extra_features`
        (``codes`` are integer ids of final answers, -1 where none can be read)."""
        k = labels[rows]
        d = feats.shape[2]
        out = np.zeros((len(rows), d + len(EXTRA_NAMES)))
        out[:, :d] = feats[rows, models]
        out[:, d] = _vlogit(acc[k, models])
        out[:, d + 1] = _vlogit(gacc[models])
        out[:, d + 2] = logfreq[rows, models]
        fill_logprob_features(out[:, d:], logprob[rows, models])
        out[:, d + 10] = text[rows, models]
        if prev is not None:
            have = prev >= 0
            q = np.where(have, prev, 0)
            a, b = codes[rows, models], codes[rows, q]
            comparable = have & (a >= 0) & (b >= 0)
            agree = comparable & (a == b)
            prior_prev = _vlogit(acc[k, q])
            out[:, d + 5] = have
            out[:, d + 6] = comparable
            out[:, d + 7] = agree
            out[:, d + 8] = np.where(agree, prior_prev, 0.0)
            out[:, d + 9] = np.where(comparable & ~agree, prior_prev, 0.0)
        return out

    def _fit_qe(self, rows: np.ndarray, labels: np.ndarray, correct: np.ndarray, feats: np.ndarray,
                finals: list[list[str | None]], logprob: np.ndarray, text: np.ndarray, acc: np.ndarray,
                gacc: np.ndarray, tables: dict[tuple[int, int], AnswerTable], c: float | None = None
                ) -> QualityEstimator:
        m = correct.shape[1]
        rr, mm = np.repeat(rows, m), np.tile(np.arange(m), len(rows))
        keep = ~np.isnan(correct[rr, mm])
        rr, mm = rr[keep], mm[keep]
        codes = _answer_codes(finals)
        lf = self._logfreq(labels, finals, tables)
        x = self._rows(rr, mm, labels, feats, codes, lf, logprob, text, acc, gacc)
        y = correct[rr, mm]
        if self.max_depth >= 3 and m > 1:
            rng = np.random.default_rng(self.random_state + 7)
            prev = (mm + rng.integers(1, m, size=len(mm))) % m
            ok = ~np.isnan(correct[rr, prev])
            xh = self._rows(rr[ok], mm[ok], labels, feats, codes, lf, logprob, text, acc, gacc, prev[ok])
            x, y = np.vstack([x, xh]), np.concatenate([y, y[ok]])
        return QualityEstimator(C=self._qe_c if c is None else c).fit(x, y)

    def _crossfit(self, labels: np.ndarray, k: int, correct: np.ndarray, cost: np.ndarray, feats: np.ndarray,
                  finals: list[list[str | None]], logprob: np.ndarray, text: np.ndarray, folds: np.ndarray,
                  bar: Progress) -> CalibrationData:
        n, m = correct.shape
        p0 = np.full((n, m), np.nan)
        p1 = np.full((n, m, m), np.nan) if self.max_depth >= 3 else None
        codes = _answer_codes(finals)
        # the QE's capacity: the parameter, or (first clustering of an "auto" fit) the grid value with the
        # lowest out-of-fold log-loss, kept for every other clustering and the final fit
        grid = QE_C_GRID if self.qe_C == "auto" and getattr(self, "qe_C_", None) is None else (self._qe_c,)
        losses = np.zeros(len(grid))
        fold_qe = []
        for f in range(self.n_folds):
            tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            acc, _, gacc = shrunk_accuracy(correct[tr], labels[tr], k, self._s)
            tables = self._answer_tables(labels[tr], [finals[i] for i in tr], k, ~np.isnan(correct[tr]))
            rr, mm = np.repeat(te, m), np.tile(np.arange(m), len(te))
            lf = self._logfreq(labels, finals, tables)
            x_te = self._rows(rr, mm, labels, feats, codes, lf, logprob, text, acc, gacc)
            y_te, known = correct[rr, mm], ~np.isnan(correct[rr, mm])
            qes = []
            for g, c in enumerate(grid):
                qe = self._fit_qe(tr, labels, correct, feats, finals, logprob, text, acc, gacc, tables, float(c))
                p = np.clip(qe.predict(x_te[known]), 1e-6, 1 - 1e-6)
                losses[g] -= float(np.sum(y_te[known] * np.log(p) + (1 - y_te[known]) * np.log(1 - p)))
                qes.append(qe)
            fold_qe.append((te, acc, gacc, lf, qes))
        best = int(np.argmin(losses))
        if len(grid) > 1:
            self.qe_C_ = float(grid[best])
        for te, acc, gacc, lf, qes in fold_qe:
            qe = qes[best]
            rr, mm = np.repeat(te, m), np.tile(np.arange(m), len(te))
            p0[rr, mm] = qe.predict(self._rows(rr, mm, labels, feats, codes, lf, logprob, text, acc, gacc))
            if p1 is not None:
                r3 = np.repeat(te, m * m)
                j3 = np.tile(np.repeat(np.arange(m), m), len(te))
                q3 = np.tile(np.arange(m), m * len(te))
                sel = j3 != q3
                p1[r3[sel], j3[sel], q3[sel]] = qe.predict(
                    self._rows(r3[sel], j3[sel], labels, feats, codes, lf, logprob, text, acc, gacc, q3[sel]))
            bar.update(1)
        return CalibrationData(labels=labels, correct=correct.copy(), cost=cost.copy(), p0=p0, p1=p1,
                               folds=folds)

    # ------------------------------------------------------------------ the knob
    def _strong_acc(self, data: CalibrationData) -> float:
        return float(np.nanmean(data.correct[:, self.strongest_]))

    def _strong_cost(self, data: CalibrationData) -> float:
        return float(np.nanmean(data.cost[:, self.strongest_]))

    def _table(self, data: CalibrationData, k: int, rows: np.ndarray | None = None,
               stats_rows: np.ndarray | None = None) -> OptionTable:
        """Simulate every option on ``rows``, with ladders from the Stage-1 table of ``stats_rows``."""
        sr = np.arange(len(data.labels)) if stats_rows is None else stats_rows
        acc, _, _ = shrunk_accuracy(data.correct[sr], data.labels[sr], k, self._s)
        mean_cost = cluster_means(data.cost[sr], data.labels[sr], k)
        start = self.models_.index(self.start_model) if self.start_model is not None else None
        return simulate(data, acc, mean_cost, DEFAULT_THRESHOLDS, self.max_depth, self.strongest_, start, rows)

    def _candidates(self, table: OptionTable, strong_cost: float) -> list[Solution]:
        return candidates(table, per_cluster_threshold=self.threshold_mode == "per_cluster",
                          cost_scale=max(strong_cost, 1e-12), shrinkage=self._s)

    def _family_names(self) -> list[str]:
        """The candidate families of plans, in the order of the honest curves' rows."""
        return ["cascade", "route", *(f"single:{m}" for m in self.models_)]

    def _family_solutions(self, table: OptionTable, strong_cost: float, family: int) -> list[Solution]:
        """Candidate plans of one family: the full cascade, routing only, or one single model."""
        if family == 0:
            return self._candidates(table, strong_cost)
        if family == 1:
            return self._candidates(route_only(table), strong_cost)
        return single_model(table, family - 2)

    def _grid_values(self) -> tuple[np.ndarray, bool]:
        return (QUALITY_GRID, True) if self.quality_target is not None else (COST_GRID, False)

    def _honest_curve(self, data: CalibrationData, k: int) -> dict[str, np.ndarray]:
        """Cross-fitted outcome of the knob for every family of plans: per fold, choose the plan on the other
        folds and replay it on the held-out one. Returns honest retention and cost ratio ``[family, knob]``."""
        grid, quality = self._grid_values()
        n, n_f = len(data.labels), 2 + data.correct.shape[1]
        hits, spent = np.zeros((n_f, len(grid))), np.zeros((n_f, len(grid)))
        # the QE's folds, then other partitions of the same out-of-fold scores: which prompts a plan is chosen
        # on is noise too, and averaging partitions removes it
        rng = np.random.default_rng(self.random_state + 1)
        n_parts = len(np.unique(data.folds))
        splits = [(data.folds, f) for f in np.unique(data.folds)]
        for _ in range(HONEST_REPEATS - 1):
            part = rng.permutation(n) % n_parts
            splits += [(part, f) for f in range(n_parts)]
        for folds, f in splits:
            tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            if len(tr) == 0 or len(te) == 0:
                continue
            t_tr, t_te = self._table(data, k, tr, tr), self._table(data, k, te, tr)
            sa = float(np.nanmean(data.correct[tr, self.strongest_]))
            sc = float(np.nanmean(data.cost[tr, self.strongest_]))
            for fam in range(n_f):
                sols = self._family_solutions(t_tr, sc, fam)
                if not sols:
                    hits[fam] = np.nan  # a model without usable records: never a candidate
                    continue
                for g, value in enumerate(grid):
                    sol, _ = choose(sols, n=float(len(tr)), strong_acc=sa, strong_cost=sc,
                                    quality_target=float(value) if quality else None,
                                    cost_target=None if quality else float(value))
                    h, c = plan_totals(t_te, sol)
                    hits[fam, g] += h
                    spent[fam, g] += c
        sa, sc = self._strong_acc(data), self._strong_cost(data)
        reps = len(splits) / max(n_parts, 1)
        # a larger nominal knob never means a worse or cheaper plan: report the monotone envelope
        retention = np.maximum.accumulate(hits / reps / n / max(sa, 1e-12), axis=1)
        cost_ratio = np.maximum.accumulate(spent / reps / n / max(sc, 1e-12), axis=1)
        return {"grid": grid, "retention": retention, "cost_ratio": cost_ratio,
                "mode": np.array([1 if quality else 0])}

    def _band_score(self, honest: dict[str, np.ndarray]) -> float:
        """How a clustering fares around the user's target, for choosing among clusterings: the mean, over
        targets in :data:`SELECTION_BAND` around it, of the honest cost ratio of the best family (quality
        knob; a target it cannot meet counts as cost 1 plus the shortfall), or of minus its honest retention
        (cost knob). One target's outcome is a few prompts' worth of noise; a band of them is not."""
        quality = self.quality_target is not None
        target = float(self.quality_target if quality else self.cost_target)  # type: ignore[arg-type]
        scores = []
        for delta in SELECTION_BAND:
            t = min(target + delta, 1.0) if quality else target * (1.0 + 10 * delta)
            _, _, met, ret, cost = self._pick(self._family_outcomes(honest, t), clustered_only=True)
            if quality:
                scores.append(cost if met else 1.0 + (t - ret))
            else:
                scores.append(-ret if met else 1.0 + cost)
        return float(np.mean(scores))

    def _family_outcomes(self, honest: dict[str, np.ndarray], target: float | None = None
                         ) -> dict[int, tuple[float, bool, float, float]]:
        """Per family with a usable curve: the nominal knob for ``target`` (default: the user's) on its honest
        curve, whether it meets the target, and its honest retention and cost there
        ``(nominal, met, retention, cost)``."""
        quality = self.quality_target is not None
        if target is None:
            target = float(self.quality_target if quality else self.cost_target)  # type: ignore[arg-type]
        out = {}
        for fam in range(len(honest["retention"])):
            ret_f, cost_f = honest["retention"][fam], honest["cost_ratio"][fam]
            if not np.all(np.isfinite(ret_f)):
                continue
            value, met = nominal_for(target, ret_f if quality else cost_f, honest["grid"], quality=quality)
            g = int(np.flatnonzero(honest["grid"] == value)[0])
            out[fam] = (value, met, float(ret_f[g]), float(cost_f[g]))
        return out

    def _pick(self, outcomes: dict[int, tuple[float, bool, float, float]], *, clustered_only: bool = False
              ) -> tuple[str, float, bool, float, float]:
        """The family that meets the user's target most cheaply on the honest curves (most accurately within a
        budget) and its outcome: ``(family, nominal, met, retention, cost)``. Ties go to the simpler family
        (a single model, then routing, then the cascade)."""
        quality = self.quality_target is not None
        best: tuple[tuple[float, ...], int] | None = None
        for fam, (_, met, ret, cost) in outcomes.items():
            if clustered_only and fam >= 2:
                continue
            simpler = {0: 2.0, 1: 1.0}.get(fam, 0.0)
            if quality:
                key = (0.0, cost, -ret, simpler) if met else (1.0, -ret, cost, simpler)
            else:
                key = (0.0, -ret, cost, simpler) if met else (1.0, cost, -ret, simpler)
            if best is None or key < best[0]:
                best = (key, fam)
        if best is None:
            raise ConfigError("no family of plans could be calibrated on these records")
        fam = best[1]
        return (self._family_names()[fam], *outcomes[fam])

    def _honest_is_current(self) -> bool:
        honest = getattr(self, "honest_", None)
        _, quality = self._grid_values()
        return (honest is not None and bool(honest["mode"][0]) == quality
                and np.ndim(honest["retention"]) == 2 and len(honest["retention"]) == 2 + len(self.models_))

    def _resolve(self) -> None:
        """(Re)choose the plan from the stored calibration data (after fit, retarget or a pool change): the
        family of plans and knob setting that meet the target most cheaply out of fold, then that family's
        plan for the setting on all calibration prompts."""
        if not self._honest_is_current():
            self.honest_ = self._honest_curve(self.calib_, self.n_clusters_)
        honest = self.honest_
        assert honest is not None
        outcomes = self._family_outcomes(honest)
        family, nominal, met, h_ret, h_cost = self._pick(outcomes)
        quality = self.quality_target is not None
        # the simulated options and each family's candidate plans do not depend on the knob: computed once and
        # shared by every retarget copy (a pool change makes a new cache)
        cache = self.__dict__.setdefault("_knob_cache", {})
        if "table" not in cache:
            cache["table"] = self._table(self.calib_, self.n_clusters_)
        table = cache["table"]
        n = float(len(self.calib_.labels))
        sa, sc = self._strong_acc(self.calib_), self._strong_cost(self.calib_)
        fam_i = self._family_names().index(family)
        if ("sols", fam_i) not in cache:
            cache[("sols", fam_i)] = self._family_solutions(table, sc, fam_i)
        sols = cache[("sols", fam_i)]
        sol, _ = choose(sols, n=n, strong_acc=sa, strong_cost=sc,
                        quality_target=nominal if quality else None, cost_target=None if quality else nominal)
        self.first_ = sol.first
        self.tau_index_ = sol.tau_index
        self.ladders_ = [table.ladders[k][int(sol.first[k])] for k in range(self.n_clusters_)]
        in_sample = expectations(sol, n=n, strong_acc=sa, strong_cost=sc, unit=self.cost_unit)
        names = self._family_names()
        families = {names[fam]: {"retention": ret, "cost_ratio": cost} for fam, (_, _, ret, cost) in outcomes.items()}
        self.expected_ = {
            "target_met": met, "nominal_target": nominal, "family": family, "families": families,
            "retention": h_ret, "accuracy": h_ret * sa, "cost_ratio": h_cost, "cost_unit": self.cost_unit,
            f"cost_per_query_{self.cost_unit}": h_cost * sc,
            "escalation_rate": in_sample["escalation_rate"], "strong_call_share": in_sample["strong_call_share"],
            "in_sample": in_sample, "strongest_model": self.models_[self.strongest_],
            "strongest_accuracy": sa, f"strongest_cost_per_query_{self.cost_unit}": sc,
        }
        self._general_cost = cluster_means(self.calib_.cost, np.zeros(len(self.calib_.labels), dtype=np.int64), 1)[0]
        self.general_ladder_, self.general_tau_index_ = self._general_plan()
        if ("sols", 0) not in cache:
            cache[("sols", 0)] = self._family_solutions(table, sc, 0)
        self.frontier_ = sorted(
            ({"accuracy": s.hits / n, "cost_ratio": s.cost / n / sc if sc > 0 else float("nan")}
             for s in cache[("sols", 0)]),
            key=lambda d: d["cost_ratio"])

    def _general_plan(self) -> tuple[list[int], int]:
        """The plan for unfamiliar queries: all calibration prompts as one cluster, the cheapest ladder (or
        single model) that meets the knob there; ``([strongest], 0)`` under ``unfamiliar="strongest"``."""
        if self.unfamiliar == "strongest":
            return [self.strongest_], 0
        d = self.calib_
        sa, sc = self._strong_acc(d), self._strong_cost(d)
        cache = self.__dict__.setdefault("_knob_cache", {})
        if "general" not in cache:
            one = CalibrationData(labels=np.zeros(len(d.labels), dtype=np.int64), correct=d.correct, cost=d.cost,
                                  p0=d.p0, p1=d.p1, folds=d.folds)
            acc, _, _ = shrunk_accuracy(d.correct, one.labels, 1, self._s)
            start = self.models_.index(self.start_model) if self.start_model is not None else None
            table = simulate(one, acc, self._general_cost[None, :], DEFAULT_THRESHOLDS, self.max_depth,
                             self.strongest_, start)
            sols = candidates(table, per_cluster_threshold=False, cost_scale=max(sc, 1e-12))
            sols += [s for j in range(len(self.models_)) for s in single_model(table, j)]
            cache["general"] = (table, sols)
        table, sols = cache["general"]
        sol, _ = choose(sols, n=float(len(d.labels)), strong_acc=sa, strong_cost=sc,
                        quality_target=self.quality_target, cost_target=self.cost_target)
        return list(table.ladders[0][int(sol.first[0])]), int(sol.tau_index[0])

    def retarget(self, *, quality_target: float | None = None, cost_target: float | None = None) -> Cascade:
        """A copy of this fitted cascade tuned to another knob value, without refitting anything."""
        self._check_fitted()
        new = copy.copy(self)
        new.quality_target, new.cost_target = quality_target, cost_target
        new._validate()
        new._resolve()
        return new

    # ------------------------------------------------------------------ pool changes
    def remove_model(self, name: str) -> Cascade:
        """A copy without ``name``: its clusters are re-assigned at once from the stored statistics."""
        self._check_fitted()
        if name not in self.models_:
            raise PoolError(f"model {name!r} is not in the pool {self.models_}")
        if len(self.models_) == 1:
            raise PoolError("cannot remove the only model of the pool")
        j = self.models_.index(name)
        keep = [i for i in range(len(self.models_)) if i != j]
        new = copy.copy(self)
        new.models_ = [self.models_[i] for i in keep]
        new.cards_ = {k: v for k, v in self.cards_.items() if k != name}
        d = self.calib_
        new.calib_ = CalibrationData(
            labels=d.labels, correct=d.correct[:, keep], cost=d.cost[:, keep], p0=d.p0[:, keep],
            p1=d.p1[:, keep][:, :, keep] if d.p1 is not None else None, folds=d.folds)
        new.acc_table_, new.count_table_ = self.acc_table_[:, keep], self.count_table_[:, keep]
        new.global_acc_, new.cost_table_ = self.global_acc_[keep], self.cost_table_[:, keep]
        new.latency_table_ = self.latency_table_[:, keep]
        remap = {old: i for i, old in enumerate(keep)}
        new.answer_tables_ = {(c, remap[q]): t for (c, q), t in self.answer_tables_.items() if q in remap}
        new.strongest_ = int(np.argmax(np.nanmean(new.calib_.correct, axis=0)))
        if new.start_model == name:
            new.start_model = None
        new.honest_ = None
        new._replay_cache = weakref.WeakKeyDictionary()
        new._knob_cache = {}
        new._resolve()
        return new

    def add_model(self, name: str, outcomes: Outcomes, card: ModelCard | None = None) -> Cascade:
        """A copy with ``name`` added, profiled only from its records on (some of) the calibration prompts.

        Clusters, embedder and quality estimator are reused; nothing is refitted.
        """
        self._check_fitted()
        if name in self.models_:
            raise PoolError(f"model {name!r} is already in the pool")
        if name not in outcomes.models:
            raise PoolError(f"the records hold no answers of {name!r} (models: {outcomes.models})")
        col = outcomes.models.index(name)
        index = {pid: i for i, pid in enumerate(self.calib_prompt_ids_)}
        pairs = [(index[pid], r) for r, pid in enumerate(outcomes.prompt_ids) if pid in index]
        if not pairs:
            raise PoolError(f"none of the {outcomes.n_prompts} prompts given for {name!r} is a calibration "
                            "prompt of this cascade; profile the new model on (a subset of) those prompts")
        rows = np.array([p[0] for p in pairs])
        src = np.array([p[1] for p in pairs])
        n, m = self.calib_.correct.shape
        new = copy.copy(self)
        new.models_ = [*self.models_, name]
        new.cards_ = dict(self.cards_)
        if card is not None:
            new.cards_[name] = card
        elif self.cards_:
            raise PoolError(f"this cascade prices its models: give the ModelCard of {name!r}")
        corr = np.full(n, np.nan)
        cst = np.full(n, np.nan)
        corr[rows] = outcomes.correct[src, col]
        cst[rows] = unit_cost(outcomes, self.cost_unit)[src, col]
        labels = self.calib_.labels
        acc_new, cnt_new, g_new = shrunk_accuracy(corr[:, None], labels, self.n_clusters_, self._s)
        new.acc_table_ = np.hstack([self.acc_table_, acc_new])
        new.count_table_ = np.hstack([self.count_table_, cnt_new])
        new.global_acc_ = np.concatenate([self.global_acc_, g_new])
        new.cost_table_ = np.hstack([self.cost_table_, cluster_means(cst[:, None], labels, self.n_clusters_)])
        lat = np.full(n, np.nan)
        lat[rows] = np.asarray(outcomes.latency_s, dtype=float)[src, col]
        new.latency_table_ = np.hstack([self.latency_table_, cluster_means(lat[:, None], labels, self.n_clusters_)])
        texts = {int(i): outcomes.responses[int(s)][col] for i, s in zip(rows, src, strict=True)}
        new.answer_tables_ = dict(self.answer_tables_)
        for c in range(self.n_clusters_):
            new.answer_tables_[(c, m)] = AnswerTable.build(
                [final_answer(texts[int(i)]) for i in rows if labels[i] == c])
        # QE scores of the new model's calibration answers (the estimator is reused as is)
        p0 = np.full(n, np.nan)
        for i, s in zip(rows.tolist(), src.tolist(), strict=True):
            ans = Answer(text=outcomes.responses[s][col], model=name,
                         finish_reason=outcomes.finish_reason[s][col],
                         logprobs=LogprobSummary.from_values(outcomes.logprobs[s, col]))
            p0[i] = new._score(self.calib_prompt_text(i, outcomes, s), ans, int(labels[i]), [])
        p1 = None
        if self.calib_.p1 is not None:
            p1 = np.full((n, m + 1, m + 1), np.nan)
            p1[:, :m, :m] = self.calib_.p1
        new.calib_ = CalibrationData(labels=labels, correct=np.hstack([self.calib_.correct, corr[:, None]]),
                                     cost=np.hstack([self.calib_.cost, cst[:, None]]),
                                     p0=np.hstack([self.calib_.p0, p0[:, None]]), p1=p1,
                                     folds=self.calib_.folds)
        new.strongest_ = int(np.argmax(np.nanmean(new.calib_.correct, axis=0)))
        new.honest_ = None
        new._replay_cache = weakref.WeakKeyDictionary()
        new._knob_cache = {}
        new._resolve()
        return new

    @staticmethod
    def calib_prompt_text(i: int, outcomes: Outcomes, src_row: int) -> str:
        return outcomes.prompts[src_row]

    # ------------------------------------------------------------------ serving
    def _check_fitted(self) -> None:
        if not hasattr(self, "first_"):
            raise NotFittedError("this Cascade is not fitted: call fit(outcomes) or Cascade.load(path)")

    def _model_index(self, name: str) -> int:
        try:
            return self.models_.index(name)
        except ValueError:
            raise PoolError(f"model {name!r} is not in the cascade's pool {self.models_}") from None

    def cluster_of(self, queries: Sequence[str]) -> np.ndarray:
        """The nearest cluster of each query."""
        return self._route(queries)[0]

    def _route(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The nearest cluster of each query, and whether the query is unfamiliar (see ``unfamiliar``)."""
        self._check_fitted()
        emb = self.embedder_.embed(list(queries))
        if self.space_ == "profile" and self.profiler_ is not None:
            labels = assign(self.profiler_.transform(emb), self.centroids_, "euclidean")
        else:
            labels = assign(emb, self.centroids_)
        if self.unfamiliar == "nearest":
            return labels, np.zeros(len(labels), dtype=bool)
        return labels, np.max(emb @ self.anchors_.T, axis=1) < self.unfamiliar_threshold_

    def _plan_for(self, k: int, min_model: str | None, unfamiliar: bool = False) -> Plan:
        if unfamiliar:
            ladder, tau_i = list(self.general_ladder_), self.general_tau_index_
            acc_row, cost_row = self.global_acc_, self._general_cost
            what = "the strongest model" if self.unfamiliar == "strongest" else "the general plan"
            reason = (f"unfamiliar query (unlike every calibration cluster; nearest: {k}): {what}, routed to "
                      f"{self.models_[ladder[0]]}")
        else:
            ladder, tau_i = list(self.ladders_[k]), int(self.tau_index_[k])
            acc_row, cost_row = self.acc_table_[k], self.cost_table_[k]
            reason = f"cluster {k}: routed to {self.models_[ladder[0]]}"
        first = ladder[0]
        tau = float(DEFAULT_THRESHOLDS[tau_i])
        if min_model is not None:
            j = self._model_index(min_model)
            if j in ladder:
                ladder = ladder[ladder.index(j):]
            elif acc_row[j] >= acc_row[ladder[0]]:
                ladder = efficient_ladder(j, acc_row, cost_row, self.max_depth)
            if ladder[0] != first:
                reason += f", raised to {self.models_[ladder[0]]} (conversation floor {min_model})"
        names = tuple(self.models_[j] for j in ladder)
        thresholds = tuple([tau] * (len(names) - 1) + [0.0])
        return Plan(cluster=k, ladder=names, thresholds=thresholds, reason=reason, unfamiliar=unfamiliar,
                    cost_unit=self.cost_unit)

    def plan(self, query: str, *, min_model: str | None = None) -> Plan:
        """The cluster of ``query`` and the ladder of models to try (pure, thread-safe)."""
        labels, unfamiliar = self._route([query])
        return self._plan_for(int(labels[0]), min_model, bool(unfamiliar[0]))

    def plan_batch(self, queries: Sequence[str]) -> list[Plan]:
        labels, unfamiliar = self._route(queries)
        return [self._plan_for(int(k), None, bool(u)) for k, u in zip(labels, unfamiliar, strict=True)]

    def _score(self, query: str, answer: Answer, k: int, history: Sequence[Answer]) -> float:
        j = self._model_index(answer.model)
        fa = final_answer(answer.text)
        hist = []
        for h in history[-1:]:
            if h.model in self.models_:
                hist.append((final_answer(h.text), float(self.acc_table_[k, self.models_.index(h.model)])))
        x = answer_features(query, answer.text, finish_reason=answer.finish_reason) + extra_features(
            prior=float(self.acc_table_[k, j]), global_prior=float(self.global_acc_[j]),
            answer_logfreq=self.answer_tables_[(k, j)].logfreq(fa), logprobs=answer.logprobs,
            final=fa, history=hist, text_logit=float(self.text_.score([answer.text])[0]))
        return float(self.qe_.predict(np.asarray(x, dtype=float))[0])

    def judge(self, query: str, answer: Answer, *, plan: Plan, tier: int, history: Sequence[Answer] = ()) -> Verdict:
        """P(correct) of ``answer`` and whether to escalate (pure, thread-safe)."""
        self._check_fitted()
        if not 0 <= tier < len(plan.ladder):
            raise ConfigError(f"tier {tier} is outside the plan's ladder of {len(plan.ladder)}")
        threshold = plan.thresholds[tier]
        if tier == len(plan.ladder) - 1:
            return Verdict(p=float("nan"), threshold=0.0, escalate=False, reason="last tier")
        if answer.tool_calls_valid is True and self.tool_calls == "accept":
            return Verdict(p=1.0, threshold=threshold, escalate=False, reason="schema-valid tool call accepted")
        p = self._score(query, answer, plan.cluster, history)
        esc = p < threshold
        return Verdict(p=p, threshold=threshold, escalate=esc,
                       reason=f"p={p:.3f} {'<' if esc else '>='} {threshold:.3f}")

    # ------------------------------------------------------------------ replay
    def replay_scores(self, outcomes: Outcomes) -> CalibrationData:
        """QE scores of every recorded answer (alone and after each other model's answer), in pool order.

        They depend on the fitted clusters, tables and estimator but not on the knob, so they are
        computed once per records object and shared by every ``retarget`` copy.
        """
        self._check_fitted()
        cache = self.__dict__.setdefault("_replay_cache", weakref.WeakKeyDictionary())
        if outcomes in cache:
            return cache[outcomes]
        cols = []
        for name in self.models_:
            if name not in outcomes.models:
                raise PoolError(f"the records lack model {name!r} of the cascade's pool")
            cols.append(outcomes.models.index(name))
        n, m = outcomes.n_prompts, len(cols)
        labels, unfamiliar = self._route(outcomes.prompts)
        responses = [[row[c] for c in cols] for row in outcomes.responses]
        finish = [[row[c] for c in cols] for row in outcomes.finish_reason]
        feats = self._text_features(outcomes.prompts, responses, finish)
        finals = [[final_answer(r) for r in row] for row in responses]
        codes = _answer_codes(finals)
        lf = self._logfreq(labels, finals, self.answer_tables_)
        logprob = np.asarray(outcomes.logprobs, dtype=float)[:, cols]
        rows, models = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
        text = self.text_.score([responses[i][j] or "" for i, j in zip(rows, models, strict=True)]).reshape(n, m)
        args = (labels, feats, codes, lf, logprob, text, self.acc_table_, self.global_acc_)
        p0 = self.qe_.predict(self._rows(rows, models, *args)).reshape(n, m)
        p1 = None
        if self.max_depth >= 3 and m > 1:
            p1 = np.full((n, m, m), np.nan)
            r3, j3, q3 = np.repeat(np.arange(n), m * m), np.tile(np.repeat(np.arange(m), m), n), np.tile(
                np.arange(m), m * n)
            sel = j3 != q3
            p1[r3[sel], j3[sel], q3[sel]] = self.qe_.predict(self._rows(r3[sel], j3[sel], *args, q3[sel]))
        scores = CalibrationData(labels=labels, correct=np.asarray(outcomes.correct, float)[:, cols],
                                 cost=unit_cost(outcomes, self.cost_unit)[:, cols], p0=p0, p1=p1,
                                 folds=np.zeros(n, dtype=np.int64), unfamiliar=unfamiliar)
        cache[outcomes] = scores
        return scores

    def replay(self, outcomes: Outcomes) -> ReplayResult:
        """Run the cascade over recorded answers (every model's answer to every prompt is known).

        Vectorised: the same decisions ``plan`` + ``judge`` would take, one cluster at a time.
        """
        s = self.replay_scores(outcomes)
        n = len(s.labels)
        out = ReplayResult(correct=np.zeros(n), cost=np.zeros(n), model=np.zeros(n, dtype=np.int64),
                           routed=np.zeros(n, dtype=np.int64), cluster=s.labels, calls=np.zeros(n, dtype=np.int64),
                           escalated=np.zeros(n, dtype=bool), strong_call=np.zeros(n, dtype=bool),
                           called=np.zeros((n, len(self.models_)), dtype=bool), last_tier=np.zeros(n, dtype=bool),
                           cost_unit=self.cost_unit)
        unfamiliar = s.unfamiliar if s.unfamiliar is not None else np.zeros(n, dtype=bool)
        groups = [(np.flatnonzero((s.labels == k) & ~unfamiliar), self.ladders_[k], int(self.tau_index_[k]))
                  for k in range(self.n_clusters_)]
        groups.append((np.flatnonzero(unfamiliar), self.general_ladder_, self.general_tau_index_))
        for r, ladder, tau_i in groups:
            if len(r) == 0:
                continue
            tau = float(DEFAULT_THRESHOLDS[tau_i])
            pending = np.ones(len(r), dtype=bool)
            out.routed[r] = ladder[0]
            for tier, j in enumerate(ladder):
                out.cost[r] += np.where(pending, s.cost[r, j], 0.0)
                out.calls[r] += pending
                out.called[r, j] = pending
                if j == self.strongest_:
                    out.strong_call[r] |= pending
                if tier == len(ladder) - 1:
                    accept = pending
                    out.last_tier[r] = pending
                else:
                    p = s.p0[r, j] if tier == 0 else s.p1[r, j, ladder[tier - 1]]  # type: ignore[index]
                    accept = pending & (p >= tau)
                out.model[r] = np.where(accept, j, out.model[r])
                out.correct[r] = np.where(accept, s.correct[r, j], out.correct[r])
                if tier == 0:
                    out.escalated[r] = pending & ~accept
                pending = pending & ~accept
        return out

    # ------------------------------------------------------------------ reports
    def cluster_report(self, prompts: Sequence[str] | None = None, n_examples: int = 3) -> list[dict[str, Any]]:
        """Per cluster: size, examples, routed model, ladder, accuracy, cost, expected escalation rate."""
        self._check_fitted()
        table = self._table(self.calib_, self.n_clusters_)
        rows = []
        for k in range(self.n_clusters_):
            first = int(self.first_[k])
            ti = int(self.tau_index_[k])
            size = float(table.sizes[k])
            ex_idx = np.flatnonzero(self.calib_.labels == k)[:n_examples]
            rows.append({
                "cluster": k, "size": int(size), "routed_model": self.models_[first],
                "ladder": [self.models_[j] for j in self.ladders_[k]],
                "threshold": float(DEFAULT_THRESHOLDS[ti]),
                "routed_accuracy": float(self.acc_table_[k, first]),
                "expected_accuracy": float(table.hits[ti, k, first] / size) if size else float("nan"),
                f"expected_cost_per_query_{self.cost_unit}": float(table.cost[ti, k, first] / size) if size
                else float("nan"),
                "expected_escalation_rate": float(table.escalations[ti, k, first] / size) if size else float("nan"),
                "examples": [prompts[i][-160:] for i in ex_idx] if prompts is not None else [],
            })
        return rows

    def qe_report(self, top: int = 8) -> dict[str, Any]:
        """How well the quality estimator separates right from wrong answers, and what it leans on.

        ``oof_auc``: per model, the AUC of its out-of-fold scores on the calibration answers (``None`` where
        its answers are all right or all wrong); ``signals``: the ``top`` features by absolute standardised
        weight; ``text``: whether the learned text signal is used, its regularisation and out-of-fold log-loss.
        """
        self._check_fitted()
        d = self.calib_
        auc = {}
        for j, name in enumerate(self.models_):
            ok = np.isfinite(d.p0[:, j]) & np.isfinite(d.correct[:, j])
            auc[name] = _auc(d.correct[ok, j], d.p0[ok, j])
        weights = self.qe_.weights()
        signals = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:top]
        return {"oof_auc": auc, "C": self._qe_c, "signals": [{"feature": f, "weight": w} for f, w in signals],
                "text": {"used": self.text_.used, **dict(self.text_.report_)}}

    # ------------------------------------------------------------------ persistence
    def fingerprint(self) -> str:
        self._check_fitted()
        return fingerprint({"models": self.models_, "prices": {k: v.to_dict() for k, v in self.cards_.items()},
                            "embedder": self.embedder_.fingerprint()})

    @property
    def state_(self) -> CascadeState:
        """Everything :meth:`fit` learned, as one :class:`~crescade.engine.state.CascadeState` (each field
        ``x`` is also this object's attribute ``x_``)."""
        self._check_fitted()
        return CascadeState(**{f.name: getattr(self, f"{f.name}_") for f in fields(CascadeState)})

    def _adopt(self, state: CascadeState) -> None:
        for f in fields(CascadeState):
            setattr(self, f"{f.name}_", getattr(state, f.name))

    def save(self, directory: str | Path) -> None:
        """Write the fitted cascade as JSON + ``.npz`` (no pickle), atomically."""
        meta, arrays = dump_fields(self.state_)
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_SAVED}
        params["cluster_grid"] = [int(k) for k in params["cluster_grid"]]
        if isinstance(self.embedder, str):  # a name is plain data (an embedder object is saved as state only)
            params["embedder"] = self.embedder
        meta.update(crescade_version=__version__, params=params, thresholds=DEFAULT_THRESHOLDS.tolist(),
                    fingerprint=self.fingerprint())
        save_artifact(directory, kind=ARTIFACT_KIND, meta=meta, arrays=arrays)

    @classmethod
    def load(cls, directory: str | Path, *, embedder: Any = None) -> Cascade:
        """Load a saved cascade. Never executes code; a damaged or foreign artifact is an ArtifactError."""
        meta, arrays = load_artifact(directory, kind=ARTIFACT_KIND)
        bad = sorted(k for k, a in arrays.items() if a.dtype.kind not in "fiub")
        if bad:
            raise ArtifactError(f"{directory}: array(s) {', '.join(bad)} are not real numbers "
                                f"({', '.join(str(arrays[k].dtype) for k in bad)})")
        try:
            self = cls._from_state(meta, arrays, embedder)
            self._self_check()
        except (ArtifactError, MissingExtraError, ModelFileError) as exc:  # e.g. the embedder's extra is missing
            raise type(exc)(f"{directory}: {exc}") from None
        except Exception as exc:  # whatever a damaged artifact trips over is the artifact's fault
            raise ArtifactError(f"{directory}: artifact content is inconsistent: {type(exc).__name__}: "
                                f"{str(exc)[:300]}") from None
        return self

    def _self_check(self) -> None:
        """Plan and judge one probe, so an artifact that loads is one that serves."""
        plan = self.plan("probe: does this artifact route?")
        for tier, model in enumerate(plan.ladder[:-1]):
            v = self.judge("probe", Answer(text="B", model=model), plan=plan, tier=tier)
            if not isinstance(v.p, float):
                raise ArtifactError("the quality estimator does not return a probability")

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], embedder: Any) -> Cascade:
        params = dict(meta["params"])
        params["cluster_grid"] = tuple(params["cluster_grid"])
        self = cls(**params, progress=False)
        if meta["thresholds"] != DEFAULT_THRESHOLDS.tolist():
            raise ArtifactError("artifact threshold grid differs from this crescade version's")
        state = load_fields(CascadeState, meta, arrays, {"embedder": embedder})
        state.check()
        self._adopt(state)
        self._replay_cache = weakref.WeakKeyDictionary()
        self._knob_cache = {}
        self._resolve()
        if meta.get("fingerprint") != self.fingerprint():
            raise ArtifactError("artifact fingerprint does not match its pool, prices and embedder")
        return self


def _same(a: Any, b: Any) -> bool:
    """Parameter equality for ``repr`` (a list and a tuple of the same values are the same grid)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a is b or (type(a) is type(b) and a == b)


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Rank AUC (Mann-Whitney, ties averaged) of scores ``p`` for 0/1 labels ``y``; None if one class is absent."""
    pos = y >= 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(sp):  # average ranks over ties
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _vlogit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p))


def _answer_codes(finals: list[list[str | None]]) -> np.ndarray:
    """Integer id per distinct final answer (-1 for none), so agreement is an array comparison."""
    ids: dict[str, int] = {}
    return np.array([[-1 if fa is None else ids.setdefault(fa, len(ids)) for fa in row] for row in finals],
                    dtype=np.int64)
