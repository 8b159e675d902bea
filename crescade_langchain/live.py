"""Run labelled examples live through a chat model (a :class:`CascadeChatModel` or one plain model), streamed,
graded and timed; and the live backend through which ``crescade collect`` and ``crescade demo --live`` reach
this adapter. Used by the CLI and the live benchmark.

Every call is streamed so that TTFT and TPOT are measured the same way for the cascade and for a single
model (definitions in :mod:`crescade.evaluation.timing`). Rows are plain dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from crescade import Cascade, CollectReport, Example, ModelCard
from crescade.seam import get_grader, query_tpot

from ._messages import answer_from_message, as_chunk, message_text
from ._stream import LiveStream
from .calibration import collect_records, openai_compatible_models
from .chat_model import CascadeChatModel

__all__ = ["BACKEND", "LangChainLiveBackend", "run_example", "run_live"]


def _last_line(text: str, width: int = 100) -> str:
    """The answer's last meaningful line (a code answer: its ``def`` line, not the closing fence)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("```")]
    defs = [ln for ln in lines if ln.startswith(("def ", "async def "))] if "```" in text else []
    last = defs[0] if defs else lines[-1] if lines else ""
    return last if len(last) <= width else last[: width - 1] + "…"


def run_example(model: BaseChatModel, example: Example, *, name: str | None = None,
                card: ModelCard | None = None) -> dict[str, Any]:
    """Stream ``example`` through ``model``; grade and time it.

    For a cascade the row carries its account (route, every tier's QE score, verdict and timing), the
    query's TPOT over every tier called and the router's own overhead (wall time not spent in a tier).
    For a plain model, ``card`` prices the call.
    """
    messages = [HumanMessage(example.prompt)]
    t0 = time.perf_counter()
    live = LiveStream(t0)
    for chunk in model.stream(messages):
        live.add(as_chunk(chunk))
    latency = time.perf_counter() - t0
    msg = live.message()
    text = message_text(msg)
    row: dict[str, Any] = {
        "prompt_id": example.prompt_id, "task": example.task, "prompt": example.prompt,
        "reference": example.reference, "answer": _last_line(text), "response": text,
        "correct": bool(get_grader(example.grader)(text, example.reference)), "latency_s": latency,
        "ttft_s": live.t_first - t0 if live.t_first is not None else None,
    }
    account = msg.response_metadata.get("crescade")
    if isinstance(account, Mapping):
        tiers = [dict(t) for t in account["tiers"]]
        row.update(
            model=account["model"], routed_model=account["routed_model"], cluster=account["cluster"],
            escalated=account["escalated"], ladder=list(account["ladder"]), tiers=tiers,
            cost_usd=account["totals"]["cost_usd"], output_tokens=account["totals"]["output_tokens"],
            tpot_s=query_tpot([t["tpot_s"] if t["tpot_s"] is not None else float("nan") for t in tiers],
                              [int(t["output_tokens"]) for t in tiers]),
            overhead_s=max(0.0, latency - sum(float(t["latency_s"] or 0.0) for t in tiers)),
        )
        return row
    label = name or str(getattr(model, "model_name", None) or getattr(model, "model", None) or model._llm_type)
    answer = answer_from_message(label, msg, messages, (), None, live=live)
    row.update(model=label, tpot_s=answer.tpot_s, output_tokens=answer.output_tokens,
               cost_usd=card.cost(answer.input_tokens or 0, answer.output_tokens or 0) if card else None)
    return row


def run_live(model: BaseChatModel, examples: Iterable[Example], *, name: str | None = None,
             card: ModelCard | None = None,
             on_row: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """:func:`run_example` over ``examples`` one at a time (a local server generates one answer at a
    time, so concurrency would only queue); ``on_row(i, row)`` is called as each finishes."""
    rows = []
    for i, ex in enumerate(examples):
        row = run_example(model, ex, name=name, card=card)
        rows.append(row)
        if on_row is not None:
            on_row(i, row)
    return rows


class LangChainLiveBackend:
    """``crescade collect`` and ``crescade demo --live`` over LangChain: ``ChatOpenAI`` clients of
    OpenAI-compatible endpoints, and :class:`CascadeChatModel` over them. Registered in the ``crescade.live``
    entry-point group (see :mod:`crescade.tools.backends`), which is how the core CLI finds it."""

    description = "CascadeChatModel over ChatOpenAI"

    def collect(
        self, urls: Mapping[str, str], examples: Sequence[Example], out: str | Path, *, api_key: str,
        prices: Mapping[str, ModelCard], max_tokens: int, timeout: float, logprobs: bool, concurrency: int,
        system_prompt: str | None, progress: bool, stream: bool,
    ) -> CollectReport:
        """Record every model (``name -> base URL``) on every example (resumable, graded)."""
        models = openai_compatible_models(urls, api_key=api_key, max_tokens=max_tokens, timeout=timeout,
                                          logprobs=logprobs)
        return collect_records(models, examples, out, prices=prices, concurrency=concurrency,
                               system_prompt=system_prompt, progress=progress, stream=stream)

    def run(
        self, cascade: Cascade, urls: Mapping[str, str], examples: Sequence[Example], *, api_key: str,
        prices: Mapping[str, ModelCard], max_tokens: int, timeout: float,
        on_row: Callable[[int, dict[str, Any]], None] | None,
    ) -> list[dict[str, Any]]:
        """Stream ``examples`` through a :class:`CascadeChatModel` over ``ChatOpenAI`` children."""
        children = openai_compatible_models(urls, api_key=api_key, max_tokens=max_tokens, timeout=timeout)
        model = CascadeChatModel(models=children, cascade=cascade, prices=dict(prices))
        return run_live(model, examples, on_row=on_row)


BACKEND = LangChainLiveBackend()
"""The object the ``crescade.live`` entry point ``langchain`` names."""
