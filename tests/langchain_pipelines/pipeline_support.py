"""Support for running the cascade inside real LangChain / LangGraph pipelines, offline.

* :class:`ScriptedChat`: a small rule-based tool-calling chat model. It answers capital-city and
  arithmetic questions, answers from a ``Context:`` block (RAG), calls bound tools with arguments read
  from the question (or from the last tool result when a tool call is forced) when the question is
  arithmetic, names a tool or a tool call is forced, streams word by word,
  and reports usage and ``model_name``. With ``weak=True`` it is the cheap model of the pool: it
  hedges on arithmetic ("I'm not sure, but it might be 8.") and breaks the arguments of the tool
  calls it makes for arithmetic questions (wrong types, or unparseable JSON with ``bad_args="json"``).
  Every call is recorded in ``calls`` (messages, bound tool names, tool choice); with ``error`` set,
  every call raises :class:`ProviderError`.
* :func:`make_records` / :func:`fit_cascade`: a real :class:`crescade.Cascade` calibrated on generated
  records of the same two models, ``cheap`` and ``strong``, so its quality estimator has learnt that
  ``cheap``'s hedges are wrong: a hedged draft is escalated to ``strong``, a clean answer is accepted.
* :class:`CollectingHandler`: a callback handler recording every run with its parent and tags.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from crescade import Cascade, ModelCard, Outcomes, Record

CHEAP, STRONG = "cheap", "strong"
PRICE_PER_MTOK = {CHEAP: 0.2, STRONG: 5.0}
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Greece": "Athens", "Chile": "Santiago",
}
HEDGE = "I'm not sure, but it might be {x}."
#: Integer fields that mean "the result" (filled with the sum); other integer fields take the operands.
RESULT_FIELDS = frozenset({"value", "total", "result", "answer", "sum"})
_ARITH = re.compile(r"(-?\d+)\s*(?:\+|plus|and)\s*(-?\d+)", re.I)
_INT = re.compile(r"-?\d+")
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")


# ---------------------------------------------------------------------------------------------- children
class ProviderError(RuntimeError):
    """What a scripted child raises when told to fail (a stand-in for a timeout, 429 or 5xx)."""


@dataclass(frozen=True)
class Call:
    """One call a scripted child received."""

    messages: tuple[BaseMessage, ...]
    tools: tuple[str, ...]
    tool_choice: Any
    streamed: bool

    @property
    def text(self) -> str:
        """Every message's text, joined: what the child saw."""
        return "\n".join(m.text for m in self.messages)


def arithmetic(text: str) -> int | None:
    """``a + b`` for "What is 3 plus 4?" style questions, else ``None``."""
    m = _ARITH.search(text)
    return int(m.group(1)) + int(m.group(2)) if m else None


def _country(text: str) -> str | None:
    return next((c for c in CAPITALS if c.lower() in text.lower()), None)


def _forced(tool_choice: Any) -> bool:
    return tool_choice not in (None, "auto", "none", False)


