"""Tests for crescade.common.progress: silent for fast work, throttled output for slow work, thread-safe."""

from __future__ import annotations

import io
import re
import threading

import pytest

from crescade.common.progress import ENV_VAR, Progress, progress


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class TTY(io.StringIO):
    """A StringIO that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_fast_loop_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    with Progress(1000, desc="collect", clock=clock) as bar:
        for _ in range(1000):
            clock.advance(0.0009)  # 0.9 s in all
            bar.update()
    assert bar.n == 1000
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_exactly_the_delay_prints_nothing() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(10, clock=clock, stream=out) as bar:
        clock.advance(1.0)
        bar.update(10)
    assert out.getvalue() == ""


def test_slow_loop_on_plain_stream_prints_throttled_lines(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    with Progress(120, desc="collect", clock=clock) as bar:
        for _ in range(120):
            clock.advance(0.1)  # 12 s in all
            bar.update()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    # first line just after 1 s, then one per 5 s (at ~6.1 s and ~11.1 s), then the final line
    assert len(lines) == 4, lines
    assert lines[0].startswith("collect:  11/120 (  9%)")
    assert "10.0 it/s" in lines[0] and "ETA 0:11" in lines[0]
    assert lines[-1] == "collect: 120/120 (100%) | 10.0 it/s | 0:12 elapsed"


def test_slow_loop_on_tty_redraws_in_place_at_most_ten_times_a_second() -> None:
    clock, out = FakeClock(), TTY()
    with Progress(300, desc="embed", clock=clock, stream=out) as bar:
        for _ in range(300):
            clock.advance(0.01)  # 100 updates/s for 3 s
            bar.update()
    text = out.getvalue()
    redraws = text.count("\r")
    # ~2 s shown at <= 10 redraws/s, plus the final redraw
    assert 15 <= redraws <= 22, redraws
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip("\n").rsplit("\r", 1)[-1].startswith("embed: 300/300 (100%)")


def test_tty_redraw_pads_over_a_longer_previous_line() -> None:
    clock, out = FakeClock(), TTY()
    bar = Progress(None, clock=clock, stream=out)
    clock.advance(2)
    bar.update(1000)
    first = out.getvalue().split("\r")[-1]
    bar.desc = ""
    clock.advance(1)
    bar.update(1)
    second = out.getvalue().split("\r")[-1]
    assert len(second) >= len(first)


def test_final_line_when_slow_even_without_intermediate_updates() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(5, desc="x", clock=clock, stream=out) as bar:
        clock.advance(3)
        bar.update(5)  # first update after the delay: one line now
        clock.advance(0.6)
    assert out.getvalue().splitlines() == [
        "x: 5/5 (100%) | 1.67 it/s | ETA 0:00",
        "x: 5/5 (100%) | 1.39 it/s | 0:04 elapsed",
    ]


def test_final_line_written_when_the_block_raises() -> None:
    clock, out = FakeClock(), io.StringIO()
    with pytest.raises(RuntimeError), Progress(10, clock=clock, stream=out) as bar:
        bar.update(3)
        clock.advance(2)
        raise RuntimeError("boom")
    assert out.getvalue().splitlines() == [" 3/10 ( 30%) | 1.50 it/s | 0:02 elapsed"]


def test_disabled_prints_nothing() -> None:
    clock, out = FakeClock(), TTY()
    with Progress(10, clock=clock, stream=out, enabled=False) as bar:
        for _ in range(10):
            clock.advance(1)
            bar.update()
    assert bar.n == 10
    assert out.getvalue() == ""


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_env_var_disables(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    clock, out = FakeClock(), io.StringIO()
    with Progress(10, clock=clock, stream=out) as bar:
        clock.advance(10)
        bar.update(10)
    assert out.getvalue() == ""


def test_explicit_enabled_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "0")
    clock, out = FakeClock(), io.StringIO()
    with Progress(10, clock=clock, stream=out, enabled=True) as bar:
        clock.advance(10)
        bar.update(10)
    assert out.getvalue() != ""


def test_progress_wrapper_yields_everything_and_takes_len() -> None:
    clock, out = FakeClock(), io.StringIO()
    seen = []
    for x in progress(range(20), desc="w", clock=clock, stream=out):
        clock.advance(0.2)
        seen.append(x)
    assert seen == list(range(20))
    lines = out.getvalue().splitlines()
    assert lines[-1] == "w: 20/20 (100%) | 5.00 it/s | 0:04 elapsed"


def test_progress_wrapper_unknown_total() -> None:
    clock, out = FakeClock(), io.StringIO()
    items = []
    for x in progress((i for i in range(4)), desc="g", clock=clock, stream=out):
        clock.advance(1)
        items.append(x)
    assert items == [0, 1, 2, 3]
    # unknown total: count, rate, elapsed; no percent, no ETA
    assert out.getvalue().splitlines() == [
        "g: 2 | 1.00 it/s | 0:02 elapsed",
        "g: 4 | 1.00 it/s | 0:04 elapsed",
    ]


def test_progress_wrapper_fast_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert sum(progress(range(10_000))) == sum(range(10_000))
    assert capsys.readouterr().err == ""


def test_progress_wrapper_closes_on_break() -> None:
    clock, out = FakeClock(), io.StringIO()
    gen = progress(range(100), clock=clock, stream=out)
    for x in gen:
        clock.advance(1)
        if x == 4:
            break
    gen.close()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "  4/100 (  4%) | 0.80 it/s | 0:05 elapsed"


def test_update_is_thread_safe() -> None:
    out = TTY()
    bar = Progress(8 * 5000, stream=out, delay=0, tty_interval=0)
    threads = [threading.Thread(target=lambda: [bar.update() for _ in range(5000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    assert bar.n == 40_000
    # every write is whole: each redraw is "\r" + one full status line, never two interleaved
    chunks = out.getvalue().rstrip("\n").split("\r")[1:]
    assert chunks
    line = re.compile(r"^ *\d+/40000 \( *\d+%\) \| [\d,.]+ it/s \| (ETA [\d:?]+|[\d:]+ elapsed) *$")
    for chunk in chunks:
        assert line.match(chunk), chunk


def test_close_is_idempotent_and_update_after_close_is_silent() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(2, clock=clock, stream=out)
    clock.advance(2)
    bar.close()
    bar.close()
    bar.update()
    assert len(out.getvalue().splitlines()) == 1


def test_broken_stream_does_not_break_the_work() -> None:
    clock, out = FakeClock(), io.StringIO()
    out.close()
    with Progress(3, clock=clock, stream=out) as bar:
        clock.advance(2)
        bar.update(3)
    assert bar.n == 3 and not bar.enabled


def test_negative_total_rejected() -> None:
    with pytest.raises(ValueError):
        Progress(-1)


def test_eta_and_format_hours() -> None:
    clock = FakeClock()
    bar = Progress(10_000, desc="d", clock=clock, enabled=False)
    bar.n = 1
    line = bar.format(clock.t + 2)
    assert line == "d:     1/10000 (  0%) | 0.50 it/s | ETA 5:33:18"
