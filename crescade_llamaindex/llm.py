"""``CascadeLLM``: a LlamaIndex ``FunctionCallingLLM`` that routes, judges and escalates over other LLMs.

All decisions come from the core (:class:`crescade.Cascade` plans and judges, :class:`DispatchSession`
walks the ladder), exactly as in ``crescade_langchain.CascadeChatModel``; this module translates
messages, calls the tiers inside the cascade's span, emits instrumentation events and reports the account.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
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
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from pydantic import ConfigDict, Field, PrivateAttr

from crescade import Answer, Cascade, InputError, ModelCard, Reliability
from crescade.seam import (
    DispatchResult,
    DispatchSession,
    StreamClock,
    TierAttempt,
    account,
    arun_session,
    astream_session,
    check_messages,
    check_pool,
    check_tool,
    fit_on_records,
    run_session,
    start_session,
    stream_session,
)

from ._events import CascadeAnswerEvent, CascadeEscalationEvent, CascadeRouteEvent, dispatcher
from ._messages import (
    _USAGE_KEYS,
    OUR_KEYS,
    answer_from_response,
    buffer_string,
    clean_history,
    content_kinds,
    conversation_floor,
    forced_tool,
    message_text,
    render_query,
)
from .calibration import collect_records

__all__ = ["CascadeLLM"]

_TOOLS_KW = "_crescade_tools"
_TOOL_OPTS_KW = "_crescade_tool_opts"
_DEFAULT_CONTEXT_WINDOW = 3900


@dataclass
class _Call:
    """One cascade call's inputs, fixed before the first tier is asked."""

    messages: list[ChatMessage]  # as the children get them (cascade keys stripped)
    kwargs: dict[str, Any]
    tools: list[Any] | None
    tool_opts: dict[str, Any]
    query: str
    floor: str | None
    span: str | None  # the cascade's span id: every child call and event is parented to it
    prompt: str | None = None  # completion mode
    formatted: bool = False
    prompt_text: str = field(default="")
    needs: set[str] = field(default_factory=lambda: {"text"})

    @property
    def forced(self) -> str | bool:
        if self.tools is None:
            return False
        return forced_tool(self.tool_opts.get("tool_choice"), bool(self.tool_opts.get("tool_required")), self.tools)


@contextmanager
def _under(span: str | None) -> Iterator[None]:
    """Run a child call with the cascade's span as the active one (streams outlive the method's span)."""
    token = active_span_id.set(span)
    try:
        yield
    finally:
        active_span_id.reset(token)


