"""Framework-free parts shared by the runnable examples (no LangChain or LlamaIndex imports here).

The examples import this module as ``from _shared import ...``: running ``python examples/x.py`` puts
``examples/`` on ``sys.path``, and each example also adds its own folder, so this works from any directory.

What is here: the common command line (``--base-url/--cheap/--strong/--api-key/--artifact/--save-artifact/
--question``) and the choice between offline stand-ins and server models, the on-the-fly calibration of a
small cascade from generated records, the notes, words and keyword vectors of the two RAG examples, and the
lines that print a cascade account per answer.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from crescade import Cascade, ModelCard, Outcomes, Record

M = TypeVar("M")

#: Offline stand-ins and their (made-up) prices in $ per million tokens.
OFFLINE_PRICES = {"small": 0.2, "large": 5.0}
#: The agent examples' default questions.
AGENT_QUESTIONS = ("What is the capital of Japan?", "What is 17 plus 25?", "What is 6 times 7?")

# ---------------------------------------------------------------------------------------------- RAG notes
NOTES = [
    "Stage 1 embeds each query, assigns it to a cluster and routes it to that cluster's most cost-effective model.",
    "Stage 2 reads the routed model's answer with a quality estimator and escalates weak answers to a stronger model.",
    "The quality target keeps a chosen fraction of the strongest model's accuracy, for example 98 percent.",
    "Every response records the routed model, the answering model, the QE score, tokens and dollars per tier.",
    "A provider error on one tier escalates to the next tier; the strongest failing raises one error.",
    "Tool calls with invalid arguments and structured output that fails to parse are escalated too.",
]
#: The RAG examples' default questions.
RAG_QUESTIONS = (
    "Which model does Stage 1 route a query to?",
    "What happens when a tier has a provider error?",
    "What escalation happens to weaker answers?",
)
#: What the RAG stand-ins say when no context line matches well enough.
RAG_HEDGE = "I'm not sure, the context may not say."
STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "by", "does", "each", "for", "how", "in", "is", "it", "its", "of", "on",
    "one", "or", "that", "the", "their", "to", "too", "what", "when", "which", "who", "why", "with",
})
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str, stop: frozenset[str] = STOP) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in stop]


def keyword_vector(text: str, size: int, stop: frozenset[str] = STOP) -> list[float]:
    """An offline bag-of-words embedding: hashed 5-letter stems, L2-normalised."""
    vec = [0.0] * size
    for w in words(text, stop):
        vec[int(hashlib.sha256(w[:5].encode()).hexdigest(), 16) % size] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def best_line(question: str, text: str, stems: bool, stop: frozenset[str] = STOP,
              skip: str | None = None) -> tuple[str | None, int]:
    """The line of ``text`` sharing the most (exact, or 5-letter-stem) words with the question, and how many
    (lines starting with ``skip`` are passed over)."""
    def key(w: str) -> str:
        return w[:5] if stems else w

    asked = {key(w) for w in words(question, stop)}
    best, score = None, 0
    for line in (ln.strip() for ln in text.splitlines()):
        s = len(asked & {key(w) for w in words(line, stop)})
        if line and not (skip and line.startswith(skip)) and s > score:
            best, score = line, s
    return best, score


# ---------------------------------------------------------------------------------------------- command line
def add_common_args(ap: argparse.ArgumentParser, offline: str, save_artifact: bool = True) -> None:
    """The options every example takes; ``offline`` names the default stand-ins in the --base-url help."""
    ap.add_argument("--base-url", help=f"an OpenAI-compatible server (default: {offline})")
    ap.add_argument("--cheap", help="cheap model name on the server (with --base-url)")
    ap.add_argument("--strong", help="strong model name on the server (with --base-url)")
    ap.add_argument("--api-key", help="API key for the server (default: $OPENAI_API_KEY or a placeholder)")
    ap.add_argument("--artifact", help="load a saved cascade instead of calibrating one on generated records")
    if save_artifact:
        ap.add_argument("--save-artifact", metavar="DIR", help="save the calibrated cascade to DIR")
    ap.add_argument("--question", action="append", help="a question to ask (repeatable)")


def api_key(given: str | None) -> str:
    return given or os.environ.get("OPENAI_API_KEY") or "not-needed"


def choose_models(ap: argparse.ArgumentParser, args: argparse.Namespace, offline: Callable[[], dict[str, M]],
                  served: Callable[[str, str, str, str | None], dict[str, M]],
                  ) -> tuple[dict[str, M], dict[str, float], str, str]:
    """``(models, prices, cheap, strong)``: server models with --base-url, else the offline stand-ins."""
    if args.base_url:
        if not (args.cheap and args.strong):
            ap.error("--base-url needs --cheap NAME and --strong NAME")
        models = served(args.base_url, args.cheap, args.strong, args.api_key)
        prices = {args.cheap: OFFLINE_PRICES["small"], args.strong: OFFLINE_PRICES["large"]}
        return models, prices, args.cheap, args.strong
    if args.cheap or args.strong:
        ap.error("--cheap/--strong need --base-url")
    return offline(), dict(OFFLINE_PRICES), "small", "large"


# ---------------------------------------------------------------------------------------------- calibration
def record(i: int, prompt: str, model: str, text: str, ok: bool, prices: dict[str, float], task: str) -> Record:
    """One generated outcome, with made-up token counts priced at ``prices[model]``."""
    n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
    card = ModelCard(name=model, input_per_mtok=prices[model], output_per_mtok=prices[model])
    return Record(prompt_id=f"q{i:03d}", prompt=prompt, model=model, response=text, correct=float(ok),
                  input_tokens=n_in, output_tokens=n_out, cost_usd=card.cost(n_in, n_out), task=task)


def rag_records(cheap: str, strong: str, prices: dict[str, float], stop: frozenset[str] = STOP, n: int = 120,
                seed: int = 0) -> list[Record]:
    """Synthetic outcomes on questions about the notes: the cheap model is right when the question reuses
    the note's words and usually hedges (wrongly) when it is paraphrased; the strong model is right on both."""
    rng = random.Random(seed)
    accuracy = {cheap: {"direct": 0.92, "paraphrased": 0.3}, strong: {"direct": 0.96, "paraphrased": 0.93}}
    records = []
    for i in range(n):
        note = rng.choice(NOTES)
        picked = rng.sample(words(note, stop), 4)
        kind = "direct" if i % 2 == 0 else "paraphrased"
        if kind == "paraphrased":
            picked = [w[:-1] + "ing" if len(w) > 5 else w for w in picked]
        prompt = f"Context:\n{note}\nQuestion: what about {' '.join(picked)}?"
        for model in (cheap, strong):
            ok = rng.random() < accuracy[model][kind]
            records.append(record(i, prompt, model, note if ok else RAG_HEDGE, ok, prices, kind))
    return records


