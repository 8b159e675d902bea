"""Collect calibration records: ask every model every labelled example, grade the answers, append records.

Framework-free: an adapter supplies ``call(model, example) -> Answer`` (or an async ``acall``) that asks
the real model; :func:`collect` / :func:`acollect` do the rest and write one
:class:`~crescade.records.Record` per (example, model) pair to a plain ``.jsonl`` file.

The output is append-only and resumable. Pairs already in the file are skipped. Each record is written
as one complete line with a single ``os.write``, then fsynced, under a lock, so an interrupt (Ctrl-C) at
any moment leaves a valid file; at most the calls in flight are lost. A partial last line left by a
crash (power loss mid-write) is truncated, with a warning, when the next run starts.

    examples = load_examples("tasks.jsonl")
    report = collect(examples, call, ["small", "large"], "records.jsonl", prices=prices, concurrency=8)
    outcomes = Outcomes.load("records.jsonl")
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import numbers
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.atomic import atomic_write
from ..common.errors import ConfigError, PricingError, RecordsError
from ..common.progress import Progress
from ..engine.decisions import Answer
from ..engine.logprobs import LogprobSummary
from ..engine.pricing import ModelCard
from ..engine.records import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, Record
from ..engine.tokens import resolve_usage
from ..serving.dispatch import describe_error as describe_error
from .graders import Grader, get_grader

__all__ = ["ACall", "Call", "CollectReport", "Example", "acollect", "collect", "load_examples", "save_examples"]

_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
_OPTIONAL_EXAMPLE_FIELDS = ("task", "split")


@dataclass(frozen=True)
class Example:
    """One labelled prompt: what to ask, the reference answer, and the name of the grader that checks it."""

    prompt_id: str
    prompt: str
    reference: str
    task: str | None = None
    split: str | None = None
    grader: str = "exact_match"

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_id, str) or not self.prompt_id.strip():
            raise ConfigError(f"prompt_id must be a non-empty string, got {self.prompt_id!r}")
        for name in ("prompt", "reference"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"example {self.prompt_id!r}: {name} must be a string")
        for name in _OPTIONAL_EXAMPLE_FIELDS:
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"example {self.prompt_id!r}: {name} must be a string or None, got {v!r}")
        if not isinstance(self.grader, str) or not self.grader:
            raise ConfigError(f"example {self.prompt_id!r}: grader must be a grader name, got {self.grader!r}")


Call = Callable[[str, Example], Answer]
"""``call(model, example) -> Answer``: ask ``model`` the example's prompt (supplied by an adapter)."""
ACall = Callable[[str, Example], Awaitable[Answer]]
"""The async form of :data:`Call`."""


