"""2,000 mixed sync / async / streaming requests at concurrency 50, 20% of child calls faulted, per adapter:
none lost, none duplicated, each an answer or one clear error naming every tier, every account exact."""

from __future__ import annotations

import pytest
from harness import LoadResult, run_langchain, run_llamaindex

from crescade.serving.reliability import SHARED_COOLDOWNS


def check(res: LoadResult) -> None:
    assert res.other_errors == [], res.other_errors[:5]
    assert res.mismatches == [], res.mismatches[:5]
    assert res.lost == 0 and res.duplicated == 0
    assert res.answered + res.clear_errors == res.requests
    assert res.tokens_in_accounts == res.tokens_delivered > 0
    assert res.leaked_threads == 0 and res.leaked_tasks == 0
    assert set(res.by_mode.values()) == {res.requests // 4}
    injected = sum(res.faults_injected.values())
    assert 0.15 * res.child_calls < injected < 0.25 * res.child_calls  # about 20% of the child calls
    assert len(res.faults_injected) == 11  # every fault kind occurred
    assert res.answered > 0.85 * res.requests  # escalation absorbs most faults
    assert res.escalated > 0 and res.retries > 0 and res.timeouts > 0 and res.skipped_tiers > 0
    assert SHARED_COOLDOWNS.remaining("cheap") == 0  # the run used its own registry


@pytest.mark.parametrize("run", [run_langchain, run_llamaindex], ids=["langchain", "llamaindex"])
def test_load_with_injected_faults(run) -> None:  # type: ignore[no-untyped-def]
    check(run(n=2000, concurrency=50, fault_rate=0.2, seed=7))
