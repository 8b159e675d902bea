"""Recorded outcomes: the long record format (one row per prompt × model) and the prompt × model matrix.

Files are CSV or JSONL, optionally gzip-compressed (``.csv``, ``.csv.gz``, ``.jsonl``, ``.jsonl.gz``).
Required columns: ``prompt_id, prompt, model, response, correct, input_tokens, output_tokens, cost_usd``;
optional: ``task, split, latency_s, ttft_s, tpot_s, logprob_mean, logprob_min, logprob_p10, logprob_p25,
logprob_final_mean, logprob_final_min, finish_reason, usage_source``; others are ignored. The ``logprob_*``
columns are the answer's token-logprob summary (:mod:`crescade.engine.logprobs`; older files have
``logprob_mean`` alone, and read as a summary of the mean only). ``usage_source`` says where the token
counts came from: ``provider`` (reported by the API), ``tiktoken`` (counted) or ``estimate`` (approximated,
e.g. from streamed chunks).
Every problem in a file raises :class:`~crescade.errors.RecordsError` naming the file, line and column.
An empty optional cell is read as ``None``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import json
import math
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from ..common.atomic import atomic_write
from ..common.errors import ConfigError, PoolError, PricingError, RecordsError
from .logprobs import LOGPROB_COLUMNS, LogprobSummary
from .pricing import ModelCard

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "Outcomes",
    "Record",
    "read_records",
    "write_records",
]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "prompt_id", "prompt", "model", "response", "correct", "input_tokens", "output_tokens", "cost_usd",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "task", "split", "latency_s", "ttft_s", "tpot_s", *LOGPROB_COLUMNS, "finish_reason", "usage_source",
)
USAGE_SOURCES: frozenset[str] = frozenset({"provider", "tiktoken", "estimate"})
# Column order used when writing (matches the shared data files).
_WRITE_ORDER: tuple[str, ...] = (
    "prompt_id", "task", "split", "prompt", "model", "response", "correct", "input_tokens",
    "output_tokens", "cost_usd", "latency_s", "ttft_s", "tpot_s", *LOGPROB_COLUMNS, "finish_reason",
    "usage_source",
)
_OPTIONAL_FLOATS = ("latency_s", "ttft_s", "tpot_s", *LOGPROB_COLUMNS)
_OPTIONAL_STRS = ("task", "split", "finish_reason", "usage_source")
_NONNEG_FLOATS = frozenset({"latency_s", "ttft_s", "tpot_s"})
_NONPOS_FLOATS = frozenset(LOGPROB_COLUMNS)  # log-probabilities
_GZIP_MAGIC = b"\x1f\x8b"

Incomplete = Literal["error", "drop"]


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded call: a prompt, the model that answered it, the answer, its grade and its cost."""

    prompt_id: str
    prompt: str
    model: str
    response: str
    correct: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    task: str | None = None
    split: str | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    logprob_mean: float | None = None
    logprob_min: float | None = None
    logprob_p10: float | None = None
    logprob_p25: float | None = None
    logprob_final_mean: float | None = None
    logprob_final_min: float | None = None
    finish_reason: str | None = None
    usage_source: str | None = None

    @property
    def logprobs(self) -> LogprobSummary | None:
        """The answer's token-logprob summary (``None`` when none was recorded)."""
        return LogprobSummary.from_values([math.nan if (v := getattr(self, c)) is None else v
                                           for c in LOGPROB_COLUMNS])


# --------------------------------------------------------------------------- value parsing


class _Loc:
    """Where a value came from, to build error messages."""

    __slots__ = ("line", "path")

    def __init__(self, path: str | None, line: int | None) -> None:
        self.path, self.line = path, line

    def error(self, msg: str, column: str | None = None) -> RecordsError:
        return RecordsError(msg, path=self.path, line=self.line, column=column)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def _to_float(v: Any, col: str, loc: _Loc) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            raise loc.error(f"not a number: {v[:40]!r}", col) from None
    else:
        raise loc.error(f"not a number: {v!r}", col)
    if not math.isfinite(x):
        raise loc.error(f"must be finite, got {v!r}", col)
    return x


