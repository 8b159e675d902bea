"""The learned text signal of the quality estimator, and the QE report."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crescade import Cascade, Outcomes
from crescade.common.errors import ConfigError, NotFittedError
from crescade.engine.cascade import _auc
from crescade.engine.stage2 import TEXT_C_GRID, TEXT_FEATURES, TextScorer

RIGHT = ["We add the numbers carefully and check: the total is {n}. Verified.",
         "Step by step: {n} follows, and the check confirms it. Final: {n}."]
WRONG = ["Hmm, maybe {n}? I am guessing here, it is unclear to me.",
         "Possibly {n}, though I lost track of the steps; a guess."]


def _answers(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    texts = [(RIGHT if yi else WRONG)[int(rng.integers(2))].format(n=int(rng.integers(100))) for yi in y]
    return texts, y


def test_learns_words_that_separate_right_from_wrong() -> None:
    texts, y = _answers(300)
    folds = np.arange(300) % 5
    scorer = TextScorer()
    oof = scorer.fit(texts, y, folds)
    assert scorer.used and scorer.report_["C"] in TEXT_C_GRID
    assert roc_auc_score(y, oof) > 0.95  # out of fold, not memorised
    new_texts, new_y = _answers(100, seed=1)
    assert roc_auc_score(new_y, scorer.score(new_texts)) > 0.95
    assert set(scorer.report_["oof_log_loss"]) == {str(c) for c in TEXT_C_GRID}


def test_signal_is_off_when_text_carries_nothing() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.5).astype(float)
    empty = TextScorer()
    assert not np.any(empty.fit([""] * 200, y, np.arange(200) % 5))  # no responses recorded (e.g. MMLU)
    assert not empty.used and empty.report_["C"] is None
    assert np.all(empty.score(["anything"]) == 0.0)
    noise = TextScorer()
    noise.fit([f"token{rng.integers(10_000)}" for _ in range(200)], y, np.arange(200) % 5)
    assert not noise.used  # words unrelated to the label never beat the base rate out of fold


def test_state_round_trip_and_foreign_states() -> None:
    texts, y = _answers(120)
    scorer = TextScorer()
    scorer.fit(texts, y, np.arange(120) % 4)
    meta, arrays = scorer.get_state()
    back = TextScorer.from_state(meta, arrays)
    np.testing.assert_array_equal(back.score(texts), scorer.score(texts))
    with pytest.raises(ConfigError, match="hashing"):
        TextScorer.from_state({**meta, "hasher": "other"}, arrays)
    with pytest.raises(ConfigError, match="shape"):
        TextScorer.from_state(meta, {"text_coef": np.zeros(TEXT_FEATURES // 2)})
    with pytest.raises(NotFittedError):
        TextScorer().score(["x"])


def test_rank_auc_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.3).astype(float)
    p = np.round(rng.random(500) + 0.3 * y, 2)  # many ties
    assert _auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert _auc(np.ones(5), p[:5]) is None


def test_qe_report(cascade: Cascade) -> None:
    report = cascade.qe_report(top=4)
    assert set(report["oof_auc"]) == set(cascade.models_)
    assert all(a is None or 0.0 <= a <= 1.0 for a in report["oof_auc"].values())
    assert len(report["signals"]) == 4 and {"feature", "weight"} <= set(report["signals"][0])
    assert report["text"]["used"] == cascade.text_.used and "base_log_loss" in report["text"]


def test_the_text_signal_serves_and_persists(cascade: Cascade, test_set: Outcomes, tmp_path) -> None:
    cascade.save(tmp_path / "c")
    loaded = Cascade.load(tmp_path / "c")
    np.testing.assert_array_equal(loaded.text_.coef_, cascade.text_.coef_)
    np.testing.assert_array_equal(loaded.replay(test_set).correct, cascade.replay(test_set).correct)
