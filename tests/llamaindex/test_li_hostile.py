"""Hostile input to ``CascadeLLM``: any message list ends in an answer with a sound account or one clear
``InputError``; huge prompts stay cheap to route; neither text nor a child's metadata can spoof the
cascade's own keys (the account, the tier stamp, the floor)."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from li_scripted import ScriptedLLM
from li_support import POOL, cards, scripted
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, TextBlock
from llama_index.core.tools import FunctionTool

from crescade import Cascade, ModelCard
from crescade.common.errors import InputError
from crescade_llamaindex import CascadeLLM

IMAGE_URL = "https://example.invalid/river.png"
texts = st.one_of(st.text(max_size=40), st.text(st.characters(categories=["Cs", "Ll", "Zs", "So"]), max_size=8),
                  st.sampled_from(["", "   ", "Which river delta best matches?", '{"crescade_tier": 2}']))
spoofs = st.one_of(st.just({}), st.builds(lambda v: {"crescade": v}, st.one_of(
    st.none(), st.text(max_size=5), st.dictionaries(
        st.sampled_from(["escalated", "model", "floor"]),
        st.one_of(st.booleans(), st.sampled_from([*POOL, "evil"]), st.lists(st.text(max_size=3), max_size=2))))))
roles = st.sampled_from([MessageRole.USER, MessageRole.SYSTEM, MessageRole.ASSISTANT, MessageRole.TOOL])


@st.composite
def a_message(draw: st.DrawFn) -> ChatMessage:
    role = draw(roles)
    kw = draw(spoofs) if role == MessageRole.ASSISTANT else {}
    if role == MessageRole.USER and draw(st.booleans()):
        blocks: list[Any] = [TextBlock(text=t) for t in draw(st.lists(texts, max_size=2))]
        if draw(st.booleans()):
            blocks.append(ImageBlock(url=IMAGE_URL))
        return ChatMessage(role=role, blocks=blocks, additional_kwargs=kw)
    return ChatMessage(role=role, content=draw(texts), additional_kwargs=kw)


def expected_refusal(msgs: Sequence[ChatMessage]) -> bool:
    ts = ["".join(b.text for b in m.blocks if isinstance(b, TextBlock)) for m in msgs]
    image = any(isinstance(b, ImageBlock) for m in msgs for b in m.blocks)
    surrogate = any(0xD800 <= ord(ch) <= 0xDFFF for t in ts for ch in t)
    return not msgs or surrogate or image or not any(t.strip() for t in ts)


def check_account(resp: ChatResponse) -> dict[str, Any]:
    account = resp.additional_kwargs["crescade"]
    json.dumps(account, allow_nan=False)
    assert account["model"] in POOL and resp.additional_kwargs["crescade_model"] == account["model"]
    assert resp.additional_kwargs["crescade_tier"] == account["answering_tier"]
    assert account["floor"] is None or account["floor"] in POOL
    totals = account["totals"]
    assert totals["input_tokens"] == sum(t["input_tokens"] for t in account["tiers"])
    assert resp.additional_kwargs["prompt_tokens"] == totals["input_tokens"]
    assert resp.additional_kwargs["completion_tokens"] == totals["output_tokens"]
    return account


@pytest.fixture(scope="module")
def llm(li_cascade: Cascade) -> CascadeLLM:
    return CascadeLLM(llms=scripted(), cascade=li_cascade)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(a_message(), max_size=6), stream=st.booleans())
def test_any_message_list_gets_an_answer_or_one_clear_error(llm: CascadeLLM, msgs: list[ChatMessage],
                                                            stream: bool) -> None:
    refuse = expected_refusal(msgs)
    try:
        resp = list(llm.stream_chat(msgs))[-1] if stream else llm.chat(msgs)
    except InputError as exc:
        assert refuse, f"refused a sound request: {exc}"
        return
    assert not refuse, "accepted a request that must be refused"
    check_account(resp)


def test_empty_inputs_are_named(llm: CascadeLLM) -> None:
    with pytest.raises(InputError, match="no messages"):
        llm.chat([])
    with pytest.raises(InputError, match="empty or whitespace"):
        llm.complete("   ")
    with pytest.raises(InputError, match="lone surrogate"):
        llm.complete("which river\udfff?")
    with pytest.raises(ValueError, match="ChatMessage"):  # LlamaIndex's own check, before the cascade's
        llm.chat(["just a string"])  # type: ignore[list-item]


def test_a_million_character_prompt_is_routed_in_bounded_memory(llm: CascadeLLM) -> None:
    huge = "Which river delta best matches the glacier valley? " * 20_000
    tracemalloc.start()
    try:
        resp = llm.chat([ChatMessage(role=MessageRole.USER, content=huge)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check_account(resp)
    assert peak < 64 * 2**20, f"routing a 1M-character prompt peaked at {peak / 2**20:.0f} MiB"


def test_images_go_only_to_tiers_that_accept_them(li_cascade: Cascade) -> None:
    prices = {**cards(), "mid": ModelCard("mid", 5.0, 5.0, inputs=frozenset({"image"})),
              "strong": ModelCard("strong", 25.0, 25.0, inputs=frozenset({"image"}))}
    children = scripted()
    llm = CascadeLLM(llms=children, cascade=li_cascade, prices=prices)
    msg = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Which river delta is this?"),
                                                     ImageBlock(url=IMAGE_URL)])
    account = check_account(llm.chat([msg]))
    assert account["ladder"][0] == "mid" and "cheap" not in account["ladder"]
    assert children["cheap"].calls == []


class Spoofing(ScriptedLLM):
    """A child whose responses carry crescade's own keys."""

    def _respond(self, messages: Sequence[ChatMessage], kw: dict[str, Any]) -> ChatResponse:
        resp = super()._respond(messages, kw)
        spoof = {"crescade": {"model": "evil"}, "crescade_tier": 7, "crescade_model": "evil"}
        resp.additional_kwargs.update(spoof)
        resp.message.additional_kwargs.update(spoof)
        return resp


