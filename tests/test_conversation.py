"""The conversation floor rule (core policy used by both adapters)."""

from __future__ import annotations

from crescade.serving.conversation import conversation_floor

POOL = ("cheap", "mid", "strong")


def test_no_escalation_no_floor() -> None:
    assert conversation_floor([], POOL) is None
    assert conversation_floor([None, {"escalated": False, "model": "cheap"}], POOL) is None


def test_latest_escalation_sets_the_floor() -> None:
    accounts = [{"escalated": True, "model": "strong"}, {"escalated": True, "model": "mid"}]
    assert conversation_floor(accounts, POOL) == "mid"  # the latest one counts


def test_a_floored_answer_carries_the_floor_forward() -> None:
    accounts = [{"escalated": True, "model": "strong"}, {"escalated": False, "model": "strong", "floor": "strong"}]
    assert conversation_floor(accounts, POOL) == "strong"


def test_models_gone_from_the_pool_are_ignored() -> None:
    accounts = [{"escalated": True, "model": "mid"}, {"escalated": True, "model": "retired"}]
    assert conversation_floor(accounts, POOL) == "mid"
    assert conversation_floor([{"escalated": True, "model": "x"}, "not a mapping"], POOL) is None  # type: ignore[list-item]
