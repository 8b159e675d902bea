"""Routing benchmark: crescade vs baselines on the shared recorded outcomes, plus system numbers.

    python benchmarks/routing.py [--data DIR] [--out benchmarks/results] [--n-boot 1000]
                                 [--only routerbench-3task ...] [--skip-system]

For each dataset: fit every policy on the train split, replay on the test split, write
``<out>/routing-<name>.json`` (the report, the target table, beats-baselines) and ``routing-<name>.png``,
and print the table. Then ``<out>/system.json``: calibration time, plan+judge latency, batched plan
throughput, artifact size and the peak RSS of a fresh serving process (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import cre_baseline  # benchmarks/cre_baseline.py (this folder is on sys.path)
import numpy as np

from crescade import Answer, Cascade, Outcomes, __version__
from crescade.evaluation.evaluate import EvalReport, beats_baselines, evaluate
from crescade.evaluation.metrics import latency_summary

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmarks" / "results"

# name -> (file, incomplete rows policy, goals: retention target -> max cost ratio (None: no goal set))
DATASETS: dict[str, tuple[str, str, dict[float, float] | None]] = {
    # goals: issue 11's cost-ratio targets at these retention levels
    "routerbench-3task": ("routerbench-3task.csv.gz", "drop", {0.97: 0.25, 0.99: 0.55}),
    "routellm-gsm8k": ("routellm-gsm8k.csv.gz", "error", {0.97: 0.38, 0.99: 0.45}),
    "routellm-mmlu": ("routellm-mmlu.csv.gz", "error", {0.97: 0.60}),
    # the run `crescade demo` ships (an absolute path: it is not in the shared data folder)
    "local-run": (str(Path(__file__).resolve().parents[1] / "core" / "data" / "default-records.jsonl.gz"), "drop",
                  None),
}
SYSTEM_DATASET = "routerbench-3task"
N_LATENCY = 500
N_SERVE = 1000


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/inf -> None, numpy scalars -> Python, float keys -> strings."""
    if isinstance(obj, dict):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _load(data: Path, name: str) -> Outcomes:
    file, incomplete, _ = DATASETS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = Outcomes.load(data / file, incomplete=incomplete)  # type: ignore[arg-type]
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    return out


def target_table(report: EvalReport, goals: dict[float, float]) -> list[dict[str, Any]]:
    """Goal check per retention target, two ways: the cheapest test point on crescade's curve (the knob
    chosen with hindsight on test) and the knob set to the target on train (what a user deploys)."""
    cres = report.policy("crescade")
    rows = []
    for t, goal in goals.items():
        curve_cost = cres.cost_at[t]
        cal = cres.calibrated_at[t]
        rows.append({
            "retention_target": t, "max_cost_ratio": goal,
            "curve_cost_ratio": curve_cost, "curve_cost_ratio_hull": cres.cost_at_hull[t],
            "met_on_curve": bool(not math.isnan(curve_cost) and curve_cost <= goal),
            "calibrated_retention": cal["retention"], "calibrated_cost_ratio": cal["cost_ratio"],
            "met_calibrated": bool(cal["retention"] >= t - 1e-12 and cal["cost_ratio"] <= goal),
        })
    return rows


def _fmt_targets(rows: list[dict[str, Any]]) -> str:
    def f(v: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.3f}"

    out = [f"{'retention':>9} {'goal':>6} {'curve':>7} {'met':>4} | "
           f"{'knob=t: retention':>17} {'cost':>6} {'met':>4}"]
    for r in rows:
        out.append(f"{r['retention_target']:>9.2f} {r['max_cost_ratio']:>6.2f} {f(r['curve_cost_ratio']):>7} "
                   f"{'yes' if r['met_on_curve'] else 'no':>4} | {f(r['calibrated_retention']):>17} "
                   f"{f(r['calibrated_cost_ratio']):>6} {'yes' if r['met_calibrated'] else 'no':>4}")
    return "\n".join(out)


