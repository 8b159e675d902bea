"""Shared constants and client builders of the live suite (a module, not the conftest: see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crescade.tools.local import LocalServers

#: The CI pool: the cheap tier and the middle one (the 1.5B model is dropped from the fitted cascade).
LIVE_MODELS: tuple[str, ...] = ("smollm2-135m", "qwen2.5-coder-0.5b")
CHEAP, STRONG = LIVE_MODELS
DROPPED = "qwen2.5-coder-1.5b"
MAX_TOKENS = 64
INSTALL_HINT = f"crescade local install --models {' '.join(LIVE_MODELS)}"


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def chat_openai(urls: dict[str, str], *, timeout: float = 120.0, max_retries: int = 2) -> dict[str, Any]:
    """``ChatOpenAI`` children as ``crescade_langchain.calibration.openai_compatible_models`` builds them,
    with a configurable retry count (0 for the fault tests, so a dead server fails at once)."""
    from langchain_openai import ChatOpenAI

    return {m: ChatOpenAI(base_url=u, api_key="sk-local", model=m, temperature=0,  # type: ignore[arg-type]
                          max_tokens=MAX_TOKENS, stream_usage=True, timeout=timeout, max_retries=max_retries)
            for m, u in urls.items()}


def openai_like(urls: dict[str, str], *, timeout: float = 120.0, max_retries: int = 2,
                tools: bool = False) -> dict[str, Any]:
    """``OpenAILike`` children for the LlamaIndex adapter."""
    from llama_index.llms.openai_like import OpenAILike

    return {m: OpenAILike(api_base=u, api_key="sk-local", model=m, is_chat_model=True, context_window=2048,
                          max_tokens=MAX_TOKENS, temperature=0, timeout=timeout, max_retries=max_retries,
                          is_function_calling_model=tools)
            for m, u in urls.items()}


def pids_of(servers: LocalServers) -> dict[str, int]:
    return {n: servers.pid(n) for n in servers.names}

