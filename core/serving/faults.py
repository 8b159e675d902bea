"""Fault injection for child models: the failures real providers produce, on a seeded schedule.

:class:`FaultSchedule` decides, for each call a wrapped child model receives, whether it fails and how;
the adapters' wrappers (``crescade_langchain.testing.FaultInjectingChatModel``,
``crescade_llamaindex.testing.FaultInjectingLLM``) apply the decision around any real model. The errors
raised are shaped like the provider SDKs' own (an HTTP ``status_code``, a ``response`` with headers such
as ``Retry-After``, the usual class names), so the cascade's policy treats them exactly as it treats
``openai`` or ``anthropic`` errors. The decision for a call depends only on the seed, the model and the
call's own key (its prompt and how often that prompt was seen), never on thread timing, so a concurrent
run is reproducible.

Kinds: ``timeout`` (raised after ``slow_s``), ``rate_limit`` (429 with ``Retry-After``),
``rate_limit_bare`` (429 without it), ``server_error`` (503), ``connection_reset``, ``malformed`` (an
unparseable body), ``empty`` (an empty answer), ``hang`` (no answer until released or ``hang_s``),
``stream_error`` (the stream breaks after ``after_chunks`` chunks), ``stream_hang`` (it stalls there),
``slow`` (answers after ``slow_s``). Stream kinds act like their non-stream twin on a plain call.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..common.errors import ConfigError

__all__ = [
    "FAULT_KINDS",
    "Delivery",
    "Fault",
    "FaultSchedule",
    "InjectedConnectionResetError",
    "InjectedMalformedResponseError",
    "InjectedRateLimitError",
    "InjectedServerError",
    "InjectedStreamError",
    "InjectedTimeoutError",
]

FaultKind = Literal["timeout", "rate_limit", "rate_limit_bare", "server_error", "connection_reset", "malformed",
                    "empty", "hang", "stream_error", "stream_hang", "slow"]
FAULT_KINDS: tuple[str, ...] = ("timeout", "rate_limit", "rate_limit_bare", "server_error", "connection_reset",
                                "malformed", "empty", "hang", "stream_error", "stream_hang", "slow")
_RAISE_BEFORE = frozenset({"timeout", "rate_limit", "rate_limit_bare", "server_error", "connection_reset",
                           "malformed"})


class _Headers(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:  # case-insensitive, as HTTP headers are
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.headers = status, _Headers(headers or {})


class InjectedFault(Exception):
    """Base of the injected errors; ``kind`` says which fault it stands for."""

    kind = "other"


class InjectedTimeoutError(InjectedFault, TimeoutError):
    """Like ``openai.APITimeoutError``: the provider did not answer in time."""

    kind = "timeout"


class InjectedRateLimitError(InjectedFault):
    """Like ``openai.RateLimitError``: HTTP 429, with or without ``Retry-After``."""

    kind = "rate_limit"

    def __init__(self, retry_after_s: float | None) -> None:
        headers = {"retry-after": f"{retry_after_s:g}"} if retry_after_s is not None else {}
        super().__init__("Error code: 429 - rate limit exceeded (injected)")
        self.status_code = 429
        self.response = _Response(429, headers)


class InjectedServerError(InjectedFault):
    """Like ``openai.InternalServerError``: HTTP 503."""

    kind = "server_error"

    def __init__(self) -> None:
        super().__init__("Error code: 503 - service unavailable (injected)")
        self.status_code = 503
        self.response = _Response(503)


class InjectedConnectionResetError(InjectedFault, ConnectionResetError):
    """The connection was reset by the peer."""

    kind = "connection_reset"


class InjectedMalformedResponseError(InjectedFault, ValueError):
    """The provider's body could not be parsed (what a client raises on invalid JSON)."""

    kind = "malformed"


