"""LangChain adapter for crescade: :class:`CascadeChatModel`, a chat model over any chat models.

``import crescade_langchain`` works without LangChain; ``CascadeChatModel`` is imported on first use
and needs ``langchain-core`` (``pip install 'crescade[langchain]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat_model import CascadeChatModel

__all__ = ["CascadeChatModel"]


def __getattr__(name: str) -> Any:
    if name == "CascadeChatModel":
        try:
            from .chat_model import CascadeChatModel
        except ImportError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in ("langchain_core", "pydantic", "typing_extensions"):
                raise ImportError(f"crescade_langchain.CascadeChatModel needs {missing!r}: "
                                  "pip install 'crescade[langchain]'") from exc
            raise
        return CascadeChatModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
