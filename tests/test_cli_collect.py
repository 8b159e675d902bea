"""`crescade collect` against an OpenAI-compatible endpoint (the loopback fake): records, grading, resume."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI

from crescade import ModelCard, read_records, save_examples
from crescade.engine.pricing import save_prices
from crescade.tools.cli import main
from crescade.tools.tasks import generate_tasks


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI()
    try:
        yield s
    finally:
        s.stop()


def test_collect_writes_graded_records_and_resumes(server: FakeOpenAI, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks.jsonl"
    save_examples(generate_tasks(3, seed=1, families=["arith_one_step", "string_manipulation"]), tasks)
    prices = tmp_path / "prices.json"
    save_prices({m: ModelCard(name=m, input_per_mtok=1.0, output_per_mtok=2.0) for m in (CHEAP_M, STRONG_M)}, prices)
    out = tmp_path / "records.jsonl"
    args = ["collect", str(tasks), "-o", str(out), "--base-url", server.base_url, "--models", CHEAP_M, STRONG_M,
            "--prices", str(prices), "-q"]
    assert main(args) == 0
    recs = read_records(out)
    assert len(recs) == 6 * 2 and {r.model for r in recs} == {CHEAP_M, STRONG_M}
    assert all(r.correct in (0.0, 1.0) and r.cost_usd > 0 and r.latency_s is not None for r in recs)
    assert {r.task for r in recs} == {"arith_one_step", "string_manipulation"}
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == 12 and report["skipped"] == 0
    n_requests = len(server.requests)
    assert main(args) == 0  # resumable: nothing asked again
    assert len(server.requests) == n_requests
    assert json.loads(capsys.readouterr().out)["skipped"] == 12


def _collect_args(server: FakeOpenAI, tmp_path: Path, *extra: str) -> tuple[list[str], Path]:
    tasks = tmp_path / "tasks.jsonl"
    save_examples(generate_tasks(2, seed=3, families=["arith_one_step"]), tasks)
    prices = tmp_path / "prices.json"
    save_prices({m: ModelCard(name=m, input_per_mtok=1.0, output_per_mtok=2.0) for m in (CHEAP_M, STRONG_M)}, prices)
    out = tmp_path / "records.jsonl"
    return ["collect", str(tasks), "-o", str(out), "--base-url", server.base_url, "--models", CHEAP_M,
            "--prices", str(prices), "-q", *extra], out


def test_collect_streams_and_records_ttft_tpot_with_provider_usage(server: FakeOpenAI, tmp_path: Path) -> None:
    args, out = _collect_args(server, tmp_path)
    assert main(args) == 0
    recs = read_records(out)
    assert recs and all(r.ttft_s is not None and r.tpot_s is not None for r in recs)
    assert all(0 <= r.ttft_s <= r.latency_s for r in recs)  # type: ignore[operator]
    assert all(r.usage_source == "provider" and r.output_tokens == 7 for r in recs)
    assert all(req.get("stream") and "logprobs" not in req for req in server.requests)


def test_collect_counts_chunks_when_the_stream_has_no_usage(tmp_path: Path) -> None:
    server = FakeOpenAI(stream_usage=False)  # like llama.cpp's server: include_usage is ignored
    try:
        args, out = _collect_args(server, tmp_path, "--logprobs")
        assert main(args) == 0
        assert all(req.get("logprobs") is True and req.get("top_logprobs") == 1 for req in server.requests)
    finally:
        server.stop()
    for r in read_records(out):
        words = [w for w in re.split(r"(\s+)", r.response) if w]
        assert r.usage_source == "estimate"
        assert r.output_tokens == len(words)  # one chunk per word in the fake
        assert r.ttft_s is not None and r.tpot_s is not None


def test_collect_without_streaming_records_latency_only(server: FakeOpenAI, tmp_path: Path) -> None:
    args, out = _collect_args(server, tmp_path, "--no-stream")
    assert main(args) == 0
    recs = read_records(out)
    assert all(r.ttft_s is None and r.tpot_s is None and r.latency_s is not None for r in recs)
    assert all(r.usage_source == "provider" for r in recs)
    assert not any(req.get("stream") for req in server.requests)


def test_collect_needs_a_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "default", "-o", str(tmp_path / "r.jsonl"), "-q"]) == 2
    assert "--local" in capsys.readouterr().err
