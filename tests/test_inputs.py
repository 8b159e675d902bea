"""Request checks shared by the adapters: empty requests, bad Unicode, content no tier accepts, tool schemas."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from crescade import ModelCard
from crescade.common.errors import InputError, PricingError
from crescade.engine.decisions import Plan
from crescade.engine.pricing import load_prices
from crescade.serving.inputs import check_messages, check_tool, restrict_to_inputs
from crescade.serving.jsonschema_lite import schema_problems


def test_check_messages_refuses_empty_requests_and_bad_unicode() -> None:
    with pytest.raises(InputError, match="no messages"):
        check_messages([], [])
    with pytest.raises(InputError, match="all 2 message"):
        check_messages(["", " \n\t"], [set(), set()])
    with pytest.raises(InputError, match=r"message 1: invalid Unicode \(a lone surrogate U\+DC80 at character 3\)"):
        check_messages(["fine", "abc\udc80"], [set(), set()])
    with pytest.raises(InputError, match="message 0: text must be a string"):
        check_messages([b"bytes"], [set()])  # type: ignore[list-item]
    with pytest.raises(InputError, match="unsupported kind"):
        check_messages(["x"], [{"hologram"}])
    assert check_messages(["hi"], [set()]) == {"text"}
    assert check_messages([""], [{"image"}]) == {"text", "image"}  # an image alone is something to answer
    assert check_messages(["日本語 🎌"], [set()]) == {"text"}


PLAN = Plan(cluster=2, ladder=("a", "b", "c"), thresholds=(0.5, 0.6, 0.0), reason="cluster 2")


def cards(**inputs: list[str]) -> dict[str, ModelCard]:
    return {m: ModelCard(m, 1.0, 1.0, inputs=frozenset(inputs.get(m, ()))) for m in ("a", "b", "c")}


def test_restrict_to_inputs_keeps_only_tiers_that_accept_the_content() -> None:
    assert restrict_to_inputs(PLAN, cards(), {"text"}) is PLAN
    cut = restrict_to_inputs(PLAN, cards(b=["image"], c=["image", "audio"]), {"text", "image"})
    assert cut.ladder == ("b", "c") and cut.thresholds == (0.6, 0.0)
    assert "restricted to tiers accepting image, text" in cut.reason
    one = restrict_to_inputs(PLAN, cards(a=["image"]), {"text", "image"})
    assert one.ladder == ("a",) and one.thresholds == (0.0,)  # the only tier left is the last: accepted as is
    with pytest.raises(InputError, match="audio content and no model of its ladder"):
        restrict_to_inputs(PLAN, cards(c=["image"]), {"text", "audio"})


def test_model_card_inputs_round_trip_and_validate(tmp_path) -> None:
    card = ModelCard("m", 1, 2, inputs=frozenset({"image"}))
    assert card.inputs == {"text", "image"} and card.to_dict()["inputs"] == ["image", "text"]
    assert "inputs" not in ModelCard("m", 1, 2).to_dict()  # the default is not written
    p = tmp_path / "prices.json"
    p.write_text(json.dumps({"m": {"input_per_mtok": 1, "output_per_mtok": 2, "inputs": ["image", "audio"]}}))
    assert load_prices(p)["m"].inputs == {"text", "image", "audio"}
    for bad in ("image", ["smell"], [3]):
        with pytest.raises(PricingError, match=r"inputs|input kind"):
            ModelCard("m", 1, 2, inputs=bad)  # type: ignore[arg-type]


class Inner(BaseModel):
    x: int


class Outer(BaseModel):
    inner: Inner
    tags: list[str] = []


def test_check_tool_accepts_real_schemas_and_names_the_problem_otherwise() -> None:
    check_tool("outer", Outer.model_json_schema(), index=0)  # $defs and $ref
    check_tool("no_params", None, index=0)
    check_tool("empty", {"type": "object", "properties": {}}, index=0)
    cases = [
        ("bad name!", {"type": "object"}, r"tool 3 \('bad name!'\): the name"),
        (None, {"type": "object"}, "tool 3: the name"),
        ("f", [1, 2], r"tool 3 \('f'\): parameters must be a JSON Schema object"),
        ("f", {"type": "objekt"}, r"unknown type\(s\) 'objekt'"),
        ("f", {"type": "object", "properties": []}, "properties: must be an object of schemas"),
        ("f", {"type": "object", "required": "x"}, "required: must be a list"),
        ("f", {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "does not resolve"),
        ("f", {"type": "object", "properties": {"a": {"enum": "abc"}}}, "enum: must be a list"),
        ("f", {"type": "object", "properties": {"a": 7}}, "a schema must be an object or a boolean"),
        ("f", {"type": "string"}, "must describe an object"),
    ]
    for name, params, message in cases:
        with pytest.raises(InputError, match=message):
            check_tool(name, params, index=3)


def test_schema_problems_bounds_depth_and_accepts_boolean_schemas() -> None:
    assert schema_problems({"type": "object", "properties": {"a": True, "b": False}}) == []
    deep: dict = {"type": "object"}
    node = deep
    for _ in range(200):
        node["properties"] = {"x": {"type": "object"}}
        node = node["properties"]["x"]
    problems = schema_problems(deep)
    assert problems and "nested more than" in problems[0]
    assert schema_problems("nope") == ["$: a schema must be an object, got str"]
