"""Truncation and a missing final answer are judged by the quality estimator from what calibration saw:
where truncated or answer-less replies of the cheap model were usually wrong, the fitted cascade escalates
them rather than accepting them (no guard outside the QE: the features ``truncated`` and ``has_final``)."""

from __future__ import annotations

import numpy as np
import pytest

from crescade import Answer, Cascade, ModelCard, Outcomes, Record
from crescade.engine.features import FEATURE_NAMES, answer_features

PRICE = {"cheap": 1.0, "strong": 20.0}


def _answer(a: int, b: int, kind: str, steps: int = 1, cut: float = 0.6) -> tuple[str, str]:
    """(text, finish_reason): ``right``/``wrong`` complete answers that reason for ``steps`` sentences, a
    ``cut`` one (the same reasoning stopped by the token cap at fraction ``cut`` of its words, mid-sentence),
    an answer with ``none`` to read."""
    if kind == "none":
        return "Adding these numbers is something I cannot do here, sorry.", "stop"
    total = a + b + (10 if kind == "wrong" else 0)
    lines = [f"Add the tens: {a // 10 * 10} + {b // 10 * 10} = {a // 10 * 10 + b // 10 * 10}.",
             f"Add the ones: {a % 10} + {b % 10} = {a % 10 + b % 10}.",
             "Check the carry once more before writing it down.", "Both parts are now added together.",
             f"So {a} + {b} comes to {total}."][-max(1, steps):]
    words = " ".join(lines).split(" ")
    if kind == "cut":
        return " ".join(words[:max(2, int(len(words) * cut))]), "length"
    return " ".join(lines) + f"\nAnswer: {total}", "stop"


def _records(n: int = 300, seed: int = 5) -> list[Record]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        a, b = int(rng.integers(10, 99)), int(rng.integers(10, 99))
        prompt = f"What is {a} + {b}? Reply with 'Answer: <number>'. (case {i})"
        u = rng.random()
        # cheap: 25% cut by the token cap (right 1 time in 10), 10% with no answer (never right), else right 97%
        if u < 0.25:
            kind, ok = "cut", bool(rng.random() < 0.1)
        elif u < 0.35:
            kind, ok = "none", False
        else:
            ok = bool(rng.random() < 0.97)
            kind = "right" if ok else "wrong"
        steps, cut = int(rng.integers(1, 6)), float(rng.uniform(0.3, 0.9))
        strong_ok = bool(rng.random() < 0.97)
        for model, (text, finish), correct in (
            ("cheap", _answer(a, b, kind, steps, cut), ok),
            ("strong", _answer(a, b, "right" if strong_ok else "wrong", steps), strong_ok),
        ):
            recs.append(Record(prompt_id=f"q{i}", prompt=prompt, model=model, response=text, correct=float(correct),
                               input_tokens=20, output_tokens=30, cost_usd=50 * PRICE[model] / 1e6,
                               finish_reason=finish))
    return recs


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    cards = {m: ModelCard(name=m, input_per_mtok=p, output_per_mtok=p) for m, p in PRICE.items()}
    return Cascade(quality_target=0.97, n_clusters=1, n_folds=4, max_depth=2, random_state=0,
                   progress=False).fit(Outcomes.from_records(_records()), prices=cards)


def test_the_qe_has_the_features() -> None:
    named = dict(zip(FEATURE_NAMES, answer_features("What is 2 + 3?", _answer(12, 31, "cut", 5)[0],
                                                    finish_reason="length"), strict=True))
    assert named["truncated"] == 1.0 and named["has_final"] == 1.0  # a cut answer still shows a number
    named = dict(zip(FEATURE_NAMES, answer_features("What is 2 + 3?", _answer(2, 3, "none")[0]), strict=True))
    assert named["truncated"] == 0.0 and named["has_final"] == 0.0
    named = dict(zip(FEATURE_NAMES, answer_features("q", "x", finish_reason="max_tokens"), strict=True))
    assert named["truncated"] == 1.0  # Anthropic's name for it


def test_truncated_and_answerless_replies_are_escalated_complete_ones_accepted(cascade: Cascade) -> None:
    query = "What is 41 + 27? Reply with 'Answer: <number>'. (case new)"
    plan = cascade.plan(query)
    assert plan.ladder == ("cheap", "strong")  # the cascade does start cheap here: it has something to judge

    for steps in (1, 3, 5):
        def verdict(kind: str, steps: int = steps) -> tuple[bool, float]:
            text, finish = _answer(41, 27, kind, steps)
            v = cascade.judge(query, Answer(text, "cheap", finish_reason=finish), plan=plan, tier=0)
            return v.escalate, v.p

        cut, none, right = verdict("cut"), verdict("none"), verdict("right")
        assert cut[0] and none[0], (steps, cut, none)
        assert not right[0] and right[1] > max(cut[1], none[1]) + 0.5
        # the same cut text, had it stopped on its own, would be accepted: finish_reason decides here
        text, _ = _answer(41, 27, "cut", steps)
        assert not cascade.judge(query, Answer(text, "cheap", finish_reason="stop"), plan=plan, tier=0).escalate


def test_replay_escalates_the_cut_replies(cascade: Cascade) -> None:
    test = Outcomes.from_records(_records(n=90, seed=11))
    r = cascade.replay(test)
    cheap = test.models.index("cheap")
    cut = np.array([f == "length" for f in (row[cheap] for row in test.finish_reason)])
    assert cut.any() and (~cut).any()
    assert r.escalated[cut].mean() > 0.9  # cut replies are sent on to the strong model ...
    assert r.escalated[~cut].mean() < 0.5  # ... complete ones mostly kept
