"""The shared adapter test data (``adapter_records``) plus scripted LlamaIndex LLMs over its pool."""

from __future__ import annotations

from typing import Any

from adapter_records import (
    ACCURACY,
    BAD_ANSWER,
    GOOD_ANSWER,
    HEDGES,
    POOL,
    PRICE,
    TOPICS,
    cards,
    fitted_cascade,
    records,
    topic_query,
)
from li_scripted import ScriptedLLM

__all__ = ["ACCURACY", "BAD_ANSWER", "GOOD_ANSWER", "HEDGES", "POOL", "PRICE", "TOPICS", "cards",
           "fitted_cascade", "records", "scripted", "topic_query"]


def scripted(**knobs: dict[str, Any]) -> dict[str, ScriptedLLM]:
    """One scripted LLM per pool name; ``knobs[name]`` sets that LLM's fields."""
    return {m: ScriptedLLM(model_name=m, **knobs.get(m, {})) for m in POOL}
