"""Serving safeguards the dispatch loop applies to every tier: what a failure was, timeouts and a request
deadline, bounded retries, rate-limit cool-downs and a process-wide spend cap.

Everything here is policy, shared by both adapters through :class:`crescade.dispatch.DispatchSession`:

* :func:`classify_error` reads any provider's exception (``openai``, ``anthropic``, ``httpx``, plain
  ``TimeoutError``...) by duck typing -- HTTP status, ``Retry-After`` header, class name -- never by import.
* :class:`Cooldowns` remembers which models were rate limited and until when; a cooling-down tier is
  skipped (not hammered) by every cascade sharing the registry (by default one per process).
* :class:`SpendGuard` caps the dollars spent in a sliding time window; past the cap the cascade stops
  escalating, or refuses new requests, as configured, and says so in the response account.
* :class:`Reliability` bundles the knobs a cascade serves with.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..common.errors import ConfigError, CrescadeError

__all__ = [
    "SHARED_COOLDOWNS",
    "Cooldowns",
    "ErrorKind",
    "FailureInfo",
    "Reliability",
    "Reservation",
    "SpendGuard",
    "SpendLimitError",
    "TierSkippedError",
    "TierTimeoutError",
    "classify_error",
]

ErrorKind = Literal["timeout", "rate_limit", "server", "connection", "client", "malformed", "other"]
#: Kinds worth asking the same tier again (when retries are enabled): nothing reached the model's output.
RETRYABLE: frozenset[str] = frozenset({"connection", "server"})
_MAX_RETRY_AFTER_S = 3600.0


class TierTimeoutError(CrescadeError, TimeoutError):
    """A tier did not finish within its time budget (its own timeout or what was left of the deadline)."""

    def __init__(self, model: str, seconds: float, *, deadline: bool = False) -> None:
        self.model, self.seconds, self.deadline = model, seconds, deadline
        what = "the request's deadline" if deadline else "its timeout"
        super().__init__(f"{model!r} did not finish within {seconds:.3g} s ({what})")


class TierSkippedError(CrescadeError):
    """Stands for a tier that was not called (cooling down, deadline passed, spend cap), in failure lists."""


class SpendLimitError(CrescadeError, RuntimeError):
    """The spend cap was reached and the guard is set to refuse new requests."""


@dataclass(frozen=True)
class FailureInfo:
    """What kind of failure an exception is, as far as the cascade's policy is concerned."""

    kind: ErrorKind
    status: int | None = None
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


