"""Calibration records over the fake OpenAI server's pool (``cheap-m``, ``strong-m``) in which token logprobs
carry the signal: ``cheap-m`` is right on ~55% of the questions and writes its answers in the same words
whether right or wrong, but is confident (logprobs near 0) only when right. The records hold the summaries
:func:`crescade.engine.logprobs.summarize_logprobs` gives the fake's tokens, as ``crescade collect`` records
them, so the fitted quality estimator leans on the logprob features and a live answer's logprobs move its
score. Shared by the adapters' pass-through tests.
"""

from __future__ import annotations

import functools

import numpy as np
from fake_openai_server import CHEAP_M, STRONG_M, tokens_of

from crescade import Cascade, ModelCard, Outcomes, Record
from crescade.engine.logprobs import summarize_logprobs

CITIES = ("Tokyo", "Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Bern", "Riga", "Sofia", "Minsk")
COUNTRIES = ("Japan", "France", "Peru", "Norway", "Egypt", "Ecuador", "Vietnam", "Senegal", "Switzerland",
             "Latvia", "Bulgaria", "Belarus")
QUERY = "What is the capital of Japan?"
PRICE = {CHEAP_M: 1.0, STRONG_M: 25.0}


def records(n: int = 150, seed: int = 3) -> list[Record]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        c = i % len(COUNTRIES)
        prompt = f"What is the capital of {COUNTRIES[c]}? (question {i})"
        for model, acc in ((CHEAP_M, 0.55), (STRONG_M, 0.95)):
            ok = bool(rng.random() < acc)
            city = CITIES[c] if ok else CITIES[(c + 1 + int(rng.integers(len(CITIES) - 1))) % len(CITIES)]
            text = f"The capital of {COUNTRIES[c]} is {city}."
            tokens = tokens_of(text)
            centre = -0.1 if ok else -1.3
            lps = np.minimum(0.0, rng.normal(centre, 0.08 if ok else 0.5, len(tokens))).tolist()
            summary = summarize_logprobs(tokens, lps)
            assert summary is not None
            n_in, n_out = 12, len(tokens)
            recs.append(Record(prompt_id=f"q{i}", prompt=prompt, model=model, response=text, correct=float(ok),
                               input_tokens=n_in, output_tokens=n_out, cost_usd=(n_in + n_out) * PRICE[model] / 1e6,
                               **summary.columns()))  # type: ignore[arg-type]
    return recs


def cards() -> dict[str, ModelCard]:
    return {m: ModelCard(name=m, input_per_mtok=p, output_per_mtok=p) for m, p in PRICE.items()}


@functools.cache
def logprob_cascade() -> Cascade:
    """Fitted once per process; callers must not mutate it. Routes :data:`QUERY` to ``cheap-m`` with
    ``strong-m`` above it, and its quality estimator weighs the logprob summary."""
    c = Cascade(quality_target=0.97, n_clusters=1, n_folds=3, max_depth=2, random_state=0,
                progress=False).fit(Outcomes.from_records(records()), prices=cards())
    plan = c.plan(QUERY)
    assert plan.ladder == (CHEAP_M, STRONG_M), plan
    return c
