"""Replayed latency, TTFT and TPOT of the cascade vs always-strongest (crescade.evaluation.timing)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from crescade import Cascade, Outcomes, Record
from crescade.common.errors import ConfigError
from crescade.evaluation.timing import query_tpot, reduction, replay_timing, timing_summary


def _timed(records: list[Record], models: list[str]) -> Outcomes:
    rank = {m: i for i, m in enumerate(models)}
    out = []
    for k, r in enumerate(records):
        base = 1.0 + rank[r.model] + (k % 7) * 0.01
        out.append(dataclasses.replace(r, latency_s=base, ttft_s=0.1 * base, tpot_s=0.01 * base))
    return Outcomes.from_records(out)


def test_query_tpot_weights_calls_by_tokens_decoded() -> None:
    assert query_tpot([0.01, 0.05], [11, 5]) == pytest.approx((0.01 * 10 + 0.05 * 4) / 14)
    assert query_tpot([float("nan"), 0.02], [10, 3]) == pytest.approx(0.02)
    assert math.isnan(query_tpot([0.02], [1]))


def test_timing_summary_and_reduction() -> None:
    s = timing_summary([1.0, 2.0, 3.0], [0.1, 0.2, float("nan")], [0.01, 0.03, 0.02])
    assert s["n"] == 3 and s["mean_latency_s"] == pytest.approx(2.0) and s["p50_ttft_s"] == pytest.approx(0.15)
    assert s["mean_tpot_s"] == pytest.approx(0.02)
    strong = timing_summary([4.0], [0.4], [0.04])
    assert reduction(s, strong) == {"latency": pytest.approx(0.5), "tpot": pytest.approx(0.5)}
    with pytest.raises(ConfigError, match="differ in length"):
        timing_summary([1.0], [1.0, 2.0], [1.0])


def test_replay_timing_adds_up_the_tiers_called(cascade: Cascade, records: list[Record]) -> None:
    outcomes = _timed(records, list(cascade.models_)).split("test")
    res = cascade.replay(outcomes)
    assert (res.called.sum(axis=1) == res.calls).all()
    assert res.called[np.arange(len(res.model)), res.model].all()  # the answering model was called
    report = replay_timing(cascade, outcomes, res)
    cols = [outcomes.models.index(m) for m in cascade.models_]
    lat = outcomes.latency_s[:, cols]
    expected = [lat[i, res.called[i]].sum() for i in range(len(res.model))]
    assert report["cascade"]["mean_latency_s"] == pytest.approx(float(np.mean(expected)))
    s = cascade.strongest_
    assert report["always_strong"]["mean_latency_s"] == pytest.approx(float(lat[:, s].mean()))
    assert report["always_strong"]["model"] == cascade.models_[s]
    held = ~res.last_tier  # an accepted draft reaches the user whole: TTFT = its full latency
    ttft = [lat[i, res.called[i]].sum() if held[i] else None for i in range(len(res.model))]
    assert held.any()
    p50_held = float(np.percentile([t for t in ttft if t is not None], 50))
    assert p50_held >= 1.0  # never the draft's own (10x smaller) TTFT
    assert report["retention"] == pytest.approx(report["cascade"]["accuracy"] / report["always_strong"]["accuracy"])
    assert 0 < report["relative_cost"] <= 2.0
    assert report["reduction"]["latency"] == pytest.approx(
        1 - report["cascade"]["mean_latency_s"] / report["always_strong"]["mean_latency_s"])


def test_replay_timing_needs_timed_records(cascade: Cascade, test_set: Outcomes) -> None:
    with pytest.raises(ConfigError, match="no latency/TTFT/TPOT"):
        replay_timing(cascade, test_set)
