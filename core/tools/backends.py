"""How the command line reaches a framework adapter without importing one: the ``crescade.live`` entry points.

``crescade collect`` and ``crescade demo --live`` call real chat models through an adapter (LangChain's
``ChatOpenAI`` behind :class:`~crescade_langchain.CascadeChatModel`). The core never imports an adapter;
instead an installed distribution registers an object with :class:`LiveBackend`'s two methods under the
entry-point group ``crescade.live``, and the CLI loads it by name. crescade registers its own LangChain
adapter there (``pyproject.toml``)::

    [project.entry-points."crescade.live"]
    langchain = "crescade_langchain.live:BACKEND"

A third-party package can register another backend the same way and select it with
``CRESCADE_LIVE_BACKEND=<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..common.errors import CrescadeError
from ..engine.cascade import Cascade
from ..engine.pricing import ModelCard
from .collect import CollectReport, Example

__all__ = ["DEFAULT_BACKEND", "GROUP", "LiveBackend", "live_backend"]

GROUP = "crescade.live"
DEFAULT_BACKEND = "langchain"
_INSTALL_HINT = "pip install 'crescade[live]'"


@runtime_checkable
class LiveBackend(Protocol):
    """What the CLI needs from an adapter to call models behind OpenAI-compatible endpoints."""

    def collect(
        self, urls: Mapping[str, str], examples: Sequence[Example], out: str | Path, *, api_key: str,
        prices: Mapping[str, ModelCard], max_tokens: int, timeout: float, logprobs: bool, concurrency: int,
        system_prompt: str | None, progress: bool, stream: bool,
    ) -> CollectReport:
        """Ask every model (``name -> base URL``) every example, grade, append records to ``out``."""
        ...

    def run(
        self, cascade: Cascade, urls: Mapping[str, str], examples: Sequence[Example], *, api_key: str,
        prices: Mapping[str, ModelCard], max_tokens: int, timeout: float,
        on_row: Callable[[int, dict[str, Any]], None] | None,
    ) -> list[dict[str, Any]]:
        """Stream ``examples`` through the cascade over those models; one graded, timed row each."""
        ...


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=GROUP))


def live_backend(name: str | None = None, *, what: str = "this command") -> LiveBackend:
    """The backend registered as ``name`` (default: ``$CRESCADE_LIVE_BACKEND``, else ``langchain``).

    Raises :class:`CrescadeError` with the install command when it is not registered or its framework is
    missing."""
    name = name or os.environ.get("CRESCADE_LIVE_BACKEND") or DEFAULT_BACKEND
    found = {ep.name: ep for ep in _entry_points()}
    if name not in found:
        have = ", ".join(sorted(found)) or "none"
        raise CrescadeError(f"{what} needs the '{name}' live backend (entry-point group {GROUP!r}; registered: "
                            f"{have}): reinstall crescade with {_INSTALL_HINT}")
    try:
        backend = found[name].load()
    except ImportError as exc:
        raise CrescadeError(f"{what} needs the '{name}' live backend, whose dependencies are missing "
                            f"({exc.name or exc}): {_INSTALL_HINT}") from None
    if not isinstance(backend, LiveBackend):
        raise CrescadeError(f"the '{name}' entry point in {GROUP!r} ({found[name].value}) is not a live backend "
                            "(it needs collect() and run())")
    return backend
