"""``CascadeChatModel``: a LangChain chat model that routes, judges and escalates over other chat models.

All decisions come from the core (:class:`crescade.Cascade` plans and judges, :class:`DispatchSession`
walks the ladder); this module only translates messages, calls the children inside the cascade's
run, and reports what happened.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import set_config_context
from langchain_core.runnables.utils import coro_with_context
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from crescade import Answer, Cascade, InputError, ModelCard, Reliability
from crescade.seam import (
    DispatchResult,
    DispatchSession,
    account,
    arun_session,
    astream_session,
    cascade_fingerprint,
    check_messages,
    check_pool,
    check_tool,
    count_tokens,
    fit_on_records,
    run_session,
    start_session,
    stream_session,
)

from ._callbacks import Parent
from ._messages import answer_from_message, as_chunk, content_kinds, conversation_floor, message_text, render_query
from ._stream import STRIPPED_CHUNK_METADATA, LiveStream, forwarded
from .calibration import collect_records

__all__ = ["CascadeChatModel"]

_PARENT_KW = "_crescade_parent"  # private kwarg: the Parent a stream()/astream() call prepared
# The run manager of the current _generate_with_cache call, for its implicit streaming branch, which
# calls _stream/_astream without one (astream_events, LangGraph "messages" mode).
_IMPLICIT_RUN: ContextVar[tuple[object, Any] | None] = ContextVar("crescade_implicit_run", default=None)


@dataclass(frozen=True)
class _Call:
    """One cascade call's inputs, fixed before the first tier is asked."""

    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: Any
    query: str
    floor: str | None
    parent: Parent
    needs: set[str]