class CascadeLLM(FunctionCallingLLM):
    """An LLM that answers with the cheapest model the fitted cascade trusts, escalating when not.

    ``llms`` maps every model of the cascade's pool to a LlamaIndex LLM (names must match the pool
    exactly). Every response carries ``additional_kwargs["crescade"]`` (the same account as
    ``response_metadata["crescade"]`` in the LangChain adapter), on the response and on its message,
    and a tier stamp (``additional_kwargs["crescade_tier"]``: the tier index in the ladder;
    ``["crescade_model"]``: the pool name) on every response and streamed chunk.

    Token counting: the cascade's final response reports usage summed over every tier called (rejected
    drafts included) in ``raw["usage"]`` and ``additional_kwargs`` (``prompt_tokens``/``completion_tokens``),
    so a ``TokenCountingHandler`` on the cascade's callback manager counts each call once, at its true
    cost. The children keep their own callback managers: attach counting handlers to the cascade or to
    the children, not to both (a child built while ``Settings.callback_manager`` was set shares it).
    """

    llms: dict[str, LLM] = Field(exclude=True)
    """The pool: cascade model name -> LlamaIndex LLM."""
    cascade: Any = Field(exclude=True)
    """A fitted :class:`crescade.Cascade`."""
    prices: dict[str, Any] | None = Field(default=None, exclude=True)
    """Price cards per pool model; default: the cards the cascade was fitted with."""
    conversation_window: int = Field(default=6, ge=1)
    monotone: bool = True
    max_depth: int | None = Field(default=None, ge=1)
    reliability: Reliability | None = Field(default=None, exclude=True)
    """Timeouts, a request deadline, retries, rate-limit cool-downs and a spend cap
    (:class:`crescade.Reliability`; a dict of its fields works too)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    _cards: dict[str, ModelCard] = PrivateAttr(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        # checked before pydantic runs, so the error is the crescade one, not a wrapped ValidationError
        cards = check_pool(kwargs.get("cascade"), kwargs.get("llms"), kwargs.get("prices"), field="llms", kind="LLM")
        if "reliability" in kwargs:
            kwargs["reliability"] = Reliability.coerce(kwargs["reliability"])
        super().__init__(**kwargs)
        self._cards = cards

    @classmethod
    def class_name(cls) -> str:
        return "CascadeLLM"

    @classmethod
    def from_artifact(cls, path: str | PathLike[str], *, llms: Mapping[str, LLM], embedder: Any = None,
                      **kwargs: Any) -> CascadeLLM:
        """Load a saved cascade (``Cascade.save``) and wrap ``llms`` with it."""
        return cls(llms=dict(llms), cascade=Cascade.load(Path(path), embedder=embedder), **kwargs)

    @classmethod
    def calibrate(
        cls, llms: Mapping[str, LLM], examples: Sequence[Any], out: str | PathLike[str], *,
        prices: Mapping[str, ModelCard], quality_target: float | None = 0.98, cost_target: float | None = None,
        concurrency: int = 4, system_prompt: str | None = None, split: str | None = "train",
        progress: bool = True, **cascade_params: Any,
    ) -> CascadeLLM:
        """Call every LLM on labelled examples (resumable records in ``out``), fit a
        :class:`~crescade.Cascade` on them, and wrap ``llms`` with it.

        Only prompts every LLM answered are used; with ``split`` set and present in the examples, only that
        split is fitted on (the rest stays for evaluation). Other keyword arguments are
        :class:`~crescade.Cascade` parameters.
        """
        collect_records(llms, examples, out, prices=prices, concurrency=concurrency,
                        system_prompt=system_prompt, progress=progress)
        cascade = fit_on_records(out, prices=prices, split=split, quality_target=quality_target,
                                 cost_target=cost_target, progress=progress, **cascade_params)
        return cls(llms=dict(llms), cascade=cascade, prices=dict(prices))

    @property
    def metadata(self) -> LLMMetadata:
        """Truthful for every tier that may serve: the smallest context window and output budget, and
        function calling only when every tier is a function-calling LLM."""
        metas = [m.metadata for m in self.llms.values()]
        windows = [md.context_window for md in metas if md.context_window and md.context_window > 0]
        outputs = [md.num_output for md in metas if md.num_output and md.num_output > 0]
        fc = all(isinstance(m, FunctionCallingLLM) and m.metadata.is_function_calling_model
                 for m in self.llms.values())
        return LLMMetadata(context_window=min(windows) if windows else _DEFAULT_CONTEXT_WINDOW,
                           num_output=min(outputs) if outputs else 256, is_chat_model=True,
                           is_function_calling_model=fc, model_name="crescade")

    # ------------------------------------------------------------------ tools
    def _prepare_chat_with_tools(
        self, tools: Sequence[Any], user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None, verbose: bool = False,
        allow_parallel_tool_calls: bool = False, tool_required: bool = False, **kwargs: Any,
    ) -> dict[str, Any]:
        """Keep the raw tools: each tier formats them itself (``child.chat_with_tools``)."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg)
                            if isinstance(user_msg, str) else user_msg)
        return {"messages": messages, _TOOLS_KW: list(tools),
                _TOOL_OPTS_KW: {"verbose": verbose, "allow_parallel_tool_calls": allow_parallel_tool_calls,
                                "tool_required": tool_required, **kwargs}}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        """Parsed by the LLM of the tier that produced ``response`` (read from its tier stamp)."""
        name = response.additional_kwargs.get("crescade_model") or \
            response.message.additional_kwargs.get("crescade_model")
        if name not in self.llms:
            if error_on_no_tool_call:
                raise ValueError("response carries no crescade tier stamp; it did not come from this CascadeLLM")
            return []
        child = self.llms[name]
        calls: list[ToolSelection] = child.get_tool_calls_from_response(  # type: ignore[attr-defined]
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)
        return calls

    # ------------------------------------------------------------------ one call
    def _prepare(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> _Call:
        kwargs = dict(kwargs)
        tools = kwargs.pop(_TOOLS_KW, None)
        opts = dict(kwargs.pop(_TOOL_OPTS_KW, None) or {})
        if tools is not None:
            opts.update(kwargs)  # anything else given to chat() rides along to each chat_with_tools
            kwargs = {}
        messages = list(messages)
        bad = next((i for i, m in enumerate(messages) if not isinstance(m, ChatMessage)), None)
        if bad is not None:
            raise InputError(f"message {bad}: expected a ChatMessage, got {type(messages[bad]).__name__}")
        needs = check_messages([message_text(m) for m in messages], [content_kinds(m) for m in messages])
        if tools is not None:
            for i, tool in enumerate(tools):
                meta = getattr(tool, "metadata", None)
                if meta is None:
                    raise InputError(f"tool {i}: expected a LlamaIndex tool, got {type(tool).__name__}")
                check_tool(meta.name, _parameters(meta, i), index=i)
        pool = self.cascade.models_
        children = clean_history(messages)
        return _Call(messages=children, kwargs=kwargs, tools=list(tools) if tools is not None else None,
                     tool_opts=opts, query=render_query(messages, self.conversation_window),
                     floor=conversation_floor(messages, pool) if self.monotone else None,
                     span=active_span_id.get(), prompt_text=buffer_string(children), needs=needs)

    def _prepare_completion(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> _Call:
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        check_messages([prompt], [set()])
        return _Call(messages=[], kwargs=dict(kwargs), tools=None, tool_opts={}, query=prompt, floor=None,
                     span=active_span_id.get(), prompt=prompt, formatted=formatted, prompt_text=prompt)

    def _session(self, call: _Call) -> DispatchSession:
        session = start_session(self.cascade, call.query, prices=self._cards, floor=call.floor,
                                max_depth=self.max_depth, reliability=self.reliability, needs=call.needs,
                                on_record=lambda attempt: self._after(attempt, plan.ladder, call))
        plan = session.plan
        dispatcher.event(CascadeRouteEvent(cluster=int(plan.cluster), routed_model=plan.routed_model,
                                           ladder=list(plan.ladder), floor=call.floor, reason=plan.reason,
                                           span_id=call.span))
        return session

    def _after(self, a: TierAttempt, ladder: Sequence[str], call: _Call) -> None:
        """Emit an escalation event for a rejected, failed or skipped tier that has a next tier."""
        if a.accepted or a.tier + 1 >= len(ladder):
            return
        v = a.verdict
        dispatcher.event(CascadeEscalationEvent(
            tier=a.tier, model=a.model, next_model=ladder[a.tier + 1], reason=a.reason, error=a.error,
            p=float(v.p) if v is not None else None, threshold=float(v.threshold) if v is not None else None,
            span_id=call.span))

    def _done(self, result: DispatchResult, call: _Call) -> None:
        dispatcher.event(CascadeAnswerEvent(
            model=result.model, routed_model=result.routed_model, escalated=result.escalated,
            reason=result.reason, cost_usd=result.total_cost_usd, input_tokens=result.total_input_tokens,
            output_tokens=result.total_output_tokens, span_id=call.span))

    def _answer(self, name: str, resp: Any, call: _Call, live: _Live | None = None) -> Answer:
        if not isinstance(resp, (ChatResponse, CompletionResponse)):
            raise TypeError(f"LLM {name!r} returned {type(resp).__name__}, expected a ChatResponse")
        return answer_from_response(name, resp, call.prompt_text, child=self.llms[name], tools=call.tools,
                                    forced=call.forced, chunks=live.chunks if live is not None else None,
                                    clock=live.clock if live is not None else None)

    # tier calls ----------------------------------------------------------
    def _call_tier(self, name: str, call: _Call) -> Any:
        child = self.llms[name]
        with _under(call.span):
            if call.prompt is not None:
                return child.complete(call.prompt, formatted=call.formatted, **call.kwargs)
            if call.tools is not None:
                return child.chat_with_tools(call.tools, chat_history=list(call.messages),  # type: ignore[attr-defined]
                                             **call.tool_opts)
            return child.chat(call.messages, **call.kwargs)

    async def _acall_tier(self, name: str, call: _Call) -> Any:
        child = self.llms[name]
        with _under(call.span):
            if call.prompt is not None:
                return await child.acomplete(call.prompt, formatted=call.formatted, **call.kwargs)
            if call.tools is not None:
                return await child.achat_with_tools(  # type: ignore[attr-defined]
                    call.tools, chat_history=list(call.messages), **call.tool_opts)
            return await child.achat(call.messages, **call.kwargs)

    def _stream_tier(self, name: str, call: _Call) -> Iterator[Any]:
        child = self.llms[name]
        it: Iterator[Any]
        with _under(call.span):
            if call.prompt is not None:
                it = child.stream_complete(call.prompt, formatted=call.formatted, **call.kwargs)
            elif call.tools is not None:
                it = child.stream_chat_with_tools(  # type: ignore[attr-defined]
                    call.tools, chat_history=list(call.messages), **call.tool_opts)
            else:
                it = child.stream_chat(call.messages, **call.kwargs)
        try:
            while True:
                with _under(call.span):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with _under(call.span):
                    close()

    async def _astream_tier(self, name: str, call: _Call) -> AsyncIterator[Any]:
        child = self.llms[name]
        ait: AsyncIterator[Any]
        with _under(call.span):
            if call.prompt is not None:
                ait = await child.astream_complete(call.prompt, formatted=call.formatted, **call.kwargs)
            elif call.tools is not None:
                ait = await child.astream_chat_with_tools(  # type: ignore[attr-defined]
                    call.tools, chat_history=list(call.messages), **call.tool_opts)
            else:
                ait = await child.astream_chat(call.messages, **call.kwargs)
        try:
            while True:
                with _under(call.span):
                    try:
                        item = await ait.__anext__()
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            aclose = getattr(ait, "aclose", None)
            if aclose is not None:
                with _under(call.span):
                    await aclose()

    # loops ---------------------------------------------------------------
    def _run(self, call: _Call) -> Any:
        t_start = time.perf_counter()
        result = run_session(self._session(call), lambda _tier, name, _last: self._answer(
            name, self._call_tier(name, call), call))
        self._done(result, call)
        return _final(result, call, ttft_s=time.perf_counter() - t_start, streamed=False)

    async def _arun(self, call: _Call) -> Any:
        t_start = time.perf_counter()

        async def ask(_tier: int, name: str, _last: bool) -> Answer:
            return self._answer(name, await self._acall_tier(name, call), call)

        result = await arun_session(self._session(call), ask)
        self._done(result, call)
        return _final(result, call, ttft_s=time.perf_counter() - t_start, streamed=False)

    def _buffer(self, call: _Call) -> Callable[[int, str, float], _Live]:
        return lambda tier, name, t0: _Live(t0, tier, name, lambda live: self._answer(name, live.last(), call, live))

    def _emit(self, kind: str, item: Any, call: _Call, t_start: float) -> Any:
        if kind == "chunk":
            return item
        if kind == "draft":
            return _forwarded(item.last(), item.tier, item.name, whole=True)
        result, first_out = item
        self._done(result, call)
        ttft = first_out - t_start if first_out is not None else None
        return _final(result, call, ttft_s=ttft, streamed=True)

    def _stream(self, call: _Call) -> Generator[Any, None, None]:
        """Earlier tiers streamed into a buffer (timed) and judged (an accepted one is emitted whole); the last
        tier streams live. The final chunk carries the usage total and the account."""
        t_start = time.perf_counter()
        events = stream_session(self._session(call), lambda _tier, name: self._stream_tier(name, call),
                                self._buffer(call))
        for kind, item in events:
            yield self._emit(kind, item, call, t_start)

    async def _astream(self, call: _Call) -> AsyncGenerator[Any, None]:
        """Async :meth:`_stream`."""
        t_start = time.perf_counter()
        events = astream_session(self._session(call), lambda _tier, name: self._astream_tier(name, call),
                                 self._buffer(call))
        async for kind, item in events:
            yield self._emit(kind, item, call, t_start)

    # ------------------------------------------------------------------ the LlamaIndex API
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        response: ChatResponse = self._run(self._prepare(messages, kwargs))
        return response

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        response: ChatResponse = await self._arun(self._prepare(messages, kwargs))
        return response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(self._prepare(messages, kwargs))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream(self._prepare(messages, kwargs))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response: CompletionResponse = self._run(self._prepare_completion(prompt, formatted, kwargs))
        return response

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response: CompletionResponse = await self._arun(self._prepare_completion(prompt, formatted, kwargs))
        return response

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream(self._prepare_completion(prompt, formatted, kwargs))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        return self._astream(self._prepare_completion(prompt, formatted, kwargs))


# ---------------------------------------------------------------------- helpers
def _parameters(meta: Any, index: int) -> Any:
    """A tool's parameter schema, or a clear error when it cannot even be produced."""
    try:
        return meta.get_parameters_dict()
    except Exception as exc:
        raise InputError(f"tool {index} ({getattr(meta, 'name', '?')!r}): its parameter schema cannot be built "
                         f"({type(exc).__name__}: {exc})") from None


def _has_output(resp: Any) -> bool:
    if resp.delta:
        return True
    if isinstance(resp, ChatResponse):
        return any(b.block_type == "tool_call" for b in resp.message.blocks)
    return False


class _Live:
    """A tier's streamed chunks, timed by a :class:`~crescade.serving.streamclock.StreamClock`."""

    def __init__(self, t0: float, tier: int, name: str, to_answer: Callable[[_Live], Answer]) -> None:
        self.clock = StreamClock(t0)
        self.chunks: list[Any] = []
        self.tier, self.name = tier, name
        self._to_answer = to_answer

    @property
    def t_first(self) -> float | None:
        return self.clock.t_first

    def add(self, chunk: Any) -> Any:
        """Record ``chunk``; return it stamped with its tier, as the cascade forwards it when streaming live."""
        self.chunks.append(chunk)
        if _has_output(chunk):
            self.clock.tick()
        return _forwarded(chunk, self.tier, self.name)

    def last(self) -> Any:
        if not self.chunks:
            raise ValueError("the LLM's stream returned no chunks")
        return self.chunks[-1]  # LlamaIndex stream chunks carry the cumulative message/text

    def answer(self) -> Answer:
        return self._to_answer(self)


def _stamped_kwargs(kw: Mapping[str, Any], tier: int, name: str) -> dict[str, Any]:
    out = {k: v for k, v in kw.items() if k not in OUR_KEYS and k not in _USAGE_KEYS}
    out.update(crescade_tier=tier, crescade_model=name)
    return out


def _message(msg: ChatMessage, extra: Mapping[str, Any]) -> ChatMessage:
    kw = {k: v for k, v in msg.additional_kwargs.items() if k not in OUR_KEYS and k not in _USAGE_KEYS}
    kw.update(extra)
    return msg.model_copy(update={"additional_kwargs": kw, "blocks": list(msg.blocks)})


def _forwarded(resp: Any, tier: int, name: str, *, whole: bool = False) -> Any:
    """A tier's response or chunk as the cascade emits it mid-stream: stamped with its tier, without the
    child's usage (the total comes once, on the final chunk) or raw payload."""
    stamp = {"crescade_tier": tier, "crescade_model": name}
    kw = _stamped_kwargs(resp.additional_kwargs, tier, name)
    if isinstance(resp, ChatResponse):
        delta = resp.message.content or "" if whole else resp.delta
        return ChatResponse(message=_message(resp.message, stamp), delta=delta, additional_kwargs=kw,
                            logprobs=resp.logprobs)
    delta = resp.text if whole else resp.delta
    return CompletionResponse(text=resp.text, delta=delta, additional_kwargs=kw, logprobs=resp.logprobs)


def _account(result: DispatchResult, call: _Call, *, ttft_s: float | None, streamed: bool) -> dict[str, Any]:
    return account(result, floor=call.floor, ttft_s=ttft_s, streamed=streamed)


def _final(result: DispatchResult, call: _Call, *, ttft_s: float | None, streamed: bool) -> Any:
    """The cascade's response (or a stream's final chunk): the answering tier's output, stamped, with the
    usage total in ``raw["usage"]`` and ``additional_kwargs`` and the account in ``additional_kwargs["crescade"]``."""
    resp = result.answer.payload
    final = result.attempts[-1]
    account = _account(result, call, ttft_s=ttft_s, streamed=streamed)
    n_in, n_out = result.total_input_tokens, result.total_output_tokens
    usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
    raw = {"usage": usage, "model": result.model, "tier_raw": resp.raw}
    kw = _stamped_kwargs(resp.additional_kwargs, final.tier, final.model)
    kw.update(usage, crescade=account)
    if isinstance(resp, ChatResponse):
        msg = _message(resp.message, {"crescade": account, "crescade_tier": final.tier,
                                      "crescade_model": final.model})
        return ChatResponse(message=msg, delta="" if streamed else resp.delta, raw=raw, additional_kwargs=kw,
                            logprobs=resp.logprobs)
    return CompletionResponse(text=resp.text, delta="" if streamed else resp.delta, raw=raw,
                              additional_kwargs=kw, logprobs=resp.logprobs)
