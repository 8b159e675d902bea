"""CascadeLLM inside real LlamaIndex pipelines: RAG query engines, FunctionAgent, ReActAgent,
structured_predict, span nesting, instrumentation events, and parity with the LangChain adapter."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from li_support import BAD_ANSWER, GOOD_ANSWER, POOL
from llama_index.core import Document, PromptTemplate, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from crescade import Cascade
from crescade_llamaindex import CascadeEscalationEvent, CascadeLLM, CascadeRouteEvent

Make = Callable[..., CascadeLLM]
DOCS = ["The quality gate reads the routed model's answer and escalates weak answers to a stronger model.",
        "Clusters are learned offline from calibration prompts; each cluster is served by its cheapest good model."]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Sum(BaseModel):
    """The sum of two numbers."""

    total: int


class Collector(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def spans() -> Iterator[SimpleSpanHandler]:
    root = get_dispatcher()
    handler = SimpleSpanHandler()
    root.add_span_handler(handler)
    try:
        yield handler
    finally:
        root.span_handlers.remove(handler)


@pytest.fixture
def events() -> Iterator[Collector]:
    root = get_dispatcher()
    handler = Collector()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


def nested_under_cascade(handler: SimpleSpanHandler) -> None:
    """Every child LLM span has a CascadeLLM span among its ancestors."""
    by_id = {s.id_: s for s in handler.completed_spans}
    children = [s for s in handler.completed_spans if s.id_.startswith("ScriptedLLM.")]
    assert children, "no child span recorded"
    for s in children:
        parent, seen = s.parent_id, []
        while parent is not None and not parent.startswith("CascadeLLM."):
            seen.append(parent)
            parent = by_id[parent].parent_id if parent in by_id else None
        assert parent is not None, f"{s.id_} is not nested under a CascadeLLM span (ancestors {seen})"


# ---------------------------------------------------------------------- RAG
@pytest.mark.parametrize("streaming", [False, True])
def test_settings_llm_in_a_vector_store_query_engine(make_llm: Make, spans: SimpleSpanHandler,
                                                     streaming: bool) -> None:
    Settings.llm = make_llm(cheap={"answer": BAD_ANSWER}, mid={"answer": "The gate escalates weak answers."},
                            strong={"answer": "The gate escalates weak answers."})
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    engine = index.as_query_engine(similarity_top_k=2, streaming=streaming)
    resp = engine.query("What does the quality gate do?")
    text = "".join(resp.response_gen) if streaming else str(resp)
    assert len(resp.source_nodes) == 2
    assert BAD_ANSWER not in text and "escalates" in text
    nested_under_cascade(spans)


# ---------------------------------------------------------------------- agents
@pytest.mark.parametrize("streaming", [False, True])
async def test_function_agent_with_a_tool(make_llm: Make, spans: SimpleSpanHandler, streaming: bool) -> None:
    llm = make_llm()
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=llm, streaming=streaming)
    handler = agent.run("Please add 4 and 4 with the add tool")
    deltas = []
    async for ev in handler.stream_events():
        if hasattr(ev, "delta") and ev.delta:
            deltas.append(ev.delta)
    result = await handler
    assert "The tool returned: 8" in str(result)
    assert [tc.tool_name for tc in result.tool_calls] == ["add"]
    nested_under_cascade(spans)


async def test_function_agent_escalates_invalid_tool_arguments(make_llm: Make) -> None:
    llm = make_llm(cheap={"tool_args": "schema_violation"}, mid={"tool_args": "unparseable"})
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)
    result = await agent.run("Please add 4 and 4 with the add tool")
    assert "The tool returned: 8" in str(result)
    assert result.tool_calls[0].tool_kwargs == {"a": 4, "b": 4}


async def test_react_agent(make_llm: Make) -> None:
    def react(messages: Any) -> str:
        if any("Observation" in (m.content or "") for m in messages):
            return "Thought: I can answer without using any more tools.\nAnswer: 5"
        return 'Thought: I need to use a tool.\nAction: add\nAction Input: {"a": 2, "b": 3}'

    llm = make_llm(**{m: {"answer": react, "function_calling": False} for m in POOL})
    assert llm.metadata.is_function_calling_model is False
    result = await ReActAgent(tools=[FunctionTool.from_defaults(add)], llm=llm).run("What is 2 + 3?")
    assert str(result).strip() == "5"


def test_structured_predict_with_pydantic(make_llm: Make, spans: SimpleSpanHandler) -> None:
    out = make_llm().structured_predict(Sum, PromptTemplate("What is the sum of {x}?"), x="7 and 7")
    assert isinstance(out, Sum) and out.total == 7  # the scripted tiers fill integers with the first number
    nested_under_cascade(spans)


# ---------------------------------------------------------------------- instrumentation
@pytest.mark.parametrize("method", ["chat", "stream_chat", "achat", "astream_chat", "complete", "astream_complete"])
async def test_children_nest_and_decisions_are_events(make_llm: Make, li_queries: dict[str, str],
                                                      spans: SimpleSpanHandler, events: Collector,
                                                      method: str) -> None:
    llm = make_llm(cheap={"answer": BAD_ANSWER}, mid={"fail": True})
    q = li_queries["cheap_first"]
    msgs = [ChatMessage(role="user", content=q)]
    if method == "chat":
        llm.chat(msgs)
    elif method == "stream_chat":
        list(llm.stream_chat(msgs))
    elif method == "achat":
        await llm.achat(msgs)
    elif method == "astream_chat":
        [c async for c in await llm.astream_chat(msgs)]
    elif method == "complete":
        llm.complete(q)
    else:
        [c async for c in await llm.astream_complete(q)]
    nested_under_cascade(spans)
    tiers = {s.id_.split("-")[0] for s in spans.completed_spans if s.id_.startswith("ScriptedLLM.")}
    assert tiers, "no tier spans"
    route = [e for e in events.events if isinstance(e, CascadeRouteEvent)]
    esc = [e for e in events.events if isinstance(e, CascadeEscalationEvent)]
    assert [(r.routed_model, r.ladder) for r in route] == [("cheap", list(POOL))]
    assert [(e.model, e.next_model) for e in esc] == [("cheap", "mid"), ("mid", "strong")]
    assert esc[0].p is not None and esc[0].p < esc[0].threshold and esc[1].error.startswith("ProviderError")
    cascade_spans = {s.id_ for s in spans.completed_spans if s.id_.startswith("CascadeLLM.")}
    assert {e.span_id for e in [*route, *esc]} <= cascade_spans


# ---------------------------------------------------------------------- parity with LangChain
CASES: list[tuple[str, dict[str, Any]]] = [
    ("cheap_first", {}),
    ("cheap_first", {"cheap": {"answer": BAD_ANSWER}, "mid": {"answer": GOOD_ANSWER}}),
    ("cheap_first", {"cheap": {"fail": True}, "mid": {"answer": BAD_ANSWER}}),
    ("cheap_first", {"cheap": {"answer": GOOD_ANSWER}}),
    ("mid_first", {"mid": {"answer": BAD_ANSWER}}),
    ("chemistry", {"cheap": {"answer": GOOD_ANSWER}, "mid": {"answer": GOOD_ANSWER}}),
    ("finance", {"cheap": {"answer": BAD_ANSWER}}),
]


def _lc() -> Any:
    pytest.importorskip("langchain_core")
    here = str(Path(__file__).resolve().parents[1] / "langchain")
    if here not in sys.path:
        sys.path.insert(0, here)
    import lc_scripted

    from crescade_langchain import CascadeChatModel

    return lc_scripted, CascadeChatModel


def _view(acc: dict[str, Any]) -> dict[str, Any]:
    keep = ("tier", "model", "p", "threshold", "accepted", "reason", "input_tokens", "output_tokens",
            "usage_source", "cost_usd")
    return {"routed_model": acc["routed_model"], "model": acc["model"], "escalated": acc["escalated"],
            "reason": acc["reason"], "ladder": acc["ladder"], "cluster": acc["cluster"], "floor": acc["floor"],
            "tiers": [{k: (str(t[k]).split(":")[0] if k == "error" else t[k]) for k in keep} for t in acc["tiers"]],
            "totals": {k: acc["totals"][k] for k in ("cost_usd", "input_tokens", "output_tokens")}}


@pytest.mark.parametrize(("query", "knobs"), CASES)
@pytest.mark.parametrize("streaming", [False, True])
def test_same_decisions_and_account_as_the_langchain_adapter(li_cascade: Cascade, li_queries: dict[str, str],
                                                             make_llm: Make, query: str, knobs: dict[str, Any],
                                                             streaming: bool) -> None:
    lc_scripted, CascadeChatModel = _lc()
    from langchain_core.messages import HumanMessage

    q = li_queries[query]
    lc = CascadeChatModel(models={m: lc_scripted.ScriptedChatModel(model_name=m, **knobs.get(m, {})) for m in POOL},
                          cascade=li_cascade)
    li = make_llm(**knobs)
    if streaming:
        chunks = list(lc.stream([HumanMessage(q)]))
        lc_acc = next(c for c in chunks if "crescade" in c.response_metadata).response_metadata["crescade"]
        li_acc = list(li.stream_chat([ChatMessage(role="user", content=q)]))[-1].additional_kwargs["crescade"]
    else:
        lc_acc = lc.invoke([HumanMessage(q)]).response_metadata["crescade"]
        li_acc = li.chat([ChatMessage(role="user", content=q)]).additional_kwargs["crescade"]
    assert _view(li_acc) == _view(lc_acc)
    assert set(li_acc) == set(lc_acc)


def test_same_decisions_on_tool_calls_and_conversations(li_cascade: Cascade, li_queries: dict[str, str],
                                                        make_llm: Make) -> None:
    lc_scripted, CascadeChatModel = _lc()
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    q = li_queries["cheap_first"]
    knobs = {"cheap": {"tool_args": "schema_violation"}}
    lc = CascadeChatModel(models={m: lc_scripted.ScriptedChatModel(model_name=m, **knobs.get(m, {})) for m in POOL},
                          cascade=li_cascade).bind_tools([tool(add)])
    li = make_llm(**knobs)
    lc_acc = lc.invoke([HumanMessage(q)]).response_metadata["crescade"]
    li_acc = li.chat_with_tools([FunctionTool.from_defaults(add)],
                                chat_history=[ChatMessage(role="user", content=q)]).additional_kwargs["crescade"]
    assert _view(li_acc) == _view(lc_acc)
    assert li_acc["tiers"][0]["reason"].startswith("invalid tool call") and li_acc["model"] == "mid"
    assert (li_acc["routed_model"], li_acc["model"]) == (lc_acc["routed_model"], lc_acc["model"])
