"""Fixtures for the real-pipeline tests: a fitted cascade over two scripted children (see pipeline_support)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain")
pytest.importorskip("langgraph")

from crescade import Cascade

from .pipeline_support import CHEAP, STRONG, ScriptedChat, fit_cascade

if TYPE_CHECKING:
    from crescade_langchain import CascadeChatModel


@pytest.fixture(scope="session")
def fitted_cascade() -> Cascade:
    return fit_cascade()


@pytest.fixture
def cheap() -> ScriptedChat:
    """The cheap child: hedges on arithmetic and breaks its arithmetic tool calls' argument types."""
    return ScriptedChat(model_name=CHEAP, weak=True)


@pytest.fixture
def strong() -> ScriptedChat:
    return ScriptedChat(model_name=STRONG)


@pytest.fixture
def cascade_model(fitted_cascade: Cascade, cheap: ScriptedChat, strong: ScriptedChat) -> CascadeChatModel:
    from crescade_langchain import CascadeChatModel

    return CascadeChatModel(models={CHEAP: cheap, STRONG: strong}, cascade=fitted_cascade)