def _to_int(v: Any, col: str, loc: _Loc) -> int:
    if _blank(v):
        raise loc.error("empty token count", col)
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise loc.error(f"not an integer: {v!r}", col)
    n: int | None = v if isinstance(v, int) else None
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            n = int(v)
    if n is None:  # integral floats such as 12.0 or "12.0"
        try:
            x = float(v)
        except ValueError:
            raise loc.error(f"not an integer: {str(v)[:40]!r}", col) from None
        if not math.isfinite(x) or not x.is_integer():
            raise loc.error(f"not an integer: {v!r}", col)
        n = int(x)
    if n < 0:
        raise loc.error(f"must be >= 0, got {n}", col)
    return n


def _to_str(v: Any, col: str, loc: _Loc, *, allow_int: bool = False) -> str:
    if isinstance(v, str):
        return v
    if allow_int and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise loc.error(f"expected a string, got {type(v).__name__}", col)


def _parse_row(
    get: Callable[[str], Any], loc: _Loc, prices: Mapping[str, ModelCard] | None
) -> Record:
    """Turn one row (``get(column)`` → raw value, ``None`` if absent) into a validated Record."""
    pid = _to_str(get("prompt_id"), "prompt_id", loc, allow_int=True)
    if not pid.strip():
        raise loc.error("empty prompt_id", "prompt_id")
    prompt_v = get("prompt")
    if prompt_v is None:
        raise loc.error("missing prompt", "prompt")
    prompt = _to_str(prompt_v, "prompt", loc)
    model = _to_str(get("model"), "model", loc) if get("model") is not None else ""
    if not model.strip():
        raise loc.error("empty model name", "model")
    resp_v = get("response")
    response = "" if resp_v is None else _to_str(resp_v, "response", loc)

    cv = get("correct")
    if _blank(cv):
        raise loc.error("empty value", "correct")
    correct = _to_float(cv, "correct", loc)
    if not 0.0 <= correct <= 1.0:
        raise loc.error(f"must be in [0, 1], got {cv!r}", "correct")
    n_in = _to_int(get("input_tokens"), "input_tokens", loc)
    n_out = _to_int(get("output_tokens"), "output_tokens", loc)

    kv = get("cost_usd")
    if _blank(kv):
        if prices is None:
            raise loc.error("empty cost and no prices given to compute it", "cost_usd")
        card = prices.get(model)
        if card is None:  # normally caught earlier by the per-model price check
            raise loc.error(f"no price for model {model!r}", "model")
        cost = card.cost(n_in, n_out)
    else:
        cost = _to_float(kv, "cost_usd", loc)
        if cost < 0:
            raise loc.error(f"must be >= 0, got {kv!r}", "cost_usd")

    opt: dict[str, Any] = {}
    for col in _OPTIONAL_FLOATS:
        v = get(col)
        if _blank(v):
            continue
        x = _to_float(v, col, loc)
        if col in _NONNEG_FLOATS and x < 0:
            raise loc.error(f"must be >= 0, got {v!r}", col)
        if col in _NONPOS_FLOATS and x > 0:
            raise loc.error(f"a log-probability must be <= 0, got {v!r}", col)
        opt[col] = x
    if any(c in opt for c in LOGPROB_COLUMNS[1:]) and "logprob_mean" not in opt:
        raise loc.error("a logprob summary needs its mean", "logprob_mean")
    for col in _OPTIONAL_STRS:
        v = get(col)
        if _blank(v):
            continue
        opt[col] = _to_str(v, col, loc, allow_int=col in ("task", "split"))
    if opt.get("usage_source", "provider") not in USAGE_SOURCES:
        raise loc.error(f"must be one of {', '.join(sorted(USAGE_SOURCES))}, got {opt['usage_source']!r}",
                        "usage_source")
    return Record(pid, prompt, model, response, correct, n_in, n_out, cost, **opt)


# --------------------------------------------------------------------------- reading


def _format_of(path: Path) -> Literal["csv", "jsonl"]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    raise RecordsError(
        "unknown record file type; expected .csv, .csv.gz, .jsonl or .jsonl.gz", path=str(path)
    )


