#!/usr/bin/env python
"""A LangChain v1 tool-calling agent whose LLM is a crescade cascade.

``create_agent(CascadeChatModel(...), tools=[add, multiply])`` answers a few questions. Each model call of
the agent loop (a "turn") goes through the cascade: routed to the cheap model, judged, and escalated to the
strong one when the draft looks wrong or calls a tool with invalid arguments. For every turn the script
prints what the model did and the cascade's account (route, escalation and why, QE score, tokens and
dollars per tier).

Offline by default: two built-in scripted chat models stand in for real ones (``small`` is right about
capitals but hedges on arithmetic and passes numbers as words to tools; ``large`` is always right), and a
small cascade is calibrated on the fly from generated records of the same two models. Runs in seconds::

    python examples/langchain_agent.py
    python examples/langchain_agent.py --question "What is 6 times 7?"

Real models behind any OpenAI-compatible server (llama.cpp, vLLM, Ollama, OpenAI; needs
``pip install langchain-openai``)::

    python examples/langchain_agent.py --base-url http://127.0.0.1:8080/v1 --cheap qwen-0.5b --strong qwen-7b

With real models the on-the-fly calibration still uses generated records (a stand-in: calibrate on your
own records with ``crescade calibrate`` and pass the result with ``--artifact DIR``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from crescade import Record
from crescade_langchain import CascadeChatModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _shared, from any working directory
from _shared import AGENT_QUESTIONS, add_common_args, api_key, calibrate_and_report, choose_models, record, tier_lines

SYSTEM = "You are a helpful assistant. Use the tools for arithmetic. Answer in one short sentence."
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
}
HEDGE = "I'm not sure, but it might be {x}."
_ARITH = re.compile(r"(-?\d+)\s*(plus|\+|times|\*|x)\s*(-?\d+)", re.I)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


# ---------------------------------------------------------------------------------------------- offline models
def arithmetic(text: str) -> tuple[str, int, int, int] | None:
    """``(tool name, a, b, result)`` for "What is 3 plus 4?" / "6 times 7" questions."""
    m = _ARITH.search(text)
    if m is None:
        return None
    a, b = int(m.group(1)), int(m.group(3))
    if m.group(2).lower() in ("plus", "+"):
        return "add", a, b, a + b
    return "multiply", a, b, a * b


class ScriptedChatModel(BaseChatModel):
    """A rule-based offline chat model with tool calling, for running the example without a server."""

    model_name: str
    weak: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted-example"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _answer(self, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage:
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        names = {t["function"]["name"] for t in tools}
        calc = arithmetic(question)
        calls, content = [], ""
        if isinstance(messages[-1], ToolMessage):
            content = f"The answer is {messages[-1].text}."
        elif calc is not None and calc[0] in names:
            name, a, b, _ = calc
            args: dict[str, Any] = {"a": a, "b": b}
            if self.weak:  # the small model spells numbers out: a schema violation the cascade catches
                args = {"a": f"number {a}", "b": f"number {b}"}
            calls = [tool_call(name=name, args=args, id=f"call_{self.model_name}_{name}")]
        elif calc is not None:
            content = HEDGE.format(x=calc[3] + 1) if self.weak else f"The answer is {calc[3]}."
        else:
            country = next((c for c in CAPITALS if c.lower() in question.lower()), None)
            content = f"The capital of {country} is {CAPITALS[country]}." if country else "I don't know."
        n_in = 1 + sum(len(m.text) for m in messages) // 4
        n_out = 1 + (len(content) + sum(len(json.dumps(c["args"])) for c in calls)) // 4
        return AIMessage(content=content, tool_calls=calls,
                         usage_metadata={"input_tokens": n_in, "output_tokens": n_out,
                                         "total_tokens": n_in + n_out},
                         response_metadata={"model_name": self.model_name})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        message = self._answer(messages, list(kwargs.get("tools") or []))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        msg = self._answer(messages, list(kwargs.get("tools") or []))
        for token in re.split(r"(\s+)", msg.text):
            if token:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                  for i, c in enumerate(msg.tool_calls)]
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", tool_call_chunks=chunks, usage_metadata=msg.usage_metadata,
            response_metadata=msg.response_metadata, chunk_position="last"))


def offline_models() -> dict[str, BaseChatModel]:
    return {"small": ScriptedChatModel(model_name="small", weak=True), "large": ScriptedChatModel(model_name="large")}


def openai_models(base_url: str, cheap: str, strong: str, key: str | None) -> dict[str, BaseChatModel]:
    try:
        from langchain_openai import ChatOpenAI  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs langchain-openai (pip install langchain-openai)")
    return {name: ChatOpenAI(model=name, base_url=base_url, api_key=api_key(key), temperature=0)  # type: ignore[arg-type]
            for name in (cheap, strong)}


# ---------------------------------------------------------------------------------------------- calibration
def generated_records(cheap: str, strong: str, prices: dict[str, float], n: int = 120,
                      seed: int = 0) -> list[Record]:
    """Synthetic outcomes: the cheap model is right on capitals, wrong (and hedging) on most arithmetic."""
    rng = random.Random(seed)
    accuracy = {cheap: {"capital": 0.92, "math": 0.25}, strong: {"capital": 0.97, "math": 0.95}}
    records = []
    for i in range(n):
        if i % 2 == 0:
            country = rng.choice(list(CAPITALS))
            kind, prompt = "capital", f"What is the capital of {country}?"
            good, wrong = f"The capital of {country} is {CAPITALS[country]}.", rng.choice(list(CAPITALS.values()))
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            kind, prompt = "math", f"What is {a} {rng.choice(['plus', 'times'])} {b}?"
            calc = arithmetic(prompt)
            assert calc is not None
            good, wrong = f"The answer is {calc[3]}.", str(calc[3] + rng.choice([-1, 1, 10]))
        for model in (cheap, strong):
            ok = rng.random() < accuracy[model][kind]
            records.append(record(i, prompt, model, good if ok else HEDGE.format(x=wrong), ok, prices, kind))
    return records


# ---------------------------------------------------------------------------------------------- output
def describe_turn(i: int, message: AIMessage) -> list[str]:
    """What one agent turn did, and the cascade's account of it."""
    if message.tool_calls:
        did = ", ".join(f"{c['name']}({json.dumps(c['args'])})" for c in message.tool_calls)
        lines = [f"  turn {i}: tool call {did}"]
    else:
        lines = [f"  turn {i}: answer {message.text!r}"]
    acc = message.response_metadata.get("crescade")
    if not isinstance(acc, dict):
        return [*lines, "          (no crescade account)"]
    route = f"cluster {acc['cluster']}: routed to {acc['routed_model']}, answered by {acc['model']}"
    if acc.get("floor"):
        route += f" (conversation floor: {acc['floor']})"
    lines.append(f"          {route}" + (" (escalated)" if acc["escalated"] else ""))
    return [*lines, *tier_lines(acc, "          ")]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(ap, "offline scripted models")
    args = ap.parse_args(argv)
    models, prices, cheap, strong = choose_models(ap, args, offline_models, openai_models)

    if args.artifact:
        llm = CascadeChatModel.from_artifact(args.artifact, models=models)
        print(f"loaded cascade from {args.artifact}")
    else:
        records = generated_records(cheap, strong, prices)
        cascade = calibrate_and_report(records, prices, cheap, strong, args.save_artifact)
        llm = CascadeChatModel(models=models, cascade=cascade)

    agent = create_agent(llm, tools=[add, multiply], system_prompt=SYSTEM)
    for question in args.question or AGENT_QUESTIONS:
        print(f"\nQ: {question}")
        state = agent.invoke({"messages": [HumanMessage(question)]})
        turns = [m for m in state["messages"][1:] if isinstance(m, (AIMessage, ToolMessage))]
        n = 0
        for m in turns:
            if isinstance(m, AIMessage):
                n += 1
                print("\n".join(describe_turn(n, m)))
            else:
                print(f"  tool {m.name} -> {m.text}")
        print(f"A: {state['messages'][-1].text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
