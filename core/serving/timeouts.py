"""Running one tier's call under a time budget, sync or async, plain or streamed.

With no budget (``None``) every helper calls straight through, in the caller's thread, exactly as if
it were not there. With a budget:

* async calls and streams are awaited under ``asyncio.wait_for``: on expiry the child's coroutine is
  cancelled (its HTTP request with it) and :class:`~crescade.reliability.TierTimeoutError` is raised;
* sync calls run in a short-lived daemon thread under a copy of the caller's context (callbacks and
  tracing parents survive); on expiry the caller gets the timeout at once and the thread is abandoned:
  Python cannot interrupt a blocking call, so it ends when the child returns (its own client timeout
  bounds that). A sync stream is pumped by such a thread, which stops and closes the child's stream
  at the next chunk once the caller gave up. :func:`abandoned_calls` counts the threads still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from .reliability import TierTimeoutError

__all__ = ["abandoned_calls", "acall_with_timeout", "aiterate_with_timeout", "call_with_timeout",
           "iterate_with_timeout"]

T = TypeVar("T")
_lock = threading.Lock()
_abandoned: set[threading.Thread] = set()
_END = object()


def abandoned_calls() -> int:
    """Sync tier calls that timed out and whose thread has not finished yet."""
    with _lock:
        for t in [t for t in _abandoned if not t.is_alive()]:
            _abandoned.discard(t)
        return len(_abandoned)


def _abandon(thread: threading.Thread) -> None:
    with _lock:
        _abandoned.add(thread)


def _raise_timeout(model: str, budget: float, by_deadline: bool) -> None:
    raise TierTimeoutError(model, budget, deadline=by_deadline)


def call_with_timeout(fn: Callable[[], T], budget: float | None, *, model: str = "model",
                      by_deadline: bool = False) -> T:
    """``fn()``; raise :class:`TierTimeoutError` if it has not returned after ``budget`` seconds."""
    if budget is None:
        return fn()
    if budget <= 0:
        _raise_timeout(model, 0.0, by_deadline)
    box: dict[str, Any] = {}
    done = threading.Event()
    ctx = contextvars.copy_context()

    def work() -> None:
        try:
            box["value"] = ctx.run(fn)
        except BaseException as exc:  # handed to the caller, whatever it is
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name=f"crescade-tier:{model}", daemon=True)
    thread.start()
    if not done.wait(budget):
        _abandon(thread)
        _raise_timeout(model, budget, by_deadline)
    if "error" in box:
        raise box["error"]
    return box["value"]


def iterate_with_timeout(open_stream: Callable[[], Iterable[T]], budget: float | None, *,
                         model: str = "model", by_deadline: bool = False,
                         clock: Callable[[], float] = time.perf_counter) -> Iterator[T]:
    """Iterate ``open_stream()``; raise :class:`TierTimeoutError` once ``budget`` seconds have passed
    since the call started, whether waiting for the first chunk or between chunks."""
    if budget is None:
        it = iter(open_stream())
        try:
            yield from it
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        return
    end = clock() + budget
    if budget <= 0:
        _raise_timeout(model, 0.0, by_deadline)
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=256)
    stop = threading.Event()
    ctx = contextvars.copy_context()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        it: Iterator[T] | None = None
        try:
            it = iter(open_stream())
            for chunk in it:
                if stop.is_set() or not put(("chunk", chunk)):
                    break
            else:
                put(("end", None))
        except BaseException as exc:
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    thread = threading.Thread(target=lambda: ctx.run(pump), name=f"crescade-stream:{model}", daemon=True)
    thread.start()
    try:
        while True:
            left = end - clock()
            try:
                kind, item = q.get(timeout=max(left, 0.0)) if left > 0 else q.get_nowait()
            except queue.Empty:
                _raise_timeout(model, budget, by_deadline)
            if kind == "chunk":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(0.05)
            if thread.is_alive():
                _abandon(thread)


async def acall_with_timeout(make: Callable[[], Awaitable[T]], budget: float | None, *, model: str = "model",
                             by_deadline: bool = False) -> T:
    """``await make()``; cancel it and raise :class:`TierTimeoutError` after ``budget`` seconds."""
    if budget is None:
        return await make()
    if budget <= 0:
        _raise_timeout(model, 0.0, by_deadline)
    try:
        return await asyncio.wait_for(make(), budget)
    except asyncio.TimeoutError:
        _raise_timeout(model, budget, by_deadline)
        raise  # unreachable


async def aiterate_with_timeout(open_stream: Callable[[], AsyncIterator[T]], budget: float | None, *,
                                model: str = "model", by_deadline: bool = False,
                                clock: Callable[[], float] = time.perf_counter) -> AsyncIterator[T]:
    """Iterate ``open_stream()``; cancel the pending chunk and raise :class:`TierTimeoutError` once
    ``budget`` seconds have passed since the call started."""
    end = None if budget is None else clock() + budget
    ait = open_stream()
    try:
        while True:
            if end is None:
                try:
                    item = await ait.__anext__()
                except StopAsyncIteration:
                    return
            else:
                left = end - clock()
                if left <= 0:
                    _raise_timeout(model, float(budget or 0.0), by_deadline)
                try:
                    item = await asyncio.wait_for(ait.__anext__(), left)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    _raise_timeout(model, float(budget or 0.0), by_deadline)
            yield item
    finally:
        aclose = getattr(ait, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError, StopAsyncIteration):  # closed by a cancelled step
                await aclose()
