"""Faults on the wire: a loopback OpenAI-compatible server answers 429 (with and without Retry-After), 5xx,
resets the connection, sends a body that is not JSON, hangs, or cuts a stream; the real clients users run
(LangChain's ``ChatOpenAI``, LlamaIndex's ``OpenAILike``) raise their own errors, and the cascade reads each
for what it is and escalates (or cools down, or retries)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai_server import FakeOpenAI
from li_support import POOL, fitted_cascade, topic_query

from crescade.serving.reliability import Cooldowns, Reliability

QUERY = next(q for q in (topic_query("geography", s) for s in range(40))
             if fitted_cascade().plan(q).ladder == POOL)
WIRE = {m: f"{m}-m" for m in POOL}  # pool name -> the server's model name


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI()
    yield s
    s.stop()


def langchain_model(url: str, rel: Reliability) -> Any:
    from langchain_openai import ChatOpenAI

    from crescade_langchain import CascadeChatModel

    kids = {m: ChatOpenAI(base_url=url, api_key="sk-test-not-a-key", model=WIRE[m], max_retries=0,  # type: ignore[arg-type]
                          timeout=10, stream_usage=True) for m in POOL}
    return CascadeChatModel(models=kids, cascade=fitted_cascade(), reliability=rel)


def llamaindex_llm(url: str, rel: Reliability) -> Any:
    from llama_index.llms.openai_like import OpenAILike

    from crescade_llamaindex import CascadeLLM

    kids = {m: OpenAILike(api_base=url, api_key="sk-test-not-a-key", model=WIRE[m], is_chat_model=True,
                          max_retries=0, timeout=10, context_window=4096) for m in POOL}
    return CascadeLLM(llms=kids, cascade=fitted_cascade(), reliability=rel)


def ask(adapter: str, url: str, rel: Reliability, mode: str) -> dict[str, Any]:
    if adapter == "langchain":
        model = langchain_model(url, rel)
        if mode == "sync":
            return dict(model.invoke(QUERY).response_metadata["crescade"])
        if mode == "async":
            return dict(asyncio.run(model.ainvoke(QUERY)).response_metadata["crescade"])
        return dict(list(model.stream(QUERY))[-1].response_metadata["crescade"])
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    llm = llamaindex_llm(url, rel)
    msgs = [ChatMessage(role=MessageRole.USER, content=QUERY)]
    if mode == "sync":
        return dict(llm.chat(msgs).additional_kwargs["crescade"])
    if mode == "async":
        return dict(asyncio.run(llm.achat(msgs)).additional_kwargs["crescade"])
    return dict(list(llm.stream_chat(msgs))[-1].additional_kwargs["crescade"])


CASES = [  # wire fault on the cheap tier -> the kind the cascade must read from the client's exception
    ("429", "rate_limit"),
    ("429-bare", "rate_limit"),
    ("500", "server"),
    ("503", "server"),
    ("reset", "connection"),
    ("malformed", "malformed"),
    ("hang", "timeout"),
]


@pytest.mark.parametrize("adapter", ["langchain", "llamaindex"])
@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
@pytest.mark.parametrize(("fault", "kind"), CASES)
def test_a_wire_fault_is_read_for_what_it_is_and_escalates(server: FakeOpenAI, adapter: str, mode: str,
                                                          fault: str, kind: str) -> None:
    if fault == "malformed" and mode == "stream":
        fault, kind = "stream-cut", "connection"  # a stream's broken body
    server.fail_next(WIRE["cheap"], fault)
    cd = Cooldowns()
    account = ask(adapter, server.base_url, Reliability(tier_timeout={"cheap": 1.0}, cooldowns=cd), mode)
    first = account["tiers"][0]
    assert first["model"] == "cheap" and first["error_kind"] == kind, first
    assert account["escalated"] is True and account["model"] in ("mid", "strong")
    if fault == "429":
        assert 29 < cd.remaining("cheap") <= 30  # the server's Retry-After, read from the client's exception
    elif fault == "429-bare":
        assert 0 < cd.remaining("cheap") <= cd.base_s
    else:
        assert cd.remaining("cheap") == 0


@pytest.mark.parametrize("adapter", ["langchain", "llamaindex"])
def test_a_5xx_is_retried_on_the_same_tier_when_asked(server: FakeOpenAI, adapter: str) -> None:
    server.fail_next(WIRE["cheap"], "503")
    account = ask(adapter, server.base_url, Reliability(max_retries=1, retry_backoff_s=0.0, cooldowns=Cooldowns()),
                  "sync")
    first, second = account["tiers"][:2]
    assert (first["model"], first["error_kind"], first["retry"]) == ("cheap", "server", 0)
    assert (second["model"], second["error"], second["retry"]) == ("cheap", None, 1)
