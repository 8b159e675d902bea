"""Translation between LangChain messages and what the core needs: query text, floor, answer signals."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    get_buffer_string,
)
from langchain_core.messages.tool import tool_call_chunk

from crescade import Answer
from crescade.seam import LogprobSummary, Turn, UsageSource, resolve_usage, summary_from_provider, with_calls
from crescade.seam import conversation_floor as core_floor
from crescade.seam import forced_tool as core_forced_tool
from crescade.seam import render_query as core_render_query
from crescade.seam import tool_call_problems as core_tool_call_problems

from ._stream import LiveStream

__all__ = [
    "answer_from_message",
    "as_chunk",
    "content_kinds",
    "conversation_floor",
    "forced_tool",
    "message_text",
    "render_query",
    "tool_call_problems",
]

def content_text(content: Any) -> str:
    """The text parts of a message content (a string or a list of parts); other parts are skipped."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content or ():
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


_PART_KINDS = {"image": "image", "image_url": "image", "audio": "audio", "input_audio": "audio", "file": "file",
               "document": "file", "pdf": "file", "video": "video"}


def content_kinds(content: Any) -> set[str]:
    """The kinds of media in a message content (``"image"``, ``"audio"``, ``"file"``, ``"video"``); text,
    tool-use and reasoning parts are not media and do not count."""
    if isinstance(content, str):
        return set()
    return {_PART_KINDS[part["type"]] for part in content or ()
            if isinstance(part, Mapping) and part.get("type") in _PART_KINDS}


def _calls(msg: AIMessage) -> list[tuple[str, Any]]:
    """``(name, args)`` of a message's tool calls; an invalid call's args stay the raw string (unparseable)."""
    calls: list[tuple[str, Any]] = [(tc.get("name") or "?", tc.get("args") or "") for tc in msg.invalid_tool_calls]
    return calls + [(tc["name"], tc["args"]) for tc in msg.tool_calls]


def message_text(msg: BaseMessage) -> str:
    """A message rendered as text: its text parts, plus a summary of tool calls for AI messages."""
    text = content_text(msg.content)
    if isinstance(msg, AIMessage):
        invalid = len(msg.invalid_tool_calls)
        calls = _calls(msg)
        return with_calls(text, calls[invalid:] + calls[:invalid])  # valid calls first, as they were made
    return text


def _role(msg: BaseMessage) -> str:
    if isinstance(msg, SystemMessage):
        return "system"
    if isinstance(msg, HumanMessage):
        return "user"
    if isinstance(msg, AIMessage):
        return "assistant"
    if isinstance(msg, ToolMessage):
        return f"tool result ({msg.name})" if msg.name else "tool result"
    return str(getattr(msg, "role", None) or msg.type)


def _turn(msg: BaseMessage) -> Turn:
    return _role(msg), message_text(msg)


def render_query(messages: Sequence[BaseMessage], window: int) -> str:
    """The routing query (core rule, :func:`crescade.seam.render_query`) over the messages' turns."""
    return core_render_query([_turn(m) for m in messages], window)


def conversation_floor(messages: Sequence[BaseMessage], pool: Sequence[str]) -> str | None:
    """The floor of the conversation (core policy), from earlier AI messages' crescade accounts."""
    return core_floor((m.response_metadata.get("crescade") for m in messages if isinstance(m, AIMessage)), pool)


def _tool_name(tool: Mapping[str, Any]) -> str | None:
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
    return name if isinstance(name, str) else None