def calibrate(records: Iterable[Record], prices: dict[str, float]) -> Cascade:
    """A small cascade fitted on the generated records."""
    cards = {m: ModelCard(name=m, input_per_mtok=p, output_per_mtok=p) for m, p in prices.items()}
    return Cascade(quality_target=0.95, n_clusters=2, max_depth=2, n_folds=3, random_state=0,
                   progress=False).fit(Outcomes.from_records(list(records)), prices=cards)


def calibrate_and_report(records: Iterable[Record], prices: dict[str, float], cheap: str, strong: str,
                         save_to: str | None = None) -> Cascade:
    """:func:`calibrate`, saying so (and saving the cascade to ``save_to`` if given)."""
    cascade = calibrate(records, prices)
    print(f"calibrated a cascade over {cheap} -> {strong} on generated records")
    if save_to:
        cascade.save(save_to)
        print(f"saved cascade to {save_to}")
    return cascade


# ---------------------------------------------------------------------------------------------- output
def verdict(tier: dict[str, Any], plain: bool = False) -> str:
    """``accepted (why)`` / ``rejected (why)``; unless ``plain``, a reason that already says "accepted..."
    stands alone."""
    if not plain and tier["reason"].startswith("accepted"):
        return str(tier["reason"])
    return f"{'accepted' if tier['accepted'] else 'rejected'} ({tier['reason']})"


def tier_lines(account: dict[str, Any], indent: str, plain: bool = False) -> list[str]:
    """One line per tier of a cascade account (model, QE score, tokens, dollars, verdict), then the totals."""
    lines = []
    for t in account["tiers"]:
        p = "-" if t.get("p") is None else f"{t['p']:.3f}"
        lines.append(f"{indent}tier {t['tier']} {t['model']:<8} p={p:<6} {t['input_tokens']}+{t['output_tokens']}"
                     f" tok  ${t['cost_usd']:.8f}  {verdict(t, plain)}")
    tot = account["totals"]
    lines.append(f"{indent}total {tot['input_tokens']}+{tot['output_tokens']} tok  ${tot['cost_usd']:.8f}")
    return lines


def describe(account: dict[str, Any], plain: bool = False) -> list[str]:
    """A cascade account as the RAG examples print it: route and escalation, then :func:`tier_lines`."""
    return [f"  cascade: cluster {account['cluster']}, routed to {account['routed_model']}, answered by "
            f"{account['model']}" + (" (escalated)" if account["escalated"] else ""),
            *tier_lines(account, "    ", plain)]
