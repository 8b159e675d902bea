"""Child callback managers, so every tier's chat-model run nests under the cascade's run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler, CallbackManager
from langchain_core.runnables import RunnableConfig

__all__ = ["TAG_NOSTREAM", "Parent"]

TAG_NOSTREAM = "nostream"  # LangGraph's message streaming skips runs with this tag


@dataclass(frozen=True)
class Parent:
    """What a tier's child run inherits from the cascade's run: its id, handlers, tags and metadata."""

    run_id: UUID | None = None
    handlers: list[BaseCallbackHandler] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_run(cls, run_manager: Any) -> Parent:
        """From the cascade's ``CallbackManagerForLLMRun`` (or its async twin)."""
        return cls(run_manager.run_id, list(run_manager.inheritable_handlers),
                   list(run_manager.inheritable_tags), dict(run_manager.inheritable_metadata))

    def child_config(self, tier: int, model: str, *, is_async: bool) -> RunnableConfig:
        """The config a tier's child is called with: a child manager of the cascade run, tagged
        ``crescade:tier{i}`` (this run only) and ``nostream`` (inherited)."""
        meta = {k: v for k, v in self.metadata.items() if not k.startswith("ls_")}  # the child has its own
        config: RunnableConfig = {"tags": [TAG_NOSTREAM],
                                  "metadata": {"crescade_tier": tier, "crescade_model": model}}
        if self.run_id is None and not self.handlers:
            return config
        manager = (AsyncCallbackManager if is_async else CallbackManager)(handlers=[], parent_run_id=self.run_id)
        manager.set_handlers(self.handlers)
        manager.add_tags(self.tags)
        manager.add_metadata(meta)
        manager.add_tags([f"crescade:tier{tier}"], inherit=False)
        config["callbacks"] = manager
        return config