def _open_bytes(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or a decompressing view when it starts with the gzip magic bytes."""
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _stream_error(e: BaseException, where: str, after: int | None) -> RecordsError:
    at = f" after line {after}" if after else ""
    if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)):
        return RecordsError(f"corrupt or truncated gzip data{at} ({e})", path=where)
    return RecordsError(f"cannot read file{at}: {e}", path=where)


_STREAM_ERRORS = (EOFError, zlib.error, OSError)
#: The longest line a record file may have (a response of 64 MiB is not a chat answer).
MAX_LINE_BYTES = 64 << 20


def _text_lines(stream: IO[bytes], where: str, chunk_size: int = 1 << 20,
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Decoded physical lines (split on ``\\n``, ends kept), read in large blocks.

    A line is never split inside a UTF-8 sequence (``\\n`` cannot occur in one); decoding errors
    name their line. A line longer than ``max_line_bytes`` is an error (a decompression bomb or a
    file that is not records cannot exhaust memory one line at a time).
    """
    lineno = 0  # lines yielded so far
    pending: list[bytes] = []  # bytes of the current, unfinished line
    first = True
    while True:
        try:
            chunk = stream.read(chunk_size)
        except _STREAM_ERRORS as e:
            raise _stream_error(e, where, lineno) from None
        if chunk and b"\n" not in chunk:
            pending.append(chunk)
            if sum(map(len, pending)) > max_line_bytes:
                raise RecordsError(f"line longer than {max_line_bytes} bytes", path=where, line=lineno + 1)
            continue
        data = b"".join([*pending, chunk]) if pending else chunk
        pending = []
        if first:
            first = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
        cut = data.rfind(b"\n") + 1 if chunk else len(data)
        block = data[:cut]
        if cut < len(data):
            pending.append(data[cut:])
        if block:
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as e:
                line = lineno + block.count(b"\n", 0, e.start) + 1
                raise RecordsError(f"not valid UTF-8 text ({e.reason})", path=where, line=line) from None
            parts = text.split("\n")
            last = parts.pop()  # "" when the block ends with a newline
            lineno += len(parts)
            for part in parts:
                yield part + "\n"
            if last:
                lineno += 1
                yield last
        if not chunk:
            return


def _csv_rows(lines: Iterator[str], where: str) -> Iterator[tuple[int, Callable[[str], Any]]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = []
    while header == []:  # skip leading blank lines
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise RecordsError(f"malformed CSV header: {e}", path=where, line=reader.line_num) from None
    if header is None:
        raise RecordsError("empty file", path=where)
    header_line = reader.line_num
    header = [h.strip() for h in header]
    index: dict[str, int] = {}
    for i, h in enumerate(header):
        if h in REQUIRED_COLUMNS or h in OPTIONAL_COLUMNS:
            if h in index:
                raise RecordsError("duplicate column in header", path=where, line=header_line, column=h)
            index[h] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    if missing:
        raise RecordsError(
            f"missing required column(s): {', '.join(missing)}",
            path=where, line=header_line, column=missing[0],
        )
    width = len(header)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as e:
            raise RecordsError(f"malformed CSV: {e}", path=where, line=start) from None
        if row is None:
            return
        if not row:  # blank line
            continue
        if len(row) != width:
            raise RecordsError(
                f"row has {len(row)} field(s), the header has {width}", path=where, line=start
            )
        yield start, functools.partial(_cell_of, row, index)


def _cell_of(row: list[str], index: dict[str, int], column: str) -> str | None:
    i = index.get(column)
    return None if i is None else row[i]


def _jsonl_rows(lines: Iterator[str], where: str) -> Iterator[tuple[int, Callable[[str], Any]]]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_json_constant)
        except ValueError as e:
            raise RecordsError(f"invalid JSON: {e}", path=where, line=lineno) from None
        except RecursionError:
            raise RecordsError("invalid JSON: nested too deeply", path=where, line=lineno) from None
        if not isinstance(obj, dict):
            raise RecordsError(
                f"expected a JSON object, got {type(obj).__name__}", path=where, line=lineno
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in obj]
        if missing:
            raise RecordsError(
                f"missing required column(s): {', '.join(missing)}",
                path=where, line=lineno, column=missing[0],
            )
        yield lineno, obj.get


def _reject_json_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def read_records(
    path: str | os.PathLike[str],
    *,
    prices: Mapping[str, ModelCard] | None = None,
    incomplete: Incomplete = "error",
) -> list[Record]:
    """Read and validate a record file (CSV or JSONL, gzip or not) in one pass.

    With ``prices``, every model must have a price and empty ``cost_usd`` cells are computed from the
    token counts. Prompts lacking some model raise, or are dropped with a warning when
    ``incomplete="drop"``.
    """
    if incomplete not in ("error", "drop"):
        raise ConfigError(f"incomplete must be 'error' or 'drop', got {incomplete!r}")
    p = Path(path)
    where = str(path)
    kind = _format_of(p)
    records: list[Record] = []
    row_lines: list[int] = []
    pair_line: dict[tuple[str, str], int] = {}
    prompt_info: dict[str, tuple[str, int, str | None, str | None]] = {}
    model_line: dict[str, int] = {}
    try:
        raw = open(p, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as e:
        raise RecordsError(f"cannot open file: {e.strerror or e}", path=where) from None
    try:
        text = _text_lines(_open_bytes(raw), where)
        rows = _csv_rows(text, where) if kind == "csv" else _jsonl_rows(text, where)
        for line, get in rows:
            loc = _Loc(where, line)
            model_v = get("model")
            if (prices is not None and isinstance(model_v, str) and model_v not in model_line
                    and model_v.strip() and model_v not in prices):
                known = ", ".join(sorted(prices)) or "(none)"
                raise loc.error(
                    f"model {model_v!r} (first on line {line}) has no price; prices are known for: {known}",
                    "model",
                )
            try:
                rec = _parse_row(get, loc, prices)
            except PricingError as e:
                raise loc.error(str(e), "cost_usd") from None
            key = (rec.prompt_id, rec.model)
            if key in pair_line:
                raise loc.error(
                    f"duplicate (prompt_id, model) pair ({rec.prompt_id!r}, {rec.model!r}): "
                    f"first on line {pair_line[key]}, again on line {line}",
                    "model",
                )
            pair_line[key] = line
            model_line.setdefault(rec.model, line)
            info = prompt_info.get(rec.prompt_id)
            if info is None:
                prompt_info[rec.prompt_id] = (rec.prompt, line, rec.task, rec.split)
            else:
                rec = _check_same_prompt(rec, info, loc)
            records.append(rec)
            row_lines.append(line)
    except _STREAM_ERRORS as e:
        raise _stream_error(e, where, None) from None
    finally:
        raw.close()
    if not records:
        raise RecordsError("empty file: no records", path=where)
    return _complete(records, row_lines, where, incomplete)


def _check_same_prompt(rec: Record, info: tuple[str, int, str | None, str | None], loc: _Loc) -> Record:
    """Check ``rec`` against the first row of its prompt; share that row's prompt string."""
    text, first, task, split = info
    if rec.prompt != text:
        raise loc.error(
            f"prompt_id {rec.prompt_id!r} has a different prompt text than on line {first}", "prompt"
        )
    if rec.task != task:
        raise loc.error(f"prompt_id {rec.prompt_id!r} has task {rec.task!r}, but {task!r} on line {first}",
                        "task")
    if rec.split != split:
        raise loc.error(
            f"prompt_id {rec.prompt_id!r} has split {rec.split!r}, but {split!r} on line {first}", "split"
        )
    if rec.prompt is not text:  # one string object per prompt: the matrix repeats it per model
        object.__setattr__(rec, "prompt", text)
    return rec


def _complete(
    records: list[Record], lines: Sequence[int] | None, where: str | None, incomplete: Incomplete
) -> list[Record]:
    """Drop or reject prompts that lack some model present elsewhere in ``records``."""
    by_prompt: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        by_prompt.setdefault(r.prompt_id, set()).add(r.model)
        first.setdefault(r.prompt_id, i)
    models = {r.model for r in records}
    bad = [pid for pid, have in by_prompt.items() if len(have) != len(models)]
    if not bad:
        return records
    if incomplete == "error":
        pid = bad[0]
        missing = ", ".join(sorted(models - by_prompt[pid]))
        i = first[pid]
        at = f"first on line {lines[i]}" if lines is not None else f"first at record #{i}"
        raise RecordsError(
            f"prompt {pid!r} ({at}) is missing model(s): {missing}; {len(bad)} of {len(by_prompt)} "
            "prompt(s) are incomplete (pass incomplete='drop' to drop them)",
            path=where, line=lines[i] if lines is not None else None, column="model",
        )
    drop = set(bad)
    kept = [r for r in records if r.prompt_id not in drop]
    if not kept:
        raise RecordsError("no prompt has a record for every model", path=where)
    src = f"{where}: " if where else ""
    warnings.warn(
        f"{src}dropped {len(bad)} of {len(by_prompt)} prompt(s) missing some model(s)",
        UserWarning,
        stacklevel=3,
    )
    return kept


def _check_consistent(recs: Sequence[Record], where: str | None) -> None:
    """In-memory records: all Records, no duplicate pair, one prompt/task/split per prompt_id."""
    seen: dict[tuple[str, str], int] = {}
    info: dict[str, tuple[int, str, str | None, str | None]] = {}
    for i, r in enumerate(recs):
        if not isinstance(r, Record):
            raise RecordsError(f"record #{i} is a {type(r).__name__}, not a Record", path=where)
        key = (r.prompt_id, r.model)
        if key in seen:
            raise RecordsError(
                f"duplicate (prompt_id, model) pair ({r.prompt_id!r}, {r.model!r}): "
                f"records #{seen[key]} and #{i}", path=where,
            )
        seen[key] = i
        first = info.setdefault(r.prompt_id, (i, r.prompt, r.task, r.split))
        if first[1:] != (r.prompt, r.task, r.split):
            raise RecordsError(
                f"prompt_id {r.prompt_id!r}: record #{i} differs from record #{first[0]} "
                "in prompt text, task or split", path=where,
            )


# --------------------------------------------------------------------------- writing


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_records(records: Iterable[Record], path: str | os.PathLike[str]) -> None:
    """Write records as CSV or JSONL (by suffix, gzip for ``.gz``) atomically; round-trips with read."""
    p = Path(path)
    kind = _format_of(p)
    recs = list(records)
    _check_consistent(recs, str(p))
    for r in recs:
        # Validate values exactly as the reader would, so whatever is written can be read back.
        _parse_row(functools.partial(getattr, r), _Loc(str(p), None), None)
    used = set()
    for col in OPTIONAL_COLUMNS:
        if any(getattr(r, col) is not None for r in recs):
            used.add(col)
    cols = [c for c in _WRITE_ORDER if c in REQUIRED_COLUMNS or c in used]
    gz = p.name.lower().endswith(".gz")
    with atomic_write(p) as raw:
        gzf = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else None
        text = io.TextIOWrapper(gzf if gzf is not None else raw, encoding="utf-8", newline="")
        if kind == "csv":
            w = csv.writer(text)
            w.writerow(cols)
            for r in recs:
                w.writerow([_cell(getattr(r, c)) for c in cols])
        else:
            for r in recs:
                obj = {c: getattr(r, c) for c in cols}
                text.write(json.dumps(obj, ensure_ascii=False, allow_nan=False))
                text.write("\n")
        text.flush()
        text.detach()
        if gzf is not None:
            gzf.close()


# --------------------------------------------------------------------------- the matrix


@dataclass(eq=False)
class Outcomes:
    """The prompt × model matrix of recorded outcomes (row = prompt, column = model).

    Optional per-call numbers are ``NaN`` where absent.
    """

    prompt_ids: list[str]
    prompts: list[str]
    tasks: list[str | None]
    splits: list[str | None]
    models: list[str]
    correct: np.ndarray
    cost: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    responses: list[list[str]]
    latency_s: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    logprobs: np.ndarray
    """``[n_prompts, n_models, len(LOGPROB_STATS)]``: each answer's token-logprob summary
    (:meth:`LogprobSummary.values <crescade.engine.logprobs.LogprobSummary.values>`), ``NaN`` where absent."""
    finish_reason: list[list[str | None]]

    def __post_init__(self) -> None:
        n, m = len(self.prompt_ids), len(self.models)
        for name in ("prompts", "tasks", "splits", "responses", "finish_reason"):
            if len(getattr(self, name)) != n:
                raise RecordsError(f"Outcomes.{name} has {len(getattr(self, name))} rows, expected {n}")
        for name in ("responses", "finish_reason"):
            if any(len(row) != m for row in getattr(self, name)):
                raise RecordsError(f"Outcomes.{name} rows must have {m} entries")
        for name, dtype in (("correct", np.float64), ("cost", np.float64), ("input_tokens", np.int64),
                            ("output_tokens", np.int64), ("latency_s", np.float64),
                            ("ttft_s", np.float64), ("tpot_s", np.float64)):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n, m):
                raise RecordsError(f"Outcomes.{name} has shape {arr.shape}, expected {(n, m)}")
            setattr(self, name, arr)
        lp = np.asarray(self.logprobs, dtype=np.float64)
        if lp.shape == (n, m):  # the mean alone (the matrix of older crescade versions)
            lp = np.concatenate([lp[:, :, None], np.full((n, m, len(LOGPROB_COLUMNS) - 1), np.nan)], axis=2)
        if lp.shape != (n, m, len(LOGPROB_COLUMNS)):
            raise RecordsError(f"Outcomes.logprobs has shape {lp.shape}, expected {(n, m, len(LOGPROB_COLUMNS))}")
        self.logprobs = lp
        if len(set(self.models)) != m:
            raise PoolError(f"duplicate model names: {self.models}")
        if len(set(self.prompt_ids)) != n:
            raise RecordsError("duplicate prompt ids")

    @property
    def logprob_mean(self) -> np.ndarray:
        """``[n_prompts, n_models]`` mean token logprob of each answer (``NaN`` where absent)."""
        return self.logprobs[:, :, 0]

    # -- construction

    @classmethod
    def from_records(cls, records: Iterable[Record], incomplete: Incomplete = "error") -> Outcomes:
        """Build the matrix; prompts in order of first appearance, models sorted by name."""
        if incomplete not in ("error", "drop"):
            raise ConfigError(f"incomplete must be 'error' or 'drop', got {incomplete!r}")
        recs = list(records)
        if not recs:
            raise RecordsError("no records")
        _check_consistent(recs, None)
        recs = _complete(recs, None, None, incomplete)
        pids = list(dict.fromkeys(r.prompt_id for r in recs))
        models = sorted({r.model for r in recs})
        row = {p: i for i, p in enumerate(pids)}
        col = {m: j for j, m in enumerate(models)}
        n, m = len(pids), len(models)
        f = np.empty((n, m), dtype=np.float64)
        correct, cost = f.copy(), f.copy()
        latency, ttft, tpot = (np.full((n, m), np.nan) for _ in range(3))
        logprob = np.full((n, m, len(LOGPROB_COLUMNS)), np.nan)
        n_in = np.zeros((n, m), dtype=np.int64)
        n_out = np.zeros((n, m), dtype=np.int64)
        responses: list[list[str]] = [[""] * m for _ in range(n)]
        finish: list[list[str | None]] = [[None] * m for _ in range(n)]
        prompts: list[str] = [""] * n
        tasks: list[str | None] = [None] * n
        splits: list[str | None] = [None] * n
        for r in recs:
            i, j = row[r.prompt_id], col[r.model]
            prompts[i], tasks[i], splits[i] = r.prompt, r.task, r.split
            correct[i, j], cost[i, j] = r.correct, r.cost_usd
            n_in[i, j], n_out[i, j] = r.input_tokens, r.output_tokens
            responses[i][j], finish[i][j] = r.response, r.finish_reason
            for arr, v in ((latency, r.latency_s), (ttft, r.ttft_s), (tpot, r.tpot_s)):
                if v is not None:
                    arr[i, j] = v
            for stat, name in enumerate(LOGPROB_COLUMNS):
                v = getattr(r, name)
                if v is not None:
                    logprob[i, j, stat] = v
        return cls(pids, prompts, tasks, splits, models, correct, cost, n_in, n_out, responses,
                   latency, ttft, tpot, logprob, finish)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        prices: Mapping[str, ModelCard] | None = None,
        incomplete: Incomplete = "error",
    ) -> Outcomes:
        """:func:`read_records` then :meth:`from_records`."""
        return cls.from_records(read_records(path, prices=prices, incomplete=incomplete))

    # -- shape

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"Outcomes({self.n_prompts} prompts × {self.n_models} models: {', '.join(self.models)})"

    # -- selection

    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> Outcomes:
        """The rows selected by integer indices or a boolean mask, in that order."""
        sel = np.asarray(rows)
        n = self.n_prompts
        if sel.size == 0:
            idx = np.zeros(0, dtype=np.int64)
        elif sel.dtype == np.bool_:
            if sel.shape != (n,):
                raise ConfigError(f"boolean mask has shape {sel.shape}, expected ({n},)")
            idx = np.flatnonzero(sel)
        elif np.issubdtype(sel.dtype, np.integer):
            if sel.ndim != 1:
                raise ConfigError(f"row indices must be 1-D, got shape {sel.shape}")
            if sel.min() < -n or sel.max() >= n:
                raise ConfigError(f"row index out of range for {n} prompts")
            idx = sel.astype(np.int64) % max(n, 1)
        else:
            raise ConfigError(f"rows must be integer indices or a boolean mask, got dtype {sel.dtype}")
        ix = idx.tolist()
        return Outcomes(
            prompt_ids=[self.prompt_ids[i] for i in ix],
            prompts=[self.prompts[i] for i in ix],
            tasks=[self.tasks[i] for i in ix],
            splits=[self.splits[i] for i in ix],
            models=list(self.models),
            correct=self.correct[idx],
            cost=self.cost[idx],
            input_tokens=self.input_tokens[idx],
            output_tokens=self.output_tokens[idx],
            responses=[list(self.responses[i]) for i in ix],
            latency_s=self.latency_s[idx],
            ttft_s=self.ttft_s[idx],
            tpot_s=self.tpot_s[idx],
            logprobs=self.logprobs[idx],
            finish_reason=[list(self.finish_reason[i]) for i in ix],
        )

    def split(self, name: str) -> Outcomes:
        """The prompts whose ``split`` is ``name``."""
        mask = np.array([s == name for s in self.splits], dtype=bool)
        if not mask.any():
            have = sorted({s for s in self.splits if s is not None})
            raise ConfigError(f"no prompt has split {name!r}; splits present: {have or 'none'}")
        return self.subset(mask)

    def select_models(self, models: Sequence[str]) -> Outcomes:
        """The columns of ``models``, in the given order."""
        if isinstance(models, str):
            raise PoolError(f"expected a sequence of model names, got the string {models!r}")
        models = list(models)
        if not models:
            raise PoolError("no models selected")
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise PoolError(
                f"unknown model(s): {', '.join(map(repr, unknown))}; known: {', '.join(self.models)}"
            )
        if len(set(models)) != len(models):
            raise PoolError(f"duplicate model names in selection: {models}")
        cols = [self.models.index(m) for m in models]
        c = np.asarray(cols, dtype=np.int64)
        return Outcomes(
            prompt_ids=list(self.prompt_ids),
            prompts=list(self.prompts),
            tasks=list(self.tasks),
            splits=list(self.splits),
            models=models,
            correct=self.correct[:, c],
            cost=self.cost[:, c],
            input_tokens=self.input_tokens[:, c],
            output_tokens=self.output_tokens[:, c],
            responses=[[row[j] for j in cols] for row in self.responses],
            latency_s=self.latency_s[:, c],
            ttft_s=self.ttft_s[:, c],
            tpot_s=self.tpot_s[:, c],
            logprobs=self.logprobs[:, c],
            finish_reason=[[row[j] for j in cols] for row in self.finish_reason],
        )

    def to_records(self) -> list[Record]:
        """Back to the long format: prompt-major, models in column order."""

        def opt(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        out: list[Record] = []
        for i, pid in enumerate(self.prompt_ids):
            for j, model in enumerate(self.models):
                out.append(Record(
                    prompt_id=pid,
                    prompt=self.prompts[i],
                    model=model,
                    response=self.responses[i][j],
                    correct=float(self.correct[i, j]),
                    input_tokens=int(self.input_tokens[i, j]),
                    output_tokens=int(self.output_tokens[i, j]),
                    cost_usd=float(self.cost[i, j]),
                    task=self.tasks[i],
                    split=self.splits[i],
                    latency_s=opt(self.latency_s[i, j]),
                    ttft_s=opt(self.ttft_s[i, j]),
                    tpot_s=opt(self.tpot_s[i, j]),
                    finish_reason=self.finish_reason[i][j],
                    **_logprob_kwargs(self.logprobs[i, j]),
                ))
        return out


def _logprob_kwargs(values: np.ndarray) -> dict[str, Any]:
    """The ``logprob_*`` fields of a :class:`Record` from one answer's summary values (``NaN``: absent)."""
    return {col: None if math.isnan(v) else float(v) for col, v in zip(LOGPROB_COLUMNS, values.tolist(), strict=True)}
