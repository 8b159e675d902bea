"""Reliability figures: load under injected faults and fuzzing of the file readers, as the tests run them.

    python benchmarks/reliability.py [--requests 2000] [--concurrency 50] [--fault-rate 0.2] [--fuzz 10000]
                                     [--out benchmarks/results]

1. Load, per adapter: ``--requests`` mixed sync / async / streaming requests at ``--concurrency`` through a
   cascade whose tiers are wrapped in ``FaultInjecting*`` models faulting ``--fault-rate`` of the child calls
   (timeouts, 429s with and without Retry-After, 5xx, resets, malformed and empty answers, hangs, broken and
   stalled streams, slow answers). Counts answered / clear errors / lost / duplicated requests, and checks
   every account against what the children delivered (``tests/reliability/harness.py``).
2. Fuzzing: ``--fuzz`` mutated record files and ``--fuzz`` damaged artifacts (``tests/reliability/fuzz.py``).

Writes ``<out>/reliability.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests")]

import harness  # noqa: E402
from fuzz import fuzz_artifacts, fuzz_records  # noqa: E402
from synthetic_records import ACCURACY, MODELS, PRICE_PER_MTOK, card, make_cascade, make_prompts, make_records  # noqa: E402

from crescade import Outcomes, __version__  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--fuzz", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    result: dict[str, Any] = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                                          "crescade": __version__}, "load": {}, "fuzz": {}}
    for name, run in (("langchain", harness.run_langchain), ("llamaindex", harness.run_llamaindex)):
        res = run(n=args.requests, concurrency=args.concurrency, fault_rate=args.fault_rate, seed=args.seed)
        result["load"][name] = res.to_dict()
        print(f"load {name:<10} {res.requests} requests in {res.wall_s:.1f} s: {res.answered} answered, "
              f"{res.clear_errors} clear errors, lost {res.lost}, duplicated {res.duplicated}, "
              f"{sum(res.faults_injected.values())} faults in {res.child_calls} child calls, "
              f"account mismatches {len(res.mismatches)}, ok={res.ok}", flush=True)

    prompts = make_prompts()
    recs = [r for s, m in enumerate(MODELS) for r in make_records(m, ACCURACY[m], PRICE_PER_MTOK[m], prompts,
                                                                   seed=100 + s)]
    prices = {m: card(m, p) for m, p in PRICE_PER_MTOK.items()}
    cascade = make_cascade().fit(Outcomes.from_records(recs).split("train"))
    few = [r for r in recs if int(r.prompt_id[1:]) < 40]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for fz in (fuzz_records(few, prices, Path(d), args.fuzz, seed=1),
                   fuzz_artifacts(cascade, Path(d), args.fuzz, seed=2)):
            result["fuzz"][fz.target] = fz.to_dict()
            print(f"fuzz {fz.target:<15} {fz.inputs} inputs in {fz.wall_s:.1f} s: {fz.accepted} accepted, "
                  f"rejected {dict(fz.rejected)}, escaped {len(fz.escaped)}, slow {len(fz.slow)}, "
                  f"code ran: {fz.code_ran}", flush=True)
        result["fuzz_wall_s"] = time.perf_counter() - t0
    result["ok"] = all(v["ok"] for v in result["load"].values()) and all(v["ok"] for v in result["fuzz"].values())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {out / 'reliability.json'} (ok={result['ok']})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