# --------------------------------------------------------------------------- example files


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read examples from JSONL: one object per line with ``prompt_id, prompt, reference`` and optional
    ``task, split, grader``; other keys are ignored. Problems raise :class:`RecordsError` naming the line."""
    where = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").split("\n")
    except OSError as e:
        raise RecordsError(f"cannot read examples: {e.strerror or e}", path=where) from None
    except UnicodeDecodeError as e:
        raise RecordsError(f"not valid UTF-8 text ({e.reason})", path=where) from None
    out: list[Example] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise RecordsError(f"invalid JSON: {str(e) or 'nested too deeply'}", path=where, line=lineno) from None
        if not isinstance(obj, dict):
            raise RecordsError(f"expected a JSON object, got {type(obj).__name__}", path=where, line=lineno)
        ex = _example_of(obj, where, lineno)
        if ex.prompt_id in seen:
            raise RecordsError(
                f"duplicate prompt_id {ex.prompt_id!r} (first on line {seen[ex.prompt_id]})",
                path=where, line=lineno, column="prompt_id",
            )
        seen[ex.prompt_id] = lineno
        out.append(ex)
    if not out:
        raise RecordsError("empty file: no examples", path=where)
    return out


def _example_of(obj: dict[str, Any], where: str, lineno: int) -> Example:
    def err(msg: str, column: str) -> RecordsError:
        return RecordsError(msg, path=where, line=lineno, column=column)

    kw: dict[str, Any] = {}
    for key in ("prompt_id", "prompt", "reference"):
        if key not in obj:
            raise err("missing", key)
        v = obj[key]
        numeric_ok = key != "prompt" and isinstance(v, (int, float)) and not isinstance(v, bool)
        if not isinstance(v, str) and not numeric_ok:
            raise err(f"expected a string, got {type(v).__name__}", key)
        kw[key] = str(v)
    for key in (*_OPTIONAL_EXAMPLE_FIELDS, "grader"):
        v = obj.get(key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise err(f"expected a string, got {type(v).__name__}", key)
        kw[key] = v
    try:
        return Example(**kw)
    except ConfigError as e:
        raise err(str(e), "prompt_id") from None


def save_examples(examples: Iterable[Example], path: str | os.PathLike[str]) -> None:
    """Write examples as JSONL (one object per line, every field), atomically."""
    lines = []
    for ex in examples:
        if not isinstance(ex, Example):
            raise ConfigError(f"expected Example objects, got {type(ex).__name__}")
        lines.append(json.dumps(dataclasses.asdict(ex), ensure_ascii=False) + "\n")
    with atomic_write(path) as f:
        f.write("".join(lines).encode("utf-8"))


# --------------------------------------------------------------------------- the report


@dataclass
class CollectReport:
    """What a collection run did: records written, pairs already present, failed pairs, wall time."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable view; ``failed`` as ``{prompt_id, model, error}`` objects."""
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": [{"prompt_id": p, "model": m, "error": e} for p, m, e in self.failed],
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- shared bookkeeping