class ScriptedChat(BaseChatModel):
    """A deterministic rule-based chat model with tool calling and streaming (see the module docstring)."""

    model_name: str
    weak: bool = False
    bad_args: Literal["schema", "json"] = "schema"
    error: str | None = None
    """When set, every call raises ``ProviderError(error)`` (after being recorded), like a failing provider."""
    calls: list[Call] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "weak": self.weak}

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | bool | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    # -------------------------------------------------------------------------------- the script
    def _respond(self, messages: list[BaseMessage], kwargs: dict[str, Any], streamed: bool) -> AIMessage:
        tools: list[dict[str, Any]] = list(kwargs.get("tools") or [])
        choice = kwargs.get("tool_choice")
        self.calls.append(Call(tuple(messages), tuple(t["function"]["name"] for t in tools), choice, streamed))
        if self.error is not None:
            raise ProviderError(self.error)
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        last = messages[-1] if messages else HumanMessage("")
        names = [t["function"]["name"] for t in tools]
        relevant = arithmetic(question) is not None or any(n.lower() in question.lower() for n in names)
        if tools and (_forced(choice) or (isinstance(last, HumanMessage) and relevant)):
            content, calls, invalid = "", *self._tool_call(tools, choice, question, messages)
        else:
            content, calls, invalid = self._text(question, messages), [], []
        n_in = 1 + sum(len(m.text) for m in messages) // 4
        n_out = 1 + (len(content) + sum(len(json.dumps(c["args"])) for c in calls)) // 4
        return AIMessage(
            content=content, tool_calls=calls, invalid_tool_calls=invalid,
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
            response_metadata={"model_name": self.model_name, "finish_reason": "tool_calls" if calls else "stop"},
        )

    def _text(self, question: str, messages: list[BaseMessage]) -> str:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return f"The answer is {last.text}."
        everything = "\n".join(m.text for m in messages)
        if "Context:" in everything:
            context = everything.split("Context:", 1)[1].strip().splitlines()
            return f"According to the context: {context[0].strip()}" if context else "The context is empty."
        total = arithmetic(question)
        if total is not None:
            return HEDGE.format(x=total + 1) if self.weak else f"The answer is {total}."
        country = _country(question)
        if country is not None:
            return f"{CAPITALS[country]}."
        return f"You asked: {question}"

    def _tool_call(
        self, tools: list[dict[str, Any]], choice: Any, question: str, messages: list[BaseMessage]
    ) -> tuple[list[Any], list[Any]]:
        names = [t["function"]["name"] for t in tools]
        called = {c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
        name: str
        if isinstance(choice, dict):
            name = str(choice.get("function", {}).get("name") or choice.get("name"))
        elif isinstance(choice, str) and choice in names:
            name = choice
        elif isinstance(messages[-1], ToolMessage):  # forced after a tool result: the one not called yet
            name = next((n for n in names if n not in called), names[-1])
        else:
            name = next((n for n in names if n.lower() in question.lower()), names[0])
        spec = next(t["function"] for t in tools if t["function"]["name"] == name)
        args = self._args(spec.get("parameters") or {}, question, messages)
        call_id = f"call_{self.model_name}_{len(self.calls)}"
        if self.weak and arithmetic(question) is not None and not isinstance(messages[-1], ToolMessage):
            if self.bad_args == "json":
                raw = json.dumps(args)[:-3]  # cut off: not JSON any more
                return [], [invalid_tool_call(name=name, args=raw, id=call_id, error="unparseable arguments")]
            args = {k: "a few" if isinstance(v, int) else v for k, v in args.items()}  # wrong types
        return [tool_call(name=name, args=args, id=call_id)], []

    @staticmethod
    def _args(schema: dict[str, Any], question: str, messages: list[BaseMessage]) -> dict[str, Any]:
        last = messages[-1]
        source = last.text if isinstance(last, ToolMessage) else question
        operands = iter(int(x) for x in _INT.findall(question))
        numbers = [int(x) for x in _INT.findall(source)]
        result = numbers[0] if isinstance(last, ToolMessage) and numbers else arithmetic(question)
        quoted = _QUOTED.search(question)
        country = _country(question)
        args: dict[str, Any] = {}
        for field, spec in (schema.get("properties") or {}).items():
            kind = spec.get("type") or next((s.get("type") for s in spec.get("anyOf", []) if "type" in s), "string")
            if kind in ("integer", "number"):
                args[field] = result if field in RESULT_FIELDS and result is not None else next(operands, 0)
            elif "enum" in spec:
                args[field] = spec["enum"][0]
            elif field in ("city", "capital") and country is not None:
                args[field] = CAPITALS[country]
            elif field == "country" and country is not None:
                args[field] = country
            elif quoted:
                args[field] = quoted.group(1) or quoted.group(2)
            else:
                args[field] = "ok"
        return args

    # -------------------------------------------------------------------------------- BaseChatModel
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._respond(messages, kwargs, streamed=False))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msg = self._respond(messages, kwargs, streamed=True)
        for token in re.split(r"(\s+)", msg.text):
            if token:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                  for i, c in enumerate(msg.tool_calls)]
        chunks += [tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=len(chunks) + i)
                   for i, c in enumerate(msg.invalid_tool_calls)]
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", tool_call_chunks=chunks, usage_metadata=msg.usage_metadata,
            response_metadata=msg.response_metadata, chunk_position="last",
        ))


