"""Fixtures for the LlamaIndex adapter tests (helpers live in ``li_support`` and ``li_scripted``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from li_support import POOL, TOPICS, fitted_cascade, scripted, topic_query
from llama_index.core import Settings
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from crescade import Cascade
from crescade_llamaindex import CascadeLLM


@pytest.fixture(scope="session")
def li_cascade() -> Cascade:
    return fitted_cascade()


@pytest.fixture(scope="session")
def li_queries(li_cascade: Cascade) -> dict[str, str]:
    """Queries by topic, plus ``cheap_first`` (routed to ``cheap`` with tiers above) and ``mid_first``."""
    out: dict[str, str] = {}
    for topic in TOPICS:
        for seed in range(30):
            q = topic_query(topic, seed)
            plan = li_cascade.plan(q)
            out.setdefault(topic, q)
            if plan.ladder == POOL:
                out.setdefault("cheap_first", q)
            if plan.ladder == ("mid", "strong"):
                out.setdefault("mid_first", q)
    assert {"cheap_first", "mid_first"} <= set(out), "the fitted cascade no longer routes as the tests expect"
    return out


@pytest.fixture
def make_llm(li_cascade: Cascade) -> Callable[..., CascadeLLM]:
    """``make_llm(cheap={...}, mid={...}, strong={...}, **CascadeLLM_kwargs)``."""

    def make(**kw: Any) -> CascadeLLM:
        knobs = {m: kw.pop(m) for m in POOL if m in kw}
        return CascadeLLM(llms=scripted(**knobs), cascade=li_cascade, **kw)

    return make


@pytest.fixture(autouse=True)
def _offline_settings() -> Iterator[None]:
    """Never let ``Settings`` resolve "default" to OpenAI; restore what a test changed."""
    old_llm, old_embed = Settings._llm, Settings._embed_model
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = old_llm, old_embed