class _Collection:
    """One run's state: the pairs to do, the graders and prices, the output file and the report.

    Built (and everything checked) before any call. ``finish``/``fail`` are thread-safe; after ``close``
    nothing more is written and no new call starts.
    """

    t0: float
    models: list[str]
    cards: dict[str, ModelCard]
    retries: int
    backoff_s: float
    graders: dict[str, Grader]
    path: Path
    todo: list[tuple[Example, str]]
    report: CollectReport
    _lock: threading.Lock
    _fd: int | None
    _bar: Progress | None
    _closed: bool

    def __init__(
        self,
        examples: Iterable[Example],
        models: Sequence[str],
        out: str | os.PathLike[str],
        prices: Mapping[str, ModelCard],
        graders: Mapping[str, Grader] | None,
        concurrency: int,
        retries: int,
        backoff_s: float,
    ) -> None:
        self.t0 = time.perf_counter()
        exs = _check_examples(examples)
        self.models = _check_models(models)
        missing = [m for m in self.models if m not in prices]
        if missing:
            known = ", ".join(sorted(prices)) or "(none)"
            raise PricingError(f"no price for model(s) {', '.join(map(repr, missing))}; prices are known for: {known}")
        self.cards = {m: prices[m] for m in self.models}
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(backoff_s, numbers.Real) or not math.isfinite(backoff_s) or backoff_s < 0:
            raise ConfigError(f"backoff_s must be a finite number >= 0, got {backoff_s!r}")
        self.retries, self.backoff_s = retries, float(backoff_s)
        self.graders = {name: get_grader(name, graders) for name in dict.fromkeys(e.grader for e in exs)}
        self.path = _check_out(out)
        present = _existing_pairs(self.path, {e.prompt_id: e for e in exs})
        self.todo = [(e, m) for e in exs for m in self.models if (e.prompt_id, m) not in present]
        self.report = CollectReport(skipped=len(exs) * len(self.models) - len(self.todo))
        self._lock = threading.Lock()
        self._fd = None
        self._bar = None
        self._closed = False

    # -- lifecycle

    def open(self, progress: bool) -> None:
        """Open the output for appending (creating it) and start the progress bar."""
        if self.todo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
            self._fd = os.open(self.path, flags, 0o666)
        self._bar = Progress(len(self.todo), "collect", enabled=progress, unit="call")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> CollectReport:
        """Stop writing (idempotent): later results are dropped. Returns the report."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                if self._bar is not None:
                    self._bar.close()
                self.report.seconds = time.perf_counter() - self.t0
        return self.report

    def delay(self, attempt: int) -> float | None:
        """Seconds to wait before retrying after failed attempt ``attempt`` (0-based); None: give up."""
        if attempt >= self.retries or self._closed:
            return None
        return self.backoff_s * 2.0**attempt

    # -- results

    def finish(self, example: Example, model: str, answer: Any, elapsed: float) -> None:
        """Grade ``answer`` and append its record; a grading problem counts as a failed pair."""
        try:
            data = _line(self.record_of(example, model, answer, elapsed))
        except Exception as exc:
            self.fail(example, model, exc)
            return
        with self._lock:
            if self._closed or self._fd is None:
                return
            view = memoryview(data)
            while view:  # one write for a regular file; a short write (disk full) continues
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self.report.done += 1
        self._tick()

    def fail(self, example: Example, model: str, exc: BaseException) -> None:
        """Count the pair as failed with the error's redacted ``Type: message``; nothing is written."""
        with self._lock:
            if self._closed:
                return
            self.report.failed.append((example.prompt_id, model, describe_error(exc)))
        self._tick()

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def record_of(self, example: Example, model: str, answer: Any, elapsed: float) -> Record:
        """The record for ``answer``: graded, tokens counted when missing, priced, timed."""
        if not isinstance(answer, Answer):
            raise TypeError(f"call returned {type(answer).__name__}, expected a crescade Answer")
        if not isinstance(answer.text, str):
            raise TypeError(f"Answer.text is {type(answer.text).__name__}, expected str")
        correct = _grade_value(self.graders[example.grader](answer.text, example.reference))
        n_in, n_out, counted = resolve_usage(
            prompt_text=example.prompt, response_text=answer.text,
            input_tokens=answer.input_tokens, output_tokens=answer.output_tokens, model=model,
        )
        latency = _measure(answer.latency_s, "latency_s", nonneg=True)
        finish = answer.finish_reason if isinstance(answer.finish_reason, str) and answer.finish_reason else None
        return Record(
            prompt_id=example.prompt_id, prompt=example.prompt, model=model, response=answer.text,
            correct=correct, input_tokens=n_in, output_tokens=n_out, cost_usd=self.cards[model].cost(n_in, n_out),
            task=example.task, split=example.split,
            latency_s=latency if latency is not None else max(0.0, elapsed),
            ttft_s=_measure(answer.ttft_s, "ttft_s", nonneg=True),
            tpot_s=_measure(answer.tpot_s, "tpot_s", nonneg=True),
            finish_reason=finish,
            usage_source=answer.usage_source if counted == "provider" else counted,
            **_logprob_columns(answer),
        )


def _check_examples(examples: Iterable[Example]) -> list[Example]:
    exs = list(examples)
    seen: set[str] = set()
    for i, e in enumerate(exs):
        if not isinstance(e, Example):
            raise ConfigError(f"examples[{i}] is a {type(e).__name__}, not an Example")
        if e.prompt_id in seen:
            raise ConfigError(f"duplicate prompt_id {e.prompt_id!r} in examples")
        seen.add(e.prompt_id)
    return exs


def _check_models(models: Sequence[str]) -> list[str]:
    if isinstance(models, str):
        raise ConfigError(f"models must be a sequence of names, got the string {models!r}")
    names = list(models)
    if not names:
        raise ConfigError("no models given")
    for m in names:
        if not isinstance(m, str) or not m.strip():
            raise ConfigError(f"model names must be non-empty strings, got {m!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate model names: {names}")
    return names


def _check_out(out: str | os.PathLike[str]) -> Path:
    p = Path(out)
    if not p.name.lower().endswith(".jsonl"):
        raise ConfigError(f"collect appends to a plain .jsonl file; got {p.name!r} (CSV and .gz are not appendable)")
    return p


def _grade_value(g: object) -> float:
    if isinstance(g, (bool, numbers.Real)) and 0.0 <= float(g) <= 1.0:
        return float(g)
    raise TypeError(f"grader returned {g!r}, expected a bool (or a score in [0, 1])")