def _tool_schema(tool: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fn = tool.get("function")
    for holder in (fn, tool):
        if isinstance(holder, Mapping):
            for key in ("parameters", "input_schema"):
                schema = holder.get(key)
                if isinstance(schema, Mapping):
                    return schema
    return None


def forced_tool(tool_choice: Any, tools: Sequence[Mapping[str, Any]]) -> str | bool:
    """``False`` if ``tool_choice`` lets the model answer in text, ``True`` if it forces some tool call,
    or the name of the tool it forces (core rule, :func:`crescade.seam.forced_tool`)."""
    return core_forced_tool(tool_choice, [n for t in tools if (n := _tool_name(t)) is not None])


def tool_call_problems(msg: AIMessage, tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> list[str] | None:
    """Problems with ``msg``'s tool calls against the bound OpenAI-format tools (core rule,
    :func:`crescade.seam.tool_call_problems`): ``None`` when there is nothing to check, ``[]`` when every
    call is valid, else one string per problem."""
    forced = forced_tool(tool_choice, tools) if tools else False
    schemas = {n: _tool_schema(t) for t in tools if (n := _tool_name(t)) is not None}
    return core_tool_call_problems(_calls(msg), schemas, forced)


def _logprobs(metadata: Mapping[str, Any]) -> LogprobSummary | None:
    """The token-logprob summary (core rule) of ``response_metadata["logprobs"]["content"]``: OpenAI's
    per-token ``{token, logprob}`` entries, concatenated over the chunks of a streamed message."""
    lp = metadata.get("logprobs")
    content = lp.get("content") if isinstance(lp, Mapping) else None
    return summary_from_provider(content) if isinstance(content, list) else None


def _finish_reason(metadata: Mapping[str, Any]) -> str | None:
    for key in ("finish_reason", "stop_reason", "done_reason"):
        if isinstance(metadata.get(key), str):
            return str(metadata[key])
    return None


def answer_from_message(
    model: str,
    msg: AIMessage,
    prompt: Sequence[BaseMessage],
    tools: Sequence[Mapping[str, Any]],
    tool_choice: Any,
    *,
    live: LiveStream | None = None,
) -> Answer:
    """The core's view of one tier's message: text, usage (provider, else counted and marked), finish
    reason, token-logprob summary, tool-call validity and, for a streamed call (``live``), measured TTFT
    and TPOT. A stream without usage has its output counted as its content chunks (marked ``estimate``).
    """
    text = message_text(msg)
    usage = msg.usage_metadata
    source: UsageSource = "provider"
    if usage and isinstance(usage.get("input_tokens"), int) and isinstance(usage.get("output_tokens"), int):
        n_in, n_out = int(usage["input_tokens"]), int(usage["output_tokens"])
    else:
        chunks = live.clock.estimated_tokens() if live is not None else None
        n_in, n_out, source = resolve_usage(
            prompt_text=get_buffer_string(list(prompt)), response_text=text,
            input_tokens=None, output_tokens=chunks, model=model)
        if chunks is not None:
            source = "estimate"
    problems = tool_call_problems(msg, tools, tool_choice)
    ttft = live.clock.ttft() if live is not None else None
    tpot = live.clock.tpot(n_out) if live is not None else None
    return Answer(
        text=text, model=model, input_tokens=n_in, output_tokens=n_out, usage_source=source,
        finish_reason=_finish_reason(msg.response_metadata), logprobs=_logprobs(msg.response_metadata),
        tool_calls_valid=None if problems is None else not problems, problems=tuple(problems or ()),
        ttft_s=ttft, tpot_s=tpot, payload=msg,
    )


def as_chunk(msg: BaseMessage) -> AIMessageChunk:
    """A child's output as an :class:`AIMessageChunk` (a non-streaming child yields whole messages)."""
    if isinstance(msg, AIMessageChunk):
        return msg
    if not isinstance(msg, AIMessage):
        return AIMessageChunk(content=msg.content, additional_kwargs=dict(msg.additional_kwargs),
                              response_metadata=dict(msg.response_metadata))
    chunks = [tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"], ensure_ascii=False), id=tc["id"],
                              index=i) for i, tc in enumerate(msg.tool_calls)]
    chunks += [tool_call_chunk(name=tc.get("name"), args=tc.get("args"), id=tc.get("id"), index=len(chunks) + i)
               for i, tc in enumerate(msg.invalid_tool_calls)]
    return AIMessageChunk(content=msg.content, additional_kwargs=dict(msg.additional_kwargs),
                          response_metadata=dict(msg.response_metadata), tool_call_chunks=chunks,
                          usage_metadata=msg.usage_metadata, id=msg.id, name=msg.name)
