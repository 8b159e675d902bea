"""The cascade as the LLM of LangChain v1 / LangGraph agents: tool loops, structured responses, streaming."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from crescade_langchain import CascadeChatModel

from .pipeline_support import CHEAP, STRONG, CollectingHandler, ScriptedChat, account

QUESTION = "What is 3 plus 4?"


class Total(BaseModel):
    """The final numeric answer."""

    value: int


def make_add(log: list[tuple[Any, Any]]) -> Any:
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        log.append((a, b))
        return a + b

    return add


def ask(question: str = QUESTION) -> Any:
    """An agent's input state (``Any``: each agent factory declares its own input TypedDict)."""
    return {"messages": [HumanMessage(question)]}


def ai_messages(state: dict[str, Any]) -> list[AIMessage]:
    return [m for m in state["messages"] if isinstance(m, AIMessage)]


def create_react_agent(*args: Any, **kwargs: Any) -> Any:
    """LangGraph's prebuilt ReAct agent (deprecated in favour of create_agent, still widely used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent as factory

        return factory(*args, **kwargs)


def assert_tool_loop(state: dict[str, Any], log: list[tuple[Any, Any]]) -> None:
    messages: list[BaseMessage] = state["messages"]
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"], kinds
    call, result, final = messages[1], messages[2], messages[3]
    assert isinstance(call, AIMessage) and isinstance(result, ToolMessage) and isinstance(final, AIMessage)
    assert [c["name"] for c in call.tool_calls] == ["add"] and call.tool_calls[0]["args"] == {"a": 3, "b": 4}
    assert result.text == "7" and result.status == "success"
    assert final.text == "The answer is 7." and not final.tool_calls
    assert log == [(3, 4)]  # the tool ran once, with the valid arguments only


# ------------------------------------------------------------------------------------------------ create_agent
def test_create_agent_tool_loop_reaches_a_final_answer(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                                       strong: ScriptedChat) -> None:
    log: list[tuple[Any, Any]] = []
    state = create_agent(cascade_model, tools=[make_add(log)]).invoke(ask())
    assert_tool_loop(state, log)
    # both tiers were bound with the agent's tool
    assert cheap.calls and all(c.tools == ("add",) for c in cheap.calls + strong.calls)
    for msg in ai_messages(state):
        assert account(msg)["model"] == msg.response_metadata["model_name"]
        assert msg.usage_metadata is not None and msg.usage_metadata["total_tokens"] > 0


def test_create_agent_escalates_invalid_tool_arguments(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                                       strong: ScriptedChat) -> None:
    log: list[tuple[Any, Any]] = []
    state = create_agent(cascade_model, tools=[make_add(log)]).invoke(ask())
    assert_tool_loop(state, log)
    call = ai_messages(state)[0]
    acc = account(call)
    assert acc["routed_model"] == CHEAP and acc["model"] == STRONG and acc["escalated"] is True
    first, second = acc["tiers"]
    assert first["model"] == CHEAP and "invalid tool call" in first["reason"]
    assert second["model"] == STRONG
    # the rejected draft was paid for: its tokens are in the message's usage
    usage = call.usage_metadata
    assert usage is not None and usage["output_tokens"] == first["output_tokens"] + second["output_tokens"]
    # the cheap tier did produce the broken call (the tool never saw it)
    assert cheap.calls[0].tools == ("add",)
    # the final turn of an escalated conversation does not drop back to the cheap tier (monotone)
    final = account(ai_messages(state)[-1])
    assert final["routed_model"] == STRONG and final["escalated"] is False


async def test_create_agent_escalates_unparseable_tool_arguments_async(fitted_cascade: Any) -> None:
    cheap = ScriptedChat(model_name=CHEAP, weak=True, bad_args="json")
    strong = ScriptedChat(model_name=STRONG)
    model = CascadeChatModel(models={CHEAP: cheap, STRONG: strong}, cascade=fitted_cascade)
    log: list[tuple[Any, Any]] = []
    state = await create_agent(model, tools=[make_add(log)]).ainvoke(ask())
    assert_tool_loop(state, log)
    acc = account(ai_messages(state)[0])
    assert acc["escalated"] is True and "invalid tool call" in acc["tiers"][0]["reason"]
    assert not any(m.invalid_tool_calls for m in ai_messages(state))  # the broken call never reached the agent


def test_create_agent_without_escalation_stays_cheap(cascade_model: CascadeChatModel, strong: ScriptedChat) -> None:
    @tool
    def lookup_capital(country: str) -> str:
        """The capital city of a country."""
        return {"Peru": "Lima"}.get(country, "unknown")

    state = create_agent(cascade_model, tools=[lookup_capital]).invoke(ask("Use lookup_capital: capital of Peru?"))
    messages = state["messages"]
    assert isinstance(messages[2], ToolMessage) and messages[2].text == "Lima"
    assert messages[-1].text == "The answer is Lima."
    assert all(account(m)["model"] == CHEAP for m in ai_messages(state))
    assert not strong.calls


def test_create_agent_structured_response(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                          strong: ScriptedChat) -> None:
    log: list[tuple[Any, Any]] = []
    state = create_agent(cascade_model, tools=[make_add(log)], response_format=Total).invoke(ask())
    assert state["structured_response"] == Total(value=7)
    assert log == [(3, 4)]
    bound = {c.tools for c in cheap.calls + strong.calls}
    assert bound == {("add", "Total")}  # the agent's tools and its response schema, on every tier
    assert all(c.tool_choice in ("any", "required") for c in cheap.calls + strong.calls)


async def test_create_agent_structured_response_async(cascade_model: CascadeChatModel) -> None:
    log: list[tuple[Any, Any]] = []
    agent = create_agent(cascade_model, tools=[make_add(log)], response_format=Total)
    state = await agent.ainvoke(ask("What is 20 plus 22?"))
    assert state["structured_response"] == Total(value=42)


# ------------------------------------------------------------------------------------------------ create_react_agent
def test_create_react_agent_unbound(cascade_model: CascadeChatModel) -> None:
    log: list[tuple[Any, Any]] = []
    state = create_react_agent(cascade_model, tools=[make_add(log)]).invoke(ask())
    assert_tool_loop(state, log)


async def test_create_react_agent_prebound(cascade_model: CascadeChatModel, cheap: ScriptedChat) -> None:
    log: list[tuple[Any, Any]] = []
    add = make_add(log)
    agent = create_react_agent(cascade_model.bind_tools([add]), tools=[add])
    state = await agent.ainvoke(ask())
    assert_tool_loop(state, log)
    assert all(c.tools == ("add",) for c in cheap.calls)


# ------------------------------------------------------------------------------------------------ streaming
def _message_stream(agent: Any, question: str) -> list[tuple[AIMessageChunk, dict[str, Any]]]:
    out = []
    for msg, meta in agent.stream(ask(question), stream_mode="messages"):
        if isinstance(msg, AIMessageChunk):
            out.append((msg, meta))
    return out


def test_langgraph_messages_stream_shows_only_the_final_answer(cascade_model: CascadeChatModel,
                                                               cheap: ScriptedChat) -> None:
    agent = create_agent(cascade_model, tools=[])
    chunks = _message_stream(agent, "What is 12 plus 30?")
    text = "".join(m.text for m, _ in chunks)
    assert text == "The answer is 42."  # the strong answer, once
    assert len(cheap.calls) == 1  # the cheap tier did draft an answer ...
    assert all("not sure" not in m.text for m, _ in chunks)  # ... and it never reached the stream
    assert len({m.id for m, _ in chunks}) == 1  # one message: the cascade's, no child duplicates
    assert {meta["langgraph_node"] for _, meta in chunks} == {"model"}


def test_langgraph_messages_stream_in_a_tool_loop(cascade_model: CascadeChatModel) -> None:
    log: list[tuple[Any, Any]] = []
    agent = create_agent(cascade_model, tools=[make_add(log)])
    chunks = _message_stream(agent, QUESTION)
    ids = list(dict.fromkeys(m.id for m, _ in chunks))
    assert len(ids) == 2  # the tool-call turn and the answer turn, each once
    call_turn = [m for m, _ in chunks if m.id == ids[0]]
    merged = call_turn[0]
    for m in call_turn[1:]:
        merged = merged + m
    assert [c["args"] for c in merged.tool_calls] == [{"a": 3, "b": 4}]  # never the broken draft's args
    assert not merged.invalid_tool_calls
    assert "".join(m.text for m, _ in chunks if m.id == ids[1]) == "The answer is 7."
    assert log == [(3, 4)]


async def test_langgraph_messages_astream(cascade_model: CascadeChatModel) -> None:
    agent = create_agent(cascade_model, tools=[])
    parts = [m.text async for m, _ in agent.astream(ask("What is 12 plus 30?"), stream_mode="messages")
             if isinstance(m, AIMessageChunk)]
    assert "".join(parts) == "The answer is 42."


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_agent_callbacks_nest_children_under_the_cascade(cascade_model: CascadeChatModel, mode: str) -> None:
    handler = CollectingHandler()
    agent = create_agent(cascade_model, tools=[make_add([])])
    config: Any = {"callbacks": [handler]}
    state = agent.invoke(ask(), config=config) if mode == "sync" else await agent.ainvoke(ask(), config=config)
    assert state["messages"][-1].text == "The answer is 7."
    chats = handler.chat_runs()
    tops = [r for r in chats if "nostream" not in r.tags]
    children = [r for r in chats if "nostream" in r.tags]
    assert len(tops) == 2  # one cascade run per agent step
    top_ids = {r.run_id for r in tops}
    assert all(c.parent_run_id in top_ids for c in children)
    # step 1: cheap (rejected) then strong; step 2: strong only (monotone floor)
    assert sorted(sum(c.parent_run_id == t.run_id for c in children) for t in tops) == [1, 2]
    assert all(any(a.kind == "chain" for a in handler.parent_chain(t)) for t in tops)


async def test_agent_streaming_nests_children_under_the_cascade(cascade_model: CascadeChatModel) -> None:
    """LangGraph calls the model with invoke() under a streaming handler: the implicit streaming path."""
    handler = CollectingHandler()
    agent = create_agent(cascade_model, tools=[make_add([])])
    config: Any = {"callbacks": [handler]}
    parts = [m.text for m, _ in agent.stream(ask(), config, stream_mode="messages")
             if isinstance(m, AIMessageChunk)]
    assert "".join(parts) == "The answer is 7."
    chats = handler.chat_runs()
    tops = {r.run_id for r in chats if "nostream" not in r.tags}
    children = [r for r in chats if "nostream" in r.tags]
    assert len(tops) == 2 and len(children) == 3
    assert all(c.parent_run_id in tops for c in children)

    events = [e async for e in agent.astream_events(ask(), version="v2")]
    starts = [e for e in events if e["event"] == "on_chat_model_start"]
    top_ids = {e["run_id"] for e in starts if "nostream" not in e["tags"]}
    child_starts = [e for e in starts if "nostream" in e["tags"]]
    assert len(top_ids) == 2 and len(child_starts) == 3
    assert all(e["parent_ids"][-1] in top_ids for e in child_starts)
    final = [e for e in events if e["event"] == "on_chat_model_stream" and e["run_id"] in top_ids]
    assert "".join(e["data"]["chunk"].text for e in final) == "The answer is 7."


async def test_concurrent_agent_runs_keep_their_own_accounts_and_traces(cascade_model: CascadeChatModel) -> None:
    """40 agent runs at once over one cascade: answers, accounts and run nesting never cross."""
    handler = CollectingHandler()
    log: list[tuple[Any, Any]] = []
    agent = create_agent(cascade_model, tools=[make_add(log)])
    questions = [f"What is {i} plus {i + 1}?" if i % 2 else "What is the capital of Peru?" for i in range(40)]
    config: Any = {"callbacks": [handler]}
    states = await asyncio.gather(*(agent.ainvoke(ask(q), config=config) for q in questions))
    for i, state in enumerate(states):
        final = state["messages"][-1]
        if i % 2:
            assert final.text == f"The answer is {2 * i + 1}."
            first = account(ai_messages(state)[0])
            assert first["escalated"] is True and "invalid tool call" in first["tiers"][0]["reason"]
        else:
            assert final.text == "Lima." and account(final)["model"] == CHEAP
    assert sorted(log) == sorted((i, i + 1) for i in range(1, 40, 2))
    chats = handler.chat_runs()
    tops = {r.run_id: r for r in chats if "nostream" not in r.tags}
    children = [r for r in chats if "nostream" in r.tags]
    assert len(tops) == 20 * 2 + 20  # two cascade steps per arithmetic run, one per capital run
    assert len(children) == 20 * 3 + 20  # cheap + strong, then strong; cheap only
    assert all(c.parent_run_id in tops for c in children)
