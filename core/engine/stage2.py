"""Stage 2: the quality estimator (QE), P(answer correct | query, answer, model profile, history).

It never sees a gold answer. Its inputs are model-agnostic, so a model it was not trained on is
judged through that model's Stage-1 profile rather than its name:

* answer text features (:mod:`crescade.features`), finish reason / truncation, the token-logprob summary
  (:mod:`crescade.engine.logprobs`: mean, min, 10th/25th percentiles, mean and min over the final answer);
* the model's shrunk accuracy in the query's cluster and overall (as logits);
* how common this final answer is among the model's answers in the cluster (answer bias);
* agreement with answers given by earlier tiers of the same request.

The classifier is a standardised logistic regression: calibrated probabilities, plain arrays.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common.errors import ConfigError, NotFittedError
from .features import FEATURE_NAMES
from .logprobs import LOGPROB_STATS, LogprobSummary

#: The QE columns read from an answer's token-logprob summary (:func:`logprob_features`), in order.
LOGPROB_FEATURES: tuple[str, ...] = (
    "has_logprob", "logprob_mean", "logprob_min", "logprob_p10", "logprob_p25",
    "has_final_logprob", "logprob_final_mean", "logprob_final_min",
)
# Features added after the first artifact format go last, so an older artifact's list is a prefix
# (:meth:`QualityEstimator.from_state` reads it with zero weight on what it lacks).
EXTRA_NAMES: tuple[str, ...] = (
    "prior_logit", "global_logit", "answer_logfreq", "has_logprob", "logprob_mean",
    "has_history", "n_comparable", "agrees", "agree_prior", "disagree_prior", "text_logit",
    "logprob_min", "logprob_p10", "logprob_p25", "has_final_logprob", "logprob_final_mean", "logprob_final_min",
)
QE_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + EXTRA_NAMES
#: Where each of :data:`LOGPROB_FEATURES` sits in :data:`EXTRA_NAMES`.
LOGPROB_SLOTS: np.ndarray = np.array([EXTRA_NAMES.index(n) for n in LOGPROB_FEATURES], dtype=np.int64)
TOP_ANSWERS = 32


def logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class AnswerTable:
    """Counts of a model's most common final answers in one cluster."""

    counts: dict[str, int]
    total: int

    def logfreq(self, answer: str | None) -> float:
        if answer is None:
            return 0.0
        return math.log((self.counts.get(answer, 0) + 1) / (self.total + 5))

    @classmethod
    def build(cls, answers: Sequence[str | None]) -> AnswerTable:
        c = Counter(a for a in answers if a is not None)
        return cls(dict(c.most_common(TOP_ANSWERS)), sum(c.values()))


def logprob_features(summaries: np.ndarray) -> np.ndarray:
    """The :data:`LOGPROB_FEATURES` columns of ``[r, len(LOGPROB_STATS)]`` summaries (``NaN`` where absent):
    a present-flag and the values for the whole answer and for its final answer. Absent values stay ``NaN``:
    the :class:`QualityEstimator` reads them as neutral (the calibration mean), so an answer served without
    logprobs is judged on its other features, never as a confident one. The one encoding used in calibration
    (vectorised) and in serving (:func:`extra_features`)."""
    lp = np.asarray(summaries, dtype=np.float64).reshape(-1, len(LOGPROB_STATS))
    has = np.isfinite(lp[:, 0])
    whole = np.where(has[:, None] & np.isfinite(lp[:, :4]), lp[:, :4], np.nan)
    has_final = has & np.isfinite(lp[:, 4:6]).all(axis=1)
    final = np.where(has_final[:, None], lp[:, 4:6], np.nan)
    return np.column_stack([has, whole, has_final, final]).astype(np.float64)


def fill_logprob_features(extra: np.ndarray, summaries: np.ndarray) -> None:
    """Write :func:`logprob_features` of ``summaries`` into their columns of ``extra`` (``[r, len(EXTRA_NAMES)]``,
    e.g. a view of the extra block of QE rows)."""
    extra[:, LOGPROB_SLOTS] = logprob_features(summaries)


