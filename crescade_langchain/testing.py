"""Test helpers: a chat model that injects the failures real providers produce around any chat model.

``FaultInjectingChatModel(inner=ChatOpenAI(...), faults=FaultSchedule(rate=0.2, seed=1), fault_key="gpt")``
behaves like ``inner`` except on the calls the :class:`crescade.serving.faults.FaultSchedule` picks, which time
out, get rate limited, fail with a 5xx, lose their connection, come back malformed or empty, hang, break
or stall mid-stream, or are slow. Use it as a tier of a ``CascadeChatModel`` (or anywhere else) to test
how an application copes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from crescade.seam import Fault, FaultSchedule

from ._messages import content_text

__all__ = ["FaultInjectingChatModel"]

def _key(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(m.content if isinstance(m.content, str) else str(m.content) for m in messages)


class FaultInjectingChatModel(BaseChatModel):
    """``inner`` with faults injected on the calls ``faults`` picks (keyed on ``fault_key`` and the prompt)."""

    inner: Runnable[LanguageModelInput, BaseMessage]
    """The chat model answering the calls that are not faulted (or ``inner.bind_tools(...)``)."""
    faults: FaultSchedule
    fault_key: str
    """The model name the schedule decides on (and reports in its log)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    @property
    def _llm_type(self) -> str:
        return "fault-injecting"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"fault_key": self.fault_key, "inner": repr(self.inner)[:200]}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools to ``inner``; the faults stay."""
        bind = getattr(self.inner, "bind_tools", None)
        if bind is None:
            raise NotImplementedError(f"{type(self.inner).__name__} does not support tools")
        opts = {"tool_choice": tool_choice} if tool_choice is not None else {}
        return self.model_copy(update={"inner": bind(tools, **opts, **kwargs)})

    # ------------------------------------------------------------------ faults
    def _decide(self, messages: Sequence[BaseMessage]) -> Fault | None:
        return self.faults.decide(self.fault_key, _key(messages))

    def _delivered(self, messages: Sequence[BaseMessage], msg: BaseMessage | None) -> None:
        if msg is None:
            return
        usage = getattr(msg, "usage_metadata", None) or {}
        self.faults.delivered(self.fault_key, _key(messages), content_text(msg.content), usage.get("input_tokens"),
                              usage.get("output_tokens"))

    def _empty(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """An empty answer, as a provider returns it: no text, no output tokens (delivered, so recorded)."""
        msg = AIMessage(content="", response_metadata={"model_name": self.fault_key, "finish_reason": "stop"},
                        usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
        self._delivered(messages, msg)
        return msg

    # ------------------------------------------------------------------ LangChain hooks
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self.faults.before(self._decide(messages), stream=False):
            return ChatResult(generations=[ChatGeneration(message=self._empty(messages))])
        msg = self.inner.invoke(messages, stop=stop, **kwargs)
        self._delivered(messages, msg)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if await self.faults.abefore(self._decide(messages), stream=False):
            return ChatResult(generations=[ChatGeneration(message=self._empty(messages))])
        msg = await self.inner.ainvoke(messages, stop=stop, **kwargs)
        self._delivered(messages, msg)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        fault = self._decide(messages)
        if self.faults.before(fault, stream=True):
            empty = self._empty(messages)
            yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=empty.usage_metadata,
                                                             response_metadata=empty.response_metadata,
                                                             chunk_position="last"))
            return
        seen: list[AIMessageChunk] = []
        for chunk in self.inner.stream(messages, stop=stop, **kwargs):
            if fault is not None and self.faults.breaks_at(fault, len(seen)):
                raise self.faults.broken(fault)
            seen.append(_as_chunk(chunk))
            yield ChatGenerationChunk(message=seen[-1])
        if fault is not None and self.faults.breaks_at(fault, len(seen), ended=True):
            raise self.faults.broken(fault)
        self._delivered(messages, _merged(seen))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        fault = self._decide(messages)
        if await self.faults.abefore(fault, stream=True):
            empty = self._empty(messages)
            yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=empty.usage_metadata,
                                                             response_metadata=empty.response_metadata,
                                                             chunk_position="last"))
            return
        seen: list[AIMessageChunk] = []
        async for chunk in self.inner.astream(messages, stop=stop, **kwargs):
            if fault is not None and self.faults.breaks_at(fault, len(seen)):
                raise await self.faults.abroken(fault)
            seen.append(_as_chunk(chunk))
            yield ChatGenerationChunk(message=seen[-1])
        if fault is not None and self.faults.breaks_at(fault, len(seen), ended=True):
            raise await self.faults.abroken(fault)
        self._delivered(messages, _merged(seen))


def _merged(chunks: list[AIMessageChunk]) -> AIMessageChunk | None:
    return add_ai_message_chunks(chunks[0], *chunks[1:]) if chunks else None


def _as_chunk(chunk: Any) -> AIMessageChunk:
    if isinstance(chunk, AIMessageChunk):
        return chunk
    if isinstance(chunk, AIMessage):
        return AIMessageChunk(content=chunk.content, tool_calls=chunk.tool_calls, usage_metadata=chunk.usage_metadata,
                              response_metadata=chunk.response_metadata, id=chunk.id)
    raise TypeError(f"inner stream yielded {type(chunk).__name__}, expected an AIMessageChunk")
