"""Translation between LlamaIndex messages/responses and what the core needs: query text, floor, answer signals.

The rules mirror ``crescade_langchain._messages`` so both adapters route and judge the same inputs the
same way: the routing query is the system messages plus the last ``window`` other messages as
``role: text`` lines (a lone user message is routed on its bare text); an assistant message's tool calls
are summarised as ``[tool calls: name({...})]``; the conversation floor is read from earlier assistant
messages' ``additional_kwargs["crescade"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole, ToolCallBlock

from crescade import Answer
from crescade.seam import (
    LogprobSummary,
    StreamClock,
    Turn,
    UsageSource,
    resolve_usage,
    summary_from_provider,
    with_calls,
)
from crescade.seam import conversation_floor as core_floor
from crescade.seam import forced_tool as core_forced_tool
from crescade.seam import render_query as core_render_query
from crescade.seam import tool_call_problems as core_tool_call_problems

__all__ = [
    "OUR_KEYS",
    "answer_from_response",
    "clean_history",
    "conversation_floor",
    "forced_tool",
    "message_text",
    "provider_usage",
    "render_query",
    "tool_call_problems",
]

OUR_KEYS = ("crescade", "crescade_tier", "crescade_model")
"""Keys the cascade adds to ``additional_kwargs`` (never sent on to a child model)."""
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "usage")
_IN_KEYS = ("prompt_tokens", "input_tokens", "prompt_token_count", "prompt_eval_count")
_OUT_KEYS = ("completion_tokens", "output_tokens", "candidates_token_count", "eval_count")
_SYSTEM_ROLES = frozenset({MessageRole.SYSTEM.value, "developer"})


def _role_value(msg: ChatMessage) -> str:
    role = msg.role
    return str(role.value if isinstance(role, MessageRole) else role)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


# ---------------------------------------------------------------------- tool calls in messages
def _message_calls(msg: ChatMessage) -> list[tuple[str, Any]]:
    """``(name, args)`` of the tool calls in a message (blocks first, else ``additional_kwargs["tool_calls"]``);
    ``args`` is a dict, or the raw string when it does not parse."""
    calls: list[tuple[str, Any]] = []
    for block in msg.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append((block.tool_name, _parsed(block.tool_kwargs)))
    if calls:
        return calls
    for tc in msg.additional_kwargs.get("tool_calls") or ():
        name = _get(tc, "tool_name")
        if name is not None:
            calls.append((str(name), _parsed(_get(tc, "tool_kwargs"))))
            continue
        fn = _get(tc, "function")
        if fn is not None and _get(fn, "name") is not None:
            calls.append((str(_get(fn, "name")), _parsed(_get(fn, "arguments"))))
    return calls


def _parsed(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args) if args.strip() else {}
        except ValueError:
            return args
    return args if args is not None else {}


def message_text(msg: ChatMessage) -> str:
    """A message rendered as text: its text, plus a summary of tool calls for assistant messages."""
    text = msg.content or ""
    if _role_value(msg) == MessageRole.ASSISTANT.value:
        text = with_calls(text, _message_calls(msg))
    return text


_BLOCK_KINDS = {"image": "image", "audio": "audio", "video": "video", "document": "file", "file": "file"}


def content_kinds(msg: ChatMessage) -> set[str]:
    """The kinds of media in a message's blocks (``ImageBlock`` -> ``"image"``, ``DocumentBlock`` -> ``"file"``,
    ...); text, tool-call and thinking blocks are not media and do not count."""
    return {_BLOCK_KINDS[b.block_type] for b in msg.blocks if getattr(b, "block_type", None) in _BLOCK_KINDS}


def _role(msg: ChatMessage) -> str:
    role = _role_value(msg)
    if role in _SYSTEM_ROLES:
        return "system"
    if role in (MessageRole.TOOL.value, MessageRole.FUNCTION.value):
        name = msg.additional_kwargs.get("name") or msg.additional_kwargs.get("tool_name")
        return f"tool result ({name})" if name else "tool result"
    return role


def render_query(messages: Sequence[ChatMessage], window: int) -> str:
    """The routing query (core rule, :func:`crescade.seam.render_query`) over the messages' turns."""
    turns: list[Turn] = [(_role(m), message_text(m)) for m in messages]
    return core_render_query(turns, window)


def buffer_string(messages: Sequence[ChatMessage]) -> str:
    """The prompt as text, for token estimates (same shape as LangChain's ``get_buffer_string``)."""
    names = {"system": "System", "developer": "System", "user": "Human", "assistant": "AI", "tool": "Tool",
             "function": "Function"}
    return "\n".join(f"{names.get(_role_value(m), _role_value(m))}: {message_text(m)}" for m in messages)


