#!/usr/bin/env python
"""A LlamaIndex RAG query engine whose LLM is a crescade cascade (``Settings.llm = CascadeLLM(...)``).

``VectorStoreIndex`` over a few notes about crescade, queried with ``index.as_query_engine()``: the engine
is the one you would build with ``OpenAI``. For every question the script prints the answer and the
cascade's account (route, escalation and why, QE score, tokens and dollars per tier).

Offline by default: two built-in scripted LLMs stand in for real ones. Both answer by quoting the
context sentence that best matches the question; ``small`` matches exact words only and hedges when the
question is paraphrased, ``large`` also matches word stems. A small cascade is calibrated on the fly from
generated records of the same two models; the embedding is an offline keyword embedding::

    python examples/llamaindex_rag.py
    python examples/llamaindex_rag.py --question "What does the quality target keep?" --stream

Real models behind any OpenAI-compatible server (needs ``pip install llama-index-llms-openai-like``)::

    python examples/llamaindex_rag.py --base-url http://127.0.0.1:8080/v1 --cheap qwen-0.5b --strong qwen-7b
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
import sys
from collections.abc import Sequence
from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from crescade import Cascade, ModelCard, Outcomes, Record
from crescade_llamaindex import CascadeLLM

NOTES = [
    "Stage 1 embeds each query, assigns it to a cluster and routes it to that cluster's most cost-effective model.",
    "Stage 2 reads the routed model's answer with a quality estimator and escalates weak answers to a stronger model.",
    "The quality target keeps a chosen fraction of the strongest model's accuracy, for example 98 percent.",
    "Every response records the routed model, the answering model, the QE score, tokens and dollars per tier.",
    "A provider error on one tier escalates to the next tier; the strongest failing raises one error.",
    "Tool calls with invalid arguments and structured output that fails to parse are escalated too.",
]
QUESTIONS = (
    "Which model does Stage 1 route a query to?",
    "What happens when a tier has a provider error?",
    "What escalation happens to weaker answers?",
)
OFFLINE_PRICES = {"small": 0.2, "large": 5.0}
HEDGE = "I'm not sure, the context may not say."
STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "by", "does", "each", "for", "how", "in", "is", "it", "its", "of", "on",
    "one", "or", "that", "the", "their", "to", "too", "what", "when", "which", "who", "why", "with",
    "answer", "query", "context", "information", "given", "below", "prior", "knowledge", "not",
})
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


class KeywordEmbedding(BaseEmbedding):
    """An offline bag-of-words embedding (hashed 5-letter stems, L2-normalised)."""

    size: int = 256

    def _vec(self, text: str) -> list[float]:
        vec = [0.0] * self.size
        for w in words(text):
            vec[int(hashlib.sha256(w[:5].encode()).hexdigest(), 16) % self.size] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


class ScriptedLLM(CustomLLM):
    """A rule-based offline LLM that quotes the context line best matching the query (usage reported)."""

    model_name: str
    stems: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=256, model_name=self.model_name)

    def _answer(self, prompt: str) -> tuple[str, dict[str, int]]:
        query = prompt.rsplit("Query:", 1)[-1] if "Query:" in prompt else prompt

        def key(w: str) -> str:
            return w[:5] if self.stems else w

        asked = {key(w) for w in words(query)}
        best, score = None, 0
        for line in (ln.strip() for ln in prompt.splitlines()):
            s = len(asked & {key(w) for w in words(line)})
            if line and not line.startswith("Query:") and s > score:
                best, score = line, s
        text = best if best is not None and score >= 2 else HEDGE
        n_in, n_out = 1 + len(prompt) // 4, 1 + len(text) // 4
        return text, {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text, usage = self._answer(prompt)
        return CompletionResponse(text=text, raw={"usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text, usage = self._answer(prompt)

        def gen() -> CompletionResponseGen:
            acc = ""
            for token in re.findall(r"\S+\s*", text):
                acc += token
                yield CompletionResponse(text=acc, delta=token)
            yield CompletionResponse(text=acc, delta="", raw={"usage": usage})

        return gen()


def offline_llms() -> dict[str, LLM]:
    return {"small": ScriptedLLM(model_name="small"), "large": ScriptedLLM(model_name="large", stems=True)}


def openai_like_llms(base_url: str, cheap: str, strong: str, api_key: str | None) -> dict[str, LLM]:
    try:
        from llama_index.llms.openai_like import OpenAILike  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs llama-index-llms-openai-like (pip install llama-index-llms-openai-like)")
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return {name: OpenAILike(model=name, api_base=base_url, api_key=key, is_chat_model=True,
                             is_function_calling_model=True, context_window=4096, temperature=0)
            for name in (cheap, strong)}


def generated_records(cheap: str, strong: str, prices: dict[str, float], n: int = 120,
                      seed: int = 0) -> list[Record]:
    """Synthetic outcomes: the cheap model is right when the question reuses the note's words and usually
    hedges (wrongly) when it is paraphrased; the strong model is right on both."""
    rng = random.Random(seed)
    accuracy = {cheap: {"direct": 0.92, "paraphrased": 0.3}, strong: {"direct": 0.96, "paraphrased": 0.93}}
    records = []
    for i in range(n):
        note = rng.choice(NOTES)
        picked = rng.sample(words(note), 4)
        kind = "direct" if i % 2 == 0 else "paraphrased"
        if kind == "paraphrased":
            picked = [w[:-1] + "ing" if len(w) > 5 else w for w in picked]
        prompt = f"Context:\n{note}\nQuestion: what about {' '.join(picked)}?"
        for model in (cheap, strong):
            ok = rng.random() < accuracy[model][kind]
            text = note if ok else HEDGE
            n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
            card = ModelCard(name=model, input_per_mtok=prices[model], output_per_mtok=prices[model])
            records.append(Record(prompt_id=f"q{i:03d}", prompt=prompt, model=model, response=text,
                                  correct=float(ok), input_tokens=n_in, output_tokens=n_out,
                                  cost_usd=card.cost(n_in, n_out), task=kind))
    return records


def calibrate(cheap: str, strong: str, prices: dict[str, float]) -> Cascade:
    cards = {m: ModelCard(name=m, input_per_mtok=p, output_per_mtok=p) for m, p in prices.items()}
    outcomes = Outcomes.from_records(generated_records(cheap, strong, prices))
    return Cascade(quality_target=0.95, n_clusters=2, max_depth=2, n_folds=3, random_state=0,
                   progress=False).fit(outcomes, prices=cards)


def describe(account: dict[str, Any]) -> list[str]:
    lines = [f"  cascade: cluster {account['cluster']}, routed to {account['routed_model']}, answered by "
             f"{account['model']}" + (" (escalated)" if account["escalated"] else "")]
    for t in account["tiers"]:
        p = "-" if t.get("p") is None else f"{t['p']:.3f}"
        state = "accepted" if t["accepted"] else "rejected"
        lines.append(f"    tier {t['tier']} {t['model']:<8} p={p:<6} {t['input_tokens']}+{t['output_tokens']} tok"
                     f"  ${t['cost_usd']:.8f}  {state} ({t['reason']})")
    tot = account["totals"]
    lines.append(f"    total {tot['input_tokens']}+{tot['output_tokens']} tok  ${tot['cost_usd']:.8f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--base-url", help="an OpenAI-compatible server (default: offline scripted LLMs)")
    ap.add_argument("--cheap", help="cheap model name on the server (with --base-url)")
    ap.add_argument("--strong", help="strong model name on the server (with --base-url)")
    ap.add_argument("--api-key", help="API key for the server (default: $OPENAI_API_KEY or a placeholder)")
    ap.add_argument("--artifact", help="load a saved cascade instead of calibrating one on generated records")
    ap.add_argument("--question", action="append", help="a question to ask (repeatable)")
    ap.add_argument("--stream", action="store_true", help="stream the answers")
    ap.add_argument("-k", type=int, default=2, help="notes to retrieve per question (default 2)")
    args = ap.parse_args(argv)

    if args.base_url:
        if not (args.cheap and args.strong):
            ap.error("--base-url needs --cheap NAME and --strong NAME")
        llms = openai_like_llms(args.base_url, args.cheap, args.strong, args.api_key)
        prices = {args.cheap: OFFLINE_PRICES["small"], args.strong: OFFLINE_PRICES["large"]}
        cheap, strong = args.cheap, args.strong
    else:
        if args.cheap or args.strong:
            ap.error("--cheap/--strong need --base-url")
        llms, prices, cheap, strong = offline_llms(), dict(OFFLINE_PRICES), "small", "large"

    if args.artifact:
        cascade_llm = CascadeLLM.from_artifact(args.artifact, llms=llms)
        print(f"loaded cascade from {args.artifact}")
    else:
        cascade_llm = CascadeLLM(llms=llms, cascade=calibrate(cheap, strong, prices))
        print(f"calibrated a cascade over {cheap} -> {strong} on generated records")

    _listen()
    Settings.llm = cascade_llm  # the one line that puts the cascade into every LlamaIndex component
    Settings.embed_model = KeywordEmbedding()
    index = VectorStoreIndex.from_documents([Document(text=t) for t in NOTES])
    engine = index.as_query_engine(similarity_top_k=args.k, streaming=args.stream)
    for question in args.question or QUESTIONS:
        print(f"\nQ: {question}")
        resp = engine.query(question)
        if args.stream:
            print("A: ", end="", flush=True)
            for token in resp.response_gen:  # an escalated answer streams live from the stronger model
                print(token, end="", flush=True)
            print()
        else:
            print(f"A: {resp}")
        if _last_account:
            print("\n".join(describe(_last_account.pop())))
    return 0


# The query engine returns text, not the LLM response; the account is read from an instrumentation event.
_last_account: list[dict[str, Any]] = []


def _listen() -> None:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent

    class AccountListener(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "AccountListener"

        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, LLMChatEndEvent) and event.response is not None:
                account = event.response.additional_kwargs.get("crescade")
                if account is not None:
                    _last_account.append(account)

    root = get_dispatcher()
    if not any(h.class_name() == "AccountListener" for h in root.event_handlers):
        root.add_event_handler(AccountListener())


if __name__ == "__main__":
    raise SystemExit(main())
