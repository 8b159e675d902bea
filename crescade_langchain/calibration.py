"""Calibrate a cascade straight from LangChain chat models and labelled examples.

The collection engine (concurrency limit, progress bar, grading, resumable append-only records) is the
core's :func:`crescade.collect.collect`; this module only says how to call a LangChain chat model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from crescade import Answer
from crescade.collect import CollectReport, Example, collect, fit_on_records
from crescade.pricing import ModelCard

from ._messages import answer_from_message


def _caller(models: Mapping[str, BaseChatModel], system_prompt: str | None) -> Any:
    def call(name: str, example: Example) -> Answer:
        messages: list[BaseMessage] = [SystemMessage(system_prompt)] if system_prompt else []
        messages.append(HumanMessage(example.prompt))
        t0 = time.perf_counter()
        msg = models[name].invoke(messages)
        elapsed = time.perf_counter() - t0
        if not isinstance(msg, AIMessage):
            raise TypeError(f"{name} returned {type(msg).__name__}, expected an AIMessage")
        return replace(answer_from_message(name, msg, messages, (), None), latency_s=elapsed)

    return call


def openai_compatible_models(urls: Mapping[str, str], *, api_key: str, max_tokens: int = 320,
                             timeout: float = 120.0) -> dict[str, BaseChatModel]:
    """``ChatOpenAI`` clients for models behind OpenAI-compatible endpoints (``name -> base URL``), set up
    for recording: temperature 0, capped length, token logprobs, usage. Needs ``langchain-openai``."""
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ImportError("recording from OpenAI-compatible endpoints needs langchain-openai: "
                          "pip install langchain-openai") from exc
    return {m: ChatOpenAI(base_url=url, api_key=api_key, model=m, temperature=0, max_tokens=max_tokens,  # type: ignore[arg-type]
                          logprobs=True, stream_usage=True, timeout=timeout) for m, url in urls.items()}


def collect_records(
    models: Mapping[str, BaseChatModel], examples: Sequence[Example], out: str | Path, *,
    prices: Mapping[str, ModelCard], concurrency: int = 4, system_prompt: str | None = None,
    retries: int = 0, progress: bool = True,
) -> CollectReport:
    """Ask every model every example (skipping pairs already in ``out``), grade, append records."""
    return collect(examples, _caller(models, system_prompt), list(models), out, prices=prices,
                   concurrency=concurrency, retries=retries, progress=progress)


def calibrate(
    models: Mapping[str, BaseChatModel], examples: Sequence[Example], out: str | Path, *,
    prices: Mapping[str, ModelCard], quality_target: float | None = 0.98, cost_target: float | None = None,
    concurrency: int = 4, system_prompt: str | None = None, split: str | None = "train",
    progress: bool = True, **cascade_params: Any,
) -> Any:
    """Collect records (resumable), fit a :class:`~crescade.Cascade` on them, return a ``CascadeChatModel``.

    Only prompts every model answered are used; with ``split`` set and present in the examples, only
    that split is fitted on (the rest stays for evaluation).
    """
    from .chat_model import CascadeChatModel

    collect_records(models, examples, out, prices=prices, concurrency=concurrency,
                    system_prompt=system_prompt, progress=progress)
    cascade = fit_on_records(out, prices=prices, split=split, quality_target=quality_target,
                             cost_target=cost_target, progress=progress, **cascade_params)
    return CascadeChatModel(models=dict(models), cascade=cascade, prices=dict(prices))
