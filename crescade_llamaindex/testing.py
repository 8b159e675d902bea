"""Test helpers: an LLM that injects the failures real providers produce around any LlamaIndex LLM.

``FaultInjectingLLM(inner=OpenAILike(...), faults=FaultSchedule(rate=0.2, seed=1), fault_key="gpt")``
behaves like ``inner`` except on the calls the :class:`crescade.serving.faults.FaultSchedule` picks (timeouts,
rate limits, 5xx, connection resets, malformed or empty responses, hangs, broken or stalled streams,
slow answers). Tools pass through: ``inner`` formats them and parses its own tool calls.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from pydantic import ConfigDict, Field

from crescade.seam import Fault, FaultSchedule

from ._messages import provider_usage

__all__ = ["FaultInjectingLLM"]

_NO_USAGE = {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _key(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages)


class FaultInjectingLLM(FunctionCallingLLM):
    """``inner`` with faults injected on the calls ``faults`` picks (keyed on ``fault_key`` and the prompt)."""

    inner: LLM = Field(exclude=True)
    faults: FaultSchedule = Field(exclude=True)
    fault_key: str

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    @classmethod
    def class_name(cls) -> str:
        return "FaultInjectingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.inner.metadata

    # ------------------------------------------------------------------ tools (inner's own format)
    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: str | ChatMessage | None = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        prepared: dict[str, Any] = self.inner._prepare_chat_with_tools(  # type: ignore[attr-defined]
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs)
        return prepared

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls: list[ToolSelection] = self.inner.get_tool_calls_from_response(  # type: ignore[attr-defined]
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)
        return calls

    # ------------------------------------------------------------------ faults
    def _gen(self, fault: Fault | None, key: str, it: Any) -> Generator[Any, None, None]:
        seen: list[Any] = []
        for item in it:
            if fault is not None and self.faults.breaks_at(fault, len(seen)):
                raise self.faults.broken(fault)
            seen.append(item)
            yield item
        if fault is not None and self.faults.breaks_at(fault, len(seen), ended=True):
            raise self.faults.broken(fault)
        self._delivered(key, seen)

    async def _agen(self, fault: Fault | None, key: str, ait: Any) -> AsyncGenerator[Any, None]:
        seen: list[Any] = []
        async for item in ait:
            if fault is not None and self.faults.breaks_at(fault, len(seen)):
                raise await self.faults.abroken(fault)
            seen.append(item)
            yield item
        if fault is not None and self.faults.breaks_at(fault, len(seen), ended=True):
            raise await self.faults.abroken(fault)
        self._delivered(key, seen)

    def _delivered(self, key: str, responses: Sequence[Any]) -> Any:
        """Note a complete answer (the last of ``responses`` holds the whole text); returns that last one."""
        if responses:
            last = responses[-1]
            text = last.message.content or "" if isinstance(last, ChatResponse) else last.text
            n_in, n_out = provider_usage(list(responses))
            self.faults.delivered(self.fault_key, key, text, n_in, n_out)
            return last
        return None

    def _empty_chat(self, key: str) -> ChatResponse:
        """An empty answer, as a provider returns it: no text, no output tokens (delivered, so recorded)."""
        resp = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=""), delta="", raw=_NO_USAGE)
        self._delivered(key, [resp])
        return resp

    def _empty_completion(self, key: str) -> CompletionResponse:
        resp = CompletionResponse(text="", delta="", raw=_NO_USAGE)
        self._delivered(key, [resp])
        return resp

    # ------------------------------------------------------------------ the LlamaIndex API
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        fault = self.faults.decide(self.fault_key, _key(messages))
        if self.faults.before(fault, stream=False):
            return self._empty_chat(_key(messages))
        return self._delivered(_key(messages), [self.inner.chat(messages, **kwargs)])

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        fault = self.faults.decide(self.fault_key, _key(messages))
        if await self.faults.abefore(fault, stream=False):
            return self._empty_chat(_key(messages))
        return self._delivered(_key(messages), [await self.inner.achat(messages, **kwargs)])

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        fault = self.faults.decide(self.fault_key, _key(messages))

        def gen() -> Generator[ChatResponse, None, None]:
            if self.faults.before(fault, stream=True):
                yield self._empty_chat(_key(messages))
                return
            yield from self._gen(fault, _key(messages), self.inner.stream_chat(messages, **kwargs))

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        fault = self.faults.decide(self.fault_key, _key(messages))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            if await self.faults.abefore(fault, stream=True):
                yield self._empty_chat(_key(messages))
                return
            async for item in self._agen(fault, _key(messages), await self.inner.astream_chat(messages, **kwargs)):
                yield item

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        fault = self.faults.decide(self.fault_key, prompt)
        if self.faults.before(fault, stream=False):
            return self._empty_completion(prompt)
        return self._delivered(prompt, [self.inner.complete(prompt, formatted=formatted, **kwargs)])

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        fault = self.faults.decide(self.fault_key, prompt)
        if await self.faults.abefore(fault, stream=False):
            return self._empty_completion(prompt)
        return self._delivered(prompt, [await self.inner.acomplete(prompt, formatted=formatted, **kwargs)])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        fault = self.faults.decide(self.fault_key, prompt)

        def gen() -> Generator[CompletionResponse, None, None]:
            if self.faults.before(fault, stream=True):
                yield self._empty_completion(prompt)
                return
            yield from self._gen(fault, prompt, self.inner.stream_complete(prompt, formatted=formatted, **kwargs))

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        fault = self.faults.decide(self.fault_key, prompt)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            if await self.faults.abefore(fault, stream=True):
                yield self._empty_completion(prompt)
                return
            async for item in self._agen(fault, prompt, await self.inner.astream_complete(
                    prompt, formatted=formatted, **kwargs)):
                yield item

        return gen()
