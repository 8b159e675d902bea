"""Seeded mutation fuzzing of the two file readers that take files from outside: the record reader and the
artifact loader. Used by ``test_fuzz_files.py`` (asserts) and ``benchmarks/reliability.py`` (reports).

Every input is a mutation of a valid file: bit flips, byte insertions and deletions, truncations, spliced
and repeated lines, hostile tokens (NaN, 1e999, huge integers, deep nesting, lone surrogates, NUL) and,
for artifacts, structure-aware edits of ``meta.json`` and of the arrays *with the checksums recomputed*
(an attacker can recompute checksums, so the parsers behind them are fuzzed too), including an object
array whose pickle would run code. Only the project's own exceptions may come out; nothing may hang,
crash or run code; a loaded artifact must then plan and judge or fail with a crescade error.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crescade import Cascade, ModelCard
from crescade.common.errors import CrescadeError
from crescade.engine.decisions import Answer
from crescade.engine.records import read_records, write_records

HOSTILE_TOKENS = [b"NaN", b"Infinity", b"-1", b"1e999", b"99999999999999999999999999", b"", b"null", b"true",
                  b'"\\ud800"', b"\x00", b"[" * 2000 + b"]" * 2000, b'{"a":' * 500 + b"1" + b"}" * 500,
                  b"\xff\xfe", b'"' + b"x" * 10_000 + b'"', b"\r\n", b",,,,", b'"""', b"\xef\xbb\xbf"]
SLOW_S = 5.0  # an input taking longer than this counts as a hang


@dataclass
class FuzzResult:
    target: str
    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # crescade exception type -> count
    escaped: list[str] = field(default_factory=list)  # any other exception: a defect
    slow: list[str] = field(default_factory=list)
    code_ran: bool = False
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.escaped and not self.slow and not self.code_ran

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = dict(self.rejected)
        d["escaped"], d["ok"] = self.escaped[:20], self.ok
        return d


def _run_one(res: FuzzResult, label: str, fn: Callable[[], Any]) -> None:
    res.inputs += 1
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # dropped prompts, numpy casts: expected noise on damaged input
            warnings.simplefilter("ignore")
            fn()
        res.accepted += 1
    except CrescadeError as exc:
        res.rejected[type(exc).__name__] += 1
    except Exception as exc:  # a defect: not one of ours
        res.escaped.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
    if time.perf_counter() - t0 > SLOW_S:
        res.slow.append(label)


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of ``data``; returns ``(what was done, mutated bytes)``."""
    n = len(data)
    op = rng.choice(["flip", "insert", "delete", "truncate", "token", "splice", "repeat", "zero"])
    b = bytearray(data)
    if op == "flip" and n:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
    elif op == "insert":
        i = rng.randint(0, n)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == "delete" and n:
        i = rng.randrange(n)
        del b[i:i + rng.randint(1, 64)]
    elif op == "truncate":
        b = b[:rng.randint(0, n)]
    elif op == "token":
        i = rng.randint(0, n)
        j = min(n, i + rng.randint(0, 12))
        b[i:j] = rng.choice(HOSTILE_TOKENS)
    elif op == "splice":
        lines = bytes(b).split(b"\n")
        rng.shuffle(lines)
        b = bytearray(b"\n".join(lines[: rng.randint(1, len(lines))]))
    elif op == "repeat":
        lines = bytes(b).split(b"\n")
        k = rng.randrange(len(lines))
        lines[k:k] = [lines[k]] * rng.randint(1, 3)
        b = bytearray(b"\n".join(lines))
    elif op == "zero" and n:
        i = rng.randrange(n)
        b[i:i + rng.randint(1, 32)] = b"\x00" * min(32, n - i)
    return op, bytes(b)


# -- records ------------------------------------------------------------------------------------------

def fuzz_records(records: list[Any], prices: dict[str, ModelCard], workdir: Path, n: int, seed: int = 0
                 ) -> FuzzResult:
    """``n`` mutated record files (CSV and JSONL, plain and gzip) through :func:`read_records`."""
    res = FuzzResult("record reader")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    bases: dict[str, bytes] = {}
    for ext in (".csv", ".jsonl"):
        p = workdir / f"base{ext}"
        write_records(records, p)
        bases[ext] = p.read_bytes()
    target = {ext: workdir / f"input{ext}" for ext in (".csv", ".jsonl", ".csv.gz", ".jsonl.gz")}
    for i in range(n):
        ext = rng.choice(list(target))
        plain = bases[ext.removesuffix(".gz")]
        op, data = mutate_bytes(plain, rng)
        if ext.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
            if rng.random() < 0.5:  # damage the compressed stream itself
                op, data = f"gz-{mutate_bytes(data, rng)[0]}", mutate_bytes(data, rng)[1]
        target[ext].write_bytes(data)
        with_prices = prices if i % 2 else None
        _run_one(res, f"records #{i} {ext} {op}", lambda e=ext, pr=with_prices: read_records(
            target[e], prices=pr, incomplete="drop"))
    res.wall_s = time.perf_counter() - t0
    return res


# -- artifacts ----------------------------------------------------------------------------------------

def _reseal(directory: Path) -> None:
    """Recompute the manifest's sizes and checksums after an edit (as an attacker could)."""
    mpath = directory / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for name in manifest["files"]:
        data = (directory / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    mpath.write_text(json.dumps(manifest))


def _mutate_json(node: Any, rng: random.Random, depth: int = 0) -> Any:
    """A copy of ``node`` with one random edit somewhere inside."""
    if isinstance(node, dict) and node and (depth < 6 and rng.random() < 0.7):
        key = rng.choice(list(node))
        out = dict(node)
        out[key] = _mutate_json(node[key], rng, depth + 1)
        return out
    if isinstance(node, list) and node and (depth < 6 and rng.random() < 0.7):
        i = rng.randrange(len(node))
        out_list = list(node)
        out_list[i] = _mutate_json(node[i], rng, depth + 1)
        return out_list
    choices: list[Any] = [None, -1, 0, 10**30, 3.5, "", "x" * 50, [], {}, [1, 2], {"a": 1}, True, "\ud800",
                          -(10**18)]
    if isinstance(node, dict) and node:
        out = dict(node)
        del out[rng.choice(list(out))]
        choices.append(out)
    if isinstance(node, list) and node:
        choices += [node[:-1], node + node[-1:], node[::-1]]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        choices += [node + 1, -node, node * 1000]
    return rng.choice(choices)


def _write_npz(path: Path, arrays: dict[str, np.ndarray], *, pickled: dict[str, Any] | None = None) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(name + ".npy", buf.getvalue())
        for name, obj in (pickled or {}).items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array([obj], dtype=object), allow_pickle=True)
            zf.writestr(name + ".npy", buf.getvalue())