def _cre_router(train: Outcomes, test: Outcomes, report: EvalReport) -> dict[str, Any]:
    """The paper's own Stage 1 (benchmarks/cre_baseline.py) and whether crescade also beats it."""
    if not cre_baseline.available():
        print(f"cre-router not installed, its Stage 1 is not compared: {cre_baseline.INSTALL}")
        return {"cre_router_stage1": {"skipped": f"not installed: {cre_baseline.INSTALL}"}}
    targets = [float(t) for t in report.meta["targets"]]
    cre = cre_baseline.run(train, test, targets)
    cres = report.policy("crescade").cost_at
    beats = beats_baselines(report)
    both = {}
    for t in targets:
        theirs, mine = cre["cost_at"][str(t)], cres[t]
        both[str(t)] = bool(beats[t] and (theirs is None or (not math.isnan(mine) and mine <= theirs + 1e-12)))
    print(f"cre-router Stage 1 (k={cre['k']}): cost@target " +
          ", ".join(f"{t:g}: {'-' if v is None else f'{v:.3f}'}" for t, v in
                    ((float(k), v) for k, v in cre["cost_at"].items())))
    print(f"beats every baseline including cre-router: {both}")
    return {"cre_router_stage1": cre, "beats_baselines_with_cre_router": both}


def run_dataset(name: str, data: Path, out: Path, n_boot: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    outcomes = _load(data, name)
    train, test = outcomes.split("train"), outcomes.split("test")
    report = evaluate(train, test, n_boot=n_boot, name=name)
    goals = DATASETS[name][2]
    targets = target_table(report, goals) if goals else []
    result = {
        "dataset": name, "file": DATASETS[name][0], "crescade_version": __version__,
        "runtime_seconds": time.perf_counter() - t0,
        "beats_baselines": beats_baselines(report),
        "beats_baselines_hull": beats_baselines(report, hull=True),
        "target_table": targets,
        "target_table_note": "curve: cheapest test point of crescade's knob sweep (hindsight knob); knob=t: "
                             "quality_target=t set on train, replayed on test (met: retention >= t and cost "
                             "ratio <= goal)",
        "report": report.to_dict(),
    }
    result.update(_cre_router(train, test, report))
    _write_json(out / f"routing-{name}.json", result)
    report.plot(out / f"routing-{name}.png")
    print(report.table())
    print(f"beats every baseline at cost@target (observed points): {_clean(result['beats_baselines'])}")
    if targets:
        print("issue targets (cost ratio at retention):")
        print(_fmt_targets(targets))
    print(f"[{name}: {result['runtime_seconds']:.0f} s]\n", flush=True)
    return result


# ----------------------------------------------------------------------------------- system numbers

_SERVE_SCRIPT = r"""
import json, resource, sys, time
from crescade import Answer, Cascade

def peak_mb():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024

def vm_hwm_mb():
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None

after_import = peak_mb()
artifact, queries_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(queries_path, encoding="utf-8") as fh:
    queries = json.load(fh)
after_queries = peak_mb()
t0 = time.perf_counter()
cascade = Cascade.load(artifact)
load_s = time.perf_counter() - t0
after_load = peak_mb()
t0 = time.perf_counter()
for i in range(n):
    q = queries[i % len(queries)]
    plan = cascade.plan(q["prompt"])
    text, finish, logprob = q["answers"][plan.ladder[0]]
    cascade.judge(q["prompt"], Answer(text=text, model=plan.ladder[0], finish_reason=finish,
                                      logprob_mean=logprob), plan=plan, tier=0)
serve_s = time.perf_counter() - t0
print(json.dumps({"peak_rss_mb_after_import": after_import, "peak_rss_mb_after_queries": after_queries,
                  "peak_rss_mb_after_load": after_load, "peak_rss_mb": peak_mb(), "vm_hwm_mb": vm_hwm_mb(),
                  "load_seconds": load_s, "serve_seconds": serve_s, "calls": n}))
"""
# Linux carries the parent's peak RSS into ru_maxrss across fork+exec: start the serving process from a
# small trampoline process so that getrusage measures the serving process, not this benchmark.
_TRAMPOLINE = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def _answer(test: Outcomes, i: int, model: str) -> Answer:
    j = test.models.index(model)
    lp = float(test.logprob_mean[i, j])
    return Answer(text=test.responses[i][j], model=model, finish_reason=test.finish_reason[i][j],
                  logprob_mean=lp if math.isfinite(lp) else None)


def system_numbers(data: Path, out: Path) -> dict[str, Any]:
    outcomes = _load(data, SYSTEM_DATASET)
    train, test = outcomes.split("train"), outcomes.split("test")

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    cascade = Cascade(progress=False).fit(train)
    calib_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    rows = rng.choice(test.n_prompts, size=min(N_LATENCY, test.n_prompts), replace=False)
    for i in rows[:20]:  # warm-up (first-call overheads), not measured
        p = cascade.plan(test.prompts[i])
        cascade.judge(test.prompts[i], _answer(test, i, p.ladder[0]), plan=p, tier=0)
    plan_s, judge_s, total_s, gated = [], [], [], 0
    for i in rows:
        q = test.prompts[i]
        t_a = time.perf_counter()
        p = cascade.plan(q)
        t_b = time.perf_counter()
        cascade.judge(q, _answer(test, i, p.ladder[0]), plan=p, tier=0)
        t_c = time.perf_counter()
        plan_s.append(t_b - t_a)
        judge_s.append(t_c - t_b)
        total_s.append(t_c - t_a)
        gated += len(p.ladder) > 1

    def ms(values: list[float]) -> dict[str, float]:
        s = latency_summary(values)
        return {"p50_ms": 1000 * s["p50"], "p95_ms": 1000 * s["p95"], "mean_ms": 1000 * s["mean"],
                "n": s["n"]}

    batch_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        cascade.plan_batch(test.prompts)
        batch_times.append(time.perf_counter() - t0)
    batch_s = float(np.median(batch_times))

    with tempfile.TemporaryDirectory() as tmp:
        art = Path(tmp) / "artifact"
        cascade.save(art)
        files = {str(f.relative_to(art)): f.stat().st_size for f in sorted(art.rglob("*")) if f.is_file()}
        queries = []
        for i in range(test.n_prompts):
            answers = {}
            for j, m in enumerate(test.models):
                lp = float(test.logprob_mean[i, j])
                answers[m] = [test.responses[i][j], test.finish_reason[i][j],
                              lp if math.isfinite(lp) else None]
            queries.append({"prompt": test.prompts[i], "answers": answers})
        qpath = Path(tmp) / "queries.json"
        qpath.write_text(json.dumps(queries), encoding="utf-8")
        env = {**os.environ, "CRESCADE_PROGRESS": "0"}
        cmd = [sys.executable, "-c", _TRAMPOLINE, sys.executable, "-c", _SERVE_SCRIPT, str(art), str(qpath),
               str(N_SERVE)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        serve = json.loads(proc.stdout.strip().splitlines()[-1])

    result = {
        "dataset": SYSTEM_DATASET, "crescade_version": __version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "n_train": train.n_prompts,
        "n_test": test.n_prompts, "n_models": train.n_models,
        "n_clusters": getattr(cascade, "n_clusters_", None),
        "calibration_seconds": calib_s, "load_average_before_calibration": load_before,
        "latency": {"queries": len(rows), "gated_share": gated / len(rows), "plan": ms(plan_s),
                    "judge": ms(judge_s), "plan_plus_judge": ms(total_s)},
        "batched_plan": {"queries": test.n_prompts, "seconds_median_of_3": batch_s,
                         "decisions_per_second": test.n_prompts / batch_s},
        "artifact": {"bytes": sum(files.values()), "files": files},
        "serving_process": serve,
    }
    _write_json(out / "system.json", result)
    lat = result["latency"]["plan_plus_judge"]
    print(f"system ({SYSTEM_DATASET}): calibration {calib_s:.1f} s; plan+judge p50 {lat['p50_ms']:.2f} ms, "
          f"p95 {lat['p95_ms']:.2f} ms ({result['latency']['gated_share']:.0%} of plans gated); batched plan "
          f"{result['batched_plan']['decisions_per_second']:,.0f} decisions/s; artifact "
          f"{result['artifact']['bytes'] / 1e6:.2f} MB; serving process peak RSS "
          f"{serve['peak_rss_mb']:.0f} MB "
          f"({serve['peak_rss_mb_after_import']:.0f} MB after import, "
          f"{serve['peak_rss_mb_after_queries']:.0f} MB after loading the test queries)")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the shared data files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON and PNG results")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    ap.add_argument("--only", nargs="+", choices=sorted(DATASETS), help="run only these datasets")
    ap.add_argument("--skip-system", action="store_true", help="do not measure the system numbers")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(DATASETS):
        run_dataset(name, args.data, args.out, args.n_boot)
    if not args.skip_system:
        system_numbers(args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
