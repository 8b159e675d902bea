"""The knob's cost in the user's unit: dollars, or the records' measured latency or time per output token."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from dispatch_fakes import answer, caller

from crescade import Cascade, ConfigError, ModelCard, Outcomes
from crescade.engine.records import write_records
from crescade.engine.units import in_unit, unit_cost
from crescade.serving.dispatch import dispatch
from crescade.tools.cli import main

# the dollar-cheapest model is the slowest: in seconds it is dominated (slower and less accurate than "mid")
SECONDS = {"cheap": 12.0, "mid": 1.0, "strong": 3.0}


def _timed(o: Outcomes, per_model: dict[str, float], column: str = "latency_s") -> Outcomes:
    rng = np.random.default_rng(3)
    base = np.array([per_model[m] for m in o.models])[None, :]
    values = base * rng.uniform(0.8, 1.2, size=o.correct.shape)
    return dataclasses.replace(o, **{column: values})


@pytest.mark.parametrize("column", ["latency_s", "tpot_s"])
def test_the_plan_follows_the_unit(train: Outcomes, test_set: Outcomes, column: str) -> None:
    timed, timed_test = _timed(train, SECONDS, column), _timed(test_set, SECONDS, column)
    usd = Cascade(0.9, n_folds=3, progress=False).fit(timed)
    secs = Cascade(0.9, cost_unit=column, n_folds=3, progress=False).fit(timed)  # type: ignore[arg-type]
    cheap = usd.models_.index("cheap")
    assert any(lad[0] == cheap for lad in usd.ladders_)  # in dollars "cheap" pays on its easy topic
    assert all(cheap not in lad for lad in secs.ladders_)  # in seconds it never does
    exp = secs.expected_
    assert exp["cost_unit"] == column and f"cost_per_query_{column}" in exp and "cost_per_query_usd" not in exp
    r = secs.replay(timed_test)
    assert r.cost_unit == column and f"cost_per_query_{column}" in r.summary()
    np.testing.assert_allclose(r.cost.mean(), np.mean([
        timed_test.__dict__[column][i, r.called[i]].sum() for i in range(len(r.cost))]))
    plan = secs.plan(timed_test.prompts[0])
    assert plan.cost_unit == column
    prices = {m: ModelCard(name=m, input_per_mtok=1.0, output_per_mtok=1.0) for m in secs.models_}
    acc = dispatch(secs, timed_test.prompts[0], caller({m: answer(m) for m in secs.models_}), prices=prices)
    assert acc.to_dict()["knob_cost_unit"] == column


def test_missing_timings_and_unknown_units_are_clear_errors(train: Outcomes) -> None:
    with pytest.raises(ConfigError, match=r"cost_unit='latency_s' needs the measured latency_s .* lack it"):
        Cascade(cost_unit="latency_s", progress=False).fit(train)
    with pytest.raises(ConfigError, match="cost_unit must be one of 'usd', 'latency_s', 'tpot_s'"):
        Cascade(cost_unit="joules", progress=False).fit(train)  # type: ignore[arg-type]
    assert in_unit(train, "usd") is train
    np.testing.assert_array_equal(unit_cost(_timed(train, SECONDS), "latency_s"), _timed(train, SECONDS).latency_s)


def test_cli_calibrates_in_seconds(train: Outcomes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "timed.csv"
    write_records(_timed(train, SECONDS).to_records(), path)
    art = tmp_path / "c"
    assert main(["calibrate", str(path), "--cost-unit", "latency_s", "--quality-target", "0.9", "-q",
                 "-o", str(art)]) == 0
    out = capsys.readouterr().out
    assert "cost counted in seconds of end-to-end latency" in out and " s/query vs " in out
    loaded = Cascade.load(art)
    assert loaded.cost_unit == "latency_s" and loaded.plan("x").cost_unit == "latency_s"
    assert main(["report", str(art)]) == 0
    assert " s/query" in capsys.readouterr().out
