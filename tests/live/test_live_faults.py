"""Real servers killed with SIGKILL (their own, dedicated ``LocalServers``): the cascade escalates cleanly,
and when every tier is dead it raises one error naming each tier. Also the server lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from typing import Any
from uuid import UUID

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from live_support import CHEAP, LIVE_MODELS, STRONG, chat_openai, is_alive, openai_like
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from crescade import Cascade
from crescade.common.errors import AllTiersFailedError
from crescade.engine.pricing import ModelCard
from crescade.serving.dispatch import DispatchFailedError
from crescade.tools.local import LocalServers
from crescade_langchain import CascadeChatModel
from crescade_llamaindex import CascadeLLM

QUESTION = "Write a short paragraph about rivers, then say how many letters are in 'river'."


def sigkill(servers: LocalServers, name: str) -> int:
    """SIGKILL the server of ``name`` (its process group) and wait until it is gone; returns its PID."""
    pid = servers.pid(name)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(pid)
    return pid


class KillOnFirstToken(BaseCallbackHandler):
    """Kills the cheap tier's server as soon as its first streamed token arrives (mid-generation)."""

    def __init__(self, servers: LocalServers) -> None:
        self.servers, self.killed = servers, False

    def on_llm_new_token(self, token: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                         **kwargs: Any) -> None:
        if not self.killed and token:
            self.killed = True
            sigkill(self.servers, CHEAP)


def test_cheap_tier_killed_mid_run_escalates(cascade: Cascade, prices: dict[str, ModelCard]) -> None:
    with LocalServers(LIVE_MODELS, timeout=120) as servers:
        urls = servers.base_urls
        model = CascadeChatModel(models=chat_openai(urls, timeout=60, max_retries=0), cascade=cascade, prices=prices)

        # 1. killed while it is streaming its draft: the strong tier answers the same call
        killer = KillOnFirstToken(servers)
        chunks = list(model.stream([HumanMessage(QUESTION)], config={"callbacks": [killer]}))
        assert killer.killed
        account = chunks[-1].response_metadata["crescade"]
        failed, answered = account["tiers"]
        assert failed["model"] == CHEAP and failed["accepted"] is False
        assert re.match(r"\w+(Error|Exception)\b", failed["error"] or ""), failed["error"]
        assert re.search(r"(?i)connection|peer closed|incomplete|protocol", failed["error"]), failed["error"]
        assert failed["reason"].startswith("raised ") and failed["cost_usd"] == 0
        assert answered["model"] == STRONG and answered["accepted"] and answered["error"] is None
        assert account["model"] == STRONG and account["escalated"] is True
        assert "escalated: tier 0 (smollm2-135m) raised" in account["reason"]
        assert "".join(str(c.content) for c in chunks).strip()

        # 2. the next call finds the port closed: a connection error at tier 0, the answer from tier 1
        msg = model.invoke([HumanMessage("What is 7 + 5?")])
        failed, answered = msg.response_metadata["crescade"]["tiers"]
        assert failed["error"].startswith("OpenAIConnectionError: Connection error"), failed["error"]
        assert failed["latency_s"] < 10
        assert answered["model"] == STRONG and answered["accepted"] and str(msg.content).strip()
        assert msg.response_metadata["model_name"] == STRONG

        # 3. the LlamaIndex adapter over the same half-dead pool
        llm = CascadeLLM(llms=openai_like(urls, timeout=60, max_retries=0), cascade=cascade, prices=prices)
        resp = llm.chat([ChatMessage(role=MessageRole.USER, content="What is 7 + 5?")])
        li_failed, li_answered = resp.additional_kwargs["crescade"]["tiers"]
        assert li_failed["model"] == CHEAP and li_failed["error"].startswith("APIConnectionError")
        assert li_answered["model"] == STRONG and (resp.message.content or "").strip()

        strong_pid = servers.pid(STRONG)
        assert is_alive(strong_pid)
    assert not is_alive(strong_pid)


def test_every_tier_dead_raises_one_clear_error(cascade: Cascade, prices: dict[str, ModelCard]) -> None:
    with LocalServers(LIVE_MODELS, timeout=120) as servers:
        urls = servers.base_urls
        for name in LIVE_MODELS:
            sigkill(servers, name)
        model = CascadeChatModel(models=chat_openai(urls, timeout=10, max_retries=0), cascade=cascade, prices=prices)
        t0 = time.monotonic()
        with pytest.raises(DispatchFailedError) as info:
            model.invoke([HumanMessage("What is 7 + 5?")])
        assert time.monotonic() - t0 < 20
        err = info.value
        assert isinstance(err, AllTiersFailedError)
        assert [(f.tier, f.model) for f in err.failures] == [(0, CHEAP), (1, STRONG)]
        assert all(isinstance(f.error, openai.APIConnectionError) for f in err.failures), err.failures
        text = str(err)
        assert "all 2 tier(s) failed" in text and CHEAP in text and STRONG in text
        assert err.total_cost_usd == 0 and [a.model for a in err.attempts] == list(LIVE_MODELS)

        llm = CascadeLLM(llms=openai_like(urls, timeout=10, max_retries=0), cascade=cascade, prices=prices)
        with pytest.raises(DispatchFailedError, match=r"tier 0 \(smollm2-135m\).*\n.*tier 1 \(qwen2.5-coder-0.5b\)"):
            llm.complete("What is 7 + 5?")


def test_servers_answer_then_leave_no_process_behind() -> None:
    """``LocalServers`` started by the project's own code serve real completions and stop every process."""
    with LocalServers(["smollm2-135m"], timeout=60) as servers:
        url = servers.base_url("smollm2-135m")
        body = json.dumps({"model": "smollm2-135m", "max_tokens": 16, "temperature": 0,
                           "messages": [{"role": "user", "content": "What is 2 + 2?"}]}).encode()
        req = urllib.request.Request(f"{url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            reply = json.loads(r.read())
        pid = servers.pid("smollm2-135m")
        assert is_alive(pid)
    text = reply["choices"][0]["message"]["content"]
    assert isinstance(text, str) and "4" in text
    assert reply["usage"]["completion_tokens"] > 0
    assert not is_alive(pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/models", timeout=5)
