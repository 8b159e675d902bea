"""`crescade demo --live` pieces that need no model: fresh tasks, the per-query printout, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from crescade.tools.cli import main
from crescade.tools.live_demo import fresh_tasks, print_row
from crescade.tools.tasks import FAMILIES, default_task_suite


def test_fresh_tasks_cycle_through_families_and_are_not_the_recorded_suite() -> None:
    tasks = fresh_tasks(9, seed=5)
    assert [t.task for t in tasks[: len(FAMILIES)]] == list(FAMILIES)
    assert len(tasks) == 9 and len({t.prompt for t in tasks}) == 9
    assert [t.prompt for t in fresh_tasks(9, seed=5)] == [t.prompt for t in tasks]  # deterministic
    recorded = {e.prompt for e in default_task_suite()}
    assert not recorded & {t.prompt for t in fresh_tasks(21, seed=5)}


def _row() -> dict[str, object]:
    tier = {"tier": 0, "model": "small", "p": 0.31, "threshold": 0.6, "accepted": False, "reason": "low p",
            "error": None, "latency_s": 1.0, "ttft_s": 0.2, "tpot_s": 0.02, "output_tokens": 40}
    last = {**tier, "tier": 1, "model": "big", "p": None, "accepted": True, "reason": "last tier"}
    failed = {**tier, "tier": 0, "error": "APIConnectionError: Connection error.", "p": None}
    return {"prompt": "What is 2 +\n 2?", "task": "arith", "cluster": 1, "routed_model": "small",
            "ladder": ["small", "big"], "tiers": [tier, last, failed], "answer": "Answer: 4", "correct": False,
            "reference": "4", "latency_s": 3.0, "ttft_s": 2.1, "tpot_s": 0.03, "cost_usd": 1e-5,
            "overhead_s": 0.002}


def test_print_row_shows_route_qe_verdicts_answer_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    print_row(0, 3, _row())
    out = capsys.readouterr().out
    assert "[1/3] arith: What is 2 + 2?" in out
    assert "cluster 1 -> small" in out and "small -> big" in out
    assert "QE p=0.31 < 0.60  escalate" in out
    assert "accepted (last tier)" in out and "failed: APIConnectionError" in out
    assert "WRONG (gold 4)" in out and "TPOT 30 ms" in out and "router overhead 2 ms" in out


def test_demo_live_refuses_clearly_without_the_local_models(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--live", "--cache-dir", str(tmp_path / "empty-cache"), "--n", "1", "-q"])
    err = capsys.readouterr().err
    assert code != 0
    assert "not installed" in err and "crescade local install --models" in err
