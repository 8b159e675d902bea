"""A rule-based, scripted tool-calling chat model for offline tests (no network, deterministic).

Rules: with tools bound and the last message from the user (or ``tool_choice`` forcing a call), it calls
one tool — the one ``tool_choice`` names, else one named in the query, else the first — with the
required arguments filled from the tool's JSON schema (integers from digits in the query, strings from
a quoted span, enums with their first value). Otherwise it answers with text. Every response carries
``usage_metadata`` and ``response_metadata["model_name"]``. Knobs make it fail, sleep, break its tool
arguments, ignore tools, or answer with a chosen text.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from adapter_records import fill_args, violate_args
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field


class ProviderError(RuntimeError):
    """What a scripted model raises when told to fail (stands for a timeout, 429 or 5xx)."""


def _text(msg: BaseMessage) -> str:
    content = msg.content
    if isinstance(content, str):
        return content
    return " ".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content
                    if isinstance(p, str) or p.get("type") == "text")


class ScriptedChatModel(BaseChatModel):
    """Rule-based tool-calling chat model; see the module docstring."""

    model_name: str = "scripted"
    answer: str | Callable[[list[BaseMessage]], str] | None = None
    """Text answer: a fixed string, a function of the messages, or ``None`` for a default reply."""
    fail: bool = False
    """Raise :class:`ProviderError` on every call."""
    fail_after_chunks: int | None = None
    """When streaming, raise after this many chunks."""
    delay_s: float = 0.0
    """Sleep before answering (``asyncio.sleep`` on the async paths)."""
    tool_args: Literal["valid", "schema_violation", "unparseable"] = "valid"
    ignore_tools: bool = False
    """Answer with text even when a tool call is forced (structured output then fails to parse)."""
    report_usage: bool = True
    logprob: float | None = None
    """When set, report per-token logprobs all equal to this value."""
    calls: list[str] = Field(default_factory=list)
    """The last user message of every call, in order (for assertions)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | bool | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    # ------------------------------------------------------------------ the rules
    def _respond(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> AIMessage:
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        query = _text(humans[-1]) if humans else ""
        self.calls.append(query)
        if self.fail:
            raise ProviderError(f"{self.model_name}: 503 service unavailable")
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        choice = kwargs.get("tool_choice")
        forced = choice not in (None, "auto", "none", False)
        last_is_user = bool(messages) and isinstance(messages[-1], HumanMessage)
        if tools and not self.ignore_tools and choice != "none" and (last_is_user or forced):
            if not last_is_user and choice in ("any", "required", True):
                choice = tools[-1]["function"]["name"]  # after a tool result: the last tool (an answer schema)
            msg = self._tool_call(tools, choice, query, len(messages))
        else:
            msg = AIMessage(content=self._reply(messages, query, stop))
        n_in = sum(len(_text(m).split()) + 3 for m in messages)
        n_out = max(1, len(_text(msg).split()) + 5 * len(msg.tool_calls) + 5 * len(msg.invalid_tool_calls))
        if self.report_usage:
            msg.usage_metadata = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
        msg.response_metadata = {"model_name": self.model_name, "finish_reason": "stop"}
        if self.logprob is not None:
            msg.response_metadata["logprobs"] = {"content": [{"token": "x", "logprob": self.logprob}] * n_out}
        return msg

    def _reply(self, messages: list[BaseMessage], query: str, stop: list[str] | None) -> str:
        if callable(self.answer):
            text = self.answer(messages)
        elif self.answer is not None:
            text = self.answer
        elif messages and messages[-1].type == "tool":
            text = f"The tool returned: {_text(messages[-1])}"
        else:
            text = f"Hello, this is {self.model_name} answering: {query[:60]}"
        for s in stop or ():
            if s and s in text:
                text = text[: text.index(s)] or text
        return text

    def _tool_call(self, tools: list[dict[str, Any]], choice: Any, query: str, n: int) -> AIMessage:
        names = [t["function"]["name"] for t in tools]
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name") or choice.get("name")
        if isinstance(choice, str) and choice in names:
            name = choice
        else:
            name = next((x for x in names if x in query), names[0])
        schema = next(t for t in tools if t["function"]["name"] == name)["function"].get("parameters") or {}
        props = schema.get("properties") or {}
        args = {k: fill_args(v, query) for k, v in props.items() if k in (schema.get("required") or ())}
        call_id = f"call_{self.model_name}_{n}"
        if self.tool_args == "unparseable":
            return AIMessage(content="", invalid_tool_calls=[
                {"type": "invalid_tool_call", "name": name, "args": '{"broken": ', "id": call_id,
                 "error": "unparseable JSON"}])
        if self.tool_args == "schema_violation":
            if args:
                key = next(iter(args))
                args[key] = violate_args(props[key])
            else:
                name = f"{name}_not_a_tool"
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])

    # ------------------------------------------------------------------ LangChain hooks
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._respond(messages, stop, kwargs))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._respond(messages, stop, kwargs))])

    def _chunks(self, msg: AIMessage) -> Iterator[AIMessageChunk]:
        words = re.findall(r"\S+\s*", msg.content) if isinstance(msg.content, str) else []
        for i, w in enumerate(words):
            if self.fail_after_chunks is not None and i >= self.fail_after_chunks:
                raise ProviderError(f"{self.model_name}: connection reset mid-stream")
            yield AIMessageChunk(content=w)
        tcc = [tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"], ensure_ascii=False), id=tc["id"],
                               index=i) for i, tc in enumerate(msg.tool_calls)]
        tcc += [tool_call_chunk(name=tc["name"], args=tc["args"], id=tc["id"], index=len(tcc) + i)
                for i, tc in enumerate(msg.invalid_tool_calls)]
        yield AIMessageChunk(content="", tool_call_chunks=tcc, usage_metadata=msg.usage_metadata,
                             response_metadata=dict(msg.response_metadata), chunk_position="last")

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if self.delay_s:
            time.sleep(self.delay_s)
        for chunk in self._chunks(self._respond(messages, stop, kwargs)):
            yield ChatGenerationChunk(message=chunk)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        for chunk in self._chunks(self._respond(messages, stop, kwargs)):
            yield ChatGenerationChunk(message=chunk)
