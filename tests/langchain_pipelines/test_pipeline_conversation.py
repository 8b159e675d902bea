"""The cascade in chat apps: multi-turn conversations, provider failures, fallbacks, usage accounting."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from crescade import AllTiersFailedError, Cascade
from crescade_langchain import CascadeChatModel, get_cascade_usage_callback

from .pipeline_support import CHEAP, STRONG, ProviderError, ScriptedChat, account


def chat_app(model: CascadeChatModel) -> Any:
    """A multi-turn chat app: an agent without tools whose conversations LangGraph keeps per thread."""
    return create_agent(model, tools=[], system_prompt="Be terse.", checkpointer=InMemorySaver())


def say(app: Any, thread: str, text: str) -> AIMessage:
    state = app.invoke({"messages": [HumanMessage(text)]}, config={"configurable": {"thread_id": thread}})
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage)
    return reply


def test_conversation_stays_on_the_strong_tier_after_an_escalation(cascade_model: CascadeChatModel,
                                                                   cheap: ScriptedChat) -> None:
    app = chat_app(cascade_model)
    turns = ["What is the capital of Peru?", "What is 17 plus 25?", "What is the capital of Japan?"]
    replies = [say(app, "t1", q) for q in turns]
    assert [r.text for r in replies] == ["Lima.", "The answer is 42.", "Tokyo."]
    routes = [(account(r)["routed_model"], account(r)["model"]) for r in replies]
    assert routes == [(CHEAP, CHEAP), (CHEAP, STRONG), (STRONG, STRONG)]  # no drop after the escalation
    assert account(replies[2])["floor"] == STRONG
    assert len(cheap.calls) == 2
    assert "Lima." in cheap.calls[1].text  # the conversation so far reached the child
    # another thread is routed on its own conversation
    assert account(say(app, "t2", "What is the capital of Japan?"))["model"] == CHEAP
    history = app.get_state({"configurable": {"thread_id": "t1"}}).values["messages"]
    assert len(history) == 6


def test_conversation_without_monotone_drops_back(fitted_cascade: Cascade) -> None:
    cheap, strong = ScriptedChat(model_name=CHEAP, weak=True), ScriptedChat(model_name=STRONG)
    model = CascadeChatModel(models={CHEAP: cheap, STRONG: strong}, cascade=fitted_cascade, monotone=False)
    app = chat_app(model)
    assert account(say(app, "t", "What is 17 plus 25?"))["model"] == STRONG
    reply = say(app, "t", "What is the capital of Japan?")
    assert account(reply)["model"] == CHEAP and account(reply)["floor"] is None


# ------------------------------------------------------------------------------------------------ failures
def failing_cascade(fitted_cascade: Cascade, cheap_error: str | None, strong_error: str | None
                    ) -> tuple[CascadeChatModel, ScriptedChat, ScriptedChat]:
    cheap = ScriptedChat(model_name=CHEAP, weak=True, error=cheap_error)
    strong = ScriptedChat(model_name=STRONG, error=strong_error)
    return CascadeChatModel(models={CHEAP: cheap, STRONG: strong}, cascade=fitted_cascade), cheap, strong


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream"])
async def test_provider_error_in_a_chain_escalates(fitted_cascade: Cascade, mode: str) -> None:
    model, cheap, strong = failing_cascade(fitted_cascade, "429 rate limited", None)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    q = {"q": "What is the capital of Peru?"}
    msg: BaseMessage
    if mode == "invoke":
        msg = (prompt | model).invoke(q)
    elif mode == "ainvoke":
        msg = await (prompt | model).ainvoke(q)
    else:
        chunks = [c for c in (prompt | model).stream(q) if isinstance(c, AIMessageChunk)]
        msg = add_ai_message_chunks(chunks[0], *chunks[1:])
    assert msg.text == "Lima."
    acc = account(msg)
    assert acc["model"] == STRONG and acc["escalated"] is True
    first = acc["tiers"][0]
    assert first["model"] == CHEAP and "ProviderError" in first["error"] and "429 rate limited" in first["error"]
    assert first["cost_usd"] == 0.0 and first["output_tokens"] == 0
    assert len(cheap.calls) == 1 and len(strong.calls) == 1
    assert (prompt | model | StrOutputParser()).invoke(q) == "Lima."


def test_every_tier_failing_raises_one_error_listing_each(fitted_cascade: Cascade) -> None:
    model, _, _ = failing_cascade(fitted_cascade, "503 overloaded", "timeout after 30 s")
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    with pytest.raises(AllTiersFailedError) as info:
        chain.invoke({"q": "What is the capital of Peru?"})
    text = str(info.value)
    assert "tier 0 (cheap): ProviderError: 503 overloaded" in text
    assert "tier 1 (strong): ProviderError: timeout after 30 s" in text
    assert [f.model for f in info.value.failures] == [CHEAP, STRONG]
    assert all(isinstance(f.error, ProviderError) for f in info.value.failures)


def test_provider_error_inside_an_agent_escalates(fitted_cascade: Cascade) -> None:
    model, cheap, _ = failing_cascade(fitted_cascade, "connection reset", None)

    @tool
    def lookup_capital(country: str) -> str:
        """The capital city of a country."""
        return {"Peru": "Lima"}.get(country, "unknown")

    agent = create_agent(model, tools=[lookup_capital])
    state = agent.invoke({"messages": [HumanMessage("Use lookup_capital: capital of Peru?")]})
    assert state["messages"][-1].text == "The answer is Lima."
    turns = [m for m in state["messages"] if isinstance(m, AIMessage)]
    assert "connection reset" in account(turns[0])["tiers"][0]["error"]
    assert account(turns[-1])["routed_model"] == STRONG  # floor after the escalation
    assert len(cheap.calls) == 1


# ------------------------------------------------------------------------------------------------ fallbacks
def test_with_fallbacks_binds_tools_on_the_cascade_and_the_fallback(cascade_model: CascadeChatModel,
                                                                     cheap: ScriptedChat) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    backup = ScriptedChat(model_name="backup")
    bound = cascade_model.with_fallbacks([backup]).bind_tools([add])
    msg = bound.invoke("What is 3 plus 4?")
    assert isinstance(msg, AIMessage) and msg.tool_calls[0]["args"] == {"a": 3, "b": 4}
    assert cheap.calls[0].tools == ("add",) and not backup.calls


def test_with_fallbacks_takes_over_when_every_tier_fails(fitted_cascade: Cascade) -> None:
    model, _, _ = failing_cascade(fitted_cascade, "down", "down too")
    backup = ScriptedChat(model_name="backup")
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model.with_fallbacks([backup]) | StrOutputParser()
    assert chain.invoke({"q": "What is the capital of Peru?"}) == "Lima."
    assert len(backup.calls) == 1


# ------------------------------------------------------------------------------------------------ usage
def test_usage_callback_sees_every_tier(cascade_model: CascadeChatModel) -> None:
    with get_usage_metadata_callback() as cb:
        msg = cascade_model.invoke("What is 17 plus 25?")
    acc = account(msg)
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["total_tokens"] == acc["totals"]["input_tokens"] + acc["totals"]["output_tokens"]
    cheap_tier = acc["tiers"][0]
    assert cb.usage_metadata[CHEAP]["output_tokens"] == cheap_tier["output_tokens"]  # the rejected draft's child run


def test_usage_callback_tells_the_cascade_from_its_children(cascade_model: CascadeChatModel) -> None:
    """crescade's usage handler counts every model call once: per model, rejected drafts included."""
    with get_cascade_usage_callback() as cb:
        msg = cascade_model.invoke("What is 17 plus 25?")
    assert msg.usage_metadata is not None
    account = msg.response_metadata["crescade"]
    assert account["escalated"]  # the cheap draft was paid for and rejected
    true_total = msg.usage_metadata["total_tokens"]
    per_key = {k: v["total_tokens"] for k, v in cb.usage_metadata.items()}
    assert set(per_key) == {t["model"] for t in account["tiers"]}
    assert sum(per_key.values()) == true_total, per_key
    for tier in account["tiers"]:
        assert per_key[tier["model"]] == tier["input_tokens"] + tier["output_tokens"]


def test_langchains_own_usage_callback_counts_the_summary_too(cascade_model: CascadeChatModel) -> None:
    """Documented behaviour of the standard handler: the cascade's summary is counted on top of its tiers."""
    with get_usage_metadata_callback() as cb:
        msg = cascade_model.invoke("What is 17 plus 25?")
    assert msg.usage_metadata is not None
    assert sum(v["total_tokens"] for v in cb.usage_metadata.values()) == 2 * msg.usage_metadata["total_tokens"]
