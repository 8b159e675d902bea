"""Planted fake API keys never reach a record file, an artifact, a log line, a callback payload, a response
account or an error message -- not even when the provider repeats the key in its error text."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAI
from langchain_core.callbacks import BaseCallbackHandler
from li_support import POOL, cards, fitted_cascade, topic_query

from crescade import Example
from crescade.engine.pricing import save_prices
from crescade.serving.dispatch import DispatchFailedError
from crescade.tools.cli import main

SHAPED = "sk-planted-9f8e7d6c5b4a39281706"  # the shape of an OpenAI key
ODD = "AIzaPlantedOddShapedKey0123456789xyz"  # no known shape: only masking the exact value catches it
ENV_KEY = "plantedEnvKey-55aa66bb77cc88dd"
WIRE = {m: f"{m}-m" for m in POOL}
QUERY = next(q for q in (topic_query("geography", s) for s in range(40)) if fitted_cascade().plan(q).ladder == POOL)


class Recorder(BaseCallbackHandler):
    """What LangChain hands to callback handlers about the cascade's own runs, as text. (A child's own run
    reports the provider client's own exception object; that is the client's, not the cascade's.)"""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kw: Any) -> None:
        self.seen.append(repr(serialized) + repr(kw))  # children included: their parameters, not errors

    def on_llm_end(self, response: Any, *, parent_run_id: Any = None, **kw: Any) -> None:
        self.seen.append(repr(response))

    def on_llm_error(self, error: BaseException, *, parent_run_id: Any = None, **kw: Any) -> None:
        if parent_run_id is None:
            self.seen.append(repr(error) + str(error))


def assert_clean(where: str, text: str) -> None:
    for key in (SHAPED, ODD, ENV_KEY):
        assert key not in text, f"planted key {key[:12]}... leaked into {where}"


@pytest.fixture
def server() -> Any:
    s = FakeOpenAI()
    yield s
    s.stop()


def test_planted_keys_stay_out_of_everything(server: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_openai import ChatOpenAI
    from llama_index.core.base.llms.types import ChatMessage, MessageRole
    from llama_index.llms.openai_like import OpenAILike

    from crescade_langchain import CascadeChatModel
    from crescade_langchain.calibration import collect_records
    from crescade_llamaindex import CascadeLLM

    caplog.set_level(logging.INFO)
    key = {"cheap": SHAPED, "mid": ODD, "strong": SHAPED}
    lc = {m: ChatOpenAI(base_url=server.base_url, api_key=key[m], model=WIRE[m], max_retries=0,  # type: ignore[arg-type]
                        timeout=10) for m in POOL}
    texts: list[tuple[str, str]] = []

    # 1. collection writes records (one pair fails with a 401 that repeats the key)
    server.fail_next(WIRE["mid"], "401-echo")
    examples = [Example(prompt_id=f"q{i}", prompt=topic_query("geography", i), reference="B", grader="choice_letter")
                for i in range(3)]
    report = collect_records(lc, examples, tmp_path / "records.jsonl", prices=cards(), concurrency=1, progress=False)
    assert report.failed and "Incorrect API key provided" in report.failed[0][2]
    texts.append(("the collect report", json.dumps(report.to_dict())))

    # 2. serving: a 401 that echoes the key lands in the account, then every tier fails that way
    recorder = Recorder()
    model = CascadeChatModel(models=lc, cascade=fitted_cascade())
    server.fail_next(WIRE["cheap"], "401-echo")
    server.fail_next(WIRE["mid"], "401-echo")
    msg = model.invoke(QUERY, config={"callbacks": [recorder]})
    account = msg.response_metadata["crescade"]
    assert "Incorrect API key provided: [redacted]" in account["tiers"][0]["error"]
    assert "Incorrect API key provided: [redacted]" in account["tiers"][1]["error"]
    texts.append(("a response account", json.dumps(account)))
    for m in POOL:
        server.fail_next(WIRE[m], "401-echo")
    with pytest.raises(DispatchFailedError) as info:
        asyncio.run(model.ainvoke(QUERY, config={"callbacks": [recorder]}))
    texts.append(("the all-tiers-failed error", str(info.value)))
    texts.append(("the error's account", json.dumps([a.to_dict() for a in info.value.attempts])))
    texts.append(("callback payloads", "\n".join(recorder.seen)))

    # 3. the LlamaIndex adapter the same way
    li = {m: OpenAILike(api_base=server.base_url, api_key=key[m], model=WIRE[m], is_chat_model=True, max_retries=0,
                        timeout=10, context_window=4096) for m in POOL}
    llm = CascadeLLM(llms=li, cascade=fitted_cascade())
    server.fail_next(WIRE["cheap"], "401-echo")
    resp = llm.chat([ChatMessage(role=MessageRole.USER, content=QUERY)])
    texts.append(("a LlamaIndex account", json.dumps(resp.additional_kwargs["crescade"])))
    texts.append(("LlamaIndex payloads", json.dumps(llm.to_dict(), default=str) + repr(llm.to_payload())))

    # 4. the CLI collecting with a key from the environment (and the artifact of a fitted cascade)
    monkeypatch.setenv("PLANTED_KEY_ENV", ENV_KEY)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps({"prompt_id": e.prompt_id, "prompt": e.prompt, "reference": e.reference,
                                           "grader": e.grader}) for e in examples) + "\n")
    save_prices({WIRE["cheap"]: cards()["cheap"].__class__(WIRE["cheap"], 1.0, 1.0)}, tmp_path / "prices.json")
    server.fail_next(WIRE["cheap"], "401-echo")
    code = main(["collect", str(tasks), "-o", str(tmp_path / "cli-records.jsonl"), "--base-url", server.base_url,
                 "--models", WIRE["cheap"], "--prices", str(tmp_path / "prices.json"), "--api-key-env",
                 "PLANTED_KEY_ENV", "-q"])
    assert code == 1  # one pair failed (the 401), reported without the key
    fitted_cascade().save(tmp_path / "artifact")

    out = capsys.readouterr()
    texts += [("stdout", out.out), ("stderr", out.err), ("log records", caplog.text)]
    assert "Incorrect API key provided: [redacted]" in out.out
    for where, text in texts:
        assert_clean(where, text)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert_clean(str(path.relative_to(tmp_path)), path.read_bytes().decode("utf-8", "replace"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "cli-records.jsonl", "prices.json",
                                                          "records.jsonl", "tasks.jsonl"]
