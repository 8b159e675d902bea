"""`crescade collect` against an OpenAI-compatible endpoint (the loopback fake): records, grading, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai_server import CHEAP_M, STRONG_M, FakeOpenAI

from crescade import ModelCard, read_records, save_examples
from crescade.cli import main
from crescade.pricing import save_prices
from crescade.tasks import generate_tasks


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


def test_collect_needs_a_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "default", "-o", str(tmp_path / "r.jsonl"), "-q"]) == 2
    assert "--local" in capsys.readouterr().err
