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
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
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

from crescade_langchain import CascadeChatModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _shared, from any working directory
from _shared import (
    NOTES,
    RAG_HEDGE,
    RAG_QUESTIONS,
    add_common_args,
    api_key,
    best_line,
    calibrate_and_report,
    choose_models,
    describe,
    keyword_vector,
    rag_records,
)

SYSTEM = "Answer the question using only the context. Quote the relevant sentence.\n\nContext:\n{context}"


# ---------------------------------------------------------------------------------------------- embeddings
class KeywordEmbeddings(Embeddings):
    """An offline bag-of-words embedding (hashed word counts, L2-normalised): similar words, similar vectors."""

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def _embed(self, text: str) -> list[float]:
        return keyword_vector(text, self.size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


# ---------------------------------------------------------------------------------------------- offline models
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
        sentence, score = best_line(messages[-1].text, context, self.stems)
        content = sentence if sentence is not None and score >= 2 else RAG_HEDGE
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


def openai_models(base_url: str, cheap: str, strong: str, key: str | None) -> dict[str, BaseChatModel]:
    try:
        from langchain_openai import ChatOpenAI  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs langchain-openai (pip install langchain-openai)")
    return {name: ChatOpenAI(model=name, base_url=base_url, api_key=api_key(key), temperature=0)  # type: ignore[arg-type]
            for name in (cheap, strong)}


# ---------------------------------------------------------------------------------------------- the chain
def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(ap, "offline scripted models")
    ap.add_argument("-k", type=int, default=2, help="notes to retrieve per question (default 2)")
    args = ap.parse_args(argv)
    models, prices, cheap, strong = choose_models(ap, args, offline_models, openai_models)

    if args.artifact:
        llm = CascadeChatModel.from_artifact(args.artifact, models=models)
        print(f"loaded cascade from {args.artifact}")
    else:
        records = rag_records(cheap, strong, prices)
        cascade = calibrate_and_report(records, prices, cheap, strong, args.save_artifact)
        llm = CascadeChatModel(models=models, cascade=cascade)

    store = InMemoryVectorStore.from_texts(NOTES, KeywordEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": args.k})
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    # the answer message is kept (not parsed away) so its crescade account can be printed
    answer = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()} | prompt | llm
    chain = answer | StrOutputParser()  # the usual end of a RAG chain: what an app would call

    for question in args.question or RAG_QUESTIONS:
        print(f"\nQ: {question}")
        for doc in retriever.invoke(question):
            print(f"  retrieved: {doc.page_content}")
        message = answer.invoke(question)
        assert isinstance(message, AIMessage)
        print(f"A: {message.text}")
        account = message.response_metadata.get("crescade")
        if isinstance(account, dict):
            print("\n".join(describe(account)))
    print(f"\nstreamed: {''.join(chain.stream(RAG_QUESTIONS[0]))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
