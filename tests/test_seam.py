"""crescade.seam: the adapters' one view of the core (framework-neutral rules both adapters share)."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_records import cards, fitted_cascade
from dispatch_fakes import PRICES, FakeJudge, answer, caller

from crescade import ModelCard, PoolError, PricingError
from crescade.common.redact import redact
from crescade.seam import (
    account,
    calls_text,
    cascade_fingerprint,
    check_pool,
    forced_tool,
    render_query,
    start_session,
    tool_call_problems,
    with_calls,
)
from crescade.serving.dispatch import dispatch

ADD_SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}


# ---------------------------------------------------------------------- routing query
def test_lone_user_turn_is_routed_on_its_bare_text() -> None:
    assert render_query([("user", "What is 2+2?")], 6) == "What is 2+2?"


def test_conversation_keeps_system_turns_and_the_last_window() -> None:
    turns = [("system", "Be brief."), ("user", "one"), ("assistant", "two"), ("user", "three"),
             ("tool result (add)", "5"), ("user", "four")]
    assert render_query(turns, 2) == "system: Be brief.\ntool result (add): 5\nuser: four"
    assert render_query(turns, 0) == "system: Be brief."
    # one user turn after a system turn is not bare: the system turn is part of the query
    assert render_query([("system", "S"), ("user", "q")], 6) == "system: S\nuser: q"


def test_tool_calls_read_as_text() -> None:
    calls = [("add", {"b": 2, "a": 1}), ("lookup", '{"q": broken')]
    assert calls_text(calls) == 'add({"a": 1, "b": 2}); lookup({"q": broken)'
    assert with_calls("", calls[:1]) == '[tool calls: add({"a": 1, "b": 2})]'
    assert with_calls("Sure.", calls[:1]) == 'Sure.\n[tool calls: add({"a": 1, "b": 2})]'
    assert with_calls("Sure.", []) == "Sure."


# ---------------------------------------------------------------------- tools
@pytest.mark.parametrize(("choice", "required", "expected"), [
    (None, False, False), (False, False, False), ("auto", False, False), ("none", False, False),
    ("any", False, True), ("required", False, True), (True, False, True), ("add", False, "add"),
    ("unknown-name", False, True),
    ({"type": "function", "function": {"name": "add"}}, False, "add"), ({"type": "tool", "name": "add"}, False, "add"),
    ({"type": "any"}, False, True), ({"type": "auto"}, False, False),
    # LlamaIndex's tool_required forces a call unless the choice says "none" or names the tool
    (None, True, True), ("auto", True, True), ("none", True, False), ("add", True, "add"),
])
def test_forced_tool(choice: Any, required: bool, expected: str | bool) -> None:
    assert forced_tool(choice, ["add", "mul"], tool_required=required) == expected


def test_tool_call_problems() -> None:
    schemas = {"add": ADD_SCHEMA, "free": None}
    assert tool_call_problems([], schemas, False) is None
    assert tool_call_problems([], schemas, True) == ["a tool call was required but none was made"]
    assert tool_call_problems([("add", {"a": 1, "b": 2})], schemas, False) == []
    assert tool_call_problems([("free", {"anything": [1]})], schemas, "free") == []
    wrong_type = tool_call_problems([("add", {"a": "one", "b": 2})], schemas, False)
    assert wrong_type and all(p.startswith("tool 'add': ") for p in wrong_type)
    assert tool_call_problems([("mul", {"a": 1})], schemas, False) == ["unknown tool 'mul'"]
    assert tool_call_problems([("add", "{not json")], schemas, False) == ["unparseable arguments for tool 'add'"]
    assert tool_call_problems([("free", {})], schemas, "add") == ["tool 'add' was required, 'free' was called"]
    # tools bound outside the cascade: names cannot be checked, arguments must still parse
    assert tool_call_problems([("whatever", {"x": 1})], {}, False) == []
    assert tool_call_problems([("whatever", "[1,")], {}, False) == ["unparseable arguments for tool 'whatever'"]


# ---------------------------------------------------------------------- pool, session, account
def test_check_pool_returns_cards_in_pool_order_and_registers_keys() -> None:
    cascade = fitted_cascade()

    class Child:
        api_key = "sk-seam-test-0123456789abcdef"

    children = {m: Child() for m in reversed(cascade.models_)}
    got = check_pool(cascade, children, None)
    assert list(got) == list(cascade.models_) and all(isinstance(c, ModelCard) for c in got.values())
    assert "sk-seam-test-0123456789abcdef" not in redact("key sk-seam-test-0123456789abcdef leaked")


def test_check_pool_errors_name_the_problem() -> None:
    cascade = fitted_cascade()
    pool = list(cascade.models_)
    with pytest.raises(PoolError, match=r"llms must map exactly .*missing LLM\(s\) for 'strong'"):
        check_pool(cascade, {m: object() for m in pool[:-1]}, None, field="llms", kind="LLM")
    with pytest.raises(PoolError, match="'extra' not in the cascade's pool"):
        check_pool(cascade, {**{m: object() for m in pool}, "extra": object()}, None)
    with pytest.raises(PoolError, match="must be a mapping"):
        check_pool(cascade, [object()], None)
    with pytest.raises(PoolError, match="not fitted"):
        check_pool(object(), {}, None)
    with pytest.raises(PricingError, match=r"no price \(ModelCard\) for pool model\(s\) 'mid'"):
        check_pool(cascade, {m: object() for m in pool}, {k: v for k, v in cards().items() if k != "mid"})


def test_start_session_plans_above_the_floor_and_account_adds_the_request_facts() -> None:
    cascade = fitted_cascade()
    session = start_session(cascade, "Which river delta?", prices=cards(), floor="strong", max_depth=None,
                            reliability=None, needs={"text"})
    assert session.plan.ladder == ("strong",)
    fp = cascade_fingerprint(cascade)
    assert fp.startswith(cascade.fingerprint()) and ":q=" in fp
    result = dispatch(FakeJudge(), "q", caller({"small": answer("small")}), prices=PRICES)
    acc = account(result, floor="small", ttft_s=0.25, streamed=True)
    assert acc["floor"] == "small" and acc["streamed"] is True and acc["ttft_s"] == 0.25
    assert acc["model"] == result.model and "tpot_s" in acc
