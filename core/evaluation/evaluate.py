"""Replay evaluation: crescade against baselines on held-out recorded outcomes, in one report.

Every policy is fitted on the train outcomes only and replayed on the test outcomes. Policies:
crescade (the full cascade), a Stage-1-only cluster router (``max_depth=1``), a Stage-2-only cascade
(FrugalGPT-style: one cluster, cheapest model → quality estimator → strongest), a kNN router, a learned
router (per model, logistic P(correct | query embedding), RouteLLM/RouterDC-style), every single model,
random mixing (RouterBench's Zero router) and the per-prompt oracle. The routers' λ sweeps end at
always-strongest, the top of any router's range.

Conventions (also written into :attr:`EvalReport.meta`):

* "strongest" is the model most accurate on train; "weak" is the model with the least mean train cost
  (on a tie, the least accurate of the cheapest); APGR/CPT are undefined when the two are equally accurate.
* retention = test accuracy / the strongest model's test accuracy; cost ratio = mean test cost / the
  strongest model's mean test cost (both on the same prompts, so also per bootstrap resample).
* A curve is the list of test operating points of a policy's knob sweep: ``Cascade.retarget`` over the
  quality targets in ``sweep`` for the cascades, λ for the kNN router, the mixing weight for the Zero
  router (scored in expectation). Single models and the oracle are one point each.
* cost@X: the cost ratio of the cheapest curve point with retention ≥ X (``hull=False``), and along the
  curve's NDCH (``hull=True``, mixing two knob settings per query). The Zero router's points are
  mixtures, so both of its variants are the hull value.
* AIQ: RouterBench ``calc_AIQ`` on (cost ratio, test accuracy): area under each policy's NDCH over the
  common interval ``[0, c_max]`` divided by ``c_max``; the hull is extended flat to ``c_max`` and counts as
  quality 0 left of the policy's cheapest point; ``c_max`` = the largest cost ratio of any policy's point.
  ``aiq_anchored`` adds the weak model's point to every curve (a knob range that stops short of the cheap
  end is then not scored as quality 0 there).
* APGR and CPT: RouteLLM's definitions with the strong-call share (% of prompts on which the strongest
  model is called) as the x axis, weak = the cheapest model and strong = the strongest (this generalises
  RouteLLM's two-model setting to any pool: money spent on middle models is not on this axis, so the cost
  ratio is the primary cost measure). Each curve is anchored at (0 %, weak accuracy) and (100 %, strong
  accuracy), both reachable by mixing with a single model, and the running maximum of accuracy is used.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import ConfigError, PoolError
from ..common.jsonsafe import json_safe
from ..common.progress import Progress
from ..engine.cascade import Cascade, ReplayResult
from ..engine.records import Outcomes
from ..engine.units import check_unit, in_unit
from .baselines import DEFAULT_LAMBDAS, KnnRouter, LearnedRouter, mix_for_quality, random_mix, single_model
from .metrics import aiq, apgr, bootstrap_indices, cost_at_quality, cpt, ndch, oracle

__all__ = ["CPT_LEVELS", "POINT_METRICS", "EvalReport", "PolicyReport", "beats_baselines", "evaluate"]

POINT_METRICS: tuple[str, ...] = (
    "accuracy", "retention", "cost_ratio", "usd_per_1k", "escalation_rate", "strong_call_share")
CPT_LEVELS: tuple[int, ...] = (50, 80, 95)
DEFAULT_SWEEP = np.round(np.arange(0.80, 1.0001, 0.001), 3)
"""Quality targets of the cascades' curves: fine enough to reach every distinct plan the knob can choose (the
routers' curves have 98 λ values); the curve keeps one point per distinct plan."""
CASCADES = ("crescade", "stage1-only", "stage2-only")
BASELINE_KINDS = ("cascade", "router", "single", "mix")

