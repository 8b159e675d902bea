"""CascadeChatModel behaviour over scripted children: construction, escalation, failures, streaming,
conversation floor, concurrency and the account."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool
from lc_scripted import ScriptedChatModel
from lc_support import BAD_ANSWER, GOOD_ANSWER, POOL, cards, scripted, topic_query
from pydantic import BaseModel, ValidationError

from crescade import Cascade, ModelCard
from crescade.serving.dispatch import DispatchFailedError
from crescade_langchain import CascadeChatModel

Make = Callable[..., CascadeChatModel]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Sum(BaseModel):
    """The sum of two numbers."""

    total: int


def account(msg: BaseMessage) -> dict[str, Any]:
    return msg.response_metadata["crescade"]


def calls(model: CascadeChatModel, name: str) -> list[str]:
    return cast(ScriptedChatModel, model.models[name]).calls


def collect(model: Any, inp: Any, **kw: Any) -> list[AIMessageChunk]:
    return list(model.stream(inp, **kw))


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    return full


# ---------------------------------------------------------------------- construction
def test_missing_or_extra_pool_model_is_a_clear_error(lc_cascade: Cascade) -> None:
    models = scripted()
    del models["mid"]
    with pytest.raises(ValidationError, match=r"missing chat model.*'mid'"):
        CascadeChatModel(models=models, cascade=lc_cascade)
    with pytest.raises(ValidationError, match="'gpt-x' not in the cascade's pool"):
        CascadeChatModel(models={**scripted(), "gpt-x": ScriptedChatModel()}, cascade=lc_cascade)


def test_unpriced_pool_model_is_a_clear_error(lc_cascade: Cascade) -> None:
    prices = cards()
    del prices["strong"]
    with pytest.raises(ValidationError, match=r"no price.*'strong'"):
        CascadeChatModel(models=scripted(), cascade=lc_cascade, prices=prices)


def test_unfitted_cascade_and_bad_window_are_errors(lc_cascade: Cascade) -> None:
    with pytest.raises(ValidationError, match="not fitted"):
        CascadeChatModel(models=scripted(), cascade=Cascade())
    with pytest.raises(ValidationError):
        CascadeChatModel(models=scripted(), cascade=lc_cascade, conversation_window=0)


def test_explicit_prices_are_used(lc_cascade: Cascade, queries: dict[str, str]) -> None:
    prices = {m: ModelCard(name=m, input_per_mtok=1000.0, output_per_mtok=1000.0) for m in POOL}
    model = CascadeChatModel(models=scripted(cheap={"answer": GOOD_ANSWER}), cascade=lc_cascade, prices=prices)
    out = model.invoke(queries["cheap_first"])
    tier = account(out)["tiers"][0]
    assert tier["cost_usd"] == pytest.approx((tier["input_tokens"] + tier["output_tokens"]) * 1000.0 / 1e6)


def test_from_artifact_and_extra_init_kwargs(lc_cascade: Cascade, tmp_path: Any, queries: dict[str, str]) -> None:
    lc_cascade.save(tmp_path / "artifact")
    model = CascadeChatModel.from_artifact(
        tmp_path / "artifact", models=scripted(cheap={"answer": GOOD_ANSWER}), monotone=False,
        temperature=0, max_tokens=100, timeout=60, stop=[], max_retries=2, api_key="x", streaming=True)
    assert model.monotone is False
    assert model.cascade.models_ == list(POOL)
    assert account(model.invoke(queries["cheap_first"]))["model"] == "cheap"


def test_identity_params_name_the_children(lc_cascade: Cascade) -> None:
    a = CascadeChatModel(models=scripted(), cascade=lc_cascade)
    renamed = {m: ScriptedChatModel(model_name=f"{m}-v2") for m in POOL}
    b = CascadeChatModel(models=renamed, cascade=lc_cascade)
    assert a._identifying_params["models"]["cheap"] == "scripted-chat:cheap"
    assert a._get_llm_string() != b._get_llm_string()  # distinct LLM-cache keys
    ls = a._get_ls_params(stop=["x"])
    assert (ls["ls_provider"], ls["ls_model_name"], ls["ls_model_type"], ls["ls_stop"]) == (
        "crescade", "crescade", "chat", ["x"])


def test_token_counting_is_offline(make_model: Make) -> None:
    model = make_model()
    assert model.get_num_tokens("Hello world, how are you?") > 0
    assert model.get_num_tokens_from_messages([HumanMessage("Hello world")]) > 0


# ---------------------------------------------------------------------- routing and escalation
def test_accepted_at_the_routed_tier(make_model: Make, queries: dict[str, str]) -> None:
    out = make_model(cheap={"answer": GOOD_ANSWER}).invoke(queries["cheap_first"])
    acc = account(out)
    assert out.content == GOOD_ANSWER
    assert (acc["routed_model"], acc["model"], acc["escalated"]) == ("cheap", "cheap", False)
    assert out.response_metadata["model_name"] == "cheap"
    assert [t["model"] for t in acc["tiers"]] == ["cheap"]


def test_low_quality_answer_escalates_and_usage_counts_every_tier(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": GOOD_ANSWER})
    out = model.invoke(queries["cheap_first"])
    acc = account(out)
    assert out.content == GOOD_ANSWER
    assert (acc["routed_model"], acc["model"], acc["escalated"], acc["answering_tier"]) == ("cheap", "mid", True, 1)
    rejected, accepted = acc["tiers"]
    assert rejected["accepted"] is False and rejected["p"] < rejected["threshold"]
    assert accepted["accepted"] is True and accepted["p"] >= accepted["threshold"]
    assert "escalated" in acc["reason"]
    usage = out.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == rejected["input_tokens"] + accepted["input_tokens"] == acc["totals"]["input_tokens"]
    assert usage["output_tokens"] == rejected["output_tokens"] + accepted["output_tokens"]
    assert acc["totals"]["cost_usd"] == pytest.approx(rejected["cost_usd"] + accepted["cost_usd"])
    assert out.response_metadata["model_name"] == "mid"
    assert calls(model, "strong") == []


async def test_provider_error_escalates(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"fail": True}, mid={"answer": GOOD_ANSWER})
    out = await model.ainvoke(queries["cheap_first"])
    acc = account(out)
    assert acc["model"] == "mid"
    assert acc["tiers"][0]["error"].startswith("ProviderError: cheap: 503")
    assert acc["tiers"][0]["reason"] == "raised ProviderError"
    assert acc["tiers"][0]["input_tokens"] == 0


@pytest.mark.parametrize("mode", ["schema_violation", "unparseable"])
def test_invalid_tool_arguments_escalate(make_model: Make, mode: str) -> None:
    model = make_model(cheap={"tool_args": mode}).bind_tools([add])
    out = model.invoke("Use the add tool to add 2 and 3")
    acc = account(out)
    assert acc["routed_model"] == "cheap"
    assert acc["tiers"][0]["reason"].startswith("invalid tool call: ")  # with the specific problem
    assert acc["model"] != "cheap"
    assert out.tool_calls and out.tool_calls[0]["name"] == "add"
    assert out.tool_calls[0]["args"] == {"a": 2, "b": 2}  # the scripted fake fills ints from the first digit


def test_structured_output_that_fails_to_parse_escalates(make_model: Make) -> None:
    model = make_model(cheap={"ignore_tools": True, "answer": "the total is 5"})
    structured = model.with_structured_output(Sum, include_raw=True)
    out = cast(dict[str, Any], structured.invoke("Add 5 and nothing: what is the sum?"))
    assert isinstance(out["parsed"], Sum)
    acc = account(out["raw"])
    assert acc["tiers"][0]["model"] == "cheap" and acc["tiers"][0]["reason"].startswith("invalid tool call: ")


def test_tools_are_bound_on_every_tier(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"fail": True}, mid={"tool_args": "schema_violation"})
    out = model.bind_tools([add], tool_choice="add").invoke(queries["cheap_first"] + "\nadd 4 and 4")
    assert out.response_metadata["model_name"] == "strong"
    assert out.tool_calls[0]["args"] == {"a": 4, "b": 4}
    reasons = [t["reason"] for t in account(out)["tiers"]]
    assert reasons[0] == "raised ProviderError" and reasons[2] == "last tier"
    assert reasons[1].startswith("invalid tool call: ")


def test_all_tiers_failing_raises_one_error_listing_every_tier(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"fail": True}, mid={"answer": BAD_ANSWER}, strong={"fail": True})
    with pytest.raises(DispatchFailedError) as info:
        model.invoke(queries["cheap_first"])
    err = info.value
    assert [f.model for f in err.failures] == ["cheap", "mid", "strong"]
    text = str(err)
    assert "tier 0 (cheap): ProviderError" in text
    assert "tier 1 (mid): AnswerRejectedError" in text
    assert "tier 2 (strong): ProviderError" in text
    assert err.total_cost_usd > 0  # mid's rejected answer was paid for
    with pytest.raises(DispatchFailedError):
        collect(model, queries["cheap_first"])


def test_max_depth_truncates_the_ladder(make_model: Make, queries: dict[str, str]) -> None:
    out = make_model(cheap={"answer": BAD_ANSWER}, max_depth=2).invoke(queries["cheap_first"])
    assert account(out)["ladder"] == ["cheap", "strong"]
    assert account(out)["model"] == "strong"


def test_usage_is_counted_when_children_do_not_report_it(make_model: Make, queries: dict[str, str]) -> None:
    knobs = {"report_usage": False}
    out = make_model(cheap={**knobs, "answer": BAD_ANSWER}, mid={**knobs, "answer": GOOD_ANSWER}).invoke(
        queries["cheap_first"])
    tiers = account(out)["tiers"]
    assert {t["usage_source"] for t in tiers} <= {"tiktoken", "estimate"}
    assert out.usage_metadata is not None
    assert out.usage_metadata["input_tokens"] == sum(t["input_tokens"] for t in tiers) > 0


# ---------------------------------------------------------------------- the account
def test_account_schema(make_model: Make, queries: dict[str, str]) -> None:
    out = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": GOOD_ANSWER}).invoke(queries["cheap_first"])
    acc = account(out)
    json.dumps(acc, allow_nan=False)
    assert set(acc) == {"cluster", "routed_model", "model", "answering_tier", "escalated", "reason", "route",
                        "unfamiliar", "knob_cost_unit", "ladder", "tiers", "totals", "floor", "streamed", "ttft_s",
                        "tpot_s",
                        "degraded", "spend_guard"}
    assert acc["unfamiliar"] is False and acc["route"].startswith("cluster ")
    assert set(acc["totals"]) == {"cost_usd", "input_tokens", "output_tokens", "latency_s"}
    for t in acc["tiers"]:
        assert set(t) == {"tier", "model", "p", "threshold", "accepted", "reason", "error", "input_tokens",
                          "output_tokens", "usage_source", "cost_usd", "latency_s", "ttft_s", "tpot_s",
                          "error_kind", "retry"}
    assert isinstance(acc["cluster"], int)
    assert acc["ladder"] == list(POOL)
    assert acc["streamed"] is False and acc["ttft_s"] > 0 and acc["tpot_s"] > 0


# ---------------------------------------------------------------------- streaming
def _check_stream(chunks: list[AIMessageChunk], *, hidden: str, shown: str) -> AIMessageChunk:
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert all(hidden not in str(c.content) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    assert sum(1 for c in chunks if c.response_metadata.get("model_name")) == 1
    assert chunks[-1].usage_metadata and chunks[-1].response_metadata.get("model_name")
    full = merged(chunks)
    assert full.content == shown
    return full


def test_stream_holds_the_rejected_draft(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": GOOD_ANSWER})
    full = _check_stream(collect(model, queries["cheap_first"]), hidden="not sure", shown=GOOD_ANSWER)
    acc = account(full)
    assert (acc["model"], acc["escalated"], acc["streamed"]) == ("mid", True, True)
    assert full.usage_metadata == model.invoke(queries["cheap_first"]).usage_metadata
    assert full.response_metadata["model_name"] == "mid"


async def test_astream_streams_the_last_tier_live(make_model: Make, queries: dict[str, str]) -> None:
    strong_text = "The answer is B because the options match the question best."
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": BAD_ANSWER}, strong={"answer": strong_text})
    chunks = [c async for c in model.astream(queries["cheap_first"])]
    assert len(chunks) > 5  # the strong model's words arrive one by one, then the account
    full = _check_stream(chunks, hidden="not sure", shown=strong_text)
    acc = account(full)
    assert acc["model"] == "strong" and [t["accepted"] for t in acc["tiers"]] == [False, False, True]
    assert acc["ttft_s"] is not None
    # the rejected drafts were streamed into a buffer, so every tier's TTFT and TPOT were measured
    assert all(t["ttft_s"] is not None and t["tpot_s"] is not None for t in acc["tiers"])
    assert all(t["ttft_s"] <= t["latency_s"] for t in acc["tiers"])


def test_stream_with_tools_aggregates_tool_calls(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"tool_args": "unparseable"}).bind_tools([add])
    full = merged(collect(model, queries["cheap_first"] + "\nadd 1 and 2"))
    assert full.tool_calls and full.tool_calls[0]["args"] == {"a": 1, "b": 1}
    assert not full.invalid_tool_calls
    assert account(full)["tiers"][0]["reason"].startswith("invalid tool call")


def test_last_tier_failing_mid_stream_raises(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": BAD_ANSWER},
                       strong={"answer": "one two three four", "fail_after_chunks": 2})
    with pytest.raises(DispatchFailedError, match="tier 2 \\(strong\\): ProviderError"):
        collect(model, queries["cheap_first"])


def test_non_streaming_child_output_is_converted(lc_cascade: Cascade, queries: dict[str, str]) -> None:
    models: dict[str, Any] = scripted(cheap={"answer": BAD_ANSWER}, mid={"answer": BAD_ANSWER})
    models["strong"] = FakeMessagesListChatModel(responses=[AIMessage(content="plain strong answer")])
    model = CascadeChatModel(models=models, cascade=lc_cascade)
    full = _check_stream(collect(model, queries["cheap_first"]), hidden="not sure", shown="plain strong answer")
    assert account(full)["tiers"][-1]["usage_source"] in ("tiktoken", "estimate")


# ---------------------------------------------------------------------- conversations
def _second_turn(model: CascadeChatModel, first_query: str, second_query: str) -> tuple[AIMessage, AIMessage]:
    first = model.invoke(first_query)
    second = model.invoke([HumanMessage(first_query), first, HumanMessage(second_query)])
    return first, second


def test_conversation_does_not_drop_below_an_escalated_tier(make_model: Make, queries: dict[str, str]) -> None:
    good_second = {"answer": lambda msgs: GOOD_ANSWER if len(msgs) > 1 else BAD_ANSWER}
    model = make_model(cheap=good_second, mid={"answer": GOOD_ANSWER})
    second_query = topic_query("geography", 99)
    first, second = _second_turn(model, queries["cheap_first"], second_query)
    assert (account(first)["model"], account(first)["escalated"]) == ("mid", True)
    acc = account(second)
    assert acc["floor"] == "mid"
    assert acc["ladder"][0] == "mid" and acc["model"] == "mid"
    assert calls(model, "cheap") == [queries["cheap_first"]]  # never asked on the second turn
    third = model.invoke([HumanMessage(queries["cheap_first"]), first, HumanMessage(second_query), second,
                          HumanMessage(topic_query("geography", 98))])
    assert account(third)["floor"] == "mid"  # carried forward by the floored (not escalated) second turn


def test_non_monotone_conversation_can_drop(make_model: Make, queries: dict[str, str]) -> None:
    good_second = {"answer": lambda msgs: GOOD_ANSWER if len(msgs) > 1 else BAD_ANSWER}
    model = make_model(cheap=good_second, mid={"answer": GOOD_ANSWER}, monotone=False)
    first, second = _second_turn(model, queries["cheap_first"], topic_query("geography", 99))
    assert account(first)["model"] == "mid"
    acc = account(second)
    assert acc["floor"] is None and acc["model"] == "cheap"


def test_routing_uses_the_conversation_window(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": GOOD_ANSWER}, mid={"answer": GOOD_ANSWER}, monotone=False,
                       conversation_window=1)
    history = [HumanMessage(queries["mid_first"]), AIMessage("B"), HumanMessage(queries["cheap_first"])]
    narrow = account(model.invoke(history))
    assert narrow["routed_model"] == model.cascade.plan(queries["cheap_first"]).routed_model
    wide = model.model_copy(update={"conversation_window": 6})
    expected = model.cascade.plan(
        f"user: {queries['mid_first']}\nassistant: B\nuser: {queries['cheap_first']}").routed_model
    assert account(wide.invoke(history))["routed_model"] == expected


# ---------------------------------------------------------------------- concurrency
async def test_hundred_concurrent_ainvoke_calls_get_their_own_accounts(lc_cascade: Cascade) -> None:
    def echo(good: bool) -> Callable[[list[BaseMessage]], str]:
        def answer(msgs: list[BaseMessage]) -> str:
            qid = str(msgs[-1].content).rsplit("#", 1)[1]
            return f"{GOOD_ANSWER} #{qid}" if good or int(qid) % 2 == 0 else f"{BAD_ANSWER} #{qid}"
        return answer

    models = {"cheap": ScriptedChatModel(model_name="cheap", answer=echo(False), delay_s=0.002),
              "mid": ScriptedChatModel(model_name="mid", answer=echo(True), delay_s=0.001),
              "strong": ScriptedChatModel(model_name="strong", answer=echo(True))}
    model = CascadeChatModel(models=models, cascade=lc_cascade)
    topics = ["geography", "chemistry", "finance"]
    prompts = [f"{topic_query(topics[i % 3], i)}\n#{i}" for i in range(100)]
    serial = [await model.ainvoke(p) for p in prompts]
    concurrent = await asyncio.gather(*(model.ainvoke(p) for p in prompts))

    def decisions(msg: BaseMessage) -> tuple[Any, ...]:
        acc = account(msg)
        return (acc["cluster"], acc["routed_model"], acc["model"], acc["escalated"], acc["ladder"],
                [(t["model"], t["p"], t["accepted"]) for t in acc["tiers"]], acc["totals"]["input_tokens"])

    for i, (s, c) in enumerate(zip(serial, concurrent, strict=True)):
        assert str(c.content).endswith(f"#{i}")
        assert decisions(c) == decisions(s)
    assert len({account(c)["cluster"] for c in concurrent}) > 1
    assert any(account(c)["escalated"] for c in concurrent) and not all(account(c)["escalated"] for c in concurrent)


# ---------------------------------------------------------------------- LangChain integration points
def test_llm_cache_keys_on_the_cascade(make_model: Make, queries: dict[str, str]) -> None:
    from langchain_core.caches import InMemoryCache

    model = make_model(cheap={"answer": GOOD_ANSWER}, cache=InMemoryCache())
    first = model.invoke(queries["cheap_first"])
    second = model.invoke(queries["cheap_first"])
    assert second.content == first.content
    assert calls(model, "cheap") == [queries["cheap_first"]]  # the second answer came from the cache


def test_bind_tools_fans_out_through_with_fallbacks(make_model: Make) -> None:
    primary = ScriptedChatModel(model_name="primary", fail=True)
    bound = primary.with_fallbacks([make_model()]).bind_tools([add])
    out = bound.invoke("add 6 and 7")
    assert out.tool_calls and out.tool_calls[0]["name"] == "add"
    assert out.response_metadata["crescade"]["model"] in POOL


def test_batch_keeps_inputs_apart(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": lambda msgs: f"{GOOD_ANSWER} {len(str(msgs[-1].content))}"})
    inputs = [queries["cheap_first"], queries["mid_first"], queries["finance"]]
    outs = model.batch(inputs)
    assert [account(o)["routed_model"] for o in outs] == [model.cascade.plan(q).routed_model for q in inputs]
