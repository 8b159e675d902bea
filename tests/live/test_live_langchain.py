"""``CascadeChatModel`` over ``ChatOpenAI`` children talking to real llama.cpp servers (invoke, stream, async)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from live_support import CHEAP, LIVE_MODELS, MAX_TOKENS, STRONG

from crescade import Cascade
from crescade.engine.pricing import ModelCard
from crescade.tools.graders import get_grader
from crescade.tools.local import LocalServers
from crescade.tools.tasks import generate_tasks
from crescade_langchain import CascadeChatModel
from crescade_langchain.calibration import openai_compatible_models

EXAMPLES = generate_tasks(2, seed=11, families=["arith_one_step", "string_manipulation"])


@pytest.fixture(scope="module")
def model(servers: LocalServers, cascade: Cascade, prices: dict[str, ModelCard]) -> CascadeChatModel:
    children = openai_compatible_models(servers.base_urls, api_key="sk-local", max_tokens=MAX_TOKENS, timeout=180)
    return CascadeChatModel(models=children, cascade=cascade, prices=prices)


def check_account(account: dict[str, Any], *, streamed: bool) -> list[dict[str, Any]]:
    """The account names real tiers of the CI ladder, in order, and its totals add up; returns the tiers."""
    assert account["ladder"] == list(LIVE_MODELS)
    assert account["streamed"] is streamed
    tiers = account["tiers"]
    assert 1 <= len(tiers) <= 2
    assert [t["model"] for t in tiers] == list(LIVE_MODELS[: len(tiers)])
    assert [t["tier"] for t in tiers] == list(range(len(tiers)))
    assert account["model"] == tiers[-1]["model"] and account["answering_tier"] == len(tiers) - 1
    assert account["escalated"] is (len(tiers) == 2)
    assert all(t["accepted"] is False for t in tiers[:-1]) and tiers[-1]["accepted"] is True
    answered = [t for t in tiers if t["error"] is None]
    assert answered and all(t["output_tokens"] > 0 and t["cost_usd"] > 0 and t["latency_s"] > 0 for t in answered)
    totals = account["totals"]
    assert totals["input_tokens"] == sum(t["input_tokens"] for t in tiers)
    assert totals["output_tokens"] == sum(t["output_tokens"] for t in tiers)
    assert totals["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in tiers))
    return tiers


def test_invoke_answers_with_a_real_tier_and_accounts_for_it(model: CascadeChatModel) -> None:
    ex = EXAMPLES[0]
    msg = model.invoke([HumanMessage(ex.prompt)])
    assert isinstance(msg, AIMessage) and isinstance(msg.content, str) and msg.content.strip()
    account = msg.response_metadata["crescade"]
    tiers = check_account(account, streamed=False)
    assert msg.response_metadata["model_name"] == account["model"]
    # non-streamed llama.cpp calls report exact usage, and usage_metadata sums every tier called
    assert all(t["usage_source"] == "provider" for t in tiers)
    usage = msg.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == account["totals"]["input_tokens"] > 0
    assert usage["output_tokens"] == account["totals"]["output_tokens"] > 0
    assert tiers[-1]["output_tokens"] <= MAX_TOKENS
    assert get_grader(ex.grader)(msg.content, ex.reference) in (True, False)


def test_stream_from_the_last_tier_is_live(model: CascadeChatModel) -> None:
    """``max_depth=1`` keeps only the strongest tier, so the answer streams token by token from the server."""
    live = CascadeChatModel(models=model.models, cascade=model.cascade, prices=model.prices, max_depth=1)
    chunks = list(live.stream([HumanMessage(EXAMPLES[1].prompt)]))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    content = [c for c in chunks if isinstance(c.content, str) and c.content]
    assert len(content) >= 5, f"expected a live token stream, got {len(content)} content chunk(s)"
    last = chunks[-1]
    account = last.response_metadata["crescade"]
    assert account["ladder"] == [STRONG] and account["streamed"] is True
    assert last.response_metadata["model_name"] == STRONG
    assert 0 < account["ttft_s"] < account["totals"]["latency_s"]
    tier = account["tiers"][0]
    assert 0 < tier["ttft_s"] < tier["latency_s"] and tier["tpot_s"] > 0
    # llama.cpp streams no usage: the tokens are counted and marked as not from the provider
    assert tier["usage_source"] != "provider" and tier["output_tokens"] > 0
    assert last.usage_metadata is not None and last.usage_metadata["output_tokens"] == tier["output_tokens"]
    text = "".join(str(c.content) for c in chunks)
    assert text.strip()


def test_stream_through_the_ladder_measures_every_tier(model: CascadeChatModel) -> None:
    """Drafts are streamed into a buffer, so TTFT and TPOT are measured for each tier called."""
    chunks = list(model.stream([HumanMessage(EXAMPLES[2].prompt)]))
    account = chunks[-1].response_metadata["crescade"]
    tiers = check_account(account, streamed=True)
    assert tiers[0]["model"] == CHEAP
    for t in tiers:
        assert t["ttft_s"] is not None and 0 < t["ttft_s"] <= t["latency_s"]
        assert t["tpot_s"] is not None and t["tpot_s"] > 0
    assert account["ttft_s"] is not None and account["ttft_s"] > 0
    content = [c for c in chunks[:-1] if c.content]
    if account["escalated"]:  # the draft was rejected: the strong tier streamed live
        assert account["ttft_s"] > tiers[0]["latency_s"]
        assert len(content) >= 2
    else:  # the accepted draft is emitted whole
        assert len(content) == 1
    assert "".join(str(c.content) for c in chunks).strip()


def test_ainvoke_and_abatch_run_concurrently(model: CascadeChatModel) -> None:
    prompts = [[HumanMessage(e.prompt)] for e in EXAMPLES[:3]]

    async def run() -> tuple[AIMessage, list[AIMessage]]:
        single = model.ainvoke(prompts[0])
        batch = model.abatch(prompts, config={"max_concurrency": 3})
        one, many = await asyncio.gather(single, batch)
        return one, many  # type: ignore[return-value]

    one, many = asyncio.run(run())
    assert len(many) == 3
    for msg in (one, *many):
        assert isinstance(msg, AIMessage) and str(msg.content).strip()
        check_account(msg.response_metadata["crescade"], streamed=False)
        assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
