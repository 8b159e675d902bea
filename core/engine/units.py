"""The unit the knob's cost is counted in: dollars (default), or measured seconds per call.

The paper tunes its budget in milliseconds of TPOT; a deployment that pays for hardware rather than
tokens cares about latency. Every unit is additive over the calls a query makes (an escalated query
pays the rejected draft's dollars or seconds too).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..common.errors import ConfigError
from .records import Outcomes

CostUnit = Literal["usd", "latency_s", "tpot_s"]
COST_UNITS: tuple[CostUnit, ...] = ("usd", "latency_s", "tpot_s")
UNIT_LABELS = {"usd": "dollars", "latency_s": "seconds of end-to-end latency",
               "tpot_s": "seconds per output token (TPOT)"}


def check_unit(unit: object) -> None:
    """Raise a one-line :class:`ConfigError` unless ``unit`` is one of :data:`COST_UNITS`."""
    if unit not in COST_UNITS:
        raise ConfigError(f"cost_unit must be one of {', '.join(map(repr, COST_UNITS))}, got {unit!r}")


def unit_cost(outcomes: Outcomes, unit: CostUnit) -> np.ndarray:
    """``[n, m]`` cost of every recorded call in ``unit`` (NaN where the model has no record)."""
    check_unit(unit)
    if unit == "usd":
        return np.asarray(outcomes.cost, dtype=float)
    values = np.asarray(getattr(outcomes, unit), dtype=float)
    missing = np.isnan(values) & ~np.isnan(np.asarray(outcomes.correct, dtype=float))
    if missing.any():
        raise ConfigError(
            f"cost_unit={unit!r} needs the measured {unit} of every recorded call, but {int(missing.sum())} of "
            f"{int((~np.isnan(outcomes.correct)).sum())} records lack it; record with `crescade collect` (it "
            "measures latency, TTFT and TPOT) or use cost_unit='usd'")
    return values


def in_unit(outcomes: Outcomes, unit: CostUnit) -> Outcomes:
    """A copy of ``outcomes`` whose ``cost`` column is counted in ``unit`` (for baselines and reports)."""
    return outcomes if unit == "usd" else dataclasses.replace(outcomes, cost=unit_cost(outcomes, unit))
