"""Count token usage once per model call, with cascades in the mix.

LangChain's ``UsageMetadataCallbackHandler`` sees every chat-model run: each tier a cascade called *and*
the cascade's own message, whose usage is the sum of its tiers and whose ``model_name`` is the
answering model, so an escalated call is counted twice. :class:`CascadeUsageCallbackHandler` skips
the cascade's summary message (it carries ``response_metadata["crescade"]``) and keeps the children,
so ``usage_metadata[model]`` is what each model really consumed, rejected drafts included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook

__all__ = ["CascadeUsageCallbackHandler", "get_cascade_usage_callback"]


class CascadeUsageCallbackHandler(UsageMetadataCallbackHandler):
    """``UsageMetadataCallbackHandler`` that counts each model call once (see the module docstring)."""

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        try:
            generation = response.generations[0][0]
        except IndexError:
            return
        if isinstance(generation, ChatGeneration) and "crescade" in generation.message.response_metadata:
            return  # the cascade's own summary: its usage is the sum of the children counted already
        super().on_llm_end(response, **kwargs)


_handler_var: ContextVar[CascadeUsageCallbackHandler | None] = ContextVar(
    "crescade_usage_callback", default=None)
register_configure_hook(_handler_var, inheritable=True)


@contextmanager
def get_cascade_usage_callback() -> Iterator[CascadeUsageCallbackHandler]:
    """Like ``get_usage_metadata_callback``, counting each model call exactly once::

        with get_cascade_usage_callback() as cb:
            chain.invoke(...)
        cb.usage_metadata   # {"cheap-model": {...}, "strong-model": {...}}: per model, no double counting
    """
    cb = CascadeUsageCallbackHandler()
    token = _handler_var.set(cb)
    try:
        yield cb
    finally:
        _handler_var.reset(token)
