"""crescade.serving.streamclock: TTFT, TPOT and the chunk-count estimate of a streamed call."""

from __future__ import annotations

import pytest

from crescade.serving.streamclock import StreamClock


def test_clock_times_first_and_last_output(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([10.5, 11.0, 12.5])
    monkeypatch.setattr("crescade.serving.streamclock.time.perf_counter", lambda: next(times))
    clock = StreamClock(t0=10.0)
    assert clock.ttft() is None and clock.tpot(5) is None and clock.estimated_tokens() is None
    assert [clock.tick() for _ in range(3)] == [10.5, 11.0, 12.5]
    assert clock.ttft() == 0.5
    assert clock.tpot(5) == 0.5  # 2 s after the first token, over 4 more tokens
    assert clock.tpot(1) is None
    assert clock.estimated_tokens() == 3


def test_single_chunk_is_no_token_estimate() -> None:
    clock = StreamClock()
    clock.tick()
    assert clock.estimated_tokens() is None and clock.ttft() is not None and clock.ttft() >= 0