CONVENTIONS: dict[str, str] = {
    "strongest": "the model most accurate on train; retention and cost ratio are relative to its test "
                 "accuracy and its mean test cost",
    "weak": "the model with the least mean train cost, the least accurate of them on a tie (RouteLLM's weak "
            "model for APGR/CPT); APGR and CPT are undefined (null) when weak and strong are equally accurate",
    "cost_at": "cost ratio of the cheapest observed test curve point with retention >= target; NaN/None if "
               "no point reaches it (zero-router: its mixing hull)",
    "cost_at_hull": "same along the curve's non-decreasing convex hull (mixing two knob settings per query)",
    "calibrated_at": "knob set on train for the target (cascades: retarget, knn: leave-one-out lambda, "
                     "zero-router: train mixing weights), then replayed on test",
    "aiq": "RouterBench calc_AIQ on (cost ratio, test accuracy) over the common interval [0, c_max]: hull "
           "extended flat to c_max, zero left of a policy's cheapest point, divided by c_max",
    "aiq_anchored": "the same AIQ after adding the weak model's single point to every curve (a policy can "
                    "always fall back to the cheapest model), so a knob sweep that stops short of the cheap "
                    "end is not scored as quality 0 there",
    "apgr_cpt": "RouteLLM APGR and CPT(50/80/95 %) with x = % of prompts calling the strongest model, weak = "
                "cheapest model; curves anchored at (0 %, weak acc) and (100 %, strong acc), running max of "
                "accuracy; strong-call share ignores money spent on middle models",
    "ci": "95 % percentile bootstrap over test prompts (paired: the strongest model is resampled with the "
          "policy)",
    "zero-router": "random mixing of single models scored in expectation; curve = NDCH of the test "
                   "single-model points (RouterBench), calibrated point = mixing weights chosen on train",
}


@dataclass
class PolicyReport:
    """One policy's test results (plain data)."""

    name: str
    kind: str                                # "cascade" | "router" | "single" | "mix" | "oracle"
    point: dict[str, float]                  # POINT_METRICS at the calibrated knob
    ci: dict[str, tuple[float, float]]       # bootstrap 95 % CI of every POINT_METRICS entry
    curve: list[dict[str, Any]]              # test operating points (knob + POINT_METRICS)
    cost_at: dict[float, float]              # retention target -> cost ratio (cheapest observed point)
    cost_at_hull: dict[float, float]         # retention target -> cost ratio along the NDCH
    calibrated_at: dict[float, dict[str, Any]]  # retention target -> test point of the train-set knob
    aiq: float
    apgr: float
    cpt: dict[int, float]                    # PGR level (%) -> strong-call %
    info: dict[str, Any] = field(default_factory=dict)
    aiq_anchored: float = math.nan           # AIQ with the weak model's point added to the curve


