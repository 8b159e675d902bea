"""``CascadeLLM`` over ``OpenAILike`` children talking to real llama.cpp servers (chat, stream, async, complete)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from live_support import CHEAP, LIVE_MODELS, STRONG, openai_like
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole

from crescade import Cascade
from crescade.engine.pricing import ModelCard
from crescade.tools.local import LocalServers
from crescade.tools.tasks import generate_tasks
from crescade_llamaindex import CascadeLLM

EXAMPLES = generate_tasks(2, seed=23, families=["unit_conversion", "list_operations"])


@pytest.fixture(scope="module")
def llm(servers: LocalServers, cascade: Cascade, prices: dict[str, ModelCard]) -> CascadeLLM:
    return CascadeLLM(llms=openai_like(servers.base_urls, timeout=180), cascade=cascade, prices=prices)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def check(resp: ChatResponse | CompletionResponse, *, streamed: bool) -> dict[str, Any]:
    """The account and the usage of a final response; returns the account."""
    account = resp.additional_kwargs["crescade"]
    assert account["ladder"] == list(LIVE_MODELS) and account["streamed"] is streamed
    tiers = account["tiers"]
    assert [t["model"] for t in tiers] == list(LIVE_MODELS[: len(tiers)])
    assert tiers[-1]["accepted"] is True and all(not t["accepted"] for t in tiers[:-1])
    assert account["model"] == tiers[-1]["model"] == resp.additional_kwargs["crescade_model"]
    assert resp.additional_kwargs["crescade_tier"] == len(tiers) - 1
    usage = resp.raw["usage"]  # type: ignore[index]
    assert usage["prompt_tokens"] == account["totals"]["input_tokens"] > 0
    assert usage["completion_tokens"] == account["totals"]["output_tokens"] > 0
    assert all(t["output_tokens"] > 0 and t["cost_usd"] > 0 for t in tiers)
    return account


def test_chat(llm: CascadeLLM) -> None:
    resp = llm.chat(user(EXAMPLES[0].prompt))
    assert isinstance(resp, ChatResponse) and (resp.message.content or "").strip()
    account = check(resp, streamed=False)
    assert resp.message.additional_kwargs["crescade"] == account
    # non-streamed: OpenAILike reports the server's exact usage for every tier
    assert all(t["usage_source"] == "provider" for t in account["tiers"])


def test_stream_chat(llm: CascadeLLM) -> None:
    chunks = list(llm.stream_chat(user(EXAMPLES[1].prompt)))
    assert len(chunks) >= 2
    final = chunks[-1]
    account = check(final, streamed=True)
    body = chunks[:-1]
    assert all(c.additional_kwargs["crescade_model"] in LIVE_MODELS for c in body)
    text = "".join(c.delta or "" for c in body)
    assert text.strip() and text == (final.message.content or "")
    last = account["tiers"][-1]
    if account["model"] == STRONG:  # the last tier streamed live: several deltas, timed
        assert len(body) >= 3
        assert last["ttft_s"] is not None and 0 < last["ttft_s"] <= last["latency_s"]
        assert account["ttft_s"] is not None and account["ttft_s"] > 0
    else:  # the cheap tier's buffered answer was accepted and emitted whole
        assert account["model"] == CHEAP and len(body) == 1


def test_stream_chat_live_from_the_strong_tier(cascade: Cascade, servers: LocalServers,
                                               prices: dict[str, ModelCard]) -> None:
    llm = CascadeLLM(llms=openai_like(servers.base_urls, timeout=180), cascade=cascade, prices=prices, max_depth=1)
    chunks = list(llm.stream_chat(user(EXAMPLES[2].prompt)))
    account = chunks[-1].additional_kwargs["crescade"]
    assert account["ladder"] == [STRONG] and account["model"] == STRONG
    deltas = [c.delta for c in chunks[:-1] if c.delta]
    assert len(deltas) >= 5
    tier = account["tiers"][0]
    assert 0 < tier["ttft_s"] < tier["latency_s"] and tier["tpot_s"] > 0
    assert tier["usage_source"] != "provider"  # llama.cpp streams no usage: counted here


def test_achat_concurrently(llm: CascadeLLM) -> None:
    async def run() -> list[ChatResponse]:
        return list(await asyncio.gather(*(llm.achat(user(e.prompt)) for e in EXAMPLES[:2])))

    for resp in asyncio.run(run()):
        assert (resp.message.content or "").strip()
        check(resp, streamed=False)


def test_complete(llm: CascadeLLM) -> None:
    resp = llm.complete("Reverse the word 'cascade'. Reply with the reversed word only.")
    assert isinstance(resp, CompletionResponse) and resp.text.strip()
    check(resp, streamed=False)
