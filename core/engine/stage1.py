"""Stage 1: k-means clusters over query embeddings and the per-(cluster, model) table.

Accuracy in a cluster is shrunk toward the model's global accuracy, so small clusters and models
profiled on few prompts do not swing the plan: ``(hits + s * global) / (n + s)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..common.errors import ConfigError

Geometry = Literal["cosine", "euclidean"]


def fit_centroids(embeddings: np.ndarray, n_clusters: int, *, random_state: int = 0,
                  geometry: Geometry = "cosine") -> np.ndarray:
    """k-means centroids of the calibration points: L2-normalised for ``"cosine"`` (embeddings), plain
    means for ``"euclidean"`` (query profiles)."""
    from sklearn.cluster import KMeans

    n = embeddings.shape[0]
    if n_clusters < 1:
        raise ConfigError(f"n_clusters must be >= 1, got {n_clusters}")
    k = min(n_clusters, n, len(np.unique(np.round(embeddings, 9), axis=0)))  # no more centres than points
    if k == 1:
        c = embeddings.mean(axis=0, keepdims=True)
    else:
        c = KMeans(n_clusters=k, n_init=4, random_state=random_state).fit(embeddings).cluster_centers_
    if geometry == "euclidean":
        return np.asarray(c, dtype=np.float64)
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return c / np.where(norms > 0, norms, 1.0)


def assign(embeddings: np.ndarray, centroids: np.ndarray, geometry: Geometry = "cosine") -> np.ndarray:
    """Nearest centroid: by cosine similarity (embeddings are L2-normalised) or by Euclidean distance."""
    if geometry == "euclidean":
        d2 = (embeddings ** 2).sum(axis=1)[:, None] - 2 * embeddings @ centroids.T + (centroids ** 2).sum(axis=1)
        return np.asarray(np.argmin(d2, axis=1), dtype=np.int64)
    return np.asarray(np.argmax(embeddings @ centroids.T, axis=1), dtype=np.int64)


def shrunk_accuracy(
    correct: np.ndarray, labels: np.ndarray, n_clusters: int, strength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-(cluster, model) accuracy shrunk toward each model's global accuracy.

    ``correct`` is ``[n, m]`` with NaN where a model has no record. Returns ``(acc[k, m],
    counts[k, m], global_acc[m])``.
    """
    known = ~np.isnan(correct)
    c0 = np.where(known, correct, 0.0)
    n_known = known.sum(axis=0)
    global_acc = np.divide(c0.sum(axis=0), n_known, out=np.full(correct.shape[1], 0.5), where=n_known > 0)
    hits = np.zeros((n_clusters, correct.shape[1]))
    counts = np.zeros((n_clusters, correct.shape[1]))
    np.add.at(hits, labels, c0)
    np.add.at(counts, labels, known.astype(float))
    acc = (hits + strength * global_acc) / (counts + strength)
    return acc, counts, global_acc


def cluster_means(values: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per-(cluster, model) mean of ``values[n, m]`` (NaN ignored), falling back to the global mean."""
    known = ~np.isnan(values)
    v0 = np.where(known, values, 0.0)
    sums = np.zeros((n_clusters, values.shape[1]))
    counts = np.zeros((n_clusters, values.shape[1]))
    np.add.at(sums, labels, v0)
    np.add.at(counts, labels, known.astype(float))
    n_glob = known.sum(axis=0)
    glob = np.divide(v0.sum(axis=0), n_glob, out=np.zeros(values.shape[1]), where=n_glob > 0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), glob)


def efficient_ladder(first: int, acc: np.ndarray, cost: np.ndarray, max_depth: int) -> list[int]:
    """The escalation ladder of one cluster that starts at model ``first``.

    Later tiers are more accurate in this cluster than every tier before them and sit on the
    cluster's cost/accuracy frontier; the last tier is the cluster's most accurate model.
    ``acc`` and ``cost`` are the cluster's rows of the Stage-1 table.
    """
    best = int(np.argmax(acc))
    if max_depth <= 1 or first == best or acc[best] <= acc[first]:
        return [first]
    ladder = [first]
    order = np.argsort(cost, kind="stable")
    mids: list[int] = []
    for j in order:
        j = int(j)
        if j in (first, best) or cost[j] >= cost[best]:
            continue
        if acc[j] > acc[first] and (not mids or acc[j] > acc[mids[-1]]):
            mids.append(j)
    room = max_depth - 2
    if room > 0 and mids:
        # keep the most accurate intermediate tiers that fit
        ladder += mids[-room:]
    return [*ladder, best]