@dataclass
class EvalReport:
    """The evaluation of every policy on one test set (plain data, JSON-ready via :meth:`to_dict`)."""

    meta: dict[str, Any]
    policies: list[PolicyReport]
    cascade: Cascade | None = field(default=None, repr=False, compare=False)  # crescade fitted on train

    def policy(self, name: str) -> PolicyReport:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(f"no policy {name!r}; have {[p.name for p in self.policies]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; NaN and infinities become ``None``, numeric keys become strings."""
        return json_safe({"meta": self.meta, "policies": [p.__dict__ for p in self.policies]})

    def table(self) -> str:
        """Fixed-width text table: one row per policy, at the calibrated knob and from the test curve."""
        targets = list(self.meta["targets"])
        cols = ["retention", "cost ratio", "$/1k", "escal.", "strong", *[f"c@{_pct(t)}" for t in targets],
                "AIQ", "APGR"]
        width = max(len("policy"), *(len(p.name) for p in self.policies))
        head = f"{'policy':<{width}}" + "".join(f"{c:>11}" for c in cols)
        lines = [
            f"{self.meta.get('name') or 'evaluation'}: {self.meta['n_test']} test prompts, "
            f"strongest {self.meta['strongest']} (test accuracy {self.meta['strongest_test_accuracy']:.3f}, "
            f"${1000 * self.meta['strongest_test_usd_per_query']:.3f}/1k), knob quality_target="
            f"{self.meta['quality_target']}",
            head, "-" * len(head)]
        for p in self.policies:
            pt = p.point
            vals = [pt["retention"], pt["cost_ratio"], pt["usd_per_1k"], pt["escalation_rate"],
                    pt["strong_call_share"], *[p.cost_at[t] for t in targets], p.aiq, p.apgr]
            lines.append(f"{p.name:<{width}}" + "".join(f"{_fmt(v):>11}" for v in vals))
        c_max = self.meta["aiq_interval"][1]
        lines.append("retention..strong: test, at the calibrated knob. c@X: cost ratio of the cheapest test "
                     f"point with retention >= X. AIQ over cost ratio [0, {c_max:.3f}]. "
                     "APGR on strong-call share.")
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str | None = None) -> None:
        """Cost–quality PNG: router curves, single models, oracle, crescade's calibrated point (log x)."""
        from .plot import cost_quality_plot

        curves = {}
        points = {}
        for p in self.policies:
            if p.kind in ("cascade", "router", "mix") and p.curve:
                curves[p.name] = ([c["cost_ratio"] for c in p.curve], [c["accuracy"] for c in p.curve])
            elif p.kind in ("single", "oracle"):
                short = p.name.rsplit("/", 1)[-1]  # "org/model" -> "model": a narrower legend
                points[short if short not in points else p.name] = (p.point["cost_ratio"], p.point["accuracy"])
        cres = self.policy("crescade")
        points[f"crescade @ q={self.meta['quality_target']}"] = (cres.point["cost_ratio"],
                                                                 cres.point["accuracy"])
        s_acc = self.meta["strongest_test_accuracy"]
        refs = {f"{r}% of {self.meta['strongest']}": r / 100 * s_acc for r in (97, 99)}
        cost_quality_plot(
            path, curves=curves, points=points, reference_lines=refs, log_x=True,
            title=title or f"{self.meta.get('name') or 'evaluation'}: test cost vs accuracy "
                           f"(n={self.meta['n_test']})",
            x_label=f"cost relative to always-{self.meta['strongest']} (log)", y_label="test accuracy")


def beats_baselines(report: EvalReport, targets: Sequence[float] | None = None, *,
                    hull: bool = False) -> dict[float, bool]:
    """Per retention target: crescade's cost@target ≤ every baseline's (the oracle is no baseline).

    An unreachable target (NaN) counts as worse than any reachable one; crescade unreachable is False.
    """
    ts = list(report.meta["targets"] if targets is None else targets)
    cres = report.policy("crescade")
    out = {}
    for t in ts:
        mine = (cres.cost_at_hull if hull else cres.cost_at)[t]
        ok = not math.isnan(mine)
        for p in report.policies:
            if p.name == "crescade" or p.kind not in BASELINE_KINDS:
                continue
            theirs = (p.cost_at_hull if hull else p.cost_at)[t]
            if ok and not math.isnan(theirs) and mine > theirs:
                ok = False
        out[t] = ok
    return out


# ----------------------------------------------------------------------------------- evaluation


@dataclass
class _Run:
    """Per-prompt arrays of one policy setting on test."""

    correct: np.ndarray
    cost: np.ndarray
    strong: np.ndarray      # strong-call indicator (or expected share for mixtures)
    escalated: np.ndarray

    @classmethod
    def of_replay(cls, r: ReplayResult) -> _Run:
        return cls(r.correct.astype(float), r.cost.astype(float), r.strong_call.astype(float),
                   r.escalated.astype(float))

    @classmethod
    def routed(cls, correct: np.ndarray, cost: np.ndarray, strong: np.ndarray) -> _Run:
        return cls(np.asarray(correct, dtype=float), np.asarray(cost, dtype=float),
                   np.asarray(strong, dtype=float), np.zeros(len(correct)))


@dataclass
class _Ref:
    strong_correct: np.ndarray
    strong_cost: np.ndarray
    acc: float
    cost: float


