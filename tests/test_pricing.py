"""Tests of crescade.engine.pricing: ModelCard validation, load/save of prices JSON, price_of."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from crescade.common.errors import PricingError
from crescade.engine.pricing import ModelCard, load_prices, price_of, save_prices

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_cost_per_million_tokens() -> None:
    card = ModelCard("m", input_per_mtok=10.0, output_per_mtok=30.0)
    assert card.cost(1_000_000, 0) == pytest.approx(10.0)
    assert card.cost(501, 1) == pytest.approx((501 * 10 + 30) / 1e6)
    assert card.cost(0, 0) == 0.0
    assert card.cost(np.int64(100), np.int64(10)) == pytest.approx(card.cost(100, 10))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_per_mtok": -1.0, "output_per_mtok": 1.0},
        {"input_per_mtok": 1.0, "output_per_mtok": math.nan},
        {"input_per_mtok": math.inf, "output_per_mtok": 1.0},
        {"input_per_mtok": "1", "output_per_mtok": 1.0},
        {"input_per_mtok": True, "output_per_mtok": 1.0},
        {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "context_window": 0},
        {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "context_window": 1.5},
        {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "ttft_s": -0.1},
        {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "tpot_s": math.nan},
    ],
)
def test_card_validation_names_model(kwargs: dict) -> None:
    with pytest.raises(PricingError, match="my-model"):
        ModelCard("my-model", **kwargs)


def test_card_rejects_empty_name_and_negative_tokens() -> None:
    with pytest.raises(PricingError):
        ModelCard("", 1.0, 1.0)
    with pytest.raises(PricingError, match="m1"):
        ModelCard("m1", 1.0, 1.0).cost(-1, 0)


def test_load_shared_prices() -> None:
    prices = load_prices(DATA / "prices.json")
    assert len(prices) == 12
    gpt4 = prices["gpt-4-1106-preview"]
    assert (gpt4.input_per_mtok, gpt4.output_per_mtok) == (10.0, 30.0)
    assert all(name == card.name for name, card in prices.items())


def test_save_load_round_trip(tmp_path: Path) -> None:
    cards = {
        "a": ModelCard("a", 0.2, 0.6, context_window=8192, ttft_s=0.3, tpot_s=0.01),
        "b/c": ModelCard("b/c", 1.0, 2.0),
    }
    path = tmp_path / "prices.json"
    save_prices(cards, path)
    assert load_prices(path) == cards
    assert [p.name for p in tmp_path.iterdir()] == ["prices.json"]  # no temp file left


def test_save_rejects_mismatched_key(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="'x'"):
        save_prices({"x": ModelCard("y", 1.0, 1.0)}, tmp_path / "p.json")


def _write(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"m1": {"input_per_mtok": 1.0}}, "output_per_mtok"),
        ({"m1": {"input_per_mtok": -1.0, "output_per_mtok": 1.0}}, "input_per_mtok"),
        ({"m1": {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "inptu": 2}}, "inptu"),
        ({"m1": [1.0, 2.0]}, "object"),
        ('{"m1": {"input_per_mtok": NaN, "output_per_mtok": 1.0}}', "NaN"),
    ],
)
def test_load_errors_name_file_and_model(tmp_path: Path, content: object, needle: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(PricingError) as ei:
        load_prices(path)
    msg = str(ei.value)
    assert str(path) in msg and needle in msg
    if not isinstance(content, str):
        assert "m1" in msg


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "{}"])
def test_load_errors_bad_file(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(PricingError, match=r"prices\.json"):
        load_prices(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match=r"nope\.json"):
        load_prices(tmp_path / "nope.json")


def test_load_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(b'{"m": \xff}')
    with pytest.raises(PricingError, match=r"prices\.json"):
        load_prices(path)


def test_price_of_unknown_lists_known_models() -> None:
    cards = {"a": ModelCard("a", 1.0, 1.0), "b": ModelCard("b", 2.0, 2.0)}
    assert price_of(cards, "b") is cards["b"]
    with pytest.raises(PricingError) as ei:
        price_of(cards, "zzz")
    assert "'zzz'" in str(ei.value) and "a, b" in str(ei.value)
