"""Instrumentation events for the cascade's decisions, dispatched through LlamaIndex's dispatcher.

Subscribe with ``llama_index.core.instrumentation.get_dispatcher().add_event_handler(handler)``; each event's
``span_id`` is the span of the ``CascadeLLM`` call that made the decision (streaming included).
"""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

__all__ = ["CascadeAnswerEvent", "CascadeEscalationEvent", "CascadeRouteEvent", "dispatcher"]

dispatcher = get_dispatcher("crescade_llamaindex")


class CascadeRouteEvent(BaseEvent):
    """The cascade routed a call: its cluster, the ladder to walk and the conversation floor applied."""

    cluster: int
    routed_model: str
    ladder: list[str]
    floor: str | None = None
    reason: str = ""

    @classmethod
    def class_name(cls) -> str:
        return "CascadeRouteEvent"


class CascadeEscalationEvent(BaseEvent):
    """A tier's answer was rejected (or the tier raised) and the call moves to ``next_model``."""

    tier: int
    model: str
    next_model: str
    reason: str
    error: str | None = None
    p: float | None = None
    threshold: float | None = None

    @classmethod
    def class_name(cls) -> str:
        return "CascadeEscalationEvent"


class CascadeAnswerEvent(BaseEvent):
    """The call was answered: by which model, at what total cost and tokens (rejected tiers included)."""

    model: str
    routed_model: str
    escalated: bool
    reason: str
    cost_usd: float
    input_tokens: int
    output_tokens: int

    @classmethod
    def class_name(cls) -> str:
        return "CascadeAnswerEvent"
