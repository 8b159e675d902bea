"""CascadeLLM behaviour over scripted LlamaIndex LLMs: construction, metadata, the eight call methods,
escalation, provider errors, usage shapes, tools, conversation floor, concurrency and the account."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from li_scripted import ScriptedLLM
from li_support import BAD_ANSWER, GOOD_ANSWER, POOL, cards, scripted
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool

from crescade import Cascade, ModelCard
from crescade.common.errors import PoolError, PricingError
from crescade.serving.dispatch import DispatchFailedError
from crescade_llamaindex import CascadeLLM

Make = Callable[..., CascadeLLM]
ESCALATE = {"cheap": {"answer": BAD_ANSWER}, "mid": {"answer": GOOD_ANSWER}, "strong": {"answer": GOOD_ANSWER}}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = FunctionTool.from_defaults(add)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def account(resp: ChatResponse | CompletionResponse) -> dict[str, Any]:
    return resp.additional_kwargs["crescade"]


def calls(llm: CascadeLLM, name: str) -> list[str]:
    child = llm.llms[name]
    assert isinstance(child, ScriptedLLM)
    return child.calls


# ---------------------------------------------------------------------- construction and metadata
def test_pool_must_match_and_be_priced(li_cascade: Cascade) -> None:
    llms = scripted()
    del llms["mid"]
    with pytest.raises(PoolError, match="missing LLM"):
        CascadeLLM(llms=llms, cascade=li_cascade)
    with pytest.raises(PoolError, match="not in the cascade's pool"):
        CascadeLLM(llms={**scripted(), "other": ScriptedLLM()}, cascade=li_cascade)
    with pytest.raises(PricingError, match="'strong'"):
        CascadeLLM(llms=scripted(), cascade=li_cascade, prices={m: c for m, c in cards().items() if m != "strong"})
    with pytest.raises(PoolError, match="not fitted"):
        CascadeLLM(llms=scripted(), cascade=Cascade())


def test_metadata_is_truthful(make_llm: Make, li_cascade: Cascade) -> None:
    md = make_llm(mid={"context_window": 4096}).metadata
    assert (md.context_window, md.is_chat_model, md.is_function_calling_model, md.model_name) == \
        (4096, True, True, "crescade")
    mixed = CascadeLLM(llms={**scripted(), "cheap": MockLLM()}, cascade=li_cascade)
    assert mixed.metadata.is_function_calling_model is False
    assert "llms" not in make_llm().to_dict()  # children (and their keys) never leak into payloads


# ---------------------------------------------------------------------- the eight methods
async def test_every_method_escalates_a_hedge_and_never_emits_the_draft(make_llm: Make,
                                                                        li_queries: dict[str, str]) -> None:
    q = li_queries["cheap_first"]
    llm = make_llm(**ESCALATE)
    outs: dict[str, Any] = {
        "chat": llm.chat(user(q)),
        "complete": llm.complete(q),
        "achat": await llm.achat(user(q)),
        "acomplete": await llm.acomplete(q),
    }
    streams = {
        "stream_chat": list(llm.stream_chat(user(q))),
        "stream_complete": list(llm.stream_complete(q)),
        "astream_chat": [c async for c in await llm.astream_chat(user(q))],
        "astream_complete": [c async for c in await llm.astream_complete(q)],
    }
    for name, chunks in streams.items():
        text = "".join(c.delta or "" for c in chunks)
        assert text == GOOD_ANSWER, name
        assert BAD_ANSWER not in text
        assert all("crescade_tier" in c.additional_kwargs for c in chunks), name
        assert [("crescade" in c.additional_kwargs) for c in chunks] == [False] * (len(chunks) - 1) + [True]
        outs[name] = chunks[-1]
    for name, resp in outs.items():
        acc = account(resp)
        assert (acc["routed_model"], acc["model"], acc["escalated"]) == ("cheap", "mid", True), name
        assert acc["tiers"][0]["reason"].startswith("p=") and not acc["tiers"][0]["accepted"]
        assert acc["totals"]["input_tokens"] == sum(t["input_tokens"] for t in acc["tiers"])
        assert resp.raw["usage"]["prompt_tokens"] == acc["totals"]["input_tokens"]
    assert outs["chat"].message.content == GOOD_ANSWER
    assert outs["chat"].message.additional_kwargs["crescade"] == account(outs["chat"])
    assert outs["stream_chat"].message.content == GOOD_ANSWER  # the final chunk holds the whole message


async def test_accepted_cheap_answer_and_last_tier_streams_live(make_llm: Make, li_queries: dict[str, str]) -> None:
    q = li_queries["cheap_first"]
    ok = make_llm(cheap={"answer": GOOD_ANSWER})
    acc = account(ok.chat(user(q)))
    assert (acc["model"], acc["escalated"], acc["answering_tier"]) == ("cheap", False, 0)
    assert calls(ok, "mid") == []
    long = "the strong model streams this answer word by word"
    live = make_llm(cheap={"fail": True}, mid={"fail": True}, strong={"answer": long})
    chunks = [c async for c in await live.astream_chat(user(q))]
    assert [c.delta for c in chunks[:-1] if c.delta] == [w + " " for w in long.split()[:-1]] + [long.split()[-1]]
    assert {c.additional_kwargs["crescade_model"] for c in chunks} == {"strong"}
    assert account(chunks[-1])["tiers"][-1]["ttft_s"] is not None


def test_provider_errors_escalate_and_all_failing_lists_every_tier(make_llm: Make,
                                                                   li_queries: dict[str, str]) -> None:
    q = li_queries["cheap_first"]
    acc = account(make_llm(cheap={"fail": True}, mid={"answer": GOOD_ANSWER}).chat(user(q)))
    assert acc["model"] == "mid" and acc["tiers"][0]["error"].startswith("ProviderError: cheap: 503")
    broken = make_llm(**{m: {"fail": True} for m in POOL})
    with pytest.raises(DispatchFailedError) as err:
        broken.chat(user(q))
    assert [f.model for f in err.value.failures] == list(POOL)
    with pytest.raises(DispatchFailedError):
        list(make_llm(cheap={"fail": True}, mid={"fail": True}, strong={"fail_after_chunks": 1})
             .stream_chat(user(q)))


@pytest.mark.parametrize("style", ["raw", "additional_kwargs", "anthropic", "ollama"])
def test_usage_shapes_are_read_as_provider_usage(make_llm: Make, li_queries: dict[str, str], style: str) -> None:
    acc = account(make_llm(cheap={"answer": GOOD_ANSWER, "usage_style": style}).chat(user(li_queries["cheap_first"])))
    assert acc["tiers"][0]["usage_source"] == "provider"
    assert acc["tiers"][0]["input_tokens"] > 0


def test_missing_usage_is_counted_and_marked(make_llm: Make, li_queries: dict[str, str]) -> None:
    acc = account(make_llm(cheap={"answer": GOOD_ANSWER, "report_usage": False}).chat(user(li_queries["cheap_first"])))
    assert acc["tiers"][0]["usage_source"] in ("tiktoken", "estimate")
    assert acc["tiers"][0]["input_tokens"] > 0


def test_token_counting_handler_counts_the_cascade_once(make_llm: Make, li_queries: dict[str, str]) -> None:
    counter = TokenCountingHandler()
    llm = make_llm(**ESCALATE)
    llm.callback_manager = CallbackManager([counter])  # children keep their own (empty) managers
    acc = account(llm.chat(user(li_queries["cheap_first"])))
    assert len(counter.llm_token_counts) == 1
    assert counter.prompt_llm_token_count == acc["totals"]["input_tokens"]
    assert counter.completion_llm_token_count == acc["totals"]["output_tokens"]


# ---------------------------------------------------------------------- tools
@pytest.mark.parametrize("broken", ["schema_violation", "unparseable"])
async def test_invalid_tool_arguments_escalate(make_llm: Make, li_queries: dict[str, str], broken: str) -> None:
    q = li_queries["cheap_first"]
    llm = make_llm(cheap={"tool_args": broken})
    resp = llm.chat_with_tools([ADD], chat_history=user(q))
    acc = account(resp)
    assert acc["tiers"][0]["reason"].startswith("invalid tool call") and acc["model"] == "mid"
    sel = llm.get_tool_calls_from_response(resp)
    assert [(s.tool_name, s.tool_kwargs) for s in sel] == [("add", {"a": 1, "b": 1})]
    chunks = [c async for c in await llm.astream_chat_with_tools([ADD], chat_history=user(q))]
    assert account(chunks[-1])["model"] == "mid"
    for c in chunks:  # every chunk can be parsed by the tier that made it
        llm.get_tool_calls_from_response(c, error_on_no_tool_call=False)
    assert llm.get_tool_calls_from_response(chunks[-1])[0].tool_name == "add"


def test_valid_tool_call_is_accepted_at_the_routed_tier(make_llm: Make, li_queries: dict[str, str]) -> None:
    llm = make_llm()
    resp = llm.chat_with_tools([ADD], chat_history=user(li_queries["cheap_first"]), tool_required=True)
    assert account(resp)["model"] == "cheap" and account(resp)["tiers"][0]["p"] == 1.0
    assert llm.predict_and_call([ADD], chat_history=user(li_queries["cheap_first"])).response == "2"


def test_forced_tool_not_called_escalates(make_llm: Make, li_queries: dict[str, str]) -> None:
    llm = make_llm(cheap={"ignore_tools": True})
    acc = account(llm.chat_with_tools([ADD], chat_history=user(li_queries["cheap_first"]), tool_required=True))
    assert acc["tiers"][0]["reason"].startswith("invalid tool call") and acc["model"] == "mid"


def test_history_sent_to_children_has_no_cascade_keys(make_llm: Make, li_queries: dict[str, str]) -> None:
    seen: list[list[ChatMessage]] = []

    def answer(messages: Any) -> str:
        seen.append(list(messages))
        return GOOD_ANSWER

    llm = make_llm(cheap={"answer": answer})
    first = llm.chat(user(li_queries["cheap_first"]))
    llm.chat([*user(li_queries["cheap_first"]), first.message, *user("and again?")])
    assert all(k not in m.additional_kwargs for m in seen[-1] for k in ("crescade", "crescade_tier"))


# ---------------------------------------------------------------------- conversations
@pytest.mark.parametrize("monotone", [True, False])
def test_conversation_floor_after_an_escalated_turn(make_llm: Make, li_queries: dict[str, str],
                                                    monotone: bool) -> None:
    q = li_queries["cheap_first"]
    llm = make_llm(cheap={"answer": lambda ms: BAD_ANSWER if len(ms) == 1 else GOOD_ANSWER},
                   mid={"answer": GOOD_ANSWER}, monotone=monotone)
    first = llm.chat(user(q))
    assert account(first)["model"] == "mid"
    second = llm.chat([*user(q), first.message, *user(q)])
    acc = account(second)
    if monotone:
        assert (acc["floor"], acc["ladder"][0], acc["model"]) == ("mid", "mid", "mid")
        third = llm.chat([*user(q), first.message, *user(q), second.message, *user(q)])
        assert account(third)["floor"] == "mid"  # carried forward by a floored (not escalated) answer
    else:
        assert acc["floor"] is None and acc["ladder"][0] == "cheap"


async def test_one_hundred_concurrent_achat_keep_their_own_answers(make_llm: Make,
                                                                   li_queries: dict[str, str]) -> None:
    llm = make_llm(cheap={"answer": lambda ms: f"A{ms[-1].content.split('#')[-1]}", "delay_s": 0.01},
                   mid={"answer": lambda ms: f"M{ms[-1].content.split('#')[-1]}", "delay_s": 0.01})
    q = li_queries["cheap_first"]
    resps = await asyncio.gather(*(llm.achat(user(f"{q} #{i}")) for i in range(100)))
    for i, r in enumerate(resps):
        assert r.message.content.endswith(str(i))
        assert account(r)["model"] == r.message.content[0].replace("A", "cheap").replace("M", "mid")


def test_prices_override_and_max_depth(make_llm: Make, li_queries: dict[str, str]) -> None:
    prices = {m: ModelCard(name=m, input_per_mtok=2.0, output_per_mtok=2.0) for m in POOL}
    llm = make_llm(cheap={"answer": BAD_ANSWER}, prices=prices, max_depth=2)
    acc = account(llm.chat(user(li_queries["cheap_first"])))
    assert acc["ladder"] == ["cheap", "strong"] and acc["model"] == "strong"


def test_streamed_drafts_are_held_back_but_timed(make_llm: Make, li_queries: dict[str, str]) -> None:
    long = "the strong model streams this answer word by word"
    llm = make_llm(cheap={"answer": BAD_ANSWER}, mid={"answer": BAD_ANSWER}, strong={"answer": long})
    chunks = list(llm.stream_chat(user(li_queries["cheap_first"])))
    assert {c.additional_kwargs["crescade_model"] for c in chunks} == {"strong"}  # no draft text leaked
    tiers = account(chunks[-1])["tiers"]
    assert [t["model"] for t in tiers] == ["cheap", "mid", "strong"]
    assert all(t["ttft_s"] is not None and t["tpot_s"] is not None for t in tiers)
    assert all(t["ttft_s"] <= t["latency_s"] for t in tiers)
