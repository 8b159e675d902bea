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
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from crescade_llamaindex import CascadeLLM

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _shared, from any working directory
from _shared import (
    NOTES,
    RAG_HEDGE,
    RAG_QUESTIONS,
    STOP,
    add_common_args,
    api_key,
    best_line,
    calibrate_and_report,
    choose_models,
    describe,
    keyword_vector,
    rag_records,
)

#: The stop words, and the words of LlamaIndex's default QA prompt (which the offline LLM reads in full).
LI_STOP = STOP | {"answer", "query", "context", "information", "given", "below", "prior", "knowledge", "not"}


class KeywordEmbedding(BaseEmbedding):
    """An offline bag-of-words embedding (hashed 5-letter stems, L2-normalised)."""

    size: int = 256

    def _vec(self, text: str) -> list[float]:
        return keyword_vector(text, self.size, LI_STOP)

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
        best, score = best_line(query, prompt, self.stems, LI_STOP, skip="Query:")
        text = best if best is not None and score >= 2 else RAG_HEDGE
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


def openai_like_llms(base_url: str, cheap: str, strong: str, key: str | None) -> dict[str, LLM]:
    try:
        from llama_index.llms.openai_like import OpenAILike  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs llama-index-llms-openai-like (pip install llama-index-llms-openai-like)")
    return {name: OpenAILike(model=name, api_base=base_url, api_key=api_key(key), is_chat_model=True,
                             is_function_calling_model=True, context_window=4096, temperature=0)
            for name in (cheap, strong)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(ap, "offline scripted LLMs", save_artifact=False)
    ap.add_argument("--stream", action="store_true", help="stream the answers")
    ap.add_argument("-k", type=int, default=2, help="notes to retrieve per question (default 2)")
    args = ap.parse_args(argv)
    llms, prices, cheap, strong = choose_models(ap, args, offline_llms, openai_like_llms)

    if args.artifact:
        cascade_llm = CascadeLLM.from_artifact(args.artifact, llms=llms)
        print(f"loaded cascade from {args.artifact}")
    else:
        cascade = calibrate_and_report(rag_records(cheap, strong, prices, LI_STOP), prices, cheap, strong)
        cascade_llm = CascadeLLM(llms=llms, cascade=cascade)

    _listen()
    Settings.llm = cascade_llm  # the one line that puts the cascade into every LlamaIndex component
    Settings.embed_model = KeywordEmbedding()
    index = VectorStoreIndex.from_documents([Document(text=t) for t in NOTES])
    engine = index.as_query_engine(similarity_top_k=args.k, streaming=args.stream)
    for question in args.question or RAG_QUESTIONS:
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
            print("\n".join(describe(_last_account.pop(), plain=True)))
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