class CascadeChatModel(BaseChatModel):
    """A chat model that answers with the cheapest model the fitted cascade trusts, escalating when not.

    ``models`` maps every model of the cascade's pool to a LangChain chat model (names must match the
    pool exactly). Each response carries ``response_metadata["crescade"]`` (the full account: cluster,
    route, per-tier QE scores, tokens, dollars and timing, rejected answers included),
    ``response_metadata["model_name"]`` (the answering model) and ``usage_metadata`` summed over every
    tier called. Callback handlers see the children's runs nested under the cascade's run, so usage can
    be read either from the cascade's run or from its children's, not both.
    """

    models: Mapping[str, BaseChatModel]
    """The pool: cascade model name -> chat model."""
    cascade: Cascade
    """A fitted :class:`crescade.Cascade`."""
    prices: dict[str, ModelCard] | None = None
    """Price cards per pool model; default: the cards the cascade was fitted with."""
    conversation_window: int = Field(default=6, ge=1)
    """How many trailing non-system messages form the routing query (system messages always count)."""
    monotone: bool = True
    """Once a turn was escalated, later turns of the conversation start at or above that tier."""
    max_depth: int | None = Field(default=None, ge=1)
    """Cap on the tiers tried per call (the strongest model is always kept as the last)."""
    reliability: Reliability | None = None
    """Timeouts, a request deadline, retries, rate-limit cool-downs and a spend cap
    (:class:`crescade.Reliability`; a dict of its fields works too). Default: none of them, cool-downs shared
    per process."""
    model_name: str = "crescade"

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    _cards: dict[str, ModelCard] = PrivateAttr(default_factory=dict)
    _fingerprint: str = PrivateAttr(default="")

    @field_validator("reliability", mode="before")
    @classmethod
    def _crescade_reliability(cls, value: Any) -> Reliability | None:
        return Reliability.coerce(value)

    @model_validator(mode="after")
    def _crescade_check_pool(self) -> Self:
        self._cards = check_pool(self.cascade, self.models, self.prices, field="models", kind="chat model")
        self._fingerprint = cascade_fingerprint(self.cascade)
        return self

    @classmethod
    def from_artifact(
        cls, path: str | PathLike[str], *, models: Mapping[str, BaseChatModel], embedder: Any = None, **kwargs: Any
    ) -> CascadeChatModel:
        """Load a saved cascade (``Cascade.save``) and wrap ``models`` with it."""
        return cls(models=dict(models), cascade=Cascade.load(Path(path), embedder=embedder), **kwargs)

    @classmethod
    def calibrate(
        cls, models: Mapping[str, BaseChatModel], examples: Sequence[Any], out: str | PathLike[str], *,
        prices: Mapping[str, ModelCard], quality_target: float | None = 0.98, cost_target: float | None = None,
        concurrency: int = 4, system_prompt: str | None = None, split: str | None = "train",
        progress: bool = True, **cascade_params: Any,
    ) -> CascadeChatModel:
        """Call every model on labelled examples (resumable records in ``out``), fit a
        :class:`~crescade.Cascade` on them, and wrap ``models`` with it.

        Only prompts every model answered are used; with ``split`` set and present in the examples, only
        that split is fitted on (the rest stays for evaluation). Other keyword arguments are
        :class:`~crescade.Cascade` parameters.
        """
        collect_records(models, examples, out, prices=prices, concurrency=concurrency,
                        system_prompt=system_prompt, progress=progress)
        cascade = fit_on_records(out, prices=prices, split=split, quality_target=quality_target,
                                 cost_target=cost_target, progress=progress, **cascade_params)
        return cls(models=dict(models), cascade=cascade, prices=dict(prices))

    # ------------------------------------------------------------------ LangChain plumbing
    @property
    def _llm_type(self) -> str:
        return "crescade"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "model_name": self.model_name,
            "models": {name: _child_name(m) for name, m in sorted(self.models.items())},
            "cascade": self._fingerprint,
            "conversation_window": self.conversation_window,
            "monotone": self.monotone,
            "max_depth": self.max_depth,
        }

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PARENT_KW, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        name = kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name
        params = LangSmithParams(ls_provider="crescade", ls_model_name=name, ls_model_type="chat")
        if stop:
            params["ls_stop"] = stop
        return params

    def get_num_tokens(self, text: str) -> int:
        """Tokens in ``text`` (tiktoken from a local BPE file, else an estimate; never a download)."""
        return count_tokens(text).n

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (stored as OpenAI-format dicts); each tier binds them to its child at call time.
        A tool whose name or parameter schema is unusable is an :class:`~crescade.common.errors.InputError` here."""
        formatted = []
        for i, t in enumerate(tools):
            try:
                formatted.append(convert_to_openai_tool(t))
            except (ValueError, TypeError, KeyError) as exc:
                raise InputError(f"tool {i}: cannot be turned into a tool schema ({exc})") from None
        _check_tools(formatted)
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """``BaseChatModel.stream``, with the run id fixed up front so tiers nest under the run."""
        if not self._should_stream(async_api=False, **{**kwargs, "stream": True}):
            yield from super().stream(input, config, stop=stop, **kwargs)
            return
        config, parent = _pre_run(config, is_async=False)
        yield from super().stream(input, config, stop=stop, **{**kwargs, _PARENT_KW: parent})

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """``BaseChatModel.astream``, with the run id fixed up front so tiers nest under the run."""
        if not self._should_stream(async_api=True, **{**kwargs, "stream": True}):
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
            return
        config, parent = _pre_run(config, is_async=True)
        async for chunk in super().astream(input, config, stop=stop, **{**kwargs, _PARENT_KW: parent}):
            yield chunk

    def _generate_with_cache(self, messages: list[BaseMessage], stop: list[str] | None = None,
                             run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        token = _IMPLICIT_RUN.set((self, run_manager))
        try:
            return super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        finally:
            _IMPLICIT_RUN.reset(token)

    async def _agenerate_with_cache(self, messages: list[BaseMessage], stop: list[str] | None = None,
                                    run_manager: AsyncCallbackManagerForLLMRun | None = None,
                                    **kwargs: Any) -> ChatResult:
        token = _IMPLICIT_RUN.set((self, run_manager))
        try:
            return await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        finally:
            _IMPLICIT_RUN.reset(token)

    # ------------------------------------------------------------------ one call
    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, run_manager: Any,
                 kwargs: dict[str, Any]) -> _Call:
        hint = kwargs.pop(_PARENT_KW, None)
        if run_manager is None:
            implicit = _IMPLICIT_RUN.get()
            if implicit is not None and implicit[0] is self:
                run_manager = implicit[1]
        if run_manager is not None:
            parent = Parent.of_run(run_manager)
        else:
            parent = hint if isinstance(hint, Parent) else Parent()
        pool = self.cascade.models_
        needs = check_messages([message_text(m) for m in messages], [content_kinds(m.content) for m in messages])
        tools = list(kwargs.get("tools") or [])
        _check_tools(tools)
        return _Call(
            messages=list(messages), stop=stop, kwargs=kwargs, tools=tools,
            tool_choice=kwargs.get("tool_choice"), query=render_query(messages, self.conversation_window),
            floor=conversation_floor(messages, pool) if self.monotone else None, parent=parent, needs=needs)

    def _session(self, call: _Call) -> DispatchSession:
        return start_session(self.cascade, call.query, prices=self._cards, floor=call.floor,
                             max_depth=self.max_depth, reliability=self.reliability, needs=call.needs)

    def _child(self, name: str, kwargs: Mapping[str, Any]) -> Runnable[LanguageModelInput, BaseMessage]:
        """The tier's chat model with this call's tools and other kwargs bound."""
        model = self.models[name]
        kw = dict(kwargs)
        tools = kw.pop("tools", None)
        tool_choice = kw.pop("tool_choice", None)
        if tools:
            return model.bind_tools(tools, **({"tool_choice": tool_choice} if tool_choice is not None else {}), **kw)
        return model.bind(**kw) if kw else model

    def _answer(self, name: str, msg: BaseMessage, call: _Call, live: LiveStream | None = None) -> Answer:
        if not isinstance(msg, AIMessage):
            raise TypeError(f"chat model {name!r} returned {type(msg).__name__}, expected an AIMessage")
        return answer_from_message(name, msg, call.messages, call.tools, call.tool_choice, live=live)

    def _invoke_tier(self, tier: int, name: str, call: _Call) -> BaseMessage:
        child = self._child(name, call.kwargs)
        cfg = call.parent.child_config(tier, name, is_async=False)
        stop = {"stop": call.stop} if call.stop else {}
        with set_config_context(cfg) as ctx:
            return ctx.run(child.invoke, call.messages, cfg, **stop)

    async def _ainvoke_tier(self, tier: int, name: str, call: _Call) -> BaseMessage:
        child = self._child(name, call.kwargs)
        cfg = call.parent.child_config(tier, name, is_async=True)
        stop = {"stop": call.stop} if call.stop else {}
        with set_config_context(cfg) as ctx:
            return await coro_with_context(child.ainvoke(call.messages, cfg, **stop), ctx)

    def _stream_tier(self, tier: int, name: str, call: _Call) -> Iterator[AIMessageChunk]:
        child = self._child(name, call.kwargs)
        cfg = call.parent.child_config(tier, name, is_async=False)
        stop = {"stop": call.stop} if call.stop else {}
        with set_config_context(cfg) as ctx:
            it = ctx.run(child.stream, call.messages, cfg, **stop)
            try:
                while True:
                    try:
                        item = ctx.run(next, it)
                    except StopIteration:
                        return
                    yield as_chunk(item)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    ctx.run(close)

    async def _astream_tier(self, tier: int, name: str, call: _Call) -> AsyncIterator[AIMessageChunk]:
        child = self._child(name, call.kwargs)
        cfg = call.parent.child_config(tier, name, is_async=True)
        stop = {"stop": call.stop} if call.stop else {}
        with set_config_context(cfg) as ctx:
            ait = ctx.run(child.astream, call.messages, cfg, **stop)
            try:
                while True:
                    more, item = await coro_with_context(_anext(ait), ctx)
                    if not more:
                        return
                    yield as_chunk(item)
            finally:
                aclose = getattr(ait, "aclose", None)
                if aclose is not None:
                    await coro_with_context(aclose(), ctx)

    # ------------------------------------------------------------------ non-streaming
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        t_start = time.perf_counter()
        call = self._prepare(messages, stop, run_manager, kwargs)
        result = run_session(self._session(call), lambda tier, name, _last: self._answer(
            name, self._invoke_tier(tier, name, call), call))
        return _chat_result(result, call, ttft_s=time.perf_counter() - t_start, streamed=False)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        t_start = time.perf_counter()
        call = self._prepare(messages, stop, run_manager, kwargs)

        async def ask(tier: int, name: str, _last: bool) -> Answer:
            return self._answer(name, await self._ainvoke_tier(tier, name, call), call)

        result = await arun_session(self._session(call), ask)
        return _chat_result(result, call, ttft_s=time.perf_counter() - t_start, streamed=False)

    # ------------------------------------------------------------------ streaming
    def _buffer(self, call: _Call) -> Callable[[int, str, float], _TierStream]:
        return lambda _tier, name, t0: _TierStream(t0, lambda live: self._answer(name, live.message(), call, live))

    def _emit(self, kind: str, item: Any, call: _Call, t_start: float) -> ChatGenerationChunk:
        if kind == "chunk":
            return ChatGenerationChunk(message=item)
        if kind == "draft":
            return ChatGenerationChunk(message=forwarded(item.message()))
        result, first_out = item
        ttft = first_out - t_start if first_out is not None else None
        return ChatGenerationChunk(message=_final_chunk(result, call, ttft_s=ttft))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Earlier tiers are streamed into a buffer (timed) and judged; an accepted draft is emitted whole,
        the last tier streams live. The last chunk carries the usage total, model name and account."""
        t_start = time.perf_counter()
        call = self._prepare(messages, stop, run_manager, kwargs)
        events = stream_session(self._session(call), lambda tier, name: self._stream_tier(tier, name, call),
                                self._buffer(call))
        for kind, item in events:
            yield self._emit(kind, item, call, t_start)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """Async :meth:`_stream`."""
        t_start = time.perf_counter()
        call = self._prepare(messages, stop, run_manager, kwargs)
        events = astream_session(self._session(call), lambda tier, name: self._astream_tier(tier, name, call),
                                 self._buffer(call))
        async for kind, item in events:
            yield self._emit(kind, item, call, t_start)


