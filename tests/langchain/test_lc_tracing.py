"""Tracing: every tier's chat-model run nests under the cascade's run (sync, async, streaming, inside
chains and graphs), is tagged, and LangGraph's message streaming shows only the final answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from lc_support import BAD_ANSWER, GOOD_ANSWER

from crescade_langchain import CascadeChatModel

Make = Callable[..., CascadeChatModel]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Collector(BaseCallbackHandler):
    """Records every chat-model and chain start with its parent and tags."""

    run_inline = True

    def __init__(self) -> None:
        self.runs: dict[UUID, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _add(self, kind: str, run_id: UUID, parent_run_id: UUID | None, tags: list[str] | None,
             metadata: dict[str, Any] | None) -> None:
        with self._lock:
            self.runs[run_id] = {"kind": kind, "parent": parent_run_id, "tags": list(tags or []),
                                 "metadata": dict(metadata or {})}

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._add("chat", run_id, parent_run_id, tags, metadata)

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._add("chain", run_id, parent_run_id, tags, metadata)

    def cascades(self) -> list[UUID]:
        return [r for r, v in self.runs.items()
                if v["kind"] == "chat" and v["metadata"].get("ls_provider") == "crescade"]

    def tiers(self) -> dict[UUID, dict[str, Any]]:
        return {r: v for r, v in self.runs.items()
                if v["kind"] == "chat" and any(t.startswith("crescade:tier") for t in v["tags"])}

    def check_nested(self, n_tiers: int) -> UUID:
        """Exactly one cascade run, and ``n_tiers`` child chat-model runs whose parent it is."""
        (cascade_run,) = self.cascades()
        tiers = self.tiers()
        assert len(tiers) == n_tiers, self.runs
        for v in tiers.values():
            assert v["parent"] == cascade_run
            assert "nostream" in v["tags"]
            assert v["metadata"].get("ls_provider") != "crescade"
        assert sorted(t for v in tiers.values() for t in v["tags"] if t.startswith("crescade:tier")) == [
            f"crescade:tier{i}" for i in range(n_tiers)]
        return cascade_run


@pytest.fixture
def escalating(make_model: Make) -> CascadeChatModel:
    return make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": GOOD_ANSWER})


def _config(handler: Collector) -> RunnableConfig:
    return {"callbacks": [handler]}


def test_invoke_nests_tiers(escalating: CascadeChatModel, queries: dict[str, str]) -> None:
    h = Collector()
    escalating.invoke(queries["cheap_first"], _config(h))
    h.check_nested(2)


async def test_ainvoke_nests_tiers(escalating: CascadeChatModel, queries: dict[str, str]) -> None:
    h = Collector()
    await escalating.ainvoke(queries["cheap_first"], _config(h))
    h.check_nested(2)


def test_stream_nests_tiers(escalating: CascadeChatModel, queries: dict[str, str]) -> None:
    h = Collector()
    list(escalating.stream(queries["cheap_first"], _config(h)))
    h.check_nested(2)


async def test_astream_nests_tiers(escalating: CascadeChatModel, queries: dict[str, str]) -> None:
    h = Collector()
    [c async for c in escalating.astream(queries["cheap_first"], _config(h))]
    h.check_nested(2)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_nesting_inside_a_chain_with_bound_tools(make_model: Make, queries: dict[str, str], mode: str) -> None:
    model = make_model(cheap={"tool_args": "schema_violation"})
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model.bind_tools([add]) | StrOutputParser()
    h = Collector()
    inp = {"q": queries["cheap_first"] + "\nadd 2 and 3"}  # a calibrated (cheap-first) query, with tools
    if mode == "invoke":
        chain.invoke(inp, _config(h))
    elif mode == "ainvoke":
        await chain.ainvoke(inp, _config(h))
    elif mode == "stream":
        list(chain.stream(inp, _config(h)))
    else:
        [c async for c in chain.astream(inp, _config(h))]
    n = len(h.tiers())
    assert n >= 2  # the invalid tool call escalated
    cascade_run = h.check_nested(n)
    sequence = h.runs[cascade_run]["parent"]
    assert sequence is not None and h.runs[sequence]["kind"] == "chain"


async def test_astream_events_reports_tiers_as_children(escalating: CascadeChatModel, queries: dict[str, str]) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | escalating
    events = [e async for e in chain.astream_events({"q": queries["cheap_first"]}, version="v2")]
    starts = [e for e in events if e["event"] == "on_chat_model_start"]
    cascade_start = next(e for e in starts if e["metadata"].get("ls_provider") == "crescade")
    children = [e for e in starts if e is not cascade_start]
    assert len(children) == 2
    assert all(cascade_start["run_id"] in e["parent_ids"] for e in children)
    shown = "".join(str(e["data"]["chunk"].content) for e in events
                    if e["event"] == "on_chat_model_stream" and "nostream" not in e["tags"])
    assert shown == GOOD_ANSWER


async def test_implicit_streaming_inside_a_runnable_nests_tiers(escalating: CascadeChatModel,
                                                                queries: dict[str, str]) -> None:
    """``invoke`` under ``astream_events`` takes the base class's implicit streaming branch."""
    step: Any = RunnableLambda(lambda q, config: escalating.invoke(q, config))
    h = Collector()
    events = [e async for e in step.astream_events(queries["cheap_first"], {"callbacks": [h]}, version="v2")]
    h.check_nested(2)
    streamed = [e for e in events if e["event"] == "on_chat_model_stream" and "nostream" not in e["tags"]]
    assert "".join(str(e["data"]["chunk"].content) for e in streamed) == GOOD_ANSWER


