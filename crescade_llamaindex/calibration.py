"""Recording LlamaIndex LLMs on labelled examples, for calibration (``CascadeLLM.calibrate``).

The collection engine (concurrency limit, progress bar, grading, resumable append-only records) is the
core's :func:`crescade.collect`; this module only says how to call a LlamaIndex LLM.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms.llm import LLM

from crescade import Answer
from crescade.seam import CollectReport, Example, ModelCard, collect, register_secrets, secrets_of

from ._messages import answer_from_response, buffer_string


def _caller(llms: Mapping[str, LLM], system_prompt: str | None) -> Any:
    def call(name: str, example: Example) -> Answer:
        messages = [ChatMessage(role=MessageRole.SYSTEM, content=system_prompt)] if system_prompt else []
        messages.append(ChatMessage(role=MessageRole.USER, content=example.prompt))
        t0 = time.perf_counter()
        resp = llms[name].chat(messages)
        elapsed = time.perf_counter() - t0
        answer = answer_from_response(name, resp, buffer_string(messages), child=llms[name])
        return replace(answer, latency_s=elapsed)

    return call


def collect_records(
    llms: Mapping[str, LLM], examples: Sequence[Example], out: str | PathLike[str], *,
    prices: Mapping[str, ModelCard], concurrency: int = 4, system_prompt: str | None = None,
    retries: int = 0, progress: bool = True,
) -> CollectReport:
    """Ask every LLM every example (skipping pairs already in ``out``), grade, append records."""
    register_secrets(v for m in llms.values() for v in secrets_of(m))
    return collect(examples, _caller(llms, system_prompt), list(llms), out, prices=prices,
                   concurrency=concurrency, retries=retries, progress=progress)
