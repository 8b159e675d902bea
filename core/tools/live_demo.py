"""``crescade demo --live``: the cascade over real local models, query by query.

Fits the cascade on the embedded recorded run, starts one llama.cpp server per model of its pool, asks
a handful of freshly generated tasks through ``CascadeChatModel`` over ``ChatOpenAI`` (streamed), and
prints for each the route, every tier's QE score and verdict, the answer, its grade, TTFT, TPOT and
cost; then stops the servers. The adapter is reached through its ``crescade.live`` entry point
(:mod:`crescade.tools.backends`), never imported by the core.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..common.errors import CrescadeError
from ..engine.cascade import Cascade
from . import local
from .backends import live_backend
from .tasks import FAMILIES, default_task_suite, generate_tasks

__all__ = ["check_installed", "fresh_tasks", "print_row", "run_live_demo"]


def fresh_tasks(n: int, seed: int) -> list[Any]:
    """``n`` generated tasks, one family after another, from ``seed``, none of them in the recorded suite."""
    recorded = {e.prompt for e in default_task_suite()}
    per_family = -(-n // len(FAMILIES))
    by_family = []
    for f in FAMILIES:
        pool = [e for e in generate_tasks(4 * per_family + 8, seed=seed, families=[f]) if e.prompt not in recorded]
        by_family.append(list({e.prompt: e for e in pool}.values())[:per_family])
    out = [by_family[i % len(FAMILIES)][i // len(FAMILIES)] for i in range(n)
           if i // len(FAMILIES) < len(by_family[i % len(FAMILIES)])]
    if len(out) < n:
        raise CrescadeError(f"could not generate {n} tasks outside the recorded suite from seed {seed}")
    return out


def check_installed(names: Sequence[str], cache_dir: str | Path | None = None) -> None:
    """Raise a clear error unless every model of ``names`` and the llama.cpp runtime are installed."""
    unknown = [m for m in names if m not in local.MODELS]
    if unknown:
        raise CrescadeError(f"the cascade's pool has models that are not local models: {', '.join(unknown)}")
    missing = [m for m in names if not local.verify_model(m, cache_dir)]
    if missing or local.runtime_version() is None:
        what = ", ".join(missing) if missing else "the llama.cpp runtime"
        raise CrescadeError(f"{what} not installed: run 'crescade local install --models {' '.join(names)}'")


def _ms(x: float | None) -> str:
    return f"{1000 * x:.0f} ms" if x is not None else "?"


def _s(x: float | None) -> str:
    return f"{x:.1f} s" if x is not None else "?"


def print_row(i: int, n: int, row: dict[str, Any]) -> None:
    """One query's account, as the live demo prints it."""
    prompt = " ".join(row["prompt"].split())
    print(f"\n[{i + 1}/{n}] {row['task']}: {prompt[:110]}{'…' if len(prompt) > 110 else ''}")
    print(f"  route: cluster {row['cluster']} -> {row['routed_model']}   (ladder: {' -> '.join(row['ladder'])})")
    for t in row["tiers"]:
        if t["error"]:
            verdict = f"failed: {t['error']}"
        elif t["p"] is None:
            verdict = "accepted (last tier)" if t["accepted"] else t["reason"]
        else:
            verdict = (f"QE p={t['p']:.2f} {'>=' if t['accepted'] else '<'} {t['threshold']:.2f}  "
                       f"{'accepted' if t['accepted'] else 'escalate'}")
        print(f"  tier {t['tier']} {t['model']:<20} {verdict:<40} {_s(t['latency_s'])}, TTFT {_s(t['ttft_s'])}, "
              f"TPOT {_ms(t['tpot_s'])}, {t['output_tokens']} tok")
    mark = "correct" if row["correct"] else f"WRONG (gold {row['reference']})"
    print(f"  answer: {row['answer']}   [{mark}]")
    print(f"  latency {_s(row['latency_s'])}  TTFT {_s(row['ttft_s'])}  TPOT {_ms(row['tpot_s'])}  "
          f"cost ${row['cost_usd']:.6f}  router overhead {_ms(row['overhead_s'])}", flush=True)


def run_live_demo(cascade: Cascade, *, n: int = 7, seed: int | None = None, max_tokens: int = 320,
                  cache_dir: str | Path | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Start the pool's local servers, run ``n`` fresh tasks through the cascade, print, stop the servers."""
    backend = live_backend(what="crescade demo --live")
    names: Sequence[str] = list(cascade.models_)
    check_installed(names, cache_dir)
    seed = secrets.randbelow(10**6) if seed is None else seed
    tasks = fresh_tasks(n, seed)
    how = getattr(backend, "description", "the live backend")
    print(f"crescade demo --live: {n} fresh tasks (seed {seed}) through {how}")
    print(f"starting {len(names)} llama.cpp server(s): {', '.join(names)}", flush=True)
    prices = local.proxy_prices(names)
    with local.LocalServers(names, cache_dir=cache_dir) as servers:
        try:
            rows = backend.run(cascade, servers.base_urls, tasks, api_key="sk-local", prices=prices,
                               max_tokens=max_tokens, timeout=timeout, on_row=lambda i, row: print_row(i, n, row))
        except ImportError as exc:
            raise CrescadeError(str(exc)) from None
    print("\nservers stopped.")
    _print_summary(rows)
    return rows


def _print_summary(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    k = len(rows)

    def mean(key: str) -> float:
        xs = [float(r[key]) for r in rows if r[key] is not None and math.isfinite(r[key])]
        return sum(xs) / len(xs) if xs else float("nan")

    answered: dict[str, int] = {}
    for r in rows:
        answered[r["model"]] = answered.get(r["model"], 0) + 1
    print(f"\n{sum(r['correct'] for r in rows)}/{k} correct; escalated {sum(r['escalated'] for r in rows)}/{k}; "
          f"answered by {', '.join(f'{m} {c}' for m, c in answered.items())}")
    print(f"mean latency {mean('latency_s'):.1f} s, mean TPOT {1000 * mean('tpot_s'):.0f} ms, "
          f"mean cost ${mean('cost_usd'):.6f}, mean router overhead {1000 * mean('overhead_s'):.1f} ms")
