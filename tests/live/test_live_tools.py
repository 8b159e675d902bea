"""Tool calls through both adapters, against real llama.cpp servers.

What llama-cpp-python 0.3.36's server does with ``tools`` (read from ``llama_cpp/llama_chat_format.py`` and
checked against these GGUFs):

* Every chat format, the GGUF's own template included, answers a **forced** call (``tool_choice`` naming one
  function) by generating the arguments under a grammar built from the function's JSON schema and returning a
  real ``tool_calls`` entry (``finish_reason="tool_calls"``). Works with SmolLM2-135M and Qwen2.5-Coder-0.5B.
* ``tool_choice="auto"`` is only understood by the ``chatml-function-calling`` format
  (:data:`crescade.tools.local.TOOL_CHAT_FORMAT`, ``LocalServers(chat_format=...)``): a grammar lets the model pick
  ``message:`` or ``functions.<name>:``. With the default format the tools only reach the prompt template and
  the answer comes back as text. This format ignores ``max_tokens`` for the choice and is slow on CPU (several
  grammar-constrained passes, ~1 min for SmolLM2 on a busy 2-core machine), so it is tested once.

A schema-valid tool call is accepted at the tier that made it (``Cascade(tool_calls="accept")``, the
default), so these calls stop at the cheap tier unless it produced an invalid call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from live_support import CHEAP, LIVE_MODELS, chat_openai, openai_like
from llama_index.core.tools import FunctionTool

from crescade import Cascade
from crescade.engine.pricing import ModelCard
from crescade.tools.local import TOOL_CHAT_FORMAT, LocalServers
from crescade_langchain import CascadeChatModel
from crescade_llamaindex import CascadeLLM

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = "What is the weather in Paris right now?"


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def check_tool_account(account: dict[str, object]) -> None:
    tiers = account["tiers"]
    assert isinstance(tiers, list) and tiers
    assert [t["model"] for t in tiers] == list(LIVE_MODELS[: len(tiers)])
    final = tiers[-1]
    assert final["accepted"] is True and final["output_tokens"] > 0
    if final["model"] == CHEAP:
        assert "schema-valid tool call accepted" in final["reason"]


def check_call(name: str, args: dict[str, object]) -> None:
    assert name == "get_weather"
    assert set(args) == {"city"} and isinstance(args["city"], str) and args["city"].strip()


def test_langchain_forced_tool_call(servers: LocalServers, cascade: Cascade, prices: dict[str, ModelCard]) -> None:
    model = CascadeChatModel(models=chat_openai(servers.base_urls, timeout=300), cascade=cascade, prices=prices)
    msg = model.bind_tools([WEATHER], tool_choice="get_weather").invoke([HumanMessage(QUESTION)])
    assert isinstance(msg, AIMessage)
    assert len(msg.tool_calls) == 1 and not msg.invalid_tool_calls
    check_call(msg.tool_calls[0]["name"], msg.tool_calls[0]["args"])
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    check_tool_account(msg.response_metadata["crescade"])


def test_llamaindex_forced_tool_call(servers: LocalServers, cascade: Cascade, prices: dict[str, ModelCard]) -> None:
    llm = CascadeLLM(llms=openai_like(servers.base_urls, timeout=300, tools=True), cascade=cascade, prices=prices)
    assert llm.metadata.is_function_calling_model
    tool = FunctionTool.from_defaults(fn=get_weather)
    resp = llm.chat_with_tools([tool], user_msg=QUESTION, tool_choice="get_weather")
    calls = llm.get_tool_calls_from_response(resp)
    assert len(calls) == 1
    check_call(calls[0].tool_name, calls[0].tool_kwargs)
    assert tool(**calls[0].tool_kwargs).content == f"sunny in {calls[0].tool_kwargs['city']}"
    check_tool_account(resp.additional_kwargs["crescade"])


@pytest.fixture(scope="module")
def tool_servers() -> Iterator[LocalServers]:
    with LocalServers(LIVE_MODELS, timeout=120, chat_format=TOOL_CHAT_FORMAT) as s:
        argv = Path(f"/proc/{s.pid(CHEAP)}/cmdline").read_bytes().split(b"\0")
        assert argv[-3:-1] == [b"--chat_format", TOOL_CHAT_FORMAT.encode()]
        yield s


def test_langchain_auto_tool_choice_with_the_function_calling_format(
        tool_servers: LocalServers, cascade: Cascade, prices: dict[str, ModelCard]) -> None:
    model = CascadeChatModel(models=chat_openai(tool_servers.base_urls, timeout=300), cascade=cascade, prices=prices)
    msg = model.bind_tools([WEATHER], tool_choice="auto").invoke([HumanMessage(QUESTION)])
    assert isinstance(msg, AIMessage)
    account = msg.response_metadata["crescade"]
    check_tool_account(account)
    # the message-or-call choice is the model's: SmolLM2 may call the tool, or choose a message and leave it
    # empty; the cascade must end with a valid call either way, escalating a draft it cannot use
    assert len(msg.tool_calls) == 1 and not msg.invalid_tool_calls, msg
    check_call(msg.tool_calls[0]["name"], msg.tool_calls[0]["args"])
    tiers = account["tiers"]
    if account["escalated"]:
        assert tiers[0]["model"] == CHEAP and tiers[0]["accepted"] is False
        assert tiers[0]["reason"] in ("empty answer",) or tiers[0]["reason"].startswith(
            ("invalid tool call", "p=")), tiers[0]["reason"]
    else:
        assert account["model"] == CHEAP
