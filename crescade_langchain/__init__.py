"""LangChain adapter for crescade: :class:`CascadeChatModel`, a chat model over any chat models.

``import crescade_langchain`` works without LangChain; ``CascadeChatModel`` is imported on first use
and needs ``langchain-core`` (``pip install 'crescade[langchain]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat_model import CascadeChatModel
    from .usage import CascadeUsageCallbackHandler, get_cascade_usage_callback

__all__ = ["CascadeChatModel", "CascadeUsageCallbackHandler", "get_cascade_usage_callback"]
_HOME = {"CascadeChatModel": "chat_model", "CascadeUsageCallbackHandler": "usage",
         "get_cascade_usage_callback": "usage"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        try:
            module = importlib.import_module(f".{_HOME[name]}", __name__)
        except ImportError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in ("langchain_core", "pydantic", "typing_extensions"):
                raise ImportError(f"crescade_langchain.{name} needs {missing!r}: "
                                  "pip install 'crescade[langchain]'") from exc
            raise
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
