#!/usr/bin/env python
"""A small retrieval-augmented (RAG) chain whose LLM is a crescade cascade.

``retriever | format_docs | prompt | CascadeChatModel | StrOutputParser`` over an in-memory vector store of
a few notes about crescade itself. The cascade is a drop-in chat model: the chain is the one you would
write with ``ChatOpenAI``. For every question the script prints the retrieved notes, the answer, and the
cascade's account (route, escalation and why, QE score, tokens and dollars per tier).

Offline by default: two built-in scripted chat models stand in for real ones. Both answer by quoting the
context sentence that best matches the question; ``small`` matches exact words only and hedges when the
question is paraphrased, ``large`` also matches word stems. A small cascade is calibrated on the fly from
generated records of the same two models, and the vector store uses an offline keyword embedding::

    python examples/langchain_rag.py
    python examples/langchain_rag.py --question "What does the quality target keep?"

Real models behind any OpenAI-compatible server (needs ``pip install langchain-openai``; the embedding
stays the offline one, swap in any LangChain ``Embeddings``)::

    python examples/langchain_rag.py --base-url http://127.0.0.1:8080/v1 --cheap qwen-0.5b --strong qwen-7b

With real models the on-the-fly calibration still uses generated records (a stand-in: calibrate on your
own records with ``crescade calibrate`` and pass the result with ``--artifact DIR``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from crescade import Cascade, ModelCard, Outcomes, Record
from crescade_langchain import CascadeChatModel

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
SYSTEM = "Answer the question using only the context. Quote the relevant sentence.\n\nContext:\n{context}"
#: Offline stand-ins and their (made-up) prices in $ per million tokens.
OFFLINE_PRICES = {"small": 0.2, "large": 5.0}
HEDGE = "I'm not sure, the context may not say."
STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "by", "does", "each", "for", "how", "in", "is", "it", "its", "of", "on",
    "one", "or", "that", "the", "their", "to", "too", "what", "when", "which", "who", "why", "with",
})
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


# ---------------------------------------------------------------------------------------------- embeddings
class KeywordEmbeddings(Embeddings):
    """An offline bag-of-words embedding (hashed word counts, L2-normalised): similar words, similar vectors."""

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.size
        for w in words(text):
            vec[int(hashlib.sha256(w[:5].encode()).hexdigest(), 16) % self.size] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


# ---------------------------------------------------------------------------------------------- offline models
def best_sentence(question: str, context: str, stems: bool) -> tuple[str | None, int]:
    """The context line sharing the most (exact, or 5-letter-stem) words with the question, and how many."""
    def key(w: str) -> str:
        return w[:5] if stems else w

    asked = {key(w) for w in words(question)}
    best, score = None, 0
    for line in (ln.strip() for ln in context.splitlines()):
        s = len(asked & {key(w) for w in words(line)})
        if line and s > score:
            best, score = line, s
    return best, score


class ScriptedChatModel(BaseChatModel):
    """A rule-based offline chat model that answers from the ``Context:`` block of its prompt."""

    model_name: str
    stems: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted-example"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        prompt = "\n".join(m.text for m in messages)
        context = prompt.split("Context:", 1)[-1].rsplit("\n", 1)[0] if "Context:" in prompt else ""
        sentence, score = best_sentence(messages[-1].text, context, self.stems)
        content = sentence if sentence is not None and score >= 2 else HEDGE
        n_in, n_out = 1 + len(prompt) // 4, 1 + len(content) // 4
        return AIMessage(content=content, usage_metadata={"input_tokens": n_in, "output_tokens": n_out,
                                                          "total_tokens": n_in + n_out},
                         response_metadata={"model_name": self.model_name})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        msg = self._answer(messages)
        for token in re.split(r"(\s+)", msg.text):
            if token:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=msg.usage_metadata, response_metadata=msg.response_metadata,
            chunk_position="last"))


def offline_models() -> dict[str, BaseChatModel]:
    return {"small": ScriptedChatModel(model_name="small"), "large": ScriptedChatModel(model_name="large", stems=True)}


def openai_models(base_url: str, cheap: str, strong: str, api_key: str | None) -> dict[str, BaseChatModel]:
    try:
        from langchain_openai import ChatOpenAI  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs langchain-openai (pip install langchain-openai)")
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return {name: ChatOpenAI(model=name, base_url=base_url, api_key=key, temperature=0)  # type: ignore[arg-type]
            for name in (cheap, strong)}


# ---------------------------------------------------------------------------------------------- calibration
def generated_records(cheap: str, strong: str, prices: dict[str, float], n: int = 120,
                      seed: int = 0) -> list[Record]:
    """Synthetic outcomes on questions about the notes: the cheap model is right when the question reuses
    the note's words and usually hedges (wrongly) when it is paraphrased; the strong model is right on both."""
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


