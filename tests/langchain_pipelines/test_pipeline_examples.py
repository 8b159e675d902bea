"""The LangChain examples run offline as scripts and print answers with the cascade's account."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGCHAIN_", "LANGSMITH_"))}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=env)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def blocks(out: str) -> dict[str, str]:
    """The output of each question, keyed by the question."""
    parts = out.split("\nQ: ")[1:]
    return {p.split("\n", 1)[0]: p for p in parts}


def test_agent_example_offline(tmp_path: Path) -> None:
    out = run("langchain_agent.py", cwd=tmp_path)
    assert "calibrated a cascade over small -> large" in out
    by_q = blocks(out)
    assert set(by_q) == {"What is the capital of Japan?", "What is 17 plus 25?", "What is 6 times 7?"}
    capital = by_q["What is the capital of Japan?"]
    assert "A: The capital of Japan is Tokyo." in capital
    assert "routed to small, answered by small" in capital and "escalated" not in capital
    plus = by_q["What is 17 plus 25?"]
    assert 'turn 1: tool call add({"a": 17, "b": 25})' in plus
    assert "routed to small, answered by large (escalated)" in plus
    assert "tier 0 small" in plus and "rejected (invalid tool call" in plus
    assert "tool add -> 42" in plus and "A: The answer is 42." in plus
    assert "conversation floor: large" in plus  # turn 2 does not drop back to small
    times = by_q["What is 6 times 7?"]
    assert "tool multiply -> 42" in times and "A: The answer is 42." in times
    assert out.count("total ") == 5  # one account per agent turn


def test_rag_example_offline(tmp_path: Path) -> None:
    out = run("langchain_rag.py", cwd=tmp_path)
    by_q = blocks(out)
    assert len(by_q) == 3
    first = by_q["Which model does Stage 1 route a query to?"]
    assert "retrieved: Stage 1 embeds each query" in first
    assert "A: Stage 1 embeds each query" in first and "answered by small" in first
    hard = by_q["What escalation happens to weaker answers?"]
    assert "A: Stage 2 reads the routed model's answer" in hard
    assert "routed to small, answered by large (escalated)" in hard and "rejected (p=" in hard
    assert "streamed: Stage 1 embeds each query" in out


def test_examples_save_and_load_an_artifact(tmp_path: Path) -> None:
    artifact = tmp_path / "cascade"
    out = run("langchain_agent.py", "--save-artifact", str(artifact), "--question", "What is the capital of Peru?",
              cwd=tmp_path)
    assert f"saved cascade to {artifact}" in out and "A: The capital of Peru is Lima." in out
    out = run("langchain_agent.py", "--artifact", str(artifact), "--question", "What is 3 plus 4?", cwd=tmp_path)
    assert f"loaded cascade from {artifact}" in out and "A: The answer is 7." in out
    out = run("langchain_rag.py", "--artifact", str(artifact), "--question", "What does the quality target keep?",
              cwd=tmp_path)
    assert "A: The quality target keeps a chosen fraction" in out


@pytest.mark.parametrize("script", ["langchain_agent.py", "langchain_rag.py"])
def test_examples_reject_half_given_server_options(script: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--base-url", "http://127.0.0.1:1/v1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "--base-url needs --cheap NAME and --strong NAME" in proc.stderr


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    pytest.importorskip("langchain_openai", reason="the examples' --base-url path uses langchain-openai")
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.stop()


def test_examples_against_an_openai_compatible_server(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """--base-url goes through langchain-openai's ChatOpenAI to a (fake, loopback) server, streaming included."""
    server = ["--base-url", openai_server.base_url, "--cheap", CHEAP_M, "--strong", STRONG_M]
    out = run("langchain_agent.py", *server, "--question", "What is 17 plus 25?", cwd=tmp_path)
    assert f"routed to {CHEAP_M}, answered by {STRONG_M} (escalated)" in out
    assert "rejected (invalid tool call" in out and "tool add -> 42" in out and "A: The answer is 42." in out
    first = openai_server.requests[0]
    assert first["model"] == CHEAP_M and [t["function"]["name"] for t in first["tools"]] == ["add", "multiply"]
    assert {r["model"] for r in openai_server.requests} == {CHEAP_M, STRONG_M}

    out = run("langchain_rag.py", *server, "--question", "What escalation happens to weaker answers?", cwd=tmp_path)
    assert "A: Stage 2 reads the routed model's answer" in out
    assert f"routed to {CHEAP_M}, answered by {STRONG_M} (escalated)" in out
    assert "streamed: Stage 1 embeds each query" in out
    assert any(r.get("stream") for r in openai_server.requests)  # the last tier streamed live
