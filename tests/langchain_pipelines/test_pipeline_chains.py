"""The cascade inside LCEL chains: prompt | cascade | parser, RAG, structured output, events, callbacks."""

from __future__ import annotations

from typing import Any, cast

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import BaseModel

from crescade_langchain import CascadeChatModel

from .pipeline_support import CHEAP, STRONG, CollectingHandler, Run, ScriptedChat, account

SYSTEM = "You are a terse assistant. Answer in one sentence."


def qa_chain(model: CascadeChatModel) -> Runnable[dict[str, Any], str]:
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    return prompt | model | StrOutputParser()


def tier_models(message: BaseMessage) -> list[str]:
    return [t["model"] for t in account(message)["tiers"]]


# ------------------------------------------------------------------------------------------------ LCEL
def test_lcel_chain_accepts_the_cheap_answer(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                             strong: ScriptedChat) -> None:
    out = qa_chain(cascade_model).invoke({"question": "What is the capital of Peru?"})
    assert out == "Lima."
    assert len(cheap.calls) == 1 and not strong.calls
    seen = cheap.calls[0].text
    assert SYSTEM in seen and "What is the capital of Peru?" in seen  # the formatted prompt reached the child


def test_lcel_chain_escalates_a_hedged_draft(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                             strong: ScriptedChat) -> None:
    out = qa_chain(cascade_model).invoke({"question": "What is 17 plus 25?"})
    assert out == "The answer is 42."  # strong's answer, never cheap's "I'm not sure, but it might be 43."
    assert len(cheap.calls) == 1 and len(strong.calls) == 1
    assert SYSTEM in strong.calls[0].text and "17 plus 25" in strong.calls[0].text


def test_lcel_chain_message_carries_the_account(cascade_model: CascadeChatModel) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    msg = (prompt | cascade_model).invoke({"question": "What is 17 plus 25?"})
    assert isinstance(msg, AIMessage)
    acc = account(msg)
    assert acc["routed_model"] == CHEAP and acc["model"] == STRONG and acc["escalated"] is True
    assert tier_models(msg) == [CHEAP, STRONG]
    assert msg.response_metadata["model_name"] == STRONG
    # usage is the honest total: the rejected draft was paid for too
    usage = msg.usage_metadata
    assert usage is not None
    tiers = acc["tiers"]
    assert usage["input_tokens"] == sum(t["input_tokens"] for t in tiers)
    assert usage["output_tokens"] == sum(t["output_tokens"] for t in tiers)
    assert acc["totals"]["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in tiers))
    assert tiers[0]["p"] < tiers[0]["threshold"]


async def test_lcel_chain_batch_async_and_stream(cascade_model: CascadeChatModel) -> None:
    chain = qa_chain(cascade_model)
    questions = [{"question": "What is the capital of Japan?"}, {"question": "What is 3 plus 4?"}]
    want = ["Tokyo.", "The answer is 7."]
    assert chain.batch(questions) == want
    assert await chain.abatch(questions) == want
    assert await chain.ainvoke(questions[1]) == want[1]
    parts = list(chain.stream(questions[1]))
    assert "".join(parts) == want[1] and len(parts) > 1
    aparts = [p async for p in chain.astream(questions[1])]
    assert "".join(aparts) == want[1]
    assert not any("not sure" in p for p in parts + aparts)  # the rejected draft never streams


# ------------------------------------------------------------------------------------------------ RAG
DOCS = [
    "The Glimmer river flows north through the valley of Orin.",
    "Orin's harvest festival is held every year in late September.",
    "The old bridge over the Glimmer was rebuilt in 1894.",
    "Tarn lake freezes solid for two months each winter.",
]


def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def rag_chain(model: CascadeChatModel, k: int = 2) -> tuple[Runnable[str, str], Any]:
    store = InMemoryVectorStore.from_texts(DOCS, DeterministicFakeEmbedding(size=64))
    retriever = store.as_retriever(search_kwargs={"k": k})
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer the question using only the context.\nContext:\n{context}"),
        ("human", "{question}"),
    ])
    chain = (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | prompt | model | StrOutputParser()
    )
    return chain, retriever


@pytest.mark.parametrize("question", ["When was the bridge over the Glimmer rebuilt?", "When is the festival?"])
def test_rag_chain_context_reaches_the_answering_child(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                                       strong: ScriptedChat, question: str) -> None:
    chain, retriever = rag_chain(cascade_model)
    retrieved = [d.page_content for d in retriever.invoke(question)]
    assert len(retrieved) == 2 and set(retrieved) <= set(DOCS)
    answer = chain.invoke(question)
    answering = [c for c in cheap.calls + strong.calls]
    assert answering, "no child was called"
    last = answering[-1]
    for doc in retrieved:
        assert doc in last.text, f"retrieved context {doc!r} did not reach the answering child"
    assert question in last.text
    assert answer == f"According to the context: {retrieved[0]}"


