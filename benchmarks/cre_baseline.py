"""The paper authors' own Stage 1 as a baseline: ``cre-router`` (PyPI, Apache-2.0), called through its public
functions on the same query embeddings crescade uses.

``cre_router.clustering.fit_clusters`` chooses k by the best mean silhouette over k = 2..9 (k-means,
``n_init=20``), and ``cre_router.routing.assign`` gives each cluster ``argmin error + λ·cost_norm`` (Eq. 1-2
of the paper; ties to the cheaper model within its default error tolerance). Its cost metric is latency
in the paper; here the model's mean train cost in dollars is passed in its place, so that the cost axis is
the one every other policy is scored on. Its Stage 2 (a fine-tuned ModernBERT) needs weights from a model
hub, which this machine cannot reach, so only Stage 1 is reproduced.

Install without its heavy dependencies (sentence-transformers pulls torch; only the embedding helper
needs it, and it is not used here): ``pip install --no-deps cre-router==0.6.3``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crescade import Outcomes
from crescade.engine.embed import TfidfSvdEmbedder
from crescade.evaluation.baselines import DEFAULT_LAMBDAS
from crescade.evaluation.metrics import cost_at_quality

NAME = "cre-router-stage1"
INSTALL = "pip install --no-deps cre-router==0.6.3"


def available() -> bool:
    try:
        import cre_router.clustering
        import cre_router.routing  # noqa: F401
    except ImportError:
        return False
    return True


def run(train: Outcomes, test: Outcomes, targets: list[float]) -> dict[str, Any]:
    """Fit on ``train``, sweep λ on ``test``; cost@target on the test curve and the λ chosen on train."""
    from cre_router.clustering import assign_clusters, fit_clusters
    from cre_router.routing import ModelStats, assign

    emb = TfidfSvdEmbedder().fit(train.prompts)
    x_tr, x_te = emb.embed(train.prompts), emb.embed(test.prompts)
    clusters = fit_clusters(x_tr, seed=0)
    lab_tr, lab_te = clusters.labels, assign_clusters(x_te, clusters.centroids)
    models = list(train.models)
    s = int(np.argmax(train.correct.mean(axis=0)))
    cost_mean = train.cost.mean(axis=0)
    stats = []
    for j, m in enumerate(models):
        errors = {str(c): float(1.0 - train.correct[lab_tr == c, j].mean()) for c in range(clusters.k)}
        stats.append(ModelStats(name=m, tpot_ms=float(cost_mean[j]), errors=errors))
    cols = [test.models.index(m) for m in models]
    ref_acc, ref_cost = float(test.correct[:, cols[s]].mean()), float(test.cost[:, cols[s]].mean())

    def route(lam: float, labels: np.ndarray, data: Outcomes, cs: list[int]) -> tuple[float, float]:
        table = assign(stats, float(lam))
        j = np.array([models.index(table[str(c)]) for c in labels])
        picked = np.array(cs)[j]
        rows = np.arange(data.n_prompts)
        return float(data.correct[rows, picked].mean()), float(data.cost[rows, picked].mean())

    curve = [route(lam, lab_te, test, cols) for lam in DEFAULT_LAMBDAS]
    curve.append((ref_acc, ref_cost))  # always-strongest: the top of any router's range
    ret = np.array([a / ref_acc for a, _ in curve])
    cost = np.array([c / ref_cost for _, c in curve])
    train_cols = list(range(len(models)))
    train_points = [route(lam, lab_tr, train, train_cols) for lam in DEFAULT_LAMBDAS]
    s_acc = float(train.correct[:, s].mean())
    calibrated = {}
    for t in targets:
        ok = [(c, lam) for (a, c), lam in zip(train_points, DEFAULT_LAMBDAS, strict=True) if a >= t * s_acc - 1e-12]
        lam = min(ok)[1] if ok else float(DEFAULT_LAMBDAS[0])
        a, c = route(lam, lab_te, test, cols)
        calibrated[str(t)] = {"lambda": float(lam), "retention": a / ref_acc, "cost_ratio": c / ref_cost}
    return {
        "name": NAME, "k": int(clusters.k), "silhouette_by_k": clusters.silhouette_by_k,
        "cost_at": {str(t): _finite(cost_at_quality(cost, ret, t, hull=False)) for t in targets},
        "calibrated_at": calibrated,
        "curve": [{"retention": float(r), "cost_ratio": float(c)} for r, c in zip(ret, cost, strict=True)],
        "note": "cre-router 0.6.3 Stage 1 (silhouette-chosen k-means over k=2..9, per-cluster error + "
                "lambda*cost_norm) on crescade's TF-IDF+SVD embeddings, dollar cost in place of latency; its "
                "ModernBERT Stage 2 needs hub weights and is not reproduced",
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
