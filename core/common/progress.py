"""A dependency-free progress bar for long loops, written to stderr.

Nothing is printed for work that finishes within ``delay`` (1 s). After that, a TTY gets one line redrawn
in place with ``\\r`` at most ~10 times a second; any other stream (a log file, CI) gets a plain line at
most every 5 s. Either way a final line is written when the bar closes. ``enabled=False`` or the
environment variable ``CRESCADE_PROGRESS=0`` turns it off. ``update`` is thread-safe.

    with Progress(len(items), desc="collect") as bar:
        for item in items:
            ...
            bar.update()

    for item in progress(items, desc="collect"):
        ...
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

__all__ = ["ENV_VAR", "Progress", "progress", "progress_enabled"]

ENV_VAR = "CRESCADE_PROGRESS"
_OFF = {"0", "false", "no", "off"}

T = TypeVar("T")


def progress_enabled() -> bool:
    """False when ``$CRESCADE_PROGRESS`` is ``0``/``false``/``no``/``off``, else True."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in _OFF


def _clock_str(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate_str(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


class Progress:
    """Counts work done and reports it on stderr once the work has taken longer than ``delay``.

    ``total`` may be None when unknown (no percent or ETA then). ``stream`` defaults to the current
    ``sys.stderr``; ``clock`` (seconds, monotonic) can be replaced in tests.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "it",
        delay: float = 1.0,
        tty_interval: float = 0.1,
        plain_interval: float = 5.0,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0 or None, got {total}")
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.enabled = progress_enabled() if enabled is None else enabled
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._delay = delay
        self._tty = self._isatty(self._stream)
        self._interval = tty_interval if self._tty else plain_interval
        self._lock = threading.Lock()
        self._start = clock()
        self._last_draw: float | None = None
        self._last_len = 0
        self._closed = False

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Add ``n`` units of work done; redraws if the delay and the redraw interval have passed."""
        with self._lock:
            self.n += n
            if not self.enabled or self._closed:
                return
            now = self._clock()
            if now - self._start <= self._delay:
                return
            if self._last_draw is None or now - self._last_draw >= self._interval:
                self._draw(now, final=False)

    def close(self) -> None:
        """Write the final line if anything was shown or the work outlasted the delay. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.enabled:
                return
            now = self._clock()
            if self._last_draw is not None or now - self._start > self._delay:
                self._draw(now, final=True)

    def format(self, now: float, final: bool = False) -> str:
        """The status line at time ``now``: done/total, percent, rate, and ETA (or elapsed when final)."""
        elapsed = max(now - self._start, 0.0)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total is not None:
            pct = 100.0 * self.n / self.total if self.total else 100.0
            width = len(str(self.total))
            parts.append(f"{self.n:>{width}}/{self.total} ({pct:3.0f}%)")
        else:
            parts.append(str(self.n))
        parts.append(f" | {_rate_str(rate)} {self.unit}/s")
        if final:
            parts.append(f" | {_clock_str(elapsed)} elapsed")
        elif self.total is not None:
            eta = (self.total - self.n) / rate if rate > 0 else math.inf
            parts.append(f" | ETA {_clock_str(eta) if math.isfinite(eta) and eta >= 0 else '?'}")
        else:
            parts.append(f" | {_clock_str(elapsed)} elapsed")
        return "".join(parts)

    def _draw(self, now: float, final: bool) -> None:
        line = self.format(now, final)
        if self._tty:
            text = "\r" + line + " " * max(0, self._last_len - len(line)) + ("\n" if final else "")
        else:
            text = line + "\n"
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # closed or broken stream: progress must never break the work
            self.enabled = False
            return
        self._last_draw = now
        self._last_len = len(line)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    **kwargs: Any,
) -> Iterator[T]:
    """Yield from ``iterable`` while showing a :class:`Progress`; ``total`` defaults to ``len(iterable)``.

    Extra keyword arguments (``enabled``, ``stream``, ``clock``, ...) go to :class:`Progress`.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