def conversation_floor(messages: Sequence[ChatMessage], pool: Sequence[str]) -> str | None:
    """The floor of the conversation (core policy), from earlier assistant messages' crescade accounts."""
    return core_floor((m.additional_kwargs.get("crescade") for m in messages
                       if _role_value(m) == MessageRole.ASSISTANT.value), pool)


def clean_history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Messages as a child model gets them: the cascade's own keys (and the usage totals it added) removed
    from earlier cascade answers, so providers that forward ``additional_kwargs`` never see them."""
    out = []
    for msg in messages:
        kw = msg.additional_kwargs
        if any(k in kw for k in OUR_KEYS):
            drop = set(OUR_KEYS) | set(_USAGE_KEYS)
            msg = msg.model_copy(update={"additional_kwargs": {k: v for k, v in kw.items() if k not in drop}})
        out.append(msg)
    return out


# ---------------------------------------------------------------------- tools
def _tool_name(tool: Any) -> str | None:
    name = getattr(getattr(tool, "metadata", None), "name", None)
    return name if isinstance(name, str) else None


def _tool_schema(tool: Any) -> Mapping[str, Any] | None:
    meta = getattr(tool, "metadata", None)
    try:
        schema = meta.get_parameters_dict() if meta is not None else None
    except Exception:
        return None
    return schema if isinstance(schema, Mapping) else None


def forced_tool(tool_choice: Any, tool_required: bool, tools: Sequence[Any]) -> str | bool:
    """``False`` if the model may answer in text, ``True`` if some tool call is forced, or the forced tool's
    name (core rule, :func:`crescade.seam.forced_tool`)."""
    return core_forced_tool(tool_choice, [n for t in tools if (n := _tool_name(t)) is not None],
                            tool_required=tool_required)


def tool_call_problems(calls: Sequence[tuple[str, Any]], tools: Sequence[Any], forced: str | bool) -> list[str] | None:
    """Problems with ``calls`` against ``tools`` (core rule, :func:`crescade.seam.tool_call_problems`):
    ``None`` when there is nothing to check, ``[]`` when every call is valid, else one string per problem."""
    schemas = {n: _tool_schema(t) for t in tools if (n := _tool_name(t)) is not None}
    return core_tool_call_problems(calls, schemas, forced)


def response_calls(resp: ChatResponse, child: Any) -> list[tuple[str, Any]]:
    """Tool calls of a tier's response as the tier's own LLM parses them; arguments that are a string
    which does not parse as JSON stay strings (reported as unparseable)."""
    raw_calls = _message_calls(resp.message)
    bad = {name for name, args in raw_calls if not isinstance(args, Mapping)}
    getter = getattr(child, "get_tool_calls_from_response", None)
    if getter is None:
        return raw_calls
    try:
        selections = getter(resp, error_on_no_tool_call=False)
    except Exception as exc:  # the tier's own parser rejected its output
        return [*raw_calls, (f"<unreadable: {type(exc).__name__}>", "?")] if raw_calls else [("?", "?")]
    calls: list[tuple[str, Any]] = []
    for sel in selections or ():
        name = str(_get(sel, "tool_name"))
        args = _get(sel, "tool_kwargs")
        if name in bad:
            args = next(a for n, a in raw_calls if n == name)
        calls.append((name, _parsed(args)))
    return calls


# ---------------------------------------------------------------------- usage and other signals
def _holders(resp: ChatResponse | CompletionResponse) -> list[Any]:
    raw = resp.raw
    out: list[Any] = []
    if raw is not None:
        for key in ("usage", "usage_metadata"):
            u = _get(raw, key)
            if u is not None:
                out.append(u)
        out.append(raw)  # Ollama: prompt_eval_count / eval_count at the top level
    kw = resp.additional_kwargs
    if kw.get("usage") is not None:
        out.append(kw["usage"])  # Anthropic streaming
    out.append(kw)
    return out


def _first_int(holder: Any, keys: Sequence[str]) -> int | None:
    for key in keys:
        v = _get(holder, key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def provider_usage(responses: Sequence[ChatResponse | CompletionResponse]) -> tuple[int | None, int | None]:
    """Input and output tokens the provider reported (raw.usage, raw.usage_metadata, Ollama counts,
    additional_kwargs usage / prompt_tokens / completion_tokens); for a stream, the last value seen of each."""
    n_in = n_out = None
    for resp in responses:
        for holder in _holders(resp):
            i, o = _first_int(holder, _IN_KEYS), _first_int(holder, _OUT_KEYS)
            if i is not None or o is not None:
                n_in = i if i is not None else n_in
                n_out = o if o is not None else n_out
                break
    return n_in, n_out


def _finish_reason(resp: ChatResponse | CompletionResponse) -> str | None:
    raw = resp.raw
    holders = [raw, resp.additional_kwargs]
    choices = _get(raw, "choices") if raw is not None else None
    if isinstance(choices, (list, tuple)) and choices:
        holders.insert(0, choices[0])
    for holder in holders:
        if holder is None:
            continue
        for key in ("finish_reason", "stop_reason", "done_reason"):
            v = _get(holder, key)
            if isinstance(v, str):
                return v
    return None


def _choice_logprobs(raw: Any) -> list[Any] | None:
    """The chosen tokens' ``(token, logprob)`` entries in an OpenAI-style raw response or stream chunk:
    ``choices[0].logprobs.content`` (chat), or ``tokens`` / ``token_logprobs`` (completions); ``None`` if absent."""
    choices = _get(raw, "choices") if raw is not None else None
    if not isinstance(choices, (list, tuple)) or not choices:
        return None
    lp = _get(choices[0], "logprobs")
    if lp is None:
        return None
    content = _get(lp, "content")
    if isinstance(content, (list, tuple)):
        return list(content)
    tokens, values = _get(lp, "tokens"), _get(lp, "token_logprobs")
    if isinstance(tokens, (list, tuple)) and isinstance(values, (list, tuple)) and len(tokens) == len(values):
        return list(zip(tokens, values, strict=True))
    return None


def _logprobs(resp: ChatResponse | CompletionResponse,
              chunks: Sequence[ChatResponse | CompletionResponse] | None) -> LogprobSummary | None:
    """The token-logprob summary (core rule) of a response: the chosen tokens of its raw OpenAI-style choice
    (over every chunk of a stream), else LlamaIndex's ``logprobs`` (the top alternative per token: the chosen
    token under greedy decoding)."""
    entries: list[Any] = []
    found = False
    for r in chunks or [resp]:
        part = _choice_logprobs(r.raw)
        if part is not None:
            found = True
            entries += part
    if found:
        return summary_from_provider(entries)
    lps = getattr(resp, "logprobs", None)
    if not lps:
        return None
    return summary_from_provider(tok[0] if tok else None for tok in lps)


def answer_from_response(
    model: str,
    resp: ChatResponse | CompletionResponse,
    prompt_text: str,
    *,
    child: Any = None,
    tools: Sequence[Any] | None = None,
    forced: str | bool = False,
    chunks: Sequence[ChatResponse | CompletionResponse] | None = None,
    clock: StreamClock | None = None,
) -> Answer:
    """The core's view of one tier's response: text (tool calls summarised), usage (provider, else
    counted and marked), finish reason, token-logprob summary, tool-call validity and, for a streamed call
    (``chunks`` and its ``clock``), measured TTFT and TPOT. A stream without usage has its output counted
    as its output chunks (marked ``estimate``)."""
    problems: list[str] | None = None
    if isinstance(resp, ChatResponse):
        calls = response_calls(resp, child) if tools is not None else _message_calls(resp.message)
        text = with_calls(resp.message.content or "", calls)
        if tools is not None:
            problems = tool_call_problems(calls, tools, forced)
    else:
        text = resp.text or ""
    n_in, n_out = provider_usage(list(chunks) if chunks else [resp])
    source: UsageSource = "provider"
    if n_in is None or n_out is None:
        estimate = clock.estimated_tokens() if clock is not None and n_out is None else None
        n_in, n_out, source = resolve_usage(prompt_text=prompt_text, response_text=text, input_tokens=n_in,
                                            output_tokens=n_out if estimate is None else estimate, model=model)
        if estimate is not None:
            source = "estimate"
    ttft = clock.ttft() if clock is not None else None
    tpot = clock.tpot(n_out) if clock is not None else None
    return Answer(
        text=text, model=model, input_tokens=n_in, output_tokens=n_out, usage_source=source,
        finish_reason=_finish_reason(resp), logprobs=_logprobs(resp, chunks),
        tool_calls_valid=None if problems is None else not problems, problems=tuple(problems or ()),
        ttft_s=ttft, tpot_s=tpot, payload=resp,
    )
