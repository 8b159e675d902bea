"""A rule-based, scripted LlamaIndex ``FunctionCallingLLM`` for offline tests (no network, deterministic).

Same rules and usage numbers as ``tests/langchain/lc_scripted.ScriptedChatModel``, so both adapters can be
compared on equivalent children: with tools and the last message from the user (or a forced tool call)
it calls one tool (the forced one, else one named in the query, else the first) with required arguments
filled from the tool's JSON schema; otherwise it answers with text. Knobs make it fail, sleep, break its
tool arguments, ignore tools, answer with a chosen text, or report usage in a given provider's shape.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any, Literal

from adapter_records import fill_args, violate_args
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field


class ProviderError(RuntimeError):
    """What a scripted LLM raises when told to fail (stands for a timeout, 429 or 5xx)."""


def _role(m: ChatMessage) -> str:
    return str(m.role.value if isinstance(m.role, MessageRole) else m.role)


class ScriptedLLM(FunctionCallingLLM):
    """Rule-based tool-calling LLM; see the module docstring."""

    model_name: str = "scripted"
    answer: Any = None
    """Text answer: a fixed string, a function of the messages, or ``None`` for a default reply."""
    fail: bool = False
    fail_after_chunks: int | None = None
    delay_s: float = 0.0
    tool_args: Literal["valid", "schema_violation", "unparseable"] = "valid"
    ignore_tools: bool = False
    report_usage: bool = True
    usage_style: Literal["raw", "additional_kwargs", "anthropic", "ollama"] = "raw"
    """Where usage is reported: OpenAI ``raw.usage``, ``additional_kwargs`` prompt/completion tokens,
    Anthropic-style ``additional_kwargs["usage"]`` (input/output tokens), or Ollama's raw counts."""
    logprob: float | None = None
    context_window: int = 8192
    function_calling: bool = True
    calls: list[str] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=512, is_chat_model=True,
                           is_function_calling_model=self.function_calling, model_name=self.model_name)

    # ------------------------------------------------------------------ the rules
    def _respond(self, messages: Sequence[ChatMessage], kw: dict[str, Any]) -> ChatResponse:
        users = [m for m in messages if _role(m) == "user"]
        query = (users[-1].content or "") if users else ""
        self.calls.append(query)
        if self.fail:
            raise ProviderError(f"{self.model_name}: 503 service unavailable")
        tools = list(kw.get("tools") or [])
        choice = kw.get("tool_choice")
        forced = bool(kw.get("tool_required")) or choice not in (None, "auto", "none", False)
        last_is_user = bool(messages) and _role(messages[-1]) == "user"
        if tools and not self.ignore_tools and choice != "none" and (last_is_user or forced):
            msg = self._tool_call(tools, choice, query, len(messages))
        else:
            msg = ChatMessage(role=MessageRole.ASSISTANT, content=self._reply(messages, query))
        text = msg.content or ""
        n_calls = sum(isinstance(b, ToolCallBlock) for b in msg.blocks)
        n_in = sum(len((m.content or "").split()) + 3 for m in messages)
        n_out = max(1, len(text.split()) + 5 * n_calls)
        raw: dict[str, Any] = {"model": self.model_name, "choices": [{"finish_reason": "stop"}]}
        extra: dict[str, Any] = {}
        if self.report_usage:
            if self.usage_style == "raw":
                raw["usage"] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
            elif self.usage_style == "additional_kwargs":
                extra = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
            elif self.usage_style == "anthropic":
                extra = {"usage": {"input_tokens": n_in, "output_tokens": n_out}}
            else:
                raw.update(prompt_eval_count=n_in, eval_count=n_out)
        logprobs = [[LogProb(token="x", logprob=self.logprob)]] * n_out if self.logprob is not None else None
        return ChatResponse(message=msg, raw=raw, delta=text, additional_kwargs=extra, logprobs=logprobs)

    def _reply(self, messages: Sequence[ChatMessage], query: str) -> str:
        if callable(self.answer):
            return str(self.answer(messages))
        if self.answer is not None:
            return str(self.answer)
        if messages and _role(messages[-1]) == "tool":
            return f"The tool returned: {messages[-1].content}"
        return f"Hello, this is {self.model_name} answering: {query[:60]}"

    def _tool_call(self, tools: list[Any], choice: Any, query: str, n: int) -> ChatMessage:
        names = [t.metadata.name for t in tools]
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name") or choice.get("name")
        name = choice if isinstance(choice, str) and choice in names else next((x for x in names if x in query),
                                                                               names[0])
        schema = next(t for t in tools if t.metadata.name == name).metadata.get_parameters_dict()
        props = schema.get("properties") or {}
        args = {k: fill_args(v, query) for k, v in props.items() if k in (schema.get("required") or ())}
        call_id = f"call_{self.model_name}_{n}"
        kwargs: dict[str, Any] | str = args
        if self.tool_args == "unparseable":
            kwargs = '{"broken": '
        elif self.tool_args == "schema_violation":
            if args:
                key = next(iter(args))
                args[key] = violate_args(props[key])
            else:
                name = f"{name}_not_a_tool"
        return ChatMessage(role=MessageRole.ASSISTANT,
                           blocks=[ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=kwargs)])

    def _chunks(self, resp: ChatResponse) -> Generator[ChatResponse, None, None]:
        text = resp.message.content or ""
        words = re.findall(r"\S+\s*", text)
        acc = ""
        for i, w in enumerate(words):
            if self.fail_after_chunks is not None and i >= self.fail_after_chunks:
                raise ProviderError(f"{self.model_name}: connection reset mid-stream")
            acc += w
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=acc), delta=w)
        blocks = [TextBlock(text=acc)] if acc else []
        blocks += [b for b in resp.message.blocks if isinstance(b, ToolCallBlock)]
        yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks), delta="", raw=resp.raw,
                           additional_kwargs=resp.additional_kwargs, logprobs=resp.logprobs)

    # ------------------------------------------------------------------ LlamaIndex API
    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: Any = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role="user", content=user_msg) if isinstance(user_msg, str) else user_msg)
        return {"messages": messages, "tools": list(tools), "tool_required": tool_required,
                "tool_choice": kwargs.get("tool_choice")}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        out = []
        for b in response.message.blocks:
            if isinstance(b, ToolCallBlock):
                args = b.tool_kwargs
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except ValueError:
                        args = {}
                out.append(ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name, tool_kwargs=args))
        if not out and error_on_no_tool_call:
            raise ValueError("expected a tool call")
        return out

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._respond(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._respond(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Generator[ChatResponse, None, None]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._chunks(self._respond(messages, kwargs))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage],
                           **kwargs: Any) -> AsyncGenerator[ChatResponse, None]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        resp = self._respond(messages, kwargs)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for c in self._chunks(resp):
                yield c

        return gen()

    def _as_completion(self, resp: ChatResponse) -> CompletionResponse:
        return CompletionResponse(text=resp.message.content or "", raw=resp.raw, delta=resp.delta,
                                  additional_kwargs=resp.additional_kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._as_completion(self._respond([ChatMessage(role="user", content=prompt)], kwargs))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.complete(prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> Generator[CompletionResponse, None, None]:
        resp = self._respond([ChatMessage(role="user", content=prompt)], kwargs)

        def gen() -> Generator[CompletionResponse, None, None]:
            for c in self._chunks(resp):
                yield CompletionResponse(text=c.message.content or "", delta=c.delta, raw=c.raw,
                                         additional_kwargs=c.additional_kwargs)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> AsyncGenerator[CompletionResponse, None]:
        sync = self.stream_complete(prompt, formatted=formatted, **kwargs)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for c in sync:
                yield c

        return gen()


Answerer = Callable[[Sequence[ChatMessage]], str]
