"""Unit tests of the message translation: routing query, floor, tool-call checks, answer signals."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage

from crescade.serving.jsonschema_lite import schema_errors
from crescade_langchain._messages import (
    answer_from_message,
    as_chunk,
    conversation_floor,
    forced_tool,
    render_query,
    tool_call_problems,
)
from crescade_langchain._stream import LiveStream

POOL = ("cheap", "mid", "strong")
ADD: dict[str, Any] = {"type": "function", "function": {"name": "add", "description": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                     "op": {"type": "string", "enum": ["plus", "minus"]}},
    "required": ["a", "b"]}}}


def _ai(model: str | None, *, escalated: bool = False, floor: str | None = None, text: str = "ok") -> AIMessage:
    meta = {"crescade": {"model": model, "escalated": escalated, "floor": floor}} if model else {}
    return AIMessage(content=text, response_metadata=meta)


def test_single_user_message_is_routed_on_its_bare_text() -> None:
    assert render_query([HumanMessage("What is the capital of France?")], 6) == "What is the capital of France?"


def test_window_keeps_system_messages_and_the_last_turns() -> None:
    msgs = [SystemMessage("Be brief."), *[HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}")
                                          for i in range(10)]]
    query = render_query(msgs, 3)
    assert query.splitlines() == ["system: Be brief.", "assistant: a7", "user: q8", "assistant: a9"]


def test_tool_calls_and_results_are_summarised_and_non_text_parts_skipped() -> None:
    msgs = [
        HumanMessage(content=[{"type": "text", "text": "add 2 and 3"},
                              {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
        AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}]),
        ToolMessage("5", tool_call_id="c1", name="add"),
    ]
    query = render_query(msgs, 6)
    assert "user: add 2 and 3" in query
    assert "base64" not in query
    assert 'add({"a": 2, "b": 3})' in query
    assert "tool result (add): 5" in query


def test_floor_comes_from_the_latest_escalated_or_floored_answer() -> None:
    human = HumanMessage("q")
    assert conversation_floor([human], POOL) is None
    assert conversation_floor([human, _ai("cheap"), human], POOL) is None  # not escalated: no floor
    assert conversation_floor([human, _ai("mid", escalated=True), human], POOL) == "mid"
    # the floored turn carries the floor forward even though it was not escalated itself
    assert conversation_floor([human, _ai("mid", escalated=True), human, _ai("mid", floor="mid"), human],
                              POOL) == "mid"
    assert conversation_floor([human, _ai("strong", escalated=True), _ai(None), human], POOL) == "strong"
    assert conversation_floor([human, _ai("other-model", escalated=True)], POOL) is None


def test_schema_errors_cover_type_required_enum_and_nesting() -> None:
    schema = ADD["function"]["parameters"]
    assert schema_errors({"a": 1, "b": 2}, schema) == []
    assert schema_errors({"a": 1.0, "b": 2, "op": "plus"}, schema) == []
    assert any("missing required property 'b'" in e for e in schema_errors({"a": 1}, schema))
    assert any("expected integer" in e for e in schema_errors({"a": "one", "b": 2}, schema))
    assert any("not one of" in e for e in schema_errors({"a": 1, "b": 2, "op": "times"}, schema))
    assert schema_errors(True, {"type": "integer"}) != []  # a bool is not an integer
    nested = {"type": "object", "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}},
                                                "required": ["x"], "additionalProperties": False}},
              "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/P"}},
                             "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    assert schema_errors({"items": [{"x": 1}, {"x": 2.5}], "maybe": None}, nested) == []
    assert schema_errors({"items": [{"x": "no"}]}, nested) != []
    assert schema_errors({"items": [{"x": 1, "y": 2}]}, nested) != []
    assert schema_errors({"maybe": 3}, nested) != []


def test_tool_call_problems() -> None:
    good = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "1"}])
    wrong_type = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": "x", "b": 2}, "id": "1"}])
    unknown = AIMessage(content="", tool_calls=[{"name": "sub", "args": {}, "id": "1"}])
    unparseable = AIMessage(content="", invalid_tool_calls=[{"name": "add", "args": "{", "id": "1", "error": "x"}])
    text = AIMessage(content="no tools today")
    assert tool_call_problems(good, [ADD], None) == []
    assert tool_call_problems(wrong_type, [ADD], None)
    assert tool_call_problems(unknown, [ADD], None)
    assert tool_call_problems(unparseable, [ADD], None)
    assert tool_call_problems(text, [ADD], None) is None  # text is fine when no call is forced
    assert tool_call_problems(text, [ADD], "any")  # ... but not when one is (structured output)
    assert tool_call_problems(good, [ADD], {"type": "function", "function": {"name": "mul"}})
    assert tool_call_problems(good, [], None) == []  # tools bound outside the cascade: nothing to check


def test_forced_tool() -> None:
    assert forced_tool(None, [ADD]) is False
    assert forced_tool("auto", [ADD]) is False
    assert forced_tool("none", [ADD]) is False
    assert forced_tool("any", [ADD]) is True
    assert forced_tool("required", [ADD]) is True
    assert forced_tool(True, [ADD]) is True
    assert forced_tool("add", [ADD]) == "add"
    assert forced_tool({"type": "function", "function": {"name": "add"}}, [ADD]) == "add"
    assert forced_tool({"type": "tool", "name": "add"}, [ADD]) == "add"


def test_answer_signals_from_provider_metadata() -> None:
    msg = AIMessage(content="Paris", usage_metadata={"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
                    response_metadata={"finish_reason": "length",
                                       "logprobs": {"content": [{"token": "Par", "logprob": -0.5},
                                                                {"token": "is", "logprob": -1.5}]}})
    ans = answer_from_message("cheap", msg, [HumanMessage("capital?")], [], None)
    assert (ans.text, ans.model, ans.input_tokens, ans.output_tokens) == ("Paris", "cheap", 7, 2)
    assert ans.usage_source == "provider"
    assert ans.finish_reason == "length"
    assert ans.logprob_mean == -1.0
    assert ans.tool_calls_valid is None
    assert ans.payload is msg


def test_missing_usage_is_counted_and_marked() -> None:
    msg = AIMessage(content="Paris is the capital of France.", response_metadata={"stop_reason": "end_turn"})
    ans = answer_from_message("cheap", msg, [HumanMessage("What is the capital of France?")], [], None)
    assert ans.usage_source in ("tiktoken", "estimate")
    assert ans.input_tokens and ans.input_tokens > 0
    assert ans.output_tokens and ans.output_tokens > 0
    assert ans.finish_reason == "end_turn"


def _live(t0: float, t_first: float, t_last: float, n_output: int) -> LiveStream:
    live = LiveStream(t0)
    live.clock.t_first, live.clock.t_last, live.clock.n_output = t_first, t_last, n_output
    return live


def test_streamed_timing() -> None:
    msg = AIMessage(content="a b c", usage_metadata={"input_tokens": 1, "output_tokens": 5, "total_tokens": 6})
    ans = answer_from_message("cheap", msg, [], [], None, live=_live(10.0, 10.5, 11.5, 3))
    assert ans.ttft_s == 0.5
    assert ans.tpot_s == 0.25  # the provider's 5 tokens win over the 3 chunks
    assert ans.usage_source == "provider"


def test_stream_without_usage_counts_output_chunks() -> None:
    msg = AIMessage(content="one two three four five six")
    ans = answer_from_message("cheap", msg, [HumanMessage("count")], [], None, live=_live(0.0, 0.2, 2.2, 11))
    assert ans.output_tokens == 11
    assert ans.usage_source == "estimate"
    assert ans.tpot_s == 0.2
    assert ans.input_tokens and ans.input_tokens > 0


def test_live_stream_counts_and_times_output_chunks_only() -> None:
    live = LiveStream(time.perf_counter())
    assert live.add(AIMessageChunk(content="", response_metadata={"model_provider": "x"})) is not None
    assert live.t_first is None and live.clock.n_output == 0
    for piece in ("Hel", "lo"):
        out = live.add(AIMessageChunk(content=piece, response_metadata={"model_name": "m"}))
        assert out is not None and "model_name" not in out.response_metadata
    assert live.clock.n_output == 2 and live.t_first is not None and live.clock.t_last is not None
    assert live.clock.t_last >= live.t_first >= live.clock.t0
    assert live.message().content == "Hello"
    with pytest.raises(ValueError, match="no chunks"):
        LiveStream(0.0).message()


def test_as_chunk_converts_whole_messages() -> None:
    msg = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}])
    chunk = as_chunk(msg)
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.tool_call_chunks[0]["name"] == "add"
    assert json.loads(chunk.tool_call_chunks[0]["args"] or "") == {"a": 1, "b": 2}
    full = chunk + AIMessageChunk(content="", chunk_position="last")
    assert full.tool_calls[0]["args"] == {"a": 1, "b": 2}
    passthrough = AIMessageChunk(content="x")
    assert as_chunk(passthrough) is passthrough
