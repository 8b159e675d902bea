"""The LlamaIndex examples run offline, end to end, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("stream", [False, True])
def test_rag_example_offline(stream: bool) -> None:
    out = run("llamaindex_rag.py", *(["--stream"] if stream else []))
    assert "calibrated a cascade over small -> large" in out
    assert "A: Stage 2 reads the routed model's answer" in out
    assert "routed to small, answered by large (escalated)" in out
    assert "routed to small, answered by small" in out
    assert "I'm not sure" not in out.split("Q: What escalation")[1].split("cascade:")[0]  # draft never shown


@pytest.mark.parametrize("stream", [False, True])
def test_agent_example_offline(stream: bool) -> None:
    out = run("llamaindex_agent.py", *(["--stream"] if stream else []))
    capital, plus, times = out.split("\nQ: ")[1:]
    assert "A: The capital of Japan is Tokyo." in capital and "answered by small" in capital
    assert "tool call add({'a': 17, 'b': 25})" in plus and "small rejected (invalid tool call" in plus
    assert "A: The answer is 42." in plus and "A: The answer is 42." in times
