"""Timing a streamed model call: when its first and last output arrived and how many output pieces came.

Both adapters wrap each streamed child call in a :class:`StreamClock`, so TTFT, TPOT and the chunk-count
token estimate (used when a stream reports no usage, as llama.cpp's server never does) are computed in
one place.
"""

from __future__ import annotations

import time

__all__ = ["StreamClock"]


class StreamClock:
    """``tick()`` on every chunk that carries output; read ``ttft()`` and ``tpot(n_out)`` at the end."""

    __slots__ = ("n_output", "t0", "t_first", "t_last")

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.n_output = 0

    def tick(self) -> float:
        """Note one output chunk now; returns the time."""
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.n_output += 1
        return now

    def ttft(self) -> float | None:
        """Seconds from the call to its first output (None: no output came)."""
        return None if self.t_first is None else self.t_first - self.t0

    def tpot(self, output_tokens: int) -> float | None:
        """Seconds per output token after the first, over ``output_tokens`` tokens."""
        if self.t_first is None or self.t_last is None or output_tokens <= 1:
            return None
        return (self.t_last - self.t_first) / (output_tokens - 1)

    def estimated_tokens(self) -> int | None:
        """The output chunk count as a token estimate (one token per chunk on OpenAI-compatible servers);
        None for fewer than two chunks, where a whole answer may have come at once."""
        return self.n_output if self.n_output > 1 else None