def extra_features(
    *, prior: float, global_prior: float, answer_logfreq: float, logprobs: LogprobSummary | None,
    final: str | None, history: Sequence[tuple[str | None, float]], text_logit: float = 0.0,
) -> list[float]:
    """The non-text part of a QE row. ``history`` holds ``(final_answer, prior)`` of earlier tiers."""
    comparable = [(a, pr) for a, pr in history if a is not None and final is not None]
    agree = [logit(pr) for a, pr in comparable if a == final]
    disagree = [logit(pr) for a, pr in comparable if a != final]
    values = logprobs.values() if logprobs is not None else (math.nan,) * len(LOGPROB_STATS)
    named = {
        "prior_logit": logit(prior), "global_logit": logit(global_prior), "answer_logfreq": answer_logfreq,
        "has_history": 1.0 if history else 0.0, "n_comparable": float(len(comparable)),
        "agrees": 1.0 if agree else 0.0, "agree_prior": max(agree) if agree else 0.0,
        "disagree_prior": max(disagree) if disagree else 0.0, "text_logit": text_logit,
        **dict(zip(LOGPROB_FEATURES, logprob_features(np.asarray(values))[0].tolist(), strict=True)),
    }
    return [float(named[n]) for n in EXTRA_NAMES]


class QualityEstimator:
    """Standardised logistic regression over :data:`QE_FEATURE_NAMES`.

    A ``NaN`` feature (an absent logprob statistic) is neutral: it is standardised from the mean and scale of
    the values present in training and then read as that mean, so it moves no score; its present-flag
    carries whatever absence itself says. (An estimator saved before this rule read absent values as 0, and
    still does when loaded.)
    """

    def __init__(self, C: float = 1.0, max_iter: int = 200) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, x: np.ndarray, y: np.ndarray) -> QualityEstimator:
        from sklearn.linear_model import LogisticRegression

        if x.ndim != 2 or x.shape[1] != len(QE_FEATURE_NAMES) or len(x) != len(y):
            raise ConfigError(f"QE training matrix must be [n, {len(QE_FEATURE_NAMES)}], got {x.shape}")
        yb = (np.asarray(y) >= 0.5).astype(int)
        known = np.isfinite(x)
        n_known = known.sum(axis=0)
        filled = np.where(known, x, 0.0)
        self.mean_ = np.where(n_known > 0, filled.sum(axis=0) / np.maximum(n_known, 1), 0.0)
        var = np.where(known, (x - self.mean_) ** 2, 0.0).sum(axis=0) / np.maximum(n_known, 1)
        scale = np.sqrt(var)
        self.scale_ = np.where(scale > 1e-9, scale, 1.0)
        self.fill_ = self.mean_
        if yb.min() == yb.max():  # degenerate labels: a constant estimator
            self.coef_ = np.zeros(x.shape[1])
            self.intercept_ = float(logit(float(yb[0])))
            return self
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, solver="newton-cholesky")
        clf.fit((np.where(known, x, self.mean_) - self.mean_) / self.scale_, yb)
        self.coef_ = clf.coef_[0].astype(np.float64)
        self.intercept_ = float(clf.intercept_[0])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(correct) for each row of ``x``."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("QualityEstimator is not fitted")
        x = np.atleast_2d(x)
        x = np.where(np.isnan(x), self.fill_, x)
        z = ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def weights(self) -> dict[str, float]:
        """Standardised coefficient per feature name (for reports)."""
        return {n: float(w) for n, w in zip(QE_FEATURE_NAMES, self.coef_, strict=True)}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"C": self.C, "intercept": self.intercept_, "features": list(QE_FEATURE_NAMES), "missing": "mean"}
        return meta, {"qe_mean": self.mean_, "qe_scale": self.scale_, "qe_coef": self.coef_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> QualityEstimator:
        """The estimator saved by :meth:`get_state`. One saved by an older crescade, whose feature list is a
        prefix of :data:`QE_FEATURE_NAMES`, reads the features added since with zero weight (it never saw
        them), so it scores exactly as it did."""
        saved = meta.get("features")
        d = len(QE_FEATURE_NAMES)
        if not isinstance(saved, list) or not saved or saved != list(QE_FEATURE_NAMES[:len(saved)]):
            raise ConfigError("the artifact's quality estimator reads another feature set (it was saved by another "
                              "crescade version): fit the cascade again")
        self = cls(C=float(meta["C"]))
        for key in ("qe_mean", "qe_scale", "qe_coef"):
            if arrays[key].shape != (len(saved),):
                raise ConfigError(f"{key} has shape {arrays[key].shape}, expected ({len(saved)},)")
        pad = d - len(saved)
        self.mean_ = np.concatenate([arrays["qe_mean"], np.zeros(pad)])
        self.scale_ = np.concatenate([arrays["qe_scale"], np.ones(pad)])
        self.coef_ = np.concatenate([arrays["qe_coef"], np.zeros(pad)])
        self.intercept_ = float(meta["intercept"])
        # before "missing": "mean" an absent value was encoded as 0, and the estimator was trained on that
        self.fill_ = self.mean_ if meta.get("missing") == "mean" else np.zeros(d)
        return self


# ---------------------------------------------------------------------- the learned text signal
TEXT_FEATURES = 2**16
TEXT_TAIL = 1500  # characters of an answer's end that are read: where the conclusion is
TEXT_C_GRID: tuple[float, ...] = (0.3, 1.0, 3.0)
TEXT_HASHER_ID = "words-1-2/tail1500/murmur3-2^16/l2"


def _tail(text: str) -> str:
    return text[-TEXT_TAIL:].lower()


@functools.lru_cache(maxsize=1)
def _hasher() -> Any:
    """The (stateless, thread-safe) hashing vectorizer, built once per process."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=TEXT_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2",
                             preprocessor=_tail, token_pattern=r"(?u)\b\w+\b|[^\w\s]")


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class TextScorer:
    """A learned, model-agnostic reading of an answer's words: a logistic regression over hashed word 1–2-grams
    of the answer's end (stateless hashing, so only the weights are stored), giving a logit that the quality
    estimator takes as one feature.

    :meth:`fit` chooses the regularisation from :data:`TEXT_C_GRID` -- or no text model at all, when none beats
    the base rate -- by out-of-fold log-loss on the given folds, and returns the out-of-fold logits of the
    training answers (what the quality estimator is trained on: the same kind of score a new answer gets).
    """

    def __init__(self, max_iter: int = 300) -> None:
        self.max_iter = max_iter

    def fit(self, texts: Sequence[str], y: np.ndarray, folds: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        yb = (np.asarray(y) >= 0.5).astype(int)
        texts = list(texts)
        x = _hasher().transform(texts)
        base = float(yb.mean()) if len(yb) else 0.5
        self.report_: dict[str, Any] = {"hasher": TEXT_HASHER_ID, "base_log_loss": _log_loss(yb, np.full(len(yb),
                                                                                                            base))}
        best: tuple[float, float | None, np.ndarray] = (self.report_["base_log_loss"], None, np.zeros(len(yb)))
        losses = {}
        if 0 < yb.sum() < len(yb) and len(np.unique(folds)) > 1 and any(t.strip() for t in texts):
            for c in TEXT_C_GRID:
                oof = np.zeros(len(yb))
                for f in np.unique(folds):
                    tr, te = folds != f, folds == f
                    if yb[tr].min() == yb[tr].max():
                        oof[te] = logit(float(yb[tr].mean()))
                        continue
                    clf = LogisticRegression(C=c, max_iter=self.max_iter, solver="liblinear")
                    clf.fit(x[tr], yb[tr])
                    oof[te] = clf.decision_function(x[te])
                loss = _log_loss(yb, 1 / (1 + np.exp(-oof)))
                losses[str(c)] = loss
                if loss < best[0] - 1e-9:
                    best = (loss, c, oof)
        self.report_.update(oof_log_loss=losses, C=best[1], used=best[1] is not None)
        if best[1] is None:  # no text model beats the base rate: the signal is off
            self.coef_, self.intercept_ = np.zeros(TEXT_FEATURES), 0.0
            return np.zeros(len(yb))
        clf = LogisticRegression(C=best[1], max_iter=self.max_iter, solver="liblinear").fit(x, yb)
        self.coef_ = clf.coef_[0].astype(np.float64)
        self.intercept_ = float(clf.intercept_[0])
        return best[2]

    @property
    def used(self) -> bool:
        return bool(np.any(self.coef_))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """The text logit of each answer (0 for every answer when the signal is off)."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("TextScorer is not fitted")
        if not self.used:
            return np.zeros(len(texts))
        x = _hasher().transform(list(texts))
        return np.asarray(x @ self.coef_ + self.intercept_, dtype=np.float64)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"hasher": TEXT_HASHER_ID, "intercept": self.intercept_, "report": self.report_},
                {"text_coef": self.coef_})

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TextScorer:
        if meta.get("hasher") != TEXT_HASHER_ID:
            raise ConfigError(f"the artifact's text signal uses hashing {meta.get('hasher')!r}, this crescade "
                              f"{TEXT_HASHER_ID!r}: refit the cascade")
        if arrays["text_coef"].shape != (TEXT_FEATURES,):
            raise ConfigError(f"text_coef has shape {arrays['text_coef'].shape}, expected ({TEXT_FEATURES},)")
        self = cls()
        self.coef_ = arrays["text_coef"].astype(np.float64)
        self.intercept_ = float(meta["intercept"])
        self.report_ = dict(meta.get("report") or {})
        return self