def _measure(v: float | None, name: str, *, nonneg: bool) -> float | None:
    """A provider measurement as a finite float; impossible values are recorded as unknown, with a warning."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or (nonneg and v < 0):
        warnings.warn(f"Answer.{name}={v!r} is not a valid measurement; recorded as unknown", RuntimeWarning,
                      stacklevel=2)
        return None
    return float(v)


def _logprob_columns(answer: Answer) -> dict[str, float | None]:
    """The record's ``logprob_*`` columns: the answer's token-logprob summary, or a mean given alone."""
    if isinstance(answer.logprobs, LogprobSummary):
        return answer.logprobs.columns()
    mean = _measure(answer.logprob_mean, "logprob_mean", nonneg=False)
    if mean is not None and mean > 0:
        warnings.warn(f"Answer.logprob_mean={mean!r} is not a log-probability; recorded as unknown", RuntimeWarning,
                      stacklevel=2)
        mean = None
    return {"logprob_mean": mean}


def _line(rec: Record) -> bytes:
    obj = {c: getattr(rec, c) for c in _COLUMNS if c in REQUIRED_COLUMNS or getattr(rec, c) is not None}
    return (json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _existing_pairs(path: Path, by_id: Mapping[str, Example]) -> set[tuple[str, str]]:
    """The (prompt_id, model) pairs already in ``path``, after repairing a partial last line.

    A row whose prompt_id names one of ``by_id`` must have the same prompt, task and split.
    """
    if not path.exists():
        return set()
    where = str(path)
    pairs: dict[tuple[str, str], int] = {}
    with open(path, "rb+") as f:
        if f.read(2) == b"\x1f\x8b":
            raise RecordsError("gzip-compressed; collect appends to plain JSONL", path=where)
        f.seek(0)
        offset, lineno, tail = 0, 0, b""
        for raw in f:
            lineno += 1
            if not raw.endswith(b"\n"):
                tail = raw
                break
            _note_row(raw, where, lineno, by_id, pairs)
            offset += len(raw)
        if tail:
            if not tail.strip():  # stray whitespace after the last row
                f.truncate(offset)
            elif _json_object(tail) is not None:  # complete row, only its newline missing
                _note_row(tail, where, lineno, by_id, pairs)
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                warnings.warn(
                    f"{where}: removed a partial last line ({len(tail)} bytes, line {lineno}) left by an "
                    "interrupted run; its pair will be collected again",
                    UserWarning, stacklevel=4,
                )
                f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
    return set(pairs)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _note_row(
    raw: bytes, where: str, lineno: int, by_id: Mapping[str, Example], pairs: dict[tuple[str, str], int]
) -> None:
    if not raw.strip():
        return
    obj = _json_object(raw)
    if obj is None:
        raise RecordsError("not a JSON object", path=where, line=lineno)
    pid, model = obj.get("prompt_id"), obj.get("model")
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    if not isinstance(pid, str) or not isinstance(model, str):
        raise RecordsError("row lacks a string prompt_id and model", path=where, line=lineno)
    key = (pid, model)
    if key in pairs:
        raise RecordsError(f"duplicate pair {key} (first on line {pairs[key]})", path=where, line=lineno)
    pairs[key] = lineno
    ex = by_id.get(pid)
    if ex is not None:
        for col in ("prompt", "task", "split"):
            v = obj.get(col)
            if col != "prompt" and isinstance(v, str) and not v.strip():
                v = None  # an empty optional cell reads as None
            if v != getattr(ex, col):
                raise ConfigError(
                    f"{where}, line {lineno}: prompt_id {pid!r} has a different {col} than the example; "
                    "the output already holds another data set (use a new output file)"
                )


# --------------------------------------------------------------------------- the two drivers


def collect(
    examples: Iterable[Example],
    call: Call,
    models: Sequence[str],
    out: str | os.PathLike[str],
    *,
    prices: Mapping[str, ModelCard],
    concurrency: int = 4,
    progress: bool = True,
    retries: int = 0,
    backoff_s: float = 0.5,
    graders: Mapping[str, Grader] | None = None,
) -> CollectReport:
    """Call ``call(model, example)`` for every pair not yet in ``out``, grade, and append one record each.

    A record takes tokens from the answer (counted offline when missing), its cost from ``prices``, and
    ``latency_s`` from the answer or else the measured duration of the call. Runs on ``concurrency``
    threads. A call that raises (after ``retries`` retries, waiting ``backoff_s``, then doubling) records
    nothing and is listed in ``report.failed``. ``graders`` adds named graders for :attr:`Example.grader`.
    Everything is checked before the first call: a model without a price raises
    :class:`~crescade.errors.PricingError`, an unknown grader :class:`~crescade.errors.ConfigError`.
    ``KeyboardInterrupt`` (from Ctrl-C or from ``call``) cancels queued pairs, stops writing, and propagates.
    """
    run = _Collection(examples, models, out, prices, graders, concurrency, retries, backoff_s)
    run.open(progress)
    try:
        if run.todo:
            workers = min(concurrency, len(run.todo))
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crescade-collect")
            try:
                futures = [pool.submit(_one, run, call, e, m) for e, m in run.todo]
                for f in as_completed(futures):
                    f.result()
            except BaseException:
                run.close()  # no more writes or new calls from the threads still running
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    finally:
        run.close()
    return run.report


def _one(run: _Collection, call: Call, example: Example, model: str) -> None:
    attempt = 0
    while not run.closed:
        t0 = time.perf_counter()
        try:
            answer = call(model, example)
        except Exception as exc:
            wait = run.delay(attempt)
            if wait is None:
                run.fail(example, model, exc)
                return
            time.sleep(wait)
            attempt += 1
            continue
        run.finish(example, model, answer, time.perf_counter() - t0)
        return


async def acollect(
    examples: Iterable[Example],
    acall: ACall,
    models: Sequence[str],
    out: str | os.PathLike[str],
    *,
    prices: Mapping[str, ModelCard],
    concurrency: int = 4,
    progress: bool = True,
    retries: int = 0,
    backoff_s: float = 0.5,
    graders: Mapping[str, Grader] | None = None,
) -> CollectReport:
    """Async :func:`collect`: at most ``concurrency`` ``await acall(model, example)`` at a time.

    Grading and writing run in a worker thread (a code grader runs a subprocess). Cancellation cancels
    every pending pair, stops writing, and propagates.
    """
    run = _Collection(examples, models, out, prices, graders, concurrency, retries, backoff_s)
    sem = asyncio.Semaphore(concurrency)

    async def one(example: Example, model: str) -> None:
        attempt = 0
        async with sem:
            while True:
                if run.closed:
                    return
                t0 = time.perf_counter()
                try:
                    answer = await acall(model, example)
                except Exception as exc:
                    wait = run.delay(attempt)
                    if wait is None:
                        run.fail(example, model, exc)
                        return
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
                elapsed = time.perf_counter() - t0
                break
        await asyncio.to_thread(run.finish, example, model, answer, elapsed)

    run.open(progress)
    tasks = [asyncio.ensure_future(one(e, m)) for e, m in run.todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        run.close()
        for t in tasks:
            t.cancel()
        raise
    finally:
        run.close()
    return run.report


def fit_on_records(
    path: str | os.PathLike[str], *, prices: Mapping[str, ModelCard], split: str | None = "train",
    quality_target: float | None = 0.98, cost_target: float | None = None, progress: bool = True,
    **cascade_params: Any,
) -> Any:
    """Fit a :class:`~crescade.Cascade` on collected records (the adapters' ``calibrate`` ends here).

    Only prompts every model answered are used; with ``split`` set and present in the records, only that
    split is fitted on (the rest stays for evaluation).
    """
    from ..engine.cascade import Cascade
    from ..engine.records import Outcomes

    outcomes = Outcomes.load(path, prices=dict(prices), incomplete="drop")
    if split is not None and split in set(outcomes.splits):
        outcomes = outcomes.split(split)
    if outcomes.n_prompts < 10:
        raise ConfigError(f"only {outcomes.n_prompts} prompt(s) were answered by every model; need at least 10")
    return Cascade(quality_target=quality_target, cost_target=cost_target, progress=progress,
                   **cascade_params).fit(outcomes, prices)