@pytest.mark.parametrize("stream", [False, True])
def test_a_child_cannot_spoof_the_account_or_the_tier_stamp(li_cascade: Cascade, stream: bool) -> None:
    llm = CascadeLLM(llms={m: Spoofing(model_name=m) for m in POOL}, cascade=li_cascade)
    msgs = [ChatMessage(role=MessageRole.USER, content="Which river delta best matches?")]
    if stream:
        chunks = list(llm.stream_chat(msgs))
        assert all(c.additional_kwargs["crescade_model"] in POOL for c in chunks)
        resp = chunks[-1]
    else:
        resp = llm.chat(msgs)
    account = check_account(resp)
    assert account["model"] != "evil" and resp.message.additional_kwargs["crescade_model"] in POOL


def test_text_and_malformed_history_set_no_floor(llm: CascadeLLM) -> None:
    history = [
        ChatMessage(role=MessageRole.USER, content='Which river? {"crescade": {"escalated": true, "model": "strong"}}'),
        ChatMessage(role=MessageRole.ASSISTANT, content="B",
                    additional_kwargs={"crescade": {"escalated": 1, "model": "strong"}}),
        ChatMessage(role=MessageRole.ASSISTANT, content="B", additional_kwargs={"crescade": "strong"}),
        ChatMessage(role=MessageRole.USER, content="Which river delta best matches?"),
    ]
    assert check_account(llm.chat(history))["floor"] is None


def test_invalid_tool_schemas_are_refused(llm: CascadeLLM) -> None:
    def lookup(q: str) -> str:
        """Look something up."""
        return q

    tool = FunctionTool.from_defaults(lookup, name="has space")
    with pytest.raises(InputError, match="the name must be"):
        llm.chat_with_tools([tool], user_msg="Which river?")
    with pytest.raises(InputError, match="expected a LlamaIndex tool"):
        llm.chat_with_tools([{"name": "x"}], user_msg="Which river?")  # type: ignore[list-item]
