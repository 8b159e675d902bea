"""The one seam between the core and the framework adapters.

``crescade_langchain`` and ``crescade_llamaindex`` import this module and the public names of
``crescade``, nothing deeper. An adapter translates its framework's objects into the neutral terms used
here -- turns as ``(role, text)``, tool calls as ``(name, args)``, bound tools as ``name -> schema`` --
and everything that decides something lives on this side, once, so the two adapters cannot drift:

* :func:`check_pool`: the children map the cascade's pool exactly, and every pool model has a price;
* :func:`render_query`: the routing query from the conversation's turns;
* :func:`calls_text`: how an answer's tool calls read as text (for the QE, accounts and routing);
* :func:`forced_tool` and :func:`tool_call_problems`: whether the request forces a tool call, and what is
  wrong with the calls an answer made (the gate escalates on any problem);
* :func:`account`: the account every response carries;
* :func:`summary_from_provider`: the token-logprob summary of a live response's ``(token, logprob)`` entries
  (the quality estimator reads it as it read the summaries recorded for calibration);
* the dispatch drivers, request checks, token counting, stream timing, redaction, collection and the
  fault schedule, re-exported so that adapters need no deeper import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .common.errors import InputError, PoolError, PricingError
from .common.redact import register_secrets, secrets_of
from .engine.cascade import Cascade
from .engine.decisions import Answer, UsageSource
from .engine.logprobs import LogprobSummary, summarize_logprobs, summary_from_provider
from .engine.pricing import ModelCard
from .engine.tokens import count_tokens, resolve_usage
from .evaluation.timing import query_tpot
from .serving.conversation import conversation_floor
from .serving.dispatch import (
    DispatchResult,
    DispatchSession,
    TierAttempt,
    arun_session,
    astream_session,
    run_session,
    stream_session,
)
from .serving.faults import Fault, FaultSchedule
from .serving.inputs import check_messages, check_tool
from .serving.jsonschema_lite import schema_errors
from .serving.reliability import Reliability
from .serving.streamclock import StreamClock
from .tools.collect import CollectReport, Example, collect, fit_on_records
from .tools.graders import get_grader

__all__ = [
    "Answer",
    "Cascade",
    "CollectReport",
    "DispatchResult",
    "DispatchSession",
    "Example",
    "Fault",
    "FaultSchedule",
    "InputError",
    "LogprobSummary",
    "ModelCard",
    "PoolError",
    "PricingError",
    "Reliability",
    "StreamClock",
    "TierAttempt",
    "Turn",
    "UsageSource",
    "account",
    "arun_session",
    "astream_session",
    "calls_text",
    "cascade_fingerprint",
    "check_messages",
    "check_pool",
    "check_tool",
    "collect",
    "conversation_floor",
    "count_tokens",
    "fit_on_records",
    "forced_tool",
    "get_grader",
    "query_tpot",
    "register_secrets",
    "render_query",
    "resolve_usage",
    "run_session",
    "secrets_of",
    "start_session",
    "stream_session",
    "summarize_logprobs",
    "summary_from_provider",
    "tool_call_problems",
    "with_calls",
]

Turn = tuple[str, str]
"""One message as the core sees it: ``(role, text)``. Roles: ``"system"``, ``"user"``, ``"assistant"``,
``"tool result"`` or ``"tool result (<tool name>)"``; any other role is rendered as given."""

_ANY_CHOICES = frozenset({"any", "required"})
_NOT_FORCED = frozenset({"auto", "none"})


# ---------------------------------------------------------------------- the pool
def check_pool(cascade: Any, children: Any, prices: Mapping[str, Any] | None, *, field: str = "models",
               kind: str = "chat model") -> dict[str, ModelCard]:
    """The price card of every pool model, in pool order.

    ``children`` (the adapter's ``field``, mapping pool names to framework models of ``kind``) must map
    the fitted cascade's pool exactly; ``prices`` default to the cards the cascade was fitted with.
    Registers the children's API keys for redaction. Raises :class:`PoolError` / :class:`PricingError`.
    """
    pool = list(getattr(cascade, "models_", None) or [])
    if not pool:
        raise PoolError("the cascade is not fitted: call Cascade.fit(...) or Cascade.load(path) first")
    if not isinstance(children, Mapping):
        raise PoolError(f"{field} must be a mapping of the cascade's pool {pool} to {kind}s")
    missing = [m for m in pool if m not in children]
    extra = [m for m in children if m not in pool]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {kind}(s) for {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"model(s) {', '.join(map(repr, extra))} not in the cascade's pool")
        raise PoolError(f"{field} must map exactly the cascade's pool {pool}: {'; '.join(parts)}")
    cards = dict(prices if prices is not None else getattr(cascade, "cards_", {}) or {})
    unpriced = [m for m in pool if not isinstance(cards.get(m), ModelCard)]
    if unpriced:
        raise PricingError(f"no price (ModelCard) for pool model(s) {', '.join(map(repr, unpriced))}; "
                           "pass prices={name: ModelCard(...)} or fit the cascade with prices")
    register_secrets(v for child in children.values() for v in secrets_of(child))
    return {m: cards[m] for m in pool}


def cascade_fingerprint(cascade: Cascade) -> str:
    """What identifies a fitted cascade and its knob (for cache keys and traces)."""
    params = cascade.get_params()
    return f"{cascade.fingerprint()}:q={params.get('quality_target')}:c={params.get('cost_target')}"


def start_session(cascade: Cascade, query: str, *, prices: Mapping[str, ModelCard], floor: str | None,
                  max_depth: int | None, reliability: Reliability | None, needs: Iterable[str] | None = None,
                  on_record: Callable[[TierAttempt], None] | None = None) -> DispatchSession:
    """Plan ``query`` (never below the conversation's ``floor``) and start walking its ladder; ``needs`` are
    the kinds of content the request carries, ``on_record`` sees each tier's attempt as it is recorded."""
    return DispatchSession.start(cascade, query, prices=prices, min_model=floor, max_depth=max_depth,
                                 reliability=reliability, needs=set(needs) if needs is not None else None,
                                 on_record=on_record)


# ---------------------------------------------------------------------- the routing query
def render_query(turns: Sequence[Turn], window: int) -> str:
    """The routing query: the system turns plus the last ``window`` other turns, as ``role: text`` lines.

    A conversation that is one user turn (no system turn) is routed on its bare text, the form the
    cascade was calibrated on.
    """
    systems = [t for t in turns if t[0] == "system"]
    rest = [t for t in turns if t[0] != "system"]
    tail = rest[-window:] if window > 0 else []
    if not systems and len(tail) == 1 and tail[0][0] == "user":
        return tail[0][1]
    return "\n".join(f"{role}: {text}" for role, text in [*systems, *tail])


def calls_text(calls: Iterable[tuple[str, Any]]) -> str:
    """``name({...}); name2({...})``: arguments as sorted JSON, or as given when they are a raw string."""
    out = []
    for name, args in calls:
        rendered = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, sort_keys=True,
                                                                  default=str)
        out.append(f"{name}({rendered})")
    return "; ".join(out)


def with_calls(text: str, calls: Sequence[tuple[str, Any]]) -> str:
    """An answer's text with its tool calls summarised as ``[tool calls: ...]`` (alone when there is no text)."""
    if not calls:
        return text
    summary = f"[tool calls: {calls_text(calls)}]"
    return f"{text}\n{summary}" if text.strip() else summary


# ---------------------------------------------------------------------- tools
def forced_tool(tool_choice: Any, tool_names: Iterable[str], *, tool_required: bool = False) -> str | bool:
    """``False`` if the model may answer in text, ``True`` if some tool call is forced, or the forced tool's name.

    ``tool_choice`` in any provider's form (``"auto"``, ``"none"``, ``"any"``, ``"required"``, a tool name,
    ``True``, ``{"type": "function", "function": {"name": ...}}``, ``{"type": "tool", "name": ...}``);
    ``tool_required`` (LlamaIndex's flag) forces a call unless the choice is ``"none"`` or names a tool.
    """
    if tool_choice is None or tool_choice is False:
        return bool(tool_required)
    if tool_choice is True:
        return True
    if isinstance(tool_choice, str):
        if tool_choice in _NOT_FORCED:
            return bool(tool_required) and tool_choice != "none"
        if tool_choice in _ANY_CHOICES:
            return True
        return tool_choice if tool_choice in set(tool_names) else True
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        if isinstance(name, str):
            return name
        return tool_choice.get("type") not in _NOT_FORCED
    return bool(tool_required)


def tool_call_problems(calls: Sequence[tuple[str, Any]], schemas: Mapping[str, Mapping[str, Any] | None],
                       forced: str | bool) -> list[str] | None:
    """What is wrong with an answer's tool ``calls`` (``(name, args)``; ``args`` that did not parse as a
    JSON object are anything but a mapping) against the bound tools (``name -> parameter schema or None``;
    empty when tools were bound outside the cascade, so there is nothing to check names against).

    ``None`` when there is nothing to check (no call, none forced), ``[]`` when every call is valid, else
    one line per problem: a forced call not made, the wrong tool called, unparseable or schema-violating
    arguments, an unknown tool.
    """
    if not calls:
        return ["a tool call was required but none was made"] if forced else None
    problems: list[str] = []
    for name, args in calls:
        if isinstance(forced, str) and name != forced:
            problems.append(f"tool {forced!r} was required, {name!r} was called")
        if not isinstance(args, Mapping):
            problems.append(f"unparseable arguments for tool {name!r}")
            continue
        if not schemas:
            continue
        if name not in schemas:
            problems.append(f"unknown tool {name!r}")
            continue
        schema = schemas[name]
        if schema is not None:
            problems += [f"tool {name!r}: {e}" for e in schema_errors(dict(args), schema)]
    return problems


# ---------------------------------------------------------------------- the account
def account(result: DispatchResult, *, floor: str | None, ttft_s: float | None, streamed: bool) -> dict[str, Any]:
    """The account a response carries (``response_metadata["crescade"]`` / ``additional_kwargs["crescade"]``):
    the dispatch's own account plus the conversation floor, whether the answer streamed, TTFT and TPOT."""
    out = result.to_dict()
    out.update(floor=floor, streamed=streamed, ttft_s=ttft_s, tpot_s=result.attempts[-1].tpot_s)
    return out