class InjectedStreamError(InjectedFault, ConnectionError):
    """The stream broke off in the middle (like ``httpx.RemoteProtocolError``: peer closed connection)."""

    kind = "stream_error"


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind and parameters."""

    kind: str
    after_chunks: int = 2
    retry_after_s: float | None = None
    seconds: float = 0.0

    def error(self) -> Exception:
        """The exception a call with this fault raises (for the kinds that raise)."""
        if self.kind == "timeout":
            return InjectedTimeoutError("Request timed out (injected)")
        if self.kind in ("rate_limit", "rate_limit_bare"):
            return InjectedRateLimitError(self.retry_after_s if self.kind == "rate_limit" else None)
        if self.kind == "server_error":
            return InjectedServerError()
        if self.kind == "connection_reset":
            return InjectedConnectionResetError("[Errno 104] Connection reset by peer (injected)")
        if self.kind == "malformed":
            return InjectedMalformedResponseError("Expecting value: line 1 column 1 (char 0) (injected)")
        if self.kind == "stream_error":
            return InjectedStreamError("peer closed connection without sending complete message body (injected)")
        raise ValueError(f"fault {self.kind!r} does not raise")


@dataclass(frozen=True)
class Delivery:
    """One complete answer a wrapped model handed back: what it said and the usage it reported."""

    model: str
    key: str
    text: str
    input_tokens: int | None
    output_tokens: int | None


class FaultSchedule:
    """Which call fails, and how: ``rate`` of the calls to each model in ``models`` (all when ``None``).

    ``kinds`` are drawn uniformly; ``retry_after_s`` is the ``Retry-After`` of ``rate_limit`` faults,
    ``hang_s`` how long a hang lasts at most (:meth:`release` ends every hang at once), ``slow_s`` the
    delay of ``slow`` and ``timeout`` faults, ``limit`` the most faults injected in all. :attr:`log` lists
    ``(model, key, kind)`` for every call, :attr:`deliveries` every answer the wrappers handed back in
    full, with the usage it reported.
    """

    def __init__(self, rate: float = 0.2, *, kinds: Sequence[str] = FAULT_KINDS, seed: int = 0,
                 models: Sequence[str] | None = None, retry_after_s: float = 0.05, hang_s: float = 30.0,
                 slow_s: float = 0.02, after_chunks: int = 2, limit: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"rate must be in [0, 1], got {rate!r}")
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise ConfigError(f"unknown fault kind(s) {unknown or kinds!r}; known: {', '.join(FAULT_KINDS)}")
        self.rate, self.kinds, self.seed = float(rate), tuple(kinds), int(seed)
        self.models = None if models is None else frozenset(models)
        self.retry_after_s, self.hang_s, self.slow_s, self.after_chunks = retry_after_s, hang_s, slow_s, after_chunks
        self.limit = limit
        self._injected = 0
        self._lock = threading.Lock()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._released = threading.Event()
        self.log: list[tuple[str, str, str | None]] = []
        self.deliveries: list[Delivery] = []

    def decide(self, model: str, key: str) -> Fault | None:
        """The fault for this call of ``model`` on ``key`` (``None``: it goes through)."""
        with self._lock:
            n = self._seen[(model, key)]
            self._seen[(model, key)] += 1
        digest = hashlib.sha256(f"{self.seed}\x00{model}\x00{key}\x00{n}".encode("utf-8", "surrogatepass")).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        fault = None
        if (self.models is None or model in self.models) and u < self.rate:
            kind = self.kinds[int.from_bytes(digest[8:12], "big") % len(self.kinds)]
            fault = Fault(kind, after_chunks=self.after_chunks,
                          retry_after_s=self.retry_after_s if kind == "rate_limit" else None,
                          seconds=self.hang_s if kind in ("hang", "stream_hang") else self.slow_s)
        with self._lock:
            if fault is not None and self.limit is not None and self._injected >= self.limit:
                fault = None
            self._injected += fault is not None
            self.log.append((model, key, fault.kind if fault else None))
        return fault

    def delivered(self, model: str, key: str, text: str, input_tokens: int | None, output_tokens: int | None) -> None:
        """Note what a wrapped model handed back in full (for checking accounts against it)."""
        with self._lock:
            self.deliveries.append(Delivery(model, key, text, input_tokens, output_tokens))

    def counts(self) -> dict[str, int]:
        """How many calls got each fault kind (``"none"``: no fault)."""
        with self._lock:
            return dict(Counter(k or "none" for _, _, k in self.log))

    # acting a fault out (the adapters' wrappers call these around the real model) --------------------
    def before(self, fault: Fault | None, *, stream: bool) -> bool:
        """Act out what ``fault`` does before the real model is asked: sleep, raise, or hang then time out.
        Returns True when the wrapper must answer empty instead of asking the model. Stream faults act
        on a plain call like their twins (a broken stream as a reset, a stalled one as a hang)."""
        if fault is None:
            return False
        if fault.kind in ("timeout", "slow"):
            time.sleep(fault.seconds)
        self._raise_or_hang(fault, stream, self.hang)
        return fault.kind == "empty"

    async def abefore(self, fault: Fault | None, *, stream: bool) -> bool:
        """Async :meth:`before`."""
        if fault is None:
            return False
        if fault.kind in ("timeout", "slow"):
            await asyncio.sleep(fault.seconds)
        if fault.kind == "hang" or (not stream and fault.kind == "stream_hang"):
            await self.ahang(fault.seconds)
        self._raise_or_hang(fault, stream, None)
        return fault.kind == "empty"

    def _raise_or_hang(self, fault: Fault, stream: bool, hang: Any) -> None:
        if fault.kind in _RAISE_BEFORE or (not stream and fault.kind == "stream_error"):
            raise fault.error() if fault.kind != "stream_error" else Fault("connection_reset").error()
        if fault.kind == "hang" or (not stream and fault.kind == "stream_hang"):
            if hang is not None:
                hang(fault.seconds)
            raise InjectedTimeoutError("Request timed out after a hang (injected)")

    @staticmethod
    def breaks_at(fault: Fault | None, n_chunks: int, *, ended: bool = False) -> bool:
        """Whether a stream with ``fault`` breaks now, after ``n_chunks`` chunks (or at its end, when it had
        fewer chunks than the fault waits for)."""
        return fault is not None and fault.kind in ("stream_error", "stream_hang") and (
            ended or n_chunks == fault.after_chunks)

    def broken(self, fault: Fault) -> Exception:
        """The error a broken stream raises (a stalled one hangs first)."""
        if fault.kind == "stream_hang":
            self.hang(fault.seconds)
            return InjectedTimeoutError("stream stalled (injected)")
        return fault.error()

    async def abroken(self, fault: Fault) -> Exception:
        """Async :meth:`broken`."""
        if fault.kind == "stream_hang":
            await self.ahang(fault.seconds)
            return InjectedTimeoutError("stream stalled (injected)")
        return fault.error()

    # hangs ----------------------------------------------------------------------------------------
    def release(self) -> None:
        """End every running and future hang at once (test teardown)."""
        self._released.set()

    def hang(self, seconds: float) -> None:
        """Block like a provider that stopped answering (until :meth:`release` or ``seconds``)."""
        self._released.wait(seconds)

    async def ahang(self, seconds: float) -> None:
        """Async :meth:`hang` (cancellable)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self._released.is_set() and loop.time() < end:
            await asyncio.sleep(min(0.05, max(end - loop.time(), 0.0)))
