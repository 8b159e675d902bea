"""Token logprobs of live responses reach the judge (LangChain): ``ChatOpenAI`` children over the fake
OpenAI server, asked for top-1 logprobs, invoked and streamed. The served quality estimator sees the summary
``crescade collect`` records for the same tokens (no network: the server is on the loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI, token_logprobs, tokens_of
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from logprob_records import QUERY, logprob_cascade

from crescade import Answer
from crescade.seam import LogprobSummary, summarize_logprobs
from crescade_langchain import CascadeChatModel
from crescade_langchain._messages import answer_from_message, as_chunk
from crescade_langchain._stream import LiveStream

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


def _child(server: FakeOpenAI, model: str, logprobs: bool) -> ChatOpenAI:
    extra: dict[str, Any] = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
    return ChatOpenAI(base_url=server.base_url, api_key="sk-test", model=model, temperature=0,  # type: ignore[arg-type]
                      max_retries=0, **extra)


def test_invoked_and_streamed_children_give_the_same_summary(server: FakeOpenAI) -> None:
    child = _child(server, CHEAP_M, logprobs=True)
    prompt = [HumanMessage(QUERY)]
    msg = child.invoke(prompt)
    assert isinstance(msg, AIMessage)
    assert answer_from_message(CHEAP_M, msg, prompt, [], None).logprobs == _expected(CHEAP_M)
    live = LiveStream(0.0)
    for chunk in child.stream(prompt):
        live.add(as_chunk(chunk))
    streamed = answer_from_message(CHEAP_M, live.message(), prompt, [], None, live=live)
    assert streamed.text == TEXT and streamed.logprobs == _expected(CHEAP_M)
    assert all(req.get("logprobs") is True and req.get("top_logprobs") == 1 for req in server.requests)


@pytest.mark.parametrize("stream", [False, True])
def test_the_judge_reads_the_live_summary(server: FakeOpenAI, stream: bool) -> None:
    cascade = logprob_cascade()
    plan = cascade.plan(QUERY)

    def ask(logprobs: bool) -> dict[str, Any]:
        model = CascadeChatModel(models={m: _child(server, m, logprobs) for m in (CHEAP_M, STRONG_M)},
                                 cascade=cascade)
        if stream:
            chunks = list(model.stream(QUERY))
            return dict(chunks[-1].response_metadata["crescade"])
        return dict(model.invoke(QUERY).response_metadata["crescade"])

    with_lp = ask(logprobs=True)
    want = cascade.judge(QUERY, Answer(TEXT, CHEAP_M, logprobs=_expected(CHEAP_M)), plan=plan, tier=0)
    assert with_lp["tiers"][0]["model"] == CHEAP_M
    assert with_lp["tiers"][0]["p"] == pytest.approx(want.p, rel=1e-9)
    # cheap-m's unsure tokens are what calibration saw on its wrong answers: the answer is escalated
    assert want.escalate and with_lp["escalated"] and with_lp["model"] == STRONG_M

    without = ask(logprobs=False)  # the same answer without logprobs is judged on its other features alone
    bare = cascade.judge(QUERY, Answer(TEXT, CHEAP_M), plan=plan, tier=0)
    assert without["tiers"][0]["p"] == pytest.approx(bare.p, rel=1e-9) and bare.p != pytest.approx(want.p)
