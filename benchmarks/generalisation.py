"""Generalisation check: calibrate on some tasks, report on a task the cascade never saw.

    python benchmarks/generalisation.py [--data DIR] [--out benchmarks/results] [--n-boot 200]

Leave-one-task-out on routerbench-3task (calibrate on the train split of two tasks, report on the test
split of the third) and on the shipped local run's task families (calibrate on the other six families).
Every policy of ``crescade.evaluation.evaluate`` is fitted the same way, with the same defaults as
everywhere else (nothing is set per data set). Writes ``<out>/generalisation.json`` and prints a table:
per held-out task, each policy's cost ratio at 95/97/98/99% retention on the held-out test curve, and
whether crescade is at or below every baseline there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from crescade import Outcomes
from crescade.evaluation.evaluate import beats_baselines, evaluate
from crescade.tools.cli import find_default_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
POLICIES = ("crescade", "stage1-only", "stage2-only", "knn", "learned-router", "zero-router")
LEVELS = ("0.95", "0.97", "0.98", "0.99")


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def leave_one_task_out(name: str, outcomes: Outcomes, n_boot: int) -> list[dict[str, Any]]:
    """One evaluation per task: train on the other tasks' train split, test on this task's test split."""
    tasks = np.array(outcomes.tasks)
    splits = np.array(outcomes.splits)
    rows = []
    for task in sorted(set(tasks.tolist())):
        train = outcomes.subset((tasks != task) & (splits == "train"))
        test = outcomes.subset((tasks == task) & (splits == "test"))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = evaluate(train, test, n_boot=n_boot, name=f"{name} without {task}", progress=False)
        policies = {p.name: p for p in report.policies}
        row = {
            "data": name, "held_out_task": task, "n_train": train.n_prompts, "n_test": test.n_prompts,
            "strongest": report.meta["strongest"], "seconds": time.perf_counter() - t0,
            "cost_at": {n: {lvl: policies[n].cost_at[float(lvl)] for lvl in LEVELS} for n in POLICIES},
            "crescade_calibrated": {lvl: {k: policies["crescade"].calibrated_at[float(lvl)][k]
                                          for k in ("retention", "cost_ratio")} for lvl in LEVELS},
            "crescade_family": policies["crescade"].info["train_expected"].get("family"),
            "beats_baselines": {str(k): v for k, v in beats_baselines(report).items()},
        }
        rows.append(row)
        _print_row(row)
    return rows


def _print_row(row: dict[str, Any]) -> None:
    def f(v: float | None) -> str:
        return "  -  " if v is None or not math.isfinite(v) else f"{v:.3f}"

    print(f"\n{row['data']}: held out {row['held_out_task']} ({row['n_train']} train / {row['n_test']} test "
          f"prompts; crescade plan family {row['crescade_family']})")
    print(f"  {'policy':16s} " + " ".join(f"c@{lvl[2:]:>4s}" for lvl in LEVELS))
    for name in POLICIES:
        print(f"  {name:16s} " + " ".join(f"{f(row['cost_at'][name][lvl]):>6s}" for lvl in LEVELS))
    print("  crescade at or below every baseline: " +
          ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in row["beats_baselines"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()
    rows = leave_one_task_out(
        "routerbench-3task", Outcomes.load(args.data / "routerbench-3task.csv.gz", incomplete="drop"), args.n_boot)
    local, _ = find_default_records()
    rows += leave_one_task_out("shipped local run", Outcomes.load(local, incomplete="drop"), args.n_boot)
    wins = {lvl: sum(bool(r["beats_baselines"][str(float(lvl))]) for r in rows) for lvl in LEVELS}
    summary = {"held_out_evaluations": len(rows), "crescade_at_or_below_every_baseline": wins}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "generalisation.json"
    path.write_text(json.dumps(_clean({"summary": summary, "rows": rows}), indent=1, allow_nan=False) + "\n")
    print(f"\n{summary}\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