# ---------------------------------------------------------------------------------------------- the chain
def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def describe(account: dict[str, Any]) -> list[str]:
    lines = [f"  cascade: cluster {account['cluster']}, routed to {account['routed_model']}, answered by "
             f"{account['model']}" + (" (escalated)" if account["escalated"] else "")]
    for t in account["tiers"]:
        p = "-" if t.get("p") is None else f"{t['p']:.3f}"
        verdict = t["reason"] if t["reason"].startswith("accepted") else (
            f"accepted ({t['reason']})" if t["accepted"] else f"rejected ({t['reason']})")
        lines.append(f"    tier {t['tier']} {t['model']:<8} p={p:<6} {t['input_tokens']}+{t['output_tokens']} tok"
                     f"  ${t['cost_usd']:.8f}  {verdict}")
    tot = account["totals"]
    lines.append(f"    total {tot['input_tokens']}+{tot['output_tokens']} tok  ${tot['cost_usd']:.8f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--base-url", help="an OpenAI-compatible server (default: offline scripted models)")
    ap.add_argument("--cheap", help="cheap model name on the server (with --base-url)")
    ap.add_argument("--strong", help="strong model name on the server (with --base-url)")
    ap.add_argument("--api-key", help="API key for the server (default: $OPENAI_API_KEY or a placeholder)")
    ap.add_argument("--artifact", help="load a saved cascade instead of calibrating one on generated records")
    ap.add_argument("--save-artifact", metavar="DIR", help="save the calibrated cascade to DIR")
    ap.add_argument("--question", action="append", help="a question to ask (repeatable)")
    ap.add_argument("-k", type=int, default=2, help="notes to retrieve per question (default 2)")
    args = ap.parse_args(argv)

    if args.base_url:
        if not (args.cheap and args.strong):
            ap.error("--base-url needs --cheap NAME and --strong NAME")
        models = openai_models(args.base_url, args.cheap, args.strong, args.api_key)
        prices = {args.cheap: OFFLINE_PRICES["small"], args.strong: OFFLINE_PRICES["large"]}
        cheap, strong = args.cheap, args.strong
    else:
        if args.cheap or args.strong:
            ap.error("--cheap/--strong need --base-url")
        models, prices, cheap, strong = offline_models(), dict(OFFLINE_PRICES), "small", "large"

    if args.artifact:
        llm = CascadeChatModel.from_artifact(args.artifact, models=models)
        print(f"loaded cascade from {args.artifact}")
    else:
        cascade = calibrate(cheap, strong, prices)
        print(f"calibrated a cascade over {cheap} -> {strong} on generated records")
        if args.save_artifact:
            cascade.save(args.save_artifact)
            print(f"saved cascade to {args.save_artifact}")
        llm = CascadeChatModel(models=models, cascade=cascade)

    store = InMemoryVectorStore.from_texts(NOTES, KeywordEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": args.k})
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    # the answer message is kept (not parsed away) so its crescade account can be printed
    answer = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()} | prompt | llm
    chain = answer | StrOutputParser()  # the usual end of a RAG chain: what an app would call

    for question in args.question or QUESTIONS:
        print(f"\nQ: {question}")
        for doc in retriever.invoke(question):
            print(f"  retrieved: {doc.page_content}")
        message = answer.invoke(question)
        assert isinstance(message, AIMessage)
        print(f"A: {message.text}")
        account = message.response_metadata.get("crescade")
        if isinstance(account, dict):
            print("\n".join(describe(account)))
    print(f"\nstreamed: {''.join(chain.stream(QUESTIONS[0]))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