def _point(run: _Run, ref: _Ref, knob: float | None = None) -> dict[str, Any]:
    acc, cost = float(run.correct.mean()), float(run.cost.mean())
    out: dict[str, Any] = {} if knob is None else {"knob": float(knob)}
    out.update(accuracy=acc, retention=acc / ref.acc if ref.acc > 0 else math.nan,
               cost_ratio=cost / ref.cost if ref.cost > 0 else math.nan, usd_per_1k=1000.0 * cost,
               escalation_rate=float(run.escalated.mean()), strong_call_share=float(run.strong.mean()))
    return out


def _bootstrap(run: _Run, idx: np.ndarray, ref_means: tuple[np.ndarray, np.ndarray]
               ) -> dict[str, tuple[float, float]]:
    s_acc, s_cost = ref_means
    acc, cost = run.correct[idx].mean(axis=1), run.cost[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = {"accuracy": acc, "retention": acc / s_acc, "cost_ratio": cost / s_cost,
                 "usd_per_1k": 1000.0 * cost, "escalation_rate": run.escalated[idx].mean(axis=1),
                 "strong_call_share": run.strong[idx].mean(axis=1)}
    out = {}
    for k, v in stats.items():
        lo, hi = np.quantile(v, [0.025, 0.975]) if np.isfinite(v).all() else (math.nan, math.nan)
        out[k] = (float(lo), float(hi))
    return out


def _routellm(curve: list[dict[str, Any]], acc_weak: float, acc_strong: float
              ) -> tuple[float, dict[int, float]]:
    if acc_strong == acc_weak or not curve:
        return math.nan, {lvl: math.nan for lvl in CPT_LEVELS}
    x = np.array([0.0, *(100.0 * c["strong_call_share"] for c in curve), 100.0])
    y = np.array([acc_weak, *(c["accuracy"] for c in curve), acc_strong])
    order = np.lexsort((y, x))
    x, y = x[order], np.maximum.accumulate(y[order])
    a = apgr(x, y, acc_weak, acc_strong)
    return a, {lvl: cpt(x, y, acc_weak, acc_strong, lvl / 100.0) for lvl in CPT_LEVELS}


def _check_inputs(train: Outcomes, test: Outcomes, quality_target: float, targets: Sequence[float],
                  sweep: Sequence[float], n_boot: int) -> Outcomes:
    for name, v in (("quality_target", quality_target), *(("targets", t) for t in targets),
                    *(("sweep", s) for s in sweep)):
        if not (isinstance(v, (int, float, np.number)) and 0.0 < float(v) <= 2.0):
            raise ConfigError(f"{name} values must be numbers in (0, 2], got {v!r}")
    if not targets or not len(sweep):
        raise ConfigError("targets and sweep must not be empty")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ConfigError(f"n_boot must be a positive int, got {n_boot!r}")
    for name, o in (("train", train), ("test", test)):
        if not (np.isfinite(o.correct).all() and np.isfinite(o.cost).all()):
            raise ConfigError(f"{name} outcomes must be complete (load with incomplete='drop')")
    missing = [m for m in train.models if m not in test.models]
    if missing:
        raise PoolError(f"the test outcomes lack model(s) {missing}")
    return test if test.models == train.models else test.select_models(train.models)


def evaluate(
    train: Outcomes, test: Outcomes, *, params: Mapping[str, Any] | None = None, quality_target: float = 0.98,
    targets: Sequence[float] = (0.95, 0.97, 0.98, 0.99), sweep: Sequence[float] | np.ndarray = DEFAULT_SWEEP,
    n_boot: int = 1000, seed: int = 0, progress: bool = True, knn_k: int = 20,
    lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS, name: str = "",
) -> EvalReport:
    """Fit crescade and the baselines on ``train`` only, replay them on ``test``, and report.

    ``params`` go to every :class:`~crescade.Cascade` (``quality_target`` / ``cost_target`` are set here).
    ``targets`` are retention levels for cost@target; ``sweep`` the quality targets of the cascade curves;
    ``lambdas`` the kNN router's λ grid. ``name`` labels the report (e.g. the dataset).
    """
    targets = [float(t) for t in targets]
    sweep = [float(q) for q in sweep]
    test = _check_inputs(train, test, quality_target, targets, sweep, n_boot)
    unit = dict(params or {}).get("cost_unit", "usd")
    check_unit(unit)
    train, test = in_unit(train, unit), in_unit(test, unit)  # every policy's cost in the knob's unit
    models = list(train.models)
    s = int(np.argmax(train.correct.mean(axis=0)))
    train_cost, train_acc = train.cost.mean(axis=0), train.correct.mean(axis=0)
    cheapest = np.flatnonzero(np.isclose(train_cost, train_cost.min(), rtol=1e-9, atol=0.0))
    weak = int(cheapest[np.argmin(train_acc[cheapest])])  # cost ties: the least accurate of them
    ref = _Ref(test.correct[:, s].astype(float), test.cost[:, s].astype(float),
               float(test.correct[:, s].mean()), float(test.cost[:, s].mean()))
    base = {k: v for k, v in dict(params or {}).items() if k not in ("quality_target", "cost_target")}
    base.setdefault("progress", progress)
    variants = {
        "crescade": base,
        "stage1-only": {**base, "max_depth": 1},
        "stage2-only": {**base, "n_clusters": 1, "start_model": models[weak]},
    }
    ctx = _Ctx(train, test, ref, s, quality_target, targets, progress)
    fitted: dict[str, Cascade] = {}
    policies = [_cascade_policy(ctx, pname, kw, sweep, fitted) for pname, kw in variants.items()]
    policies.append(_knn_policy(ctx, knn_k, base.get("embedder"), [float(v) for v in lambdas]))
    policies.append(_learned_policy(ctx, base.get("embedder"), [float(v) for v in lambdas]))
    policies += _single_policies(ctx)
    policies.append(_mix_policy(ctx))
    policies.append(_oracle_policy(ctx))

    # summaries: cost@target, AIQ on one common interval, APGR/CPT, bootstrap CIs (paired resamples)
    c_max = max(c["cost_ratio"] for p, _ in policies for c in p.curve)
    idx = bootstrap_indices(test.n_prompts, n_boot, seed)
    ref_means = (ref.strong_correct[idx].mean(axis=1), ref.strong_cost[idx].mean(axis=1))
    acc_weak = float(test.correct[:, weak].mean())
    for p, run in policies:
        xs = np.array([c["cost_ratio"] for c in p.curve])
        ys = np.array([c["accuracy"] for c in p.curve])
        for t in targets:
            level = t * ref.acc - 1e-12
            p.cost_at_hull[t] = cost_at_quality(xs, ys, level, hull=True)
            observed = cost_at_quality(xs, ys, level, hull=False)
            p.cost_at[t] = p.cost_at_hull[t] if p.kind == "mix" else observed
        p.aiq = aiq(xs, ys, 0.0, c_max) if c_max > 0 else math.nan
        weak_pt = (float(test.cost[:, weak].mean()) / ref.cost, acc_weak)
        p.aiq_anchored = aiq(np.append(xs, weak_pt[0]), np.append(ys, weak_pt[1]), 0.0, c_max) \
            if c_max > 0 else math.nan
        p.apgr, p.cpt = _routellm(p.curve, acc_weak, ref.acc)
        p.ci = _bootstrap(run, idx, ref_means)

    meta = {
        "name": name, "n_train": train.n_prompts, "n_test": test.n_prompts, "models": models,
        "strongest": models[s], "strongest_test_accuracy": ref.acc, "strongest_test_usd_per_query": ref.cost,
        "weak": models[weak], "weak_test_accuracy": acc_weak, "quality_target": quality_target,
        "targets": targets, "sweep": {"min": min(sweep), "max": max(sweep), "n": len(sweep)},
        "knn_k": knn_k, "knn_lambdas": len(lambdas), "n_boot": n_boot, "seed": seed,
        "aiq_interval": [0.0, c_max], "cost_unit": "cost ratio (mean cost / always-strongest mean cost)",
        "knob_cost_unit": unit,
        "conventions": CONVENTIONS,
    }
    return EvalReport(meta=meta, policies=[p for p, _ in policies], cascade=fitted["crescade"])


@dataclass
class _Ctx:
    train: Outcomes
    test: Outcomes
    ref: _Ref
    strongest: int
    quality_target: float
    targets: list[float]
    progress: bool


def _policy(name: str, kind: str, run: _Run, ref: _Ref, curve: list[dict[str, Any]],
            calibrated_at: dict[float, dict[str, Any]], info: dict[str, Any], knob: float | None = None
            ) -> tuple[PolicyReport, _Run]:
    rep = PolicyReport(name=name, kind=kind, point=_point(run, ref, knob), ci={}, curve=curve, cost_at={},
                       cost_at_hull={}, calibrated_at=calibrated_at, aiq=math.nan, apgr=math.nan, cpt={},
                       info=info)
    return rep, run


def _cascade_policy(ctx: _Ctx, name: str, kw: dict[str, Any], sweep: list[float], fitted_out: dict[str, Cascade]
                    ) -> tuple[PolicyReport, _Run]:
    """Fit on train once, sweep the knob with ``retarget``, replay every setting on test."""
    t0 = time.perf_counter()
    fitted = Cascade(**kw, quality_target=ctx.quality_target).fit(ctx.train)
    fitted_out[name] = fitted
    fit_s = time.perf_counter() - t0
    if fitted.strongest_ != ctx.strongest or list(fitted.models_) != list(ctx.train.models):
        raise PoolError("the cascade's pool or strongest model differs from the evaluation's")
    runs: dict[float, _Run] = {}
    distinct: dict[tuple[Any, ...], float] = {}  # plan -> the first knob value that chose it
    with Progress(len(sweep), desc=f"sweep {name}", enabled=ctx.progress) as bar:
        for q in sweep:
            c = fitted.retarget(quality_target=q)
            key = (tuple(c.first_.tolist()), tuple(c.tau_index_.tolist()), tuple(c.general_ladder_),
                   c.general_tau_index_)
            if key in distinct:
                runs[q] = runs[distinct[key]]
            else:
                distinct[key] = q
                runs[q] = _Run.of_replay(c.replay(ctx.test))
            bar.update()
    curve = [_point(runs[q], ctx.ref, q) for q in distinct.values()]
    cal_at = {}
    for t in ctx.targets:
        hit = next((q for q in sweep if math.isclose(q, t, abs_tol=1e-9)), None)
        run = (runs[hit] if hit is not None
               else _Run.of_replay(fitted.retarget(quality_target=t).replay(ctx.test)))
        cal_at[t] = _point(run, ctx.ref, t)
    info = {"params": {k: v for k, v in kw.items() if k != "embedder"}, "fit_seconds": fit_s,
            "embedder": getattr(fitted.embedder_, "kind", type(fitted.embedder_).__name__),
            "n_clusters": getattr(fitted, "n_clusters_", None), "route_space": getattr(fitted, "space_", None),
            "train_expected": copy.deepcopy(fitted.expected_), "quality_estimator": fitted.qe_report()}
    calibrated = _Run.of_replay(fitted.replay(ctx.test))
    return _policy(name, "cascade", calibrated, ctx.ref, curve, cal_at, info, ctx.quality_target)


def _knn_policy(ctx: _Ctx, k: int, embedder: Any, lams: list[float]) -> tuple[PolicyReport, _Run]:
    """λ sweep on test; the calibrated λ of each target is chosen on train (leave-one-out)."""
    t0 = time.perf_counter()
    knn = KnnRouter(k=k, embedder=embedder).fit(ctx.train)
    return _router_policy(ctx, "knn", knn, lams, {"k": k}, time.perf_counter() - t0)


def _learned_policy(ctx: _Ctx, embedder: Any, lams: list[float]) -> tuple[PolicyReport, _Run]:
    """The learned router: λ sweep on test, λ per target chosen on train out of fold."""
    t0 = time.perf_counter()
    router = LearnedRouter(embedder=embedder).fit(ctx.train)
    return _router_policy(ctx, "learned-router", router, lams, {"C": router.C_}, time.perf_counter() - t0)


def _router_policy(ctx: _Ctx, name: str, router: KnnRouter, lams: list[float], info: dict[str, Any],
                   fit_s: float) -> tuple[PolicyReport, _Run]:
    """A predictive router's λ sweep on test, ending at always-strongest (the top of any router's range)."""
    runs = [_Run.routed(c, cost, j == ctx.strongest) for c, cost, j in router.curve(ctx.test, lams)]
    curve = [_point(r, ctx.ref, lam) for r, lam in zip(runs, lams, strict=True)]
    c, cost, _ = single_model(ctx.test, ctx.strongest)
    curve.append(_point(_Run.routed(c, cost, np.ones(len(c))), ctx.ref))  # no knob: the strongest alone

    def at(q: float) -> tuple[float, _Run]:
        lam = router.calibrate(q, lams)
        return lam, runs[lams.index(lam)]

    cal_at = {}
    for t in ctx.targets:
        lam, run = at(t)
        cal_at[t] = _point(run, ctx.ref, lam)
    lam0, run0 = at(ctx.quality_target)
    return _policy(name, "router", run0, ctx.ref, curve, cal_at,
                   {**info, "lambda": lam0, "fit_seconds": fit_s}, lam0)


def _single_policies(ctx: _Ctx) -> list[tuple[PolicyReport, _Run]]:
    out = []
    for j, m in enumerate(ctx.train.models):
        c, k, _ = single_model(ctx.test, j)
        run = _Run.routed(c, k, np.full(len(c), float(j == ctx.strongest)))
        pt = _point(run, ctx.ref)
        info = {"train_accuracy": float(ctx.train.correct[:, j].mean()),
                "train_usd_per_1k": 1000 * float(ctx.train.cost[:, j].mean())}
        out.append(_policy(m, "single", run, ctx.ref, [pt], dict.fromkeys(ctx.targets, pt), info))
    return out


def _mix_policy(ctx: _Ctx) -> tuple[PolicyReport, _Run]:
    """Random mixing (Zero router): curve along the test single-model hull, calibrated weights from train."""
    s = ctx.strongest

    def run_of(w: np.ndarray) -> _Run:
        c, k = random_mix(ctx.test, w)
        return _Run.routed(c, k, np.full(len(c), w[s]))

    tr_acc, tr_cost = ctx.train.correct.mean(axis=0), ctx.train.cost.mean(axis=0)
    te_acc, te_cost = ctx.test.correct.mean(axis=0), ctx.test.cost.mean(axis=0)
    curve = [_point(run_of(mix_for_quality(te_acc, te_cost, a)), ctx.ref)
             for a in _hull_levels(te_cost, te_acc)]
    cal_at = {t: _point(run_of(mix_for_quality(tr_acc, tr_cost, t * tr_acc[s])), ctx.ref)
              for t in ctx.targets}
    w0 = mix_for_quality(tr_acc, tr_cost, ctx.quality_target * tr_acc[s])
    info = {"weights": {m: float(w) for m, w in zip(ctx.train.models, w0, strict=True) if w > 0}}
    return _policy("zero-router", "mix", run_of(w0), ctx.ref, curve, cal_at, info)


def _oracle_policy(ctx: _Ctx) -> tuple[PolicyReport, _Run]:
    idx, corr, cost = oracle(ctx.test.correct, ctx.test.cost)
    run = _Run.routed(corr, cost, idx == ctx.strongest)
    pt = _point(run, ctx.ref)
    return _policy("oracle", "oracle", run, ctx.ref, [pt], dict.fromkeys(ctx.targets, pt), {})


def _hull_levels(cost: np.ndarray, acc: np.ndarray, per_segment: int = 10) -> list[float]:
    """Accuracy levels along the Zero-router hull: its vertices and ``per_segment − 1`` mixes between."""
    _, hy = ndch(cost, acc)
    levels = [float(hy[0])]
    for a, b in itertools.pairwise(hy):
        levels += [float(a + (b - a) * i / per_segment) for i in range(1, per_segment + 1)]
    return levels


# ----------------------------------------------------------------------------------- formatting


def _pct(t: float) -> str:
    return f"{100 * t:g}"


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3f}"
