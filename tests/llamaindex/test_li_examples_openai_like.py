"""The LlamaIndex examples' --base-url path: OpenAILike children against an OpenAI-compatible server.

The server is the loopback fake of tests/fake_openai_server.py (cheap model breaks tool arguments and
hedges; strong model is right), so escalation really happens over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI()
    try:
        yield s
    finally:
        s.stop()


def _run(script: str, server: FakeOpenAI, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    args = ["--base-url", server.base_url, "--cheap", CHEAP_M, "--strong", STRONG_M]
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_agent_example_escalates_invalid_tool_arguments_over_http(server: FakeOpenAI, tmp_path: Path) -> None:
    out = _run("llamaindex_agent.py", server, tmp_path)
    assert f"routed to {CHEAP_M}, answered by {STRONG_M} (escalated)" in out
    assert "rejected (invalid tool call: tool 'add': $.a: expected integer, got str)" in out
    assert "A: The answer is 42." in out
    assert {r["model"] for r in server.requests} == {CHEAP_M, STRONG_M}


def test_rag_example_sends_the_retrieved_context_to_the_tiers(server: FakeOpenAI, tmp_path: Path) -> None:
    out = _run("llamaindex_rag.py", server, tmp_path)
    # paraphrased questions go to the strong model, by escalation or (when the learned query profiles tell
    # them apart, as on these generated records) by routing them there directly
    assert ("(escalated)" in out and "rejected (p=" in out) or f"routed to {STRONG_M}, answered by {STRONG_M}" in out
    assert {r["model"] for r in server.requests} == {CHEAP_M, STRONG_M}
    prompts = [str(m.get("content")) for r in server.requests for m in r["messages"]]
    assert any("Stage 1" in p or "stage 1" in p.lower() for p in prompts)  # the retrieved notes reached the model