async def test_rag_chain_async(cascade_model: CascadeChatModel, cheap: ScriptedChat) -> None:
    chain, retriever = rag_chain(cascade_model, k=3)
    question = "How long does Tarn lake freeze?"
    retrieved = [d.page_content for d in await retriever.ainvoke(question)]
    answer = await chain.ainvoke(question)
    assert answer == f"According to the context: {retrieved[0]}"
    assert all(doc in cheap.calls[-1].text for doc in retrieved)


# ------------------------------------------------------------------------------------------------ structured output
class Capital(BaseModel):
    country: str
    city: str


class Total(BaseModel):
    value: int


def test_structured_output_valid_is_parsed(cascade_model: CascadeChatModel, cheap: ScriptedChat,
                                           strong: ScriptedChat) -> None:
    result = cascade_model.with_structured_output(Capital).invoke("What is the capital of Kenya?")
    assert result == Capital(country="Kenya", city="Nairobi")
    assert cheap.calls and cheap.calls[0].tools == ("Capital",)
    assert cheap.calls[0].tool_choice in ("any", "required", "Capital") or isinstance(cheap.calls[0].tool_choice, dict)
    assert not strong.calls


@pytest.mark.parametrize("bad_args", ["schema", "json"])
def test_structured_output_invalid_escalates(fitted_cascade: Any, bad_args: str) -> None:
    cheap = ScriptedChat(model_name=CHEAP, weak=True, bad_args=bad_args)  # type: ignore[arg-type]
    strong = ScriptedChat(model_name=STRONG)
    model = CascadeChatModel(models={CHEAP: cheap, STRONG: strong}, cascade=fitted_cascade)
    out = model.with_structured_output(Total, include_raw=True).invoke("What is 17 plus 25?")
    assert isinstance(out, dict)
    assert out["parsed"] == Total(value=42) and out["parsing_error"] is None
    raw = out["raw"]
    acc = account(raw)
    assert acc["escalated"] is True and acc["model"] == STRONG
    assert tier_models(raw) == [CHEAP, STRONG]
    assert "invalid" in acc["tiers"][0]["reason"]
    assert strong.calls[0].tools == ("Total",)
    # the plain form returns the stronger tier's parsed result
    assert model.with_structured_output(Total).invoke("What is 17 plus 25?") == Total(value=42)


async def test_structured_output_async(cascade_model: CascadeChatModel) -> None:
    assert await cascade_model.with_structured_output(Total).ainvoke("What is 20 plus 22?") == Total(value=42)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | cascade_model.with_structured_output(Capital)
    assert await chain.ainvoke({"q": "What is the capital of Chile?"}) == Capital(country="Chile", city="Santiago")


# ------------------------------------------------------------------------------------------------ events
async def test_astream_events_show_the_cascade_and_filter_children(cascade_model: CascadeChatModel) -> None:
    chain = qa_chain(cascade_model)
    events = [e async for e in chain.astream_events({"question": "What is 3 plus 4?"}, version="v2")]
    starts = [e for e in events if e["event"] == "on_chat_model_start"]
    cascade_runs = [e for e in starts if "nostream" not in e.get("tags", [])]
    child_runs = [e for e in starts if "nostream" in e.get("tags", [])]
    assert len(cascade_runs) == 1
    assert len(child_runs) == 2  # the rejected cheap draft and the strong answer
    cascade_id = cascade_runs[0]["run_id"]
    for e in child_runs:
        assert e["parent_ids"] and e["parent_ids"][-1] == cascade_id  # nested under the cascade run
    text = "".join(e["data"]["chunk"].text for e in events
                   if e["event"] == "on_chat_model_stream" and e["run_id"] == cascade_id)
    assert text == "The answer is 7."
    end = next(e for e in events if e["event"] == "on_chat_model_end" and e["run_id"] == cascade_id)
    assert account(end["data"]["output"])["escalated"] is True

    filtered = [e async for e in chain.astream_events({"question": "What is 3 plus 4?"}, version="v2",
                                                      exclude_tags=["nostream"])]
    model_events = [e for e in filtered if e["event"].startswith("on_chat_model")]
    assert {e["run_id"] for e in model_events} and len({e["run_id"] for e in model_events}) == 1
    streamed = "".join(e["data"]["chunk"].text for e in model_events if e["event"] == "on_chat_model_stream")
    assert streamed == "The answer is 7."
    assert not any("not sure" in str(e["data"]) for e in filtered)
    chain_end = [e for e in filtered if e["event"] == "on_chain_end" and not e["parent_ids"]]
    assert chain_end and chain_end[-1]["data"]["output"] == "The answer is 7."


