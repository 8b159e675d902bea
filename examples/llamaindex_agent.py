#!/usr/bin/env python
"""A LlamaIndex ``FunctionAgent`` with tools whose LLM is a crescade cascade.

The agent is the one you would build with ``OpenAI``: ``FunctionAgent(tools=[add, multiply], llm=...)``.
Each tier formats the tools itself; a tool call with invalid arguments escalates to the stronger model.
For every question the script prints each LLM turn's tool calls and the cascade's account.

Offline by default: two built-in scripted function-calling LLMs stand in for real ones. ``small``
answers fact questions well but sends the numbers as words (schema-invalid arguments); ``large``
calls the tools correctly::

    python examples/llamaindex_agent.py
    python examples/llamaindex_agent.py --question "What is 6 times 7?" --stream

Real models behind any OpenAI-compatible server (needs ``pip install llama-index-llms-openai-like``)::

    python examples/llamaindex_agent.py --base-url http://127.0.0.1:8080/v1 --cheap qwen-0.5b --strong qwen-7b
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.agent.workflow import AgentOutput, AgentStream, FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import FunctionTool

from crescade import Record
from crescade_llamaindex import CascadeLLM

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _shared, from any working directory
from _shared import AGENT_QUESTIONS, add_common_args, api_key, calibrate_and_report, choose_models, record

FACTS = {"japan": "The capital of Japan is Tokyo.", "france": "The capital of France is Paris."}
NUMBER_WORDS = {6: "six", 7: "seven", 17: "seventeen", 25: "twenty-five"}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class ScriptedLLM(FunctionCallingLLM):
    """A rule-based offline function-calling LLM (usage reported in ``raw["usage"]``)."""

    model_name: str
    words_for_numbers: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=256, is_chat_model=True,
                           is_function_calling_model=True, model_name=self.model_name)

    def _respond(self, messages: Sequence[ChatMessage], tools: Sequence[Any]) -> ChatResponse:
        question = next((m.content or "" for m in reversed(messages) if m.role == MessageRole.USER), "")
        last = messages[-1] if messages else None
        nums = [int(x) for x in re.findall(r"\d+", question)]
        op = "add" if "plus" in question else "multiply" if "times" in question else None
        if last is not None and last.role == MessageRole.TOOL:
            msg = ChatMessage(role="assistant", content=f"The answer is {last.content}.")
        elif op and len(nums) == 2 and any(t.metadata.name == op for t in tools):
            args: dict[str, Any] = {"a": nums[0], "b": nums[1]}
            if self.words_for_numbers:
                args = {k: NUMBER_WORDS.get(v, str(v)) for k, v in args.items()}
            msg = ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_call_id=f"call_{len(messages)}",
                                                                      tool_name=op, tool_kwargs=args)])
        else:
            fact = next((v for k, v in FACTS.items() if k in question.lower()), "I'm not sure.")
            msg = ChatMessage(role="assistant", content=fact)
        n_in = 1 + sum(len(m.content or "") for m in messages) // 4
        n_out = 1 + len(msg.content or "") // 4
        return ChatResponse(message=msg, delta=msg.content or "",
                            raw={"usage": {"prompt_tokens": n_in, "completion_tokens": n_out}})

    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: Any = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role="user", content=user_msg) if isinstance(user_msg, str) else user_msg)
        return {"messages": messages, "tools": list(tools)}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = [ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name,
                               tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {})
                 for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError("expected a tool call")
        return calls

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._respond(messages, kwargs.get("tools") or [])

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._respond(messages, kwargs.get("tools") or [])

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        resp = self._respond(messages, kwargs.get("tools") or [])

        def gen() -> Any:
            acc = ""
            for token in re.findall(r"\S+\s*", resp.message.content or ""):
                acc += token
                yield ChatResponse(message=ChatMessage(role="assistant", content=acc), delta=token)
            yield ChatResponse(message=resp.message, delta="", raw=resp.raw)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        sync = self.stream_chat(messages, **kwargs)

        async def gen() -> Any:
            for chunk in sync:
                yield chunk

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        r = self.chat([ChatMessage(role="user", content=prompt)])
        return CompletionResponse(text=r.message.content or "", raw=r.raw)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.complete(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        r = self.complete(prompt)
        return iter([CompletionResponse(text=r.text, delta=r.text, raw=r.raw)])

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        r = self.complete(prompt)

        async def gen() -> Any:
            yield CompletionResponse(text=r.text, delta=r.text, raw=r.raw)

        return gen()


def offline_llms() -> dict[str, LLM]:
    return {"small": ScriptedLLM(model_name="small", words_for_numbers=True), "large": ScriptedLLM(model_name="large")}


def openai_like_llms(base_url: str, cheap: str, strong: str, key: str | None) -> dict[str, LLM]:
    try:
        from llama_index.llms.openai_like import OpenAILike  # only needed with --base-url
    except ImportError:
        sys.exit("error: --base-url needs llama-index-llms-openai-like (pip install llama-index-llms-openai-like)")
    return {name: OpenAILike(model=name, api_base=base_url, api_key=api_key(key), is_chat_model=True,
                             is_function_calling_model=True, context_window=4096, temperature=0)
            for name in (cheap, strong)}


def generated_records(cheap: str, strong: str, prices: dict[str, float], n: int = 120,
                      seed: int = 0) -> list[Record]:
    """Stand-in outcomes for calibration: the cheap model is good at facts, weak at arithmetic."""
    rng = random.Random(seed)
    accuracy = {cheap: {"fact": 0.95, "math": 0.4}, strong: {"fact": 0.97, "math": 0.95}}
    records = []
    for i in range(n):
        kind = "fact" if i % 2 == 0 else "math"
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        prompt = (f"What is the capital of {rng.choice(['Japan', 'France', 'Peru', 'Chad', 'Laos'])}?"
                  if kind == "fact" else f"What is {a} {rng.choice(['plus', 'times'])} {b}?")
        for model in (cheap, strong):
            ok = rng.random() < accuracy[model][kind]
            text = "The capital is Tokyo." if ok and kind == "fact" else f"The answer is {a + b}." if ok else \
                "I'm not sure."
            records.append(record(i, prompt, model, text, ok, prices, kind))
    return records


def describe(account: dict[str, Any]) -> str:
    tiers = ", ".join(f"{t['model']} {'accepted' if t['accepted'] else 'rejected'} ({t['reason']})"
                      for t in account["tiers"])
    return (f"routed to {account['routed_model']}, answered by {account['model']}"
            f"{' (escalated)' if account['escalated'] else ''}: {tiers}; ${account['totals']['cost_usd']:.8f}")


async def ask(agent: FunctionAgent, question: str, stream: bool) -> None:
    print(f"\nQ: {question}")
    handler = agent.run(question)
    turn = 0
    async for ev in handler.stream_events():
        if stream and isinstance(ev, AgentStream) and ev.delta:
            print(f"  ... {ev.delta!r}")
        if isinstance(ev, AgentOutput):
            turn += 1
            calls = "; ".join(f"{c.tool_name}({c.tool_kwargs})" for c in ev.tool_calls)
            account = ev.response.additional_kwargs.get("crescade")
            print(f"  turn {turn}: {'tool call ' + calls if calls else 'answer'}")
            if account:
                print(f"          {describe(account)}")
    result = await handler
    print(f"A: {result}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(ap, "offline scripted LLMs", save_artifact=False)
    ap.add_argument("--stream", action="store_true", help="stream the LLM turns")
    args = ap.parse_args(argv)
    llms, prices, cheap, strong = choose_models(ap, args, offline_llms, openai_like_llms)
    if args.artifact:
        llm = CascadeLLM.from_artifact(args.artifact, llms=llms)
        print(f"loaded cascade from {args.artifact}")
    else:
        cascade = calibrate_and_report(generated_records(cheap, strong, prices), prices, cheap, strong)
        llm = CascadeLLM(llms=llms, cascade=cascade)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add), FunctionTool.from_defaults(multiply)], llm=llm,
                          streaming=args.stream, system_prompt="Use the tools for arithmetic.")

    async def run_all() -> None:
        for q in args.question or AGENT_QUESTIONS:
            await ask(agent, q, args.stream)

    asyncio.run(run_all())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
