"""Shared synthetic data for the engine tests: three topics, three models, answers that carry signal.

The generator is deterministic (fixed seed) and builds plain :class:`crescade.engine.records.Record` objects,
turned into an :class:`~crescade.engine.records.Outcomes` matrix with ``Outcomes.from_records``:

* ~300 multiple-choice prompts in three topics with disjoint vocabularies (geography, chemistry, finance);
* three models ``cheap`` / ``mid`` / ``strong`` priced 1 : 5 : 25 per token, whose accuracy depends on the
  topic (``cheap`` is only good at geography, ``strong`` is good everywhere);
* answers whose text carries signal: a correct answer is a clean option letter, a wrong answer is often a
  hedge ("I'm not sure...") or an out-of-format reply, sometimes a plain wrong letter;
* the first 2/3 of the prompts are the ``train`` split, the rest ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crescade import Cascade, ModelCard, Record

TOPICS: dict[str, list[str]] = {
    "geography": [
        "river", "mountain", "capital", "continent", "glacier", "delta", "plateau", "valley", "ocean",
        "island", "desert", "latitude", "longitude", "border", "coastline", "peninsula", "volcano",
        "canyon", "archipelago", "tundra", "savanna", "fjord", "estuary", "lagoon",
    ],
    "chemistry": [
        "molecule", "atom", "electron", "reaction", "catalyst", "isotope", "oxidation", "covalent",
        "ionic", "acid", "base", "solvent", "enthalpy", "entropy", "polymer", "proton", "neutron",
        "valence", "titration", "precipitate", "alkane", "ester", "halogen", "orbital",
    ],
    "finance": [
        "interest", "loan", "dividend", "equity", "bond", "yield", "portfolio", "inflation", "mortgage",
        "liquidity", "leverage", "collateral", "amortization", "hedge", "derivative", "futures",
        "premium", "coupon", "maturity", "arbitrage", "valuation", "escrow", "annuity", "audit",
    ],
}
TOPIC_NAMES = tuple(TOPICS)
MODELS = ("cheap", "mid", "strong")
#: P(correct) of each model per topic (geography, chemistry, finance).
ACCURACY: dict[str, tuple[float, float, float]] = {
    "cheap": (0.82, 0.35, 0.20),
    "mid": (0.93, 0.80, 0.45),
    "strong": (0.96, 0.93, 0.92),
}
#: $ per million tokens (input and output alike): cheap : mid : strong = 1 : 5 : 25.
PRICE_PER_MTOK = {"cheap": 1.0, "mid": 5.0, "strong": 25.0}
LETTERS = "ABCD"
N_PROMPTS = 300
N_TRAIN = 200

HEDGES = (
    "I'm not sure, but it might be {x}.",
    "Sorry, I cannot tell for certain; maybe {x}?",
    "I think it could be {x}, although this is unclear.",
)
OFF_FORMAT = (
    "It depends on the context of the question.",
    "There is not enough information to decide between these options.",
    "All of the listed choices could be argued for in some situations.",
)


def make_prompts(n: int = N_PROMPTS, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """``(prompt_id, topic, prompt, gold_letter)`` for ``n`` prompts, topics interleaved at random."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = TOPIC_NAMES[int(rng.integers(len(TOPIC_NAMES)))]
        vocab = TOPICS[topic]
        words = rng.choice(vocab, size=9, replace=False)
        stem = "Which " + " ".join(words[:5]) + " best matches the following?"
        options = "\n".join(f"({LETTERS[o]}) {words[5 + o]}" for o in range(4))
        gold = LETTERS[int(rng.integers(4))]
        out.append((f"p{i:04d}", topic, f"{stem}\n{options}", gold))
    return out


def make_answer(rng: np.random.Generator, gold: str, correct: bool) -> str:
    """A correct answer is a clean letter; a wrong one usually hedges or leaves the answer format."""
    if correct:
        return gold if rng.random() < 0.8 else f"({gold})"
    wrong = LETTERS[(LETTERS.index(gold) + int(rng.integers(1, 4))) % 4]
    u = rng.random()
    if u < 0.45:
        return HEDGES[int(rng.integers(len(HEDGES)))].format(x=wrong)
    if u < 0.75:
        return OFF_FORMAT[int(rng.integers(len(OFF_FORMAT)))]
    return wrong


def card(name: str, per_mtok: float) -> ModelCard:
    return ModelCard(name=name, input_per_mtok=per_mtok, output_per_mtok=per_mtok)


def make_records(
    model: str,
    accuracy: Sequence[float],
    per_mtok: float,
    prompts: Sequence[tuple[str, str, str, str]],
    *,
    seed: int,
    n_train: int = N_TRAIN,
    all_prompts: Sequence[tuple[str, str, str, str]] | None = None,
) -> list[Record]:
    """Records of one model on ``prompts``; the split comes from the prompt's position in ``all_prompts``."""
    rng = np.random.default_rng(seed)
    position = {p[0]: i for i, p in enumerate(all_prompts if all_prompts is not None else prompts)}
    c = card(model, per_mtok)
    recs = []
    for pid, topic, prompt, gold in prompts:
        ok = bool(rng.random() < accuracy[TOPIC_NAMES.index(topic)])
        text = make_answer(rng, gold, ok)
        n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
        recs.append(Record(
            prompt_id=pid, prompt=prompt, model=model, response=text, correct=float(ok),
            input_tokens=n_in, output_tokens=n_out, cost_usd=c.cost(n_in, n_out), task=topic,
            split="train" if position[pid] < n_train else "test",
        ))
    return recs


def make_cascade(**kw: object) -> Cascade:
    params: dict[str, object] = {"quality_target": 0.95, "n_clusters": 3, "n_folds": 3, "max_depth": 2,
                                 "random_state": 0, "progress": False}
    params.update(kw)
    return Cascade(**params)  # type: ignore[arg-type]
