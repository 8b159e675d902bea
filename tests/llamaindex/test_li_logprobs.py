"""Token logprobs of live responses reach the judge (LlamaIndex): ``OpenAILike`` children over the fake OpenAI
server, asked for top-1 logprobs, chat and stream_chat. The served quality estimator sees the summary
``crescade collect`` records for the same tokens (no network: the server is on the loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI, token_logprobs, tokens_of
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LogProb
from llama_index.llms.openai_like import OpenAILike
from logprob_records import QUERY, logprob_cascade

from crescade import Answer
from crescade.seam import LogprobSummary, summarize_logprobs
from crescade_llamaindex import CascadeLLM
from crescade_llamaindex._messages import answer_from_response

TEXT = "The capital of Japan is Tokyo."  # what the fake answers QUERY


def _expected(model: str) -> LogprobSummary:
    tokens = tokens_of(TEXT)
    s = summarize_logprobs(tokens, token_logprobs(model, len(tokens)))
    assert s is not None
    return s


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI(stream_usage=False)
    try:
        yield s
    finally:
        s.stop()


def _child(server: FakeOpenAI, model: str, logprobs: bool, top: int = 1) -> OpenAILike:
    extra: dict[str, Any] = {"logprobs": True, "top_logprobs": top} if logprobs else {}
    return OpenAILike(api_base=server.base_url, api_key="sk-test", model=model, is_chat_model=True,
                      context_window=2048, max_tokens=32, temperature=0, max_retries=0, **extra)


@pytest.mark.parametrize("top", [0, 1])  # top_logprobs=0: LlamaIndex's own ``logprobs`` stay empty
def test_chat_and_stream_chat_give_the_same_summary(server: FakeOpenAI, top: int) -> None:
    child = _child(server, CHEAP_M, logprobs=True, top=top)
    messages = [ChatMessage(role="user", content=QUERY)]
    resp = child.chat(messages)
    assert answer_from_response(CHEAP_M, resp, QUERY).logprobs == _expected(CHEAP_M)
    chunks = list(child.stream_chat(messages))
    streamed = answer_from_response(CHEAP_M, chunks[-1], QUERY, chunks=chunks)
    assert streamed.text == TEXT and streamed.logprobs == _expected(CHEAP_M)


def test_llamaindex_logprobs_are_the_fallback() -> None:
    """A response without an OpenAI-style raw choice (another integration) is read from ``logprobs``."""
    tokens = tokens_of(TEXT)
    lps = token_logprobs(STRONG_M, len(tokens))
    resp = ChatResponse(message=ChatMessage(role="assistant", content=TEXT), raw={"choices": [{}]},
                        logprobs=[[LogProb(token=t, logprob=v, bytes=[])] for t, v in zip(tokens, lps, strict=True)])
    assert answer_from_response(STRONG_M, resp, QUERY).logprobs == _expected(STRONG_M)
    none = ChatResponse(message=ChatMessage(role="assistant", content=TEXT))
    assert answer_from_response(STRONG_M, none, QUERY).logprobs is None


@pytest.mark.parametrize("stream", [False, True])
def test_the_judge_reads_the_live_summary(server: FakeOpenAI, stream: bool) -> None:
    cascade = logprob_cascade()
    plan = cascade.plan(QUERY)

    def ask(logprobs: bool) -> dict[str, Any]:
        llm = CascadeLLM(llms={m: _child(server, m, logprobs) for m in (CHEAP_M, STRONG_M)}, cascade=cascade)
        messages = [ChatMessage(role="user", content=QUERY)]
        resp = list(llm.stream_chat(messages))[-1] if stream else llm.chat(messages)
        return dict(resp.additional_kwargs["crescade"])

    with_lp = ask(logprobs=True)
    want = cascade.judge(QUERY, Answer(TEXT, CHEAP_M, logprobs=_expected(CHEAP_M)), plan=plan, tier=0)
    assert with_lp["tiers"][0]["model"] == CHEAP_M
    assert with_lp["tiers"][0]["p"] == pytest.approx(want.p, rel=1e-9)
    assert want.escalate and with_lp["escalated"] and with_lp["model"] == STRONG_M

    without = ask(logprobs=False)
    bare = cascade.judge(QUERY, Answer(TEXT, CHEAP_M), plan=plan, tier=0)
    assert without["tiers"][0]["p"] == pytest.approx(bare.p, rel=1e-9) and bare.p != pytest.approx(want.p)
