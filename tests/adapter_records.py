"""Synthetic calibration data and a fitted cascade over ``cheap``/``mid``/``strong``, shared by the
LangChain and LlamaIndex adapter tests (the same data and fit, so both adapters can be compared).

The data has three topics with disjoint vocabularies. ``cheap`` is good only at geography, ``mid`` also
at chemistry, ``strong`` everywhere; a correct answer is a clean option letter, a wrong one usually a
hedge. So routing differs by topic and the quality estimator rejects hedging answers: routing and
escalation really happen (fitted: geography and finance start at ``cheap``, chemistry at ``mid``).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from crescade import Cascade, ModelCard, Outcomes, Record

TOPICS = {
    "geography": ["river", "mountain", "capital", "continent", "glacier", "delta", "plateau", "valley", "ocean",
                  "island", "desert", "latitude", "border", "coastline", "peninsula", "volcano", "canyon", "fjord"],
    "chemistry": ["molecule", "atom", "electron", "reaction", "catalyst", "isotope", "oxidation", "covalent",
                  "ionic", "acid", "solvent", "enthalpy", "entropy", "polymer", "proton", "neutron", "valence",
                  "titration"],
    "finance": ["interest", "loan", "dividend", "equity", "bond", "yield", "portfolio", "inflation", "mortgage",
                "liquidity", "leverage", "collateral", "amortization", "derivative", "futures", "premium",
                "coupon", "arbitrage"],
}
POOL = ("cheap", "mid", "strong")
ACCURACY = {"cheap": (0.92, 0.30, 0.15), "mid": (0.95, 0.90, 0.35), "strong": (0.97, 0.95, 0.94)}
PRICE = {"cheap": 1.0, "mid": 5.0, "strong": 25.0}
GOOD_ANSWER = "B"
BAD_ANSWER = "I'm not sure, but it might be C? This is unclear."
HEDGES = ("I'm not sure, but it might be {x}?", "Sorry, I cannot tell for certain; maybe {x}?",
          "I think it could be {x}, although this is unclear.")


def topic_query(topic: str, seed: int) -> str:
    """A multiple-choice question in ``topic``'s vocabulary, like the calibration prompts."""
    rng = np.random.default_rng(seed)
    words = rng.choice(TOPICS[topic], size=9, replace=False)
    options = "\n".join(f"({'ABCD'[o]}) {words[5 + o]}" for o in range(4))
    return "Which " + " ".join(words[:5]) + f" best matches the following?\n{options}"


def records(n: int = 180, seed: int = 7) -> list[Record]:
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    recs = []
    for i in range(n):
        topic = names[i % 3]
        prompt = topic_query(topic, 1000 + i)
        gold = "ABCD"[int(rng.integers(4))]
        for m in POOL:
            ok = bool(rng.random() < ACCURACY[m][names.index(topic)])
            if ok:
                text = gold
            else:
                wrong = "ABCD"[("ABCD".index(gold) + 1 + int(rng.integers(3))) % 4]
                text = HEDGES[int(rng.integers(3))].format(x=wrong) if rng.random() < 0.8 else wrong
            n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
            recs.append(Record(prompt_id=f"q{i}", prompt=prompt, model=m, response=text, correct=float(ok),
                               input_tokens=n_in, output_tokens=n_out,
                               cost_usd=(n_in + n_out) * PRICE[m] / 1e6, task=topic))
    return recs


def cards() -> dict[str, ModelCard]:
    return {m: ModelCard(name=m, input_per_mtok=p, output_per_mtok=p) for m, p in PRICE.items()}


@functools.cache
def fitted_cascade() -> Cascade:
    """Fitted once per process (~2 s); callers must not mutate it."""
    return Cascade(quality_target=0.97, n_clusters=3, n_folds=3, max_depth=3, random_state=0,
                   progress=False).fit(Outcomes.from_records(records()), prices=cards())


# --- scripted tool-calling children (both adapters' fakes fill tool arguments the same way) ---


def fill_args(schema: dict[str, Any], query: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None and isinstance(schema.get("anyOf"), list):
        return fill_args(next((s for s in schema["anyOf"] if s.get("type") != "null"), {}), query)
    if kind == "integer":
        m = re.search(r"-?\d+", query)
        return int(m.group()) if m else 1
    if kind == "number":
        m = re.search(r"-?\d+(?:\.\d+)?", query)
        return float(m.group()) if m else 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {k: fill_args(v, query) for k, v in (schema.get("properties") or {}).items()
                if k in (schema.get("required") or ())}
    m = re.search(r"'([^']+)'|\"([^\"]+)\"", query)
    return (m.group(1) or m.group(2)) if m else "scripted"


def violate_args(schema: dict[str, Any]) -> Any:
    """A value that breaks ``schema``'s type."""
    kind = schema.get("type")
    return "not a number" if kind in ("integer", "number", "boolean") else 12345