# ------------------------------------------------------------------------------------------------ callbacks
def _check_nesting(handler: CollectingHandler, *, expect_children: list[str]) -> None:
    chats = handler.chat_runs()
    parents = [r for r in chats if "nostream" not in r.tags]
    children = [r for r in chats if "nostream" in r.tags]
    assert len(parents) == 1, f"expected one cascade run, got {[(r.name, r.tags) for r in chats]}"
    top: Run = parents[0]
    chain_ancestors = [r for r in handler.parent_chain(top) if r.kind == "chain"]
    assert chain_ancestors, "the cascade run is not nested in the chain"
    assert len(children) == len(expect_children)
    for child in children:
        assert child.parent_run_id == top.run_id, f"child run {child.name} is not nested under the cascade"
        assert child.ended
    assert top.ended
    # children end before the cascade does and start after it
    order = [r.run_id for r in handler.order]
    assert all(order.index(c.run_id) > order.index(top.run_id) for c in children)


def test_callback_handler_sees_children_nested_sync(cascade_model: CascadeChatModel) -> None:
    handler = CollectingHandler()
    out = qa_chain(cascade_model).invoke({"question": "What is 3 plus 4?"}, config={"callbacks": [handler]})
    assert out == "The answer is 7."
    _check_nesting(handler, expect_children=[CHEAP, STRONG])


async def test_callback_handler_sees_children_nested_async(cascade_model: CascadeChatModel) -> None:
    handler = CollectingHandler()
    out = await qa_chain(cascade_model).ainvoke({"question": "What is 3 plus 4?"}, config={"callbacks": [handler]})
    assert out == "The answer is 7."
    _check_nesting(handler, expect_children=[CHEAP, STRONG])


def test_callback_handler_sees_children_nested_streaming(cascade_model: CascadeChatModel) -> None:
    handler = CollectingHandler()
    parts = list(qa_chain(cascade_model).stream({"question": "What is 3 plus 4?"}, config={"callbacks": [handler]}))
    assert "".join(parts) == "The answer is 7."
    _check_nesting(handler, expect_children=[CHEAP, STRONG])


async def test_callback_handler_sees_children_nested_astream(cascade_model: CascadeChatModel) -> None:
    handler = CollectingHandler()
    chain = qa_chain(cascade_model)
    parts = [p async for p in chain.astream({"question": "What is 3 plus 4?"}, config={"callbacks": [handler]})]
    assert "".join(parts) == "The answer is 7."
    _check_nesting(handler, expect_children=[CHEAP, STRONG])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_callback_nesting_with_structured_output_in_a_chain(cascade_model: CascadeChatModel,
                                                                  mode: str) -> None:
    """Bound children (RunnableBinding after bind_tools) must still nest inside a chain (notes A3)."""
    handler = CollectingHandler()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | cascade_model.with_structured_output(Total)
    question: dict[str, Any] = {"q": "What is 17 plus 25?"}
    config: Any = {"callbacks": [handler]}
    if mode == "invoke":
        result = chain.invoke(question, config=config)
    elif mode == "ainvoke":
        result = await chain.ainvoke(question, config=config)
    elif mode == "stream":
        result = list(chain.stream(question, config=config))[-1]
    else:
        result = [r async for r in chain.astream(question, config=config)][-1]
    assert result == Total(value=42)
    _check_nesting(handler, expect_children=[CHEAP, STRONG])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_tracer_run_tree_nests_children_under_the_cascade(cascade_model: CascadeChatModel, mode: str) -> None:
    """A LangSmith-style tracer (run trees built from parent ids) sees prompt, cascade(cheap, strong), parser."""
    tracer = RunCollectorCallbackHandler()
    chain = qa_chain(cascade_model)
    question, config = {"question": "What is 3 plus 4?"}, cast(RunnableConfig, {"callbacks": [tracer]})
    if mode == "invoke":
        chain.invoke(question, config)
    elif mode == "ainvoke":
        await chain.ainvoke(question, config)
    elif mode == "stream":
        list(chain.stream(question, config))
    else:
        [p async for p in chain.astream(question, config)]
    assert len(tracer.traced_runs) == 1
    root = tracer.traced_runs[0]
    assert [(r.run_type, r.name) for r in root.child_runs] == [
        ("prompt", "ChatPromptTemplate"), ("llm", "CascadeChatModel"), ("parser", "StrOutputParser")]
    cascade_run = root.child_runs[1]
    tiers = cascade_run.child_runs
    assert [(r.run_type, r.name) for r in tiers] == [("llm", "ScriptedChat"), ("llm", "ScriptedChat")]
    assert [next(t for t in r.tags or [] if t.startswith("crescade:")) for r in tiers] == [
        "crescade:tier0", "crescade:tier1"]

    def text(run: Any) -> str:
        return str(run.outputs["generations"][0][0]["text"])

    assert text(tiers[0]).startswith("I'm not sure")  # the rejected draft is traced, under the cascade
    assert text(tiers[1]) == text(cascade_run) == "The answer is 7."