def test_langgraph_message_stream_shows_only_the_final_answer(make_model: Make, queries: dict[str, str]) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    final = "B, the valley matches best."
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": BAD_ANSWER}, strong={"answer": final})

    def call(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("llm", call)
    graph.add_edge(START, "llm")
    graph.add_edge("llm", END)
    app = graph.compile()
    h = Collector()
    pieces = [msg for msg, _ in app.stream({"messages": [HumanMessage(queries["cheap_first"])]},
                                           {"callbacks": [h]}, stream_mode="messages")]
    text = "".join(str(getattr(m, "content", m)) for m in pieces)
    assert text == final
    assert "not sure" not in text
    h.check_nested(3)


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
async def test_langsmith_tracer_created_from_the_environment_nests_tiers(
        escalating: CascadeChatModel, queries: dict[str, str], monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """With tracing switched on (as by ``LANGSMITH_TRACING``), LangChain creates its own tracer per
    top-level call; the tiers must reach the tracer that saw the cascade's run, or become root runs."""
    import langchain_core.tracers.langchain as lc_tracers
    from langsmith.run_helpers import tracing_context

    posted: list[Any] = []

    class OfflineTracer(lc_tracers.LangChainTracer):
        def __init__(self, **kwargs: Any) -> None:
            kwargs["client"] = kwargs.get("client") or object()  # never used: nothing is posted
            super().__init__(**kwargs)

        def _persist_run_single(self, run: Any) -> None:
            posted.append(run)

        @staticmethod
        def _update_run_single(run: Any) -> None:
            return None

    monkeypatch.setattr(lc_tracers, "LangChainTracer", OfflineTracer)
    with tracing_context(enabled=True):
        if mode == "invoke":
            escalating.invoke(queries["cheap_first"])
        elif mode == "stream":
            list(escalating.stream(queries["cheap_first"]))
        else:
            [c async for c in escalating.astream(queries["cheap_first"])]
    (root,) = [r for r in posted if r.parent_run_id is None]
    tiers = [r for r in posted if any(t.startswith("crescade:tier") for t in r.tags or [])]
    assert len(tiers) == 2 and len(posted) == 3
    assert all(r.parent_run_id == root.id and r.trace_id == root.trace_id for r in tiers)
