"""The shared adapter test data (``adapter_records``) plus scripted LangChain children over its pool."""

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
from lc_scripted import ScriptedChatModel

__all__ = ["ACCURACY", "BAD_ANSWER", "GOOD_ANSWER", "HEDGES", "POOL", "PRICE", "TOPICS", "cards",
           "fitted_cascade", "records", "scripted", "topic_query"]


def scripted(**knobs: dict[str, Any]) -> dict[str, ScriptedChatModel]:
    """One scripted model per pool name; ``knobs[name]`` sets that model's fields."""
    return {m: ScriptedChatModel(model_name=m, **knobs.get(m, {})) for m in POOL}
