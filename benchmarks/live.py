"""Live benchmark: the cascade vs always-strongest on real local models, and the same by replay.

    python benchmarks/live.py [--records PATH] [--quality-target 0.98] [--limit N] [--max-tokens 320]
                              [--out benchmarks/results] [--replay-only]

1. Fit the cascade on the train split of the recorded run (default: the one shipped with crescade).
2. Replay it on the test split: accuracy retention, relative cost, latency, TTFT p50/p95 and TPOT of the
   cascade vs always-strongest, from the recorded per-call timings (``crescade.evaluation.timing``).
3. Live: start one llama.cpp server per model, then for each test task (in the recorded order) stream it
   through ``CascadeChatModel`` over ``ChatOpenAI`` and through the strongest model's ``ChatOpenAI`` alone,
   alternating which goes first so drift hits both equally. Same measurements, plus the router's own
   overhead per query (wall time not spent inside a tier).

Writes ``<out>/live.json``. Needs ``crescade local install --models <the pool>`` and a quiet machine: the
servers share 2 cores, so anything else running inflates every timing.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from crescade import Cascade, Outcomes, __version__, read_records
from crescade.evaluation.timing import reduction, replay_timing, timing_summary
from crescade.tools.cli import find_default_records
from crescade.tools.collect import Example

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
TARGETS = {"retention": 0.97, "latency_reduction": 0.30, "tpot_reduction": 0.30}


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _examples(outcomes: Outcomes, limit: int | None) -> list[Example]:
    """The test tasks with their gold answers, from the generated suite the records were collected on."""
    from crescade.tools.tasks import default_task_suite

    by_id = {e.prompt_id: e for e in default_task_suite()}
    missing = [p for p in outcomes.prompt_ids if p not in by_id]
    if missing:
        raise SystemExit(f"live.py: {len(missing)} test prompt(s) are not in crescade's generated suite "
                         f"(e.g. {missing[0]!r}); the live run needs their gold answers")
    exs = [by_id[p] for p in outcomes.prompt_ids]
    return exs[:limit] if limit else exs


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    out = timing_summary(col("latency_s"), col("ttft_s"), col("tpot_s"))
    out["accuracy"] = float(np.mean([r["correct"] for r in rows]))
    out["cost_per_query_usd"] = float(np.nanmean(col("cost_usd")))
    if rows and "overhead_s" in rows[0]:
        over = np.array(col("overhead_s"))
        out["router_overhead_ms"] = {"mean": 1000 * float(over.mean()),
                                     "p50": 1000 * float(np.percentile(over, 50)),
                                     "p95": 1000 * float(np.percentile(over, 95))}
        out["escalation_rate"] = float(np.mean([r["escalated"] for r in rows]))
        answered: dict[str, int] = {}
        for r in rows:
            answered[r["model"]] = answered.get(r["model"], 0) + 1
        out["answered_by"] = answered
    return out


def live_run(cascade: Cascade, examples: list[Example], max_tokens: int) -> dict[str, Any]:
    from crescade.tools import local
    from crescade_langchain import CascadeChatModel
    from crescade_langchain.calibration import openai_compatible_models
    from crescade_langchain.live import run_example

    names = list(cascade.models_)
    strongest = names[cascade.strongest_]
    prices = local.proxy_prices(names)
    ours: list[dict[str, Any]] = []
    strong: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with local.LocalServers(names) as servers:
        children = openai_compatible_models(servers.base_urls, api_key="sk-local", max_tokens=max_tokens)
        model = CascadeChatModel(models=children, cascade=cascade, prices=prices)
        for child in children.values():  # load each model's weights once before timing anything
            child.invoke("Say OK.")
        for i, ex in enumerate(examples):
            order = ("cascade", "strong") if i % 2 == 0 else ("strong", "cascade")
            for who in order:
                if who == "cascade":
                    ours.append(run_example(model, ex))
                else:
                    strong.append(run_example(children[strongest], ex, name=strongest, card=prices[strongest]))
            c, s = ours[-1], strong[-1]
            print(f"[{i + 1}/{len(examples)}] {ex.prompt_id:<24} cascade {c['model']:<20} {c['latency_s']:5.1f} s "
                  f"{'ok ' if c['correct'] else 'bad'} | strong {s['latency_s']:5.1f} s "
                  f"{'ok' if s['correct'] else 'bad'}", flush=True)
    cs, ss = _summary(ours), _summary(strong)
    return {
        "n": len(examples), "wall_s": time.perf_counter() - t0, "always_strong_model": strongest,
        "cascade": cs, "always_strong": ss,
        "retention": cs["accuracy"] / ss["accuracy"] if ss["accuracy"] else None,
        "relative_cost": cs["cost_per_query_usd"] / ss["cost_per_query_usd"] if ss["cost_per_query_usd"] else None,
        "reduction": reduction(cs, ss),
        "rows": {"cascade": [{k: v for k, v in r.items() if k not in ("prompt", "response")} for r in ours],
                 "always_strong": [{k: v for k, v in r.items() if k not in ("prompt", "response")} for r in strong]},
    }


def _verdicts(block: dict[str, Any]) -> dict[str, bool | None]:
    red = block.get("reduction", {})
    ret = block.get("retention")
    return {"retention>=97%": None if ret is None else ret >= TARGETS["retention"],
            "latency>=30%_lower": (None if red.get("latency") is None
                                   else red["latency"] >= TARGETS["latency_reduction"]),
            "tpot>=30%_lower": None if red.get("tpot") is None else red["tpot"] >= TARGETS["tpot_reduction"]}


def _line(name: str, block: dict[str, Any]) -> str:
    c, s, red = block["cascade"], block["always_strong"], block["reduction"]
    return (f"{name:<7} retention {block['retention']:.3f}  cost x{block['relative_cost']:.2f}  "
            f"latency {c['mean_latency_s']:.2f} vs {s['mean_latency_s']:.2f} s ({100 * red['latency']:+.0f}% lower)  "
            f"TPOT {1000 * c['mean_tpot_s']:.0f} vs {1000 * s['mean_tpot_s']:.0f} ms "
            f"({100 * red['tpot']:+.0f}% lower)  "
            f"TTFT p50 {c['p50_ttft_s']:.2f} vs {s['p50_ttft_s']:.2f} s, p95 {c['p95_ttft_s']:.2f} vs "
            f"{s['p95_ttft_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", help="recorded run with train/test splits (default: the one shipped)")
    ap.add_argument("--quality-target", type=float, default=0.98)
    ap.add_argument("--limit", type=int, help="live: only the first N test tasks")
    ap.add_argument("--max-tokens", type=int, default=320, help="answer cap, as in the recorded run (320)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--replay-only", action="store_true")
    args = ap.parse_args(argv)

    path = Path(args.records) if args.records else find_default_records()[0]
    outcomes = Outcomes.from_records(read_records(path, incomplete="drop"))
    train, test = outcomes.split("train"), outcomes.split("test")
    t0 = time.perf_counter()
    cascade = Cascade(quality_target=args.quality_target, progress=False).fit(train)
    fit_s = time.perf_counter() - t0
    replay = replay_timing(cascade, test)
    result: dict[str, Any] = {
        "records": str(path.name), "prompts": {"train": train.n_prompts, "test": test.n_prompts},
        "models": list(cascade.models_), "quality_target": args.quality_target, "fit_s": fit_s,
        "n_clusters": int(cascade.n_clusters_), "targets": TARGETS,
        "replay": {**replay, "meets": _verdicts(replay)},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "crescade": __version__},
    }
    print(_line("replay", replay))
    if not args.replay_only:
        live = live_run(cascade, _examples(test, args.limit), args.max_tokens)
        result["live"] = {**live, "meets": _verdicts(live)}
        print(_line("live", live))
        print(f"router overhead per query: {live['cascade']['router_overhead_ms']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "live.json" if not args.replay_only else "live-replay.json"
    (out / name).write_text(json.dumps(_clean(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
