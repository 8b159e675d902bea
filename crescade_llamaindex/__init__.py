"""LlamaIndex adapter for crescade: :class:`CascadeLLM`, a ``FunctionCallingLLM`` over any LlamaIndex LLMs.

``import crescade_llamaindex`` works without LlamaIndex; the names below are imported on first use and
need ``llama-index-core`` (``pip install 'crescade[llamaindex]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._events import CascadeAnswerEvent, CascadeEscalationEvent, CascadeRouteEvent
    from .llm import CascadeLLM

__all__ = ["CascadeAnswerEvent", "CascadeEscalationEvent", "CascadeLLM", "CascadeRouteEvent"]

_WHERE = {"CascadeLLM": "llm", "CascadeAnswerEvent": "_events", "CascadeEscalationEvent": "_events",
          "CascadeRouteEvent": "_events"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        try:
            module = importlib.import_module(f".{_WHERE[name]}", __name__)
        except ImportError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in ("llama_index", "pydantic"):
                raise ImportError(f"crescade_llamaindex.{name} needs 'llama-index-core': "
                                  "pip install 'crescade[llamaindex]'") from exc
            raise
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
