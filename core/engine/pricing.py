"""Model prices: one :class:`ModelCard` per model, loaded from and saved to a small JSON file.

The JSON file maps a model name to its card::

    {"gpt-4-1106-preview": {"input_per_mtok": 10.0, "output_per_mtok": 30.0, "context_window": 128000}}

An unknown price is an error, never a silent zero.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.atomic import atomic_write
from ..common.errors import PricingError

__all__ = ["INPUT_KINDS", "ModelCard", "load_prices", "price_of", "save_prices"]

_REQUIRED = ("input_per_mtok", "output_per_mtok")
_OPTIONAL = ("context_window", "ttft_s", "tpot_s", "inputs")
#: Kinds of message content a model may accept; every model accepts text.
INPUT_KINDS = ("text", "image", "audio", "video", "file")
_MAX_PRICES_BYTES = 16 * 1024 * 1024


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class ModelCard:
    """Price (USD per million tokens) and optional latency/context facts of one model.

    ``inputs``: the kinds of content the model accepts (:data:`INPUT_KINDS`; text always). A request with
    an image goes only to tiers whose card lists ``"image"``.
    """

    name: str
    input_per_mtok: float
    output_per_mtok: float
    context_window: int | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    inputs: frozenset[str] = frozenset({"text"})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PricingError(f"model name must be a non-empty string, got {self.name!r}")
        for field in _REQUIRED:
            v = getattr(self, field)
            if not _is_real(v) or not math.isfinite(v) or v < 0:
                raise PricingError(
                    f"model {self.name!r}: {field} must be a finite non-negative number, got {v!r}"
                )
            object.__setattr__(self, field, float(v))
        cw = self.context_window
        if cw is not None:
            if not isinstance(cw, numbers.Integral) or isinstance(cw, bool) or cw <= 0:
                raise PricingError(
                    f"model {self.name!r}: context_window must be a positive integer, got {cw!r}"
                )
            object.__setattr__(self, "context_window", int(cw))
        for field in ("ttft_s", "tpot_s"):
            v = getattr(self, field)
            if v is None:
                continue
            if not _is_real(v) or not math.isfinite(v) or v < 0:
                raise PricingError(
                    f"model {self.name!r}: {field} must be a finite non-negative number or null, got {v!r}"
                )
            object.__setattr__(self, field, float(v))
        kinds = self.inputs
        if isinstance(kinds, str) or not all(isinstance(k, str) for k in (kinds or ())):
            raise PricingError(f"model {self.name!r}: inputs must be a list of {', '.join(INPUT_KINDS)}, "
                               f"got {kinds!r}")
        unknown = sorted(set(kinds) - set(INPUT_KINDS))
        if unknown:
            raise PricingError(f"model {self.name!r}: unknown input kind(s) {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(INPUT_KINDS)}")
        object.__setattr__(self, "inputs", frozenset({"text", *kinds}))

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD cost of one call with these token counts."""
        for label, n in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if not _is_real(n) or n < 0:
                raise PricingError(f"model {self.name!r}: {label} must be a non-negative number, got {n!r}")
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """The card as the JSON object stored under its name (``None`` fields omitted)."""
        out: dict[str, Any] = {"input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}
        for field in _OPTIONAL:
            v = getattr(self, field)
            if field == "inputs":
                if v != {"text"}:
                    out[field] = sorted(v)
            elif v is not None:
                out[field] = v
        return out


def _card_from_json(name: str, entry: object, where: str) -> ModelCard:
    if not isinstance(entry, dict):
        raise PricingError(f"{where}: model {name!r}: expected an object, got {type(entry).__name__}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise PricingError(f"{where}: model {name!r}: missing {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise PricingError(
            f"{where}: model {name!r}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(_REQUIRED + _OPTIONAL)}"
        )
    try:
        return ModelCard(name, entry["input_per_mtok"], entry["output_per_mtok"],
                         **{k: entry[k] for k in _OPTIONAL if k in entry})
    except PricingError as e:
        raise PricingError(f"{where}: {e}") from None


def load_prices(path: str | os.PathLike[str]) -> dict[str, ModelCard]:
    """Read a prices JSON file into ``{model: ModelCard}``; every problem is a :class:`PricingError`."""
    where = str(path)
    try:
        p = Path(path)
        if p.stat().st_size > _MAX_PRICES_BYTES:
            raise PricingError(f"{where}: file larger than {_MAX_PRICES_BYTES} bytes")
        raw = p.read_bytes()
    except OSError as e:
        raise PricingError(f"{where}: cannot read prices file: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise PricingError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise PricingError(f"{where}: invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PricingError(f"{where}: expected a JSON object mapping model names to prices")
    if not data:
        raise PricingError(f"{where}: no models in prices file")
    return {name: _card_from_json(name, entry, where) for name, entry in data.items()}


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a valid price")


def save_prices(cards: Mapping[str, ModelCard], path: str | os.PathLike[str]) -> None:
    """Write ``{model: ModelCard}`` as JSON (sorted keys), atomically."""
    data: dict[str, Any] = {}
    for key, card in cards.items():
        if not isinstance(card, ModelCard):
            raise PricingError(f"model {key!r}: expected a ModelCard, got {type(card).__name__}")
        if key != card.name:
            raise PricingError(f"key {key!r} does not match the card's name {card.name!r}")
        data[key] = card.to_dict()
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))


def price_of(cards: Mapping[str, ModelCard], model: str) -> ModelCard:
    """The card of ``model``; a :class:`PricingError` naming the known models when it has none."""
    try:
        return cards[model]
    except KeyError:
        known = ", ".join(sorted(cards)) or "(none)"
        raise PricingError(f"no price for model {model!r}; prices are known for: {known}") from None
