"""Translation between LangChain messages and what the core needs: query text, floor, answer signals."""

from __future__ import annotations

import json
import math
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

from crescade.engine.decisions import Answer, UsageSource
from crescade.engine.tokens import resolve_usage
from crescade.serving.conversation import conversation_floor as core_floor
from crescade.serving.jsonschema_lite import schema_errors

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

_ANY_CHOICES = frozenset({"any", "required"})
_NOT_FORCED = frozenset({"auto", "none"})


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


def _tool_calls_text(msg: AIMessage) -> str:
    calls = [f"{tc['name']}({json.dumps(tc['args'], ensure_ascii=False, sort_keys=True)})" for tc in msg.tool_calls]
    calls += [f"{tc.get('name') or '?'}({tc.get('args') or ''})" for tc in msg.invalid_tool_calls]
    return "; ".join(calls)


def message_text(msg: BaseMessage) -> str:
    """A message rendered as text: its text parts, plus a summary of tool calls for AI messages."""
    text = content_text(msg.content)
    if isinstance(msg, AIMessage) and (msg.tool_calls or msg.invalid_tool_calls):
        calls = f"[tool calls: {_tool_calls_text(msg)}]"
        text = f"{text}\n{calls}" if text.strip() else calls
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


def render_query(messages: Sequence[BaseMessage], window: int) -> str:
    """The routing query: system messages plus the last ``window`` other messages, as ``role: text`` lines.

    A conversation that is one user message (no system message) is routed on its bare text, the
    form the cascade was calibrated on.
    """
    systems = [m for m in messages if isinstance(m, SystemMessage)]
    rest = [m for m in messages if not isinstance(m, SystemMessage)]
    tail = rest[-window:] if window > 0 else []
    if not systems and len(tail) == 1 and isinstance(tail[0], HumanMessage):
        return content_text(tail[0].content)
    return "\n".join(f"{_role(m)}: {message_text(m)}" for m in [*systems, *tail])


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
    or the name of the tool it forces."""
    if tool_choice is None or tool_choice is False:
        return False
    if tool_choice is True:
        return True
    if isinstance(tool_choice, str):
        if tool_choice in _NOT_FORCED:
            return False
        if tool_choice in _ANY_CHOICES:
            return True
        return tool_choice if any(_tool_name(t) == tool_choice for t in tools) else True
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        if isinstance(name, str):
            return name
        kind = tool_choice.get("type")
        return kind not in _NOT_FORCED
    return False


def tool_call_problems(msg: AIMessage, tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> list[str] | None:
    """Problems with ``msg``'s tool calls against the bound tools: ``None`` when there is nothing to
    check, ``[]`` when every call is valid, else one string per problem."""
    problems = [f"unparseable arguments for tool {tc.get('name')!r}" for tc in msg.invalid_tool_calls]
    forced = forced_tool(tool_choice, tools) if tools else False
    if not msg.tool_calls:
        if forced:
            problems.append("a tool call was required but none was made")
        return problems or None
    by_name = {n: t for t in tools if (n := _tool_name(t)) is not None}
    for tc in msg.tool_calls:
        name = tc["name"]
        if isinstance(forced, str) and name != forced:
            problems.append(f"tool {forced!r} was required, {name!r} was called")
        if not tools:
            continue  # tools bound outside the cascade: nothing to check against
        tool = by_name.get(name)
        if tool is None:
            problems.append(f"unknown tool {name!r}")
            continue
        schema = _tool_schema(tool)
        if schema is not None:
            problems += [f"tool {name!r}: {e}" for e in schema_errors(tc["args"], schema)]
    return problems


def _logprob_mean(metadata: Mapping[str, Any]) -> float | None:
    lp = metadata.get("logprobs")
    content = lp.get("content") if isinstance(lp, Mapping) else None
    if not isinstance(content, list):
        return None
    values = [float(t["logprob"]) for t in content
              if isinstance(t, Mapping) and isinstance(t.get("logprob"), (int, float))
              and math.isfinite(float(t["logprob"]))]
    return sum(values) / len(values) if values else None


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
    reason, mean token logprob, tool-call validity and, for a streamed call (``live``), measured TTFT
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
        finish_reason=_finish_reason(msg.response_metadata), logprob_mean=_logprob_mean(msg.response_metadata),
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
