"""Fixtures for the LangChain adapter tests (helpers live in ``lc_support`` and ``lc_scripted``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lc_support import POOL, TOPICS, fitted_cascade, scripted, topic_query

from crescade import Cascade
from crescade_langchain import CascadeChatModel


@pytest.fixture(scope="session")
def lc_cascade() -> Cascade:
    return fitted_cascade()


@pytest.fixture(scope="session")
def queries(lc_cascade: Cascade) -> dict[str, str]:
    """Queries by topic, plus ``cheap_first`` (routed to ``cheap`` with tiers above) and ``mid_first``."""
    out: dict[str, str] = {}
    for topic in TOPICS:
        for seed in range(30):
            q = topic_query(topic, seed)
            plan = lc_cascade.plan(q)
            out.setdefault(topic, q)
            if plan.ladder == POOL:
                out.setdefault("cheap_first", q)
            if plan.ladder == ("mid", "strong"):
                out.setdefault("mid_first", q)
    assert {"cheap_first", "mid_first"} <= set(out), "the fitted cascade no longer routes as the tests expect"
    return out


@pytest.fixture
def make_model(lc_cascade: Cascade) -> Callable[..., CascadeChatModel]:
    """``make_model(cheap={...}, mid={...}, strong={...}, **CascadeChatModel_kwargs)``."""

    def make(**kw: Any) -> CascadeChatModel:
        knobs = {m: kw.pop(m) for m in POOL if m in kw}
        return CascadeChatModel(models=scripted(**knobs), cascade=lc_cascade, **kw)

    return make
