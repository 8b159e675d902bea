"""Tests of crescade.engine.stage2: the quality estimator, answer tables and the non-text QE features."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crescade.common.errors import ConfigError, NotFittedError
from crescade.engine.logprobs import LogprobSummary
from crescade.engine.stage2 import (
    EXTRA_NAMES,
    QE_FEATURE_NAMES,
    AnswerTable,
    QualityEstimator,
    extra_features,
    logit,
)

D = len(QE_FEATURE_NAMES)


def toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels decided by two informative columns (one of them a constant-ish 0/1 flag) plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D))
    x[:, 5] = 0.0  # a constant column: must not break standardisation
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(float)
    return x, y


@pytest.fixture(scope="module")
def qe() -> QualityEstimator:
    x, y = toy(600, 0)
    return QualityEstimator(C=1.0).fit(x, y)


def test_feature_names() -> None:
    assert len(set(QE_FEATURE_NAMES)) == D
    assert QE_FEATURE_NAMES[-len(EXTRA_NAMES):] == EXTRA_NAMES


def test_learns_a_separable_toy_problem(qe: QualityEstimator) -> None:
    x, y = toy(400, 1)  # held out
    p = qe.predict(x)
    assert p.shape == (400,)
    assert roc_auc_score(y, p) > 0.97
    assert np.mean((p >= 0.5) == (y == 1)) > 0.9
    w = qe.weights()
    assert set(w) == set(QE_FEATURE_NAMES)
    assert w[QE_FEATURE_NAMES[0]] > 0 and abs(w[QE_FEATURE_NAMES[0]]) == max(abs(v) for v in w.values())


def test_probabilities_strictly_inside_0_1(qe: QualityEstimator) -> None:
    x, _ = toy(400, 2)
    p = qe.predict(x)
    assert np.all(np.isfinite(p))
    assert np.all((p > 0) & (p < 1))
    # far outside the training range: still a finite probability
    extreme = np.zeros((2, D))
    extreme[0, 0], extreme[1, 0] = 1e6, -1e6
    pe = qe.predict(extreme)
    assert np.all(np.isfinite(pe)) and np.all((pe >= 0) & (pe <= 1))
    assert pe[0] > 0.99 and pe[1] < 0.01


def test_predict_single_row(qe: QualityEstimator) -> None:
    x, _ = toy(3, 3)
    np.testing.assert_allclose(qe.predict(x[1]), qe.predict(x)[1:2], rtol=1e-12)


def test_state_round_trip_is_identical(qe: QualityEstimator) -> None:
    meta, arrays = qe.get_state()
    back = QualityEstimator.from_state(meta, {k: v.copy() for k, v in arrays.items()})
    x, _ = toy(200, 4)
    np.testing.assert_array_equal(back.predict(x), qe.predict(x))
    assert back.C == qe.C


def test_from_state_rejects_foreign_states(qe: QualityEstimator) -> None:
    meta, arrays = qe.get_state()
    with pytest.raises(ConfigError):
        QualityEstimator.from_state({**meta, "features": ["a", "b"]}, arrays)
    with pytest.raises(ConfigError):
        QualityEstimator.from_state(meta, {**arrays, "qe_coef": arrays["qe_coef"][:-1]})


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_constant_label_fit(label: float) -> None:
    x, _ = toy(50, 5)
    q = QualityEstimator().fit(x, np.full(50, label))
    p = q.predict(x)
    assert np.all(np.isfinite(p))
    assert np.ptp(p) == 0.0  # constant
    assert (p[0] > 0.99) if label == 1.0 else (p[0] < 0.01)
    assert 0.0 < p[0] < 1.0
    meta, arrays = q.get_state()
    np.testing.assert_array_equal(QualityEstimator.from_state(meta, arrays).predict(x), p)


def test_fractional_labels_are_thresholded() -> None:
    x, y = toy(300, 6)
    a = QualityEstimator().fit(x, y)
    b = QualityEstimator().fit(x, np.where(y == 1, 0.7, 0.2))
    np.testing.assert_allclose(a.predict(x), b.predict(x))


def test_fit_validates_shape() -> None:
    with pytest.raises(ConfigError):
        QualityEstimator().fit(np.zeros((10, D - 1)), np.zeros(10))
    with pytest.raises(ConfigError):
        QualityEstimator().fit(np.zeros((10, D)), np.zeros(9))


def test_predict_before_fit() -> None:
    with pytest.raises(NotFittedError):
        QualityEstimator().predict(np.zeros((1, D)))


# --------------------------------------------------------------------------- helpers


def test_logit_is_clamped() -> None:
    assert logit(0.5) == 0.0
    assert math.isfinite(logit(0.0)) and math.isfinite(logit(1.0))
    assert logit(1.0) == pytest.approx(-logit(0.0))


def test_answer_table() -> None:
    t = AnswerTable.build(["c:A", "c:A", "c:B", None])
    assert t.total == 3
    assert t.counts == {"c:A": 2, "c:B": 1}
    assert t.logfreq("c:A") > t.logfreq("c:B") > t.logfreq("c:C")
    assert t.logfreq(None) == 0.0
    many = AnswerTable.build([f"n:{i}" for i in range(100)])
    assert len(many.counts) <= 32 and many.total == 100


def named(values: list[float]) -> dict[str, float]:
    return dict(zip(EXTRA_NAMES, values, strict=True))


def test_extra_features_history() -> None:
    base = dict(prior=0.8, global_prior=0.6, answer_logfreq=-1.0, logprobs=None, final="c:A")
    none = extra_features(**base, history=[])
    assert len(none) == len(EXTRA_NAMES)
    first = named(none)
    assert first["has_history"] == 0.0 and first["has_logprob"] == 0.0
    assert first["prior_logit"] == pytest.approx(logit(0.8))
    agree = named(extra_features(**base, history=[("c:A", 0.9)]))
    assert agree["agrees"] == 1.0 and agree["agree_prior"] == pytest.approx(logit(0.9))
    assert agree["disagree_prior"] == 0.0 and agree["n_comparable"] == 1.0
    disagree = named(extra_features(**base, history=[("c:B", 0.7), (None, 0.9)]))
    assert disagree["agrees"] == 0.0 and disagree["disagree_prior"] == pytest.approx(logit(0.7))
    assert disagree["n_comparable"] == 1.0 and disagree["has_history"] == 1.0
    lp = named(extra_features(**{**base, "logprobs": LogprobSummary(mean=-0.25)}, history=[]))
    assert lp["has_logprob"] == 1.0 and lp["logprob_mean"] == -0.25
    assert first["has_logprob"] == 0.0 and math.isnan(first["logprob_mean"])  # absent: neutral, not 0