def _mutate_array(arr: np.ndarray, rng: random.Random) -> np.ndarray:
    op = rng.choice(["shape", "dtype", "values", "empty", "nan", "huge"])
    if op == "shape":
        return arr.reshape(-1)[: max(0, arr.size - rng.randint(1, 3))] if arr.size else np.zeros(3)
    if op == "dtype":
        return arr.astype(rng.choice([np.int8, np.float16, np.complex64, np.bool_, "U3"]))
    if op == "empty":
        return np.zeros((0, *arr.shape[1:]), dtype=arr.dtype)
    out = arr.copy()
    if out.size and out.dtype.kind in "fc":  # (1e308 overflows float32 arrays to inf: intended)
        flat = out.reshape(-1)
        with np.errstate(over="ignore"):
            flat[rng.randrange(flat.size)] = np.nan if op == "nan" else (1e308 if op == "huge" else -flat[0] - 7)
    elif out.size and out.dtype.kind in "iu":
        flat = out.reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice([-1, 2**31 - 1, 10**6])
    return out


class _Marker:
    """Unpickling this would create the marker file: the proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def fuzz_artifacts(cascade: Cascade, workdir: Path, n: int, seed: int = 0) -> FuzzResult:
    """``n`` damaged artifacts through :meth:`Cascade.load`; whatever loads must then plan and judge."""
    res = FuzzResult("artifact loader")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    base = workdir / "base-artifact"
    cascade.save(base)
    meta = json.loads((base / "meta.json").read_text())
    with np.load(base / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    marker = workdir / "code-ran"
    target = workdir / "artifact"

    def load_and_use() -> None:
        c = Cascade.load(target)
        plan = c.plan("Which river delta best matches the following?")
        c.judge("q", Answer(text="B", model=plan.ladder[0]), plan=plan, tier=0)

    for i in range(n):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(base, target)
        kind = rng.choice(["bytes", "bytes", "meta", "meta", "arrays", "manifest", "pickle", "missing"])
        if kind == "bytes":  # raw damage, checksums left as they were
            name = rng.choice(["meta.json", "arrays.npz", "manifest.json"])
            op, data = mutate_bytes((target / name).read_bytes(), rng)
            (target / name).write_bytes(data)
            label = f"{name} {op}"
        elif kind == "meta":
            (target / "meta.json").write_text(json.dumps(_mutate_json(meta, rng), ensure_ascii=True))
            _reseal(target)
            label = "meta edit (resealed)"
        elif kind == "arrays":
            edited = dict(arrays)
            name = rng.choice(list(edited))
            if rng.random() < 0.2:
                del edited[name]
            else:
                edited[name] = _mutate_array(edited[name], rng)
            _write_npz(target / "arrays.npz", edited)
            _reseal(target)
            label = f"array {name} edit (resealed)"
        elif kind == "manifest":
            m = json.loads((target / "manifest.json").read_text())
            (target / "manifest.json").write_text(json.dumps(_mutate_json(m, rng)))
            label = "manifest edit"
        elif kind == "pickle":  # an object array whose unpickling would run code
            name = rng.choice([*arrays, "extra"])
            edited = {k: v for k, v in arrays.items() if k != name}
            _write_npz(target / "arrays.npz", edited, pickled={name: _Marker(str(marker))})
            _reseal(target)
            label = f"pickled object array {name} (resealed)"
        else:
            os.remove(target / rng.choice(["meta.json", "arrays.npz", "manifest.json"]))
            label = "missing file"
        _run_one(res, f"artifact #{i} {label}", load_and_use)
        if marker.exists():
            res.code_ran = True
    res.wall_s = time.perf_counter() - t0
    return res