def _status(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status", "code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _header(exc: BaseException, name: str) -> str | None:
    for obj in (getattr(exc, "response", None), exc):
        headers = getattr(obj, "headers", None)
        if headers is None:
            continue
        try:
            value = headers.get(name)
        except Exception:
            continue
        if isinstance(value, (str, bytes)):
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), ``retry-after-ms`` or a
    ``retry_after`` attribute; ``None`` when absent or unreadable. Capped at an hour."""
    raw_ms = _header(exc, "retry-after-ms")
    candidates: list[float] = []
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            candidates.append(float(raw_ms) / 1000.0)
    raw = _header(exc, "retry-after")
    if raw is not None and not candidates:
        raw = raw.strip()
        try:
            candidates.append(float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                candidates.append(when.timestamp() - now())
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
    attr = getattr(exc, "retry_after", None)
    if not candidates and isinstance(attr, (int, float)) and not isinstance(attr, bool):
        candidates.append(float(attr))
    for c in candidates:
        if math.isfinite(c):
            return min(max(c, 0.0), _MAX_RETRY_AFTER_S)
    return None


_NAME_KINDS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"RateLimit|TooManyRequests|Throttl|QuotaExceeded"), "rate_limit"),
    (re.compile(r"Timeout|TimedOut"), "timeout"),
    (re.compile(r"Connect|RemoteProtocol|ReadError|WriteError|NetworkError|Disconnect|BrokenPipe|Reset"),
     "connection"),
    (re.compile(r"InternalServer|ServiceUnavailable|Overloaded|BadGateway|ServerError"), "server"),
    (re.compile(r"JSONDecode|Decode|Parse|Malformed|Validation|UnexpectedResponse"), "malformed"),
)


def classify_error(exc: BaseException) -> FailureInfo:
    """The kind of failure ``exc`` is (duck-typed across providers: status, headers, class names)."""
    status = _status(exc)
    names = " ".join(t.__name__ for t in type(exc).__mro__)
    if isinstance(exc, TierTimeoutError):
        return FailureInfo("timeout")
    if status == 429 or _NAME_KINDS[0][0].search(names):
        return FailureInfo("rate_limit", status, _retry_after(exc))
    if status in (408, 504) or isinstance(exc, TimeoutError) or _NAME_KINDS[1][0].search(names):
        return FailureInfo("timeout", status)
    if status is not None and status >= 500:
        return FailureInfo("server", status)
    if status is not None and 400 <= status < 500:
        return FailureInfo("client", status)
    if isinstance(exc, ConnectionError):
        return FailureInfo("connection")
    for pattern, kind in _NAME_KINDS[2:]:
        if pattern.search(names):
            return FailureInfo(kind, status)
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return FailureInfo("malformed", status)
    return FailureInfo("other", status)


class Cooldowns:
    """Which models are rate limited, and until when (thread-safe; share one per process).

    A rate limit with ``Retry-After`` cools the model down for that long; without one, for
    ``base_s`` doubled on every consecutive rate limit, up to ``max_s``. A successful call resets it.
    """

    def __init__(self, base_s: float = 5.0, max_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (base_s > 0 and max_s >= base_s and math.isfinite(max_s)):
            raise ConfigError(f"cool-down needs 0 < base_s <= max_s < inf, got base_s={base_s}, max_s={max_s}")
        self.base_s, self.max_s, self._clock = float(base_s), float(max_s), clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def remaining(self, model: str) -> float:
        """Seconds ``model`` is still cooling down (0 when available)."""
        with self._lock:
            until = self._until.get(model)
        return max(0.0, until - self._clock()) if until is not None else 0.0

    def rate_limited(self, model: str, retry_after_s: float | None = None) -> float:
        """Note a rate limit of ``model``; returns the cool-down applied, in seconds."""
        with self._lock:
            strikes = self._strikes.get(model, 0) + 1
            self._strikes[model] = strikes
            if retry_after_s is not None:
                wait = min(max(retry_after_s, 0.0), self.max_s)
            else:
                wait = min(self.base_s * 2 ** min(strikes - 1, 30), self.max_s)
            until = self._clock() + wait
            self._until[model] = max(until, self._until.get(model, 0.0))
        return wait

    def succeeded(self, model: str) -> None:
        """A call to ``model`` answered: forget its strikes (a running cool-down is kept)."""
        with self._lock:
            self._strikes.pop(model, None)

    def clear(self, model: str | None = None) -> None:
        """End the cool-down of ``model`` (of every model when ``None``)."""
        with self._lock:
            if model is None:
                self._until.clear()
                self._strikes.clear()
            else:
                self._until.pop(model, None)
                self._strikes.pop(model, None)


#: The registry every cascade uses unless it is given its own: rate limits are per process.
SHARED_COOLDOWNS = Cooldowns()


@dataclass
class Reservation:
    """Money set aside for one tier call until its real cost is known (see :meth:`SpendGuard.reserve`)."""

    model: str
    usd: float
    settled: bool = False


class SpendGuard:
    """A hard cap on dollars spent in a sliding window, for every cascade that shares this guard.

    ``action="no_escalate"``: past the cap, a request is still answered by its routed tier but never
    escalated; ``action="refuse"``: a new request past the cap raises :class:`SpendLimitError` before any
    model is called (one already running is no longer escalated). Each tier call first reserves what
    that model's last call cost, so concurrent requests cannot all slip under the cap at once; the
    reservation is replaced by the real cost when the call returns.
    """

    def __init__(self, limit_usd: float, window_s: float = 3600.0,
                 action: Literal["no_escalate", "refuse"] = "no_escalate",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(limit_usd, (int, float)) and math.isfinite(limit_usd) and limit_usd >= 0):
            raise ConfigError(f"limit_usd must be a finite number >= 0, got {limit_usd!r}")
        if not (isinstance(window_s, (int, float)) and window_s > 0):
            raise ConfigError(f"window_s must be > 0 seconds, got {window_s!r}")
        if action not in ("no_escalate", "refuse"):
            raise ConfigError(f"action must be 'no_escalate' or 'refuse', got {action!r}")
        self.limit_usd, self.window_s, self.action = float(limit_usd), float(window_s), action
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: deque[tuple[float, float]] = deque()
        self._spent_sum = 0.0
        self._reserved = 0.0
        self._last_cost: dict[str, float] = {}

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._spent_sum -= self._spent.popleft()[1]
        if not self._spent:
            self._spent_sum = 0.0

    def spent(self) -> float:
        """Dollars recorded in the current window (reservations not included)."""
        with self._lock:
            self._expire(self._clock())
            return max(self._spent_sum, 0.0)

    def over(self) -> bool:
        """Whether the window's spend and reservations already reach the cap."""
        with self._lock:
            self._expire(self._clock())
            return self._spent_sum + self._reserved >= self.limit_usd

    def reserve(self, model: str) -> Reservation | None:
        """Set aside ``model``'s expected cost; ``None`` when that would cross the cap."""
        with self._lock:
            self._expire(self._clock())
            estimate = self._last_cost.get(model, 0.0)
            if self._spent_sum + self._reserved + estimate > self.limit_usd or (
                    self._spent_sum + self._reserved >= self.limit_usd):
                return None
            self._reserved += estimate
            return Reservation(model, estimate)

    def settle(self, reservation: Reservation | None, cost_usd: float, model: str | None = None) -> None:
        """Replace ``reservation`` by the real ``cost_usd`` (recorded even without a reservation)."""
        cost = float(cost_usd) if math.isfinite(cost_usd) and cost_usd > 0 else 0.0
        with self._lock:
            if reservation is not None and reservation.settled:
                return
            if reservation is not None:
                reservation.settled = True
                self._reserved = max(0.0, self._reserved - reservation.usd)
                model = reservation.model
            if cost > 0:
                self._spent.append((self._clock(), cost))
                self._spent_sum += cost
            if model is not None and cost > 0:
                self._last_cost[model] = cost

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the response account."""
        with self._lock:
            self._expire(self._clock())
            return {"limit_usd": self.limit_usd, "window_s": self.window_s, "action": self.action,
                    "spent_usd": max(self._spent_sum, 0.0), "reserved_usd": self._reserved}


Timeouts = float | Mapping[str, float] | None


def _check_seconds(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_seconds(f"{name}[{k!r}]", v)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive number of seconds (or None), got {value!r}")


@dataclass(frozen=True)
class Reliability:
    """How a cascade serves when things go wrong.

    ``tier_timeout``: seconds a tier may take, start to last chunk (one number, or per model name; a
    model not in the mapping has none). ``deadline``: seconds for the whole request; each tier gets at most
    what is left. A timed-out tier escalates like any failure. ``max_retries``: extra attempts at the *same*
    tier, only for connection errors and 5xx responses, never once output was streamed to the caller;
    0 by default, because escalation already is the retry (and the provider clients retry themselves).
    ``retry_backoff_s``: the first retry's pause, doubled for each further one. ``cooldowns``: the registry
    of rate-limited models (default: one per process); a 429 cools its model down instead of hammering
    it: a cooling-down tier is skipped, and when no tier left can be called, the request waits for the
    first cool-down to end if that is at most ``cooldown_wait_s`` away (and inside the deadline); when the
    only tiers above are cooling down for longer (or the spend cap forbids them), the current tier's answer
    is accepted as the last available one and the account says so (``degraded``). ``spend_guard``: an
    optional :class:`SpendGuard`.
    """

    tier_timeout: Timeouts = None
    deadline: float | None = None
    max_retries: int = 0
    retry_backoff_s: float = 0.1
    cooldown_wait_s: float = 1.0
    cooldowns: Cooldowns | None = field(default=None, compare=False)
    spend_guard: SpendGuard | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_seconds("tier_timeout", self.tier_timeout)
        _check_seconds("deadline", self.deadline)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or not (
                0 <= self.max_retries <= 10):
            raise ConfigError(f"max_retries must be an int in [0, 10], got {self.max_retries!r}")
        for name in ("retry_backoff_s", "cooldown_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value <= 60):
                raise ConfigError(f"{name} must be in [0, 60] seconds, got {value!r}")
        if self.cooldowns is not None and not isinstance(self.cooldowns, Cooldowns):
            raise ConfigError(f"cooldowns must be a Cooldowns registry, got {type(self.cooldowns).__name__}")
        if self.spend_guard is not None and not isinstance(self.spend_guard, SpendGuard):
            raise ConfigError(f"spend_guard must be a SpendGuard, got {type(self.spend_guard).__name__}")

    @classmethod
    def coerce(cls, value: Any) -> Reliability | None:
        """``value`` as a :class:`Reliability`: one already, ``None``, or a mapping of its fields."""
        if value is None or isinstance(value, Reliability):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ConfigError(f"unknown reliability setting(s): {', '.join(unknown)}")
            return cls(**dict(value))
        raise ConfigError(f"reliability must be a crescade.Reliability or a dict of its fields, "
                          f"got {type(value).__name__}")

    @property
    def registry(self) -> Cooldowns:
        return self.cooldowns if self.cooldowns is not None else SHARED_COOLDOWNS

    def timeout_of(self, model: str) -> float | None:
        t = self.tier_timeout
        if isinstance(t, Mapping):
            v = t.get(model)
            return float(v) if v is not None else None
        return float(t) if t is not None else None

    @property
    def timed(self) -> bool:
        """Whether any call may be cut short (then tier calls run where they can be abandoned)."""
        return self.tier_timeout is not None or self.deadline is not None


DEFAULT_RELIABILITY = Reliability()