class _TierStream(LiveStream):
    """One tier's buffered stream, turned into the core's :class:`Answer` once it ended."""

    def __init__(self, t0: float, to_answer: Callable[[LiveStream], Answer]) -> None:
        super().__init__(t0)
        self._to_answer = to_answer

    def answer(self) -> Answer:
        return self._to_answer(self)


# ---------------------------------------------------------------------- helpers
def _check_tools(tools: Sequence[Any]) -> None:
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise InputError(f"tool {i}: expected an OpenAI-format tool dict, got {type(tool).__name__}")
        if tool.get("type") == "function":
            fn = tool.get("function")
            if not isinstance(fn, Mapping):
                raise InputError(f"tool {i}: 'function' must be an object, got {type(fn).__name__}")
            check_tool(fn.get("name"), fn.get("parameters"), index=i)


def _pre_run(config: RunnableConfig | None, *, is_async: bool) -> tuple[RunnableConfig, Parent]:
    """Fix a ``stream``/``astream`` call's run id and callback manager before the base class starts the run.

    ``_stream`` gets no run manager on these paths, so the children's parent is prepared here: the same
    handler objects (a tracer created from the environment included) then see the cascade's run and its
    tiers' runs.
    """
    config = ensure_config(config)
    run_id = config.get("run_id") or uuid4()
    manager_cls = AsyncCallbackManager if is_async else CallbackManager
    manager = manager_cls.configure(config.get("callbacks"), None, False, config.get("tags"), None,
                                    config.get("metadata"), None)
    parent = Parent(run_id, list(manager.inheritable_handlers), list(manager.inheritable_tags),
                    dict(manager.inheritable_metadata))
    return {**config, "run_id": run_id, "callbacks": manager}, parent