# ---------------------------------------------------------------------------------------------- calibration
def make_records(n: int = 120, seed: int = 0) -> list[Record]:
    """Capital and arithmetic questions answered by ``cheap`` and ``strong``.

    ``cheap`` is right on 92% of the capital questions but only 25% of the arithmetic ones, and when it is
    wrong it hedges, as the scripted cheap child does; ``strong`` is right 95-97% of the time.
    """
    rng = random.Random(seed)
    accuracy = {CHEAP: {"capital": 0.92, "math": 0.25}, STRONG: {"capital": 0.97, "math": 0.95}}
    cities = list(CAPITALS.values())
    records = []
    for i in range(n):
        if i % 2 == 0:
            country = rng.choice(list(CAPITALS))
            kind, prompt, gold = "capital", f"What is the capital of {country}?", CAPITALS[country]
            wrong = rng.choice([c for c in cities if c != gold])
            good = f"{gold}."
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            kind, prompt, gold = "math", f"What is {a} plus {b}?", str(a + b)
            wrong = str(a + b + rng.choice([-1, 1, 10]))
            good = f"The answer is {gold}."
        for model in (CHEAP, STRONG):
            ok = rng.random() < accuracy[model][kind]
            text = good if ok else HEDGE.format(x=wrong)
            n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
            records.append(Record(
                prompt_id=f"q{i:03d}", prompt=prompt, model=model, response=text, correct=float(ok),
                input_tokens=n_in, output_tokens=n_out, cost_usd=price_card(model).cost(n_in, n_out), task=kind,
            ))
    return records


def price_card(model: str) -> ModelCard:
    return ModelCard(name=model, input_per_mtok=PRICE_PER_MTOK[model], output_per_mtok=PRICE_PER_MTOK[model])


def fit_cascade(**overrides: Any) -> Cascade:
    """A small cascade (2 clusters, ladder ``cheap -> strong``) fitted on :func:`make_records`."""
    params: dict[str, Any] = {"quality_target": 0.95, "n_clusters": 2, "n_folds": 3, "max_depth": 2,
                              "random_state": 0, "progress": False}
    params.update(overrides)
    prices = {m: price_card(m) for m in PRICE_PER_MTOK}
    return Cascade(**params).fit(Outcomes.from_records(make_records()), prices=prices)


# ---------------------------------------------------------------------------------------------- helpers
def account(message: BaseMessage) -> dict[str, Any]:
    """The cascade's account on a returned message."""
    acc = message.response_metadata.get("crescade")
    assert isinstance(acc, dict), f"no crescade account in {message.response_metadata!r}"
    return acc


@dataclass
class Run:
    """One run seen by :class:`CollectingHandler`."""

    kind: str  # "chain" | "chat_model" | "tool"
    run_id: Any
    parent_run_id: Any
    name: str
    tags: tuple[str, ...]
    ended: bool = False


class CollectingHandler(BaseCallbackHandler):
    """Records chain, chat-model and tool runs with their ids, parents, names and tags."""

    def __init__(self) -> None:
        self.runs: dict[Any, Run] = {}
        self.order: list[Run] = []

    def _start(self, kind: str, serialized: dict[str, Any] | None, run_id: Any, parent_run_id: Any,
               tags: list[str] | None, kwargs: dict[str, Any]) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or ((serialized or {}).get("id") or ["?"])[-1]
        run = Run(kind, run_id, parent_run_id, str(name), tuple(tags or ()))
        self.runs[run_id] = run
        self.order.append(run)

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: Any,
                       parent_run_id: Any = None, tags: list[str] | None = None, **kwargs: Any) -> None:
        self._start("chain", serialized, run_id, parent_run_id, tags, kwargs)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[BaseMessage]], *,
                            run_id: Any, parent_run_id: Any = None, tags: list[str] | None = None,
                            **kwargs: Any) -> None:
        self._start("chat_model", serialized, run_id, parent_run_id, tags, kwargs)

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: Any,
                      parent_run_id: Any = None, tags: list[str] | None = None, **kwargs: Any) -> None:
        self._start("tool", serialized, run_id, parent_run_id, tags, kwargs)

    def on_llm_end(self, response: Any, *, run_id: Any, parent_run_id: Any = None, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        assert run is not None, f"on_llm_end for unknown run {run_id}"
        assert run.parent_run_id == parent_run_id, "on_llm_end reports another parent than on_chat_model_start"
        run.ended = True

    def chat_runs(self) -> list[Run]:
        return [r for r in self.order if r.kind == "chat_model"]

    def parent_chain(self, run: Run) -> list[Run]:
        """``run``'s ancestors, nearest first."""
        out = []
        while run.parent_run_id is not None and run.parent_run_id in self.runs:
            run = self.runs[run.parent_run_id]
            out.append(run)
        return out
