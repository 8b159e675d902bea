"""Recording LangChain chat models on labelled examples: ``CascadeChatModel.calibrate`` and ``crescade collect``.

The collection engine (concurrency limit, progress bar, grading, resumable append-only records) is the
core's :func:`crescade.collect`; this module only says how to call a LangChain chat model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from crescade import Answer
from crescade.seam import CollectReport, Example, ModelCard, collect, register_secrets, secrets_of

from ._messages import answer_from_message, as_chunk
from ._stream import LiveStream


def _caller(models: Mapping[str, BaseChatModel], system_prompt: str | None, stream: bool) -> Any:
    """``call(model, example) -> Answer``; streamed calls measure TTFT and TPOT as well as latency."""

    def call(name: str, example: Example) -> Answer:
        messages: list[BaseMessage] = [SystemMessage(system_prompt)] if system_prompt else []
        messages.append(HumanMessage(example.prompt))
        t0 = time.perf_counter()
        live: LiveStream | None = None
        if stream:
            live = LiveStream(t0)
            for chunk in models[name].stream(messages):
                live.add(as_chunk(chunk))
            msg: BaseMessage = live.message()
        else:
            msg = models[name].invoke(messages)
        elapsed = time.perf_counter() - t0
        if not isinstance(msg, AIMessage):
            raise TypeError(f"{name} returned {type(msg).__name__}, expected an AIMessage")
        return replace(answer_from_message(name, msg, messages, (), None, live=live), latency_s=elapsed)

    return call


def openai_compatible_models(urls: Mapping[str, str], *, api_key: str, max_tokens: int = 320,
                             timeout: float = 120.0, logprobs: bool = False) -> dict[str, BaseChatModel]:
    """``ChatOpenAI`` clients for models behind OpenAI-compatible endpoints (``name -> base URL``), set up
    for recording: temperature 0, capped length, usage and, with ``logprobs=True``, token logprobs (a QE
    feature). Needs ``langchain-openai``.

    Logprobs are off by default: llama-cpp-python's server computes them in Python per token, which made
    generation ~3x slower here (SmolLM2 1.3 s -> 3.6 s, Qwen-0.5B 7.1 s -> 20.3 s for the same answer) and
    would distort the latencies recorded. It also returns none unless ``top_logprobs`` is set, so
    ``top_logprobs=1`` is sent with them.
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ImportError("recording from OpenAI-compatible endpoints needs langchain-openai: "
                          "pip install langchain-openai") from exc
    extra: dict[str, Any] = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
    # ChatOpenAI sends its max_tokens as "max_completion_tokens", which llama-cpp-python's server ignores
    # (answers then run to the context length); the classic field in the body is honoured everywhere.
    return {m: ChatOpenAI(base_url=url, api_key=api_key, model=m, temperature=0,  # type: ignore[arg-type]
                          extra_body={"max_tokens": max_tokens}, stream_usage=True, timeout=timeout, **extra)
            for m, url in urls.items()}


def collect_records(
    models: Mapping[str, BaseChatModel], examples: Sequence[Example], out: str | PathLike[str], *,
    prices: Mapping[str, ModelCard], concurrency: int = 4, system_prompt: str | None = None,
    retries: int = 0, progress: bool = True, stream: bool = False,
) -> CollectReport:
    """Ask every model every example (skipping pairs already in ``out``), grade, append records.

    With ``stream=True`` each call is streamed, so the records carry measured TTFT and TPOT; where the
    stream reports no usage (llama.cpp's server), output tokens are its content chunks, marked ``estimate``.
    """
    register_secrets(v for m in models.values() for v in secrets_of(m))
    return collect(examples, _caller(models, system_prompt, stream), list(models), out, prices=prices,
                   concurrency=concurrency, retries=retries, progress=progress)