async def _anext(ait: AsyncIterator[Any]) -> tuple[bool, Any]:
    try:
        return True, await ait.__anext__()
    except StopAsyncIteration:
        return False, None


def _child_name(model: BaseChatModel) -> str:
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return f"{model._llm_type}:{value}"
    return model._llm_type


def _usage_total(result: DispatchResult) -> UsageMetadata:
    """Usage summed over every tier called, rejected ones included (provider details kept)."""
    total: UsageMetadata | None = None
    for a in result.attempts:
        if a.answer is None:
            continue
        usage = getattr(a.answer.payload, "usage_metadata", None) if a.usage_source == "provider" else None
        if not usage:
            usage = UsageMetadata(input_tokens=a.input_tokens, output_tokens=a.output_tokens,
                                  total_tokens=a.input_tokens + a.output_tokens)
        total = add_usage(total, usage)
    return total or UsageMetadata(input_tokens=0, output_tokens=0, total_tokens=0)


def _account(result: DispatchResult, call: _Call, *, ttft_s: float | None, streamed: bool) -> dict[str, Any]:
    return account(result, floor=call.floor, ttft_s=ttft_s, streamed=streamed)


def _chat_result(result: DispatchResult, call: _Call, *, ttft_s: float, streamed: bool) -> ChatResult:
    msg = cast(AIMessage, result.answer.payload)
    meta = {k: v for k, v in msg.response_metadata.items() if k not in STRIPPED_CHUNK_METADATA}
    meta["model_name"] = result.model
    meta["crescade"] = _account(result, call, ttft_s=ttft_s, streamed=streamed)
    out = AIMessage(content=msg.content, additional_kwargs=dict(msg.additional_kwargs), response_metadata=meta,
                    tool_calls=list(msg.tool_calls), invalid_tool_calls=list(msg.invalid_tool_calls),
                    usage_metadata=_usage_total(result), name=msg.name)
    return ChatResult(generations=[ChatGeneration(message=out)])


def _final_chunk(result: DispatchResult, call: _Call, *, ttft_s: float | None) -> AIMessageChunk:
    content = result.answer.payload.content if result.answer.payload is not None else ""
    return AIMessageChunk(
        content="" if isinstance(content, str) else [],
        response_metadata={"model_name": result.model,
                           "crescade": _account(result, call, ttft_s=ttft_s, streamed=True)},
        usage_metadata=_usage_total(result), chunk_position="last")
