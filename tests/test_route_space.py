"""Stage 1 in two spaces: query embeddings, or learned query profiles (per model P(correct | query)); artifacts
from before route spaces and automatic shrinkage still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crescade import Cascade, ConfigError, Outcomes
from crescade.engine.cascade import ARTIFACT_KIND
from crescade.engine.profile import QueryProfiler
from crescade.engine.stage1 import assign, fit_centroids
from crescade.engine.store import load_artifact, save_artifact


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def test_profiler_learns_who_gets_what_right_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y_easy = (rng.random(400) < 0.9).astype(float)  # model 0: right almost always, whatever the query
    y_dir = (x[:, 0] + 0.1 * rng.normal(size=400) > 0).astype(float)  # model 1: right on one half-space
    correct = np.column_stack([y_easy, y_dir, np.ones(400)])  # model 2: always right (a constant)
    correct[:20, 1] = np.nan  # no record: ignored, still predicted
    folds = np.arange(400) % 5
    prof = QueryProfiler(C_grid=(0.01, 1.0, 100.0))
    oof = prof.fit(x, correct, folds)
    assert oof.shape == (400, 3) and prof.C_ in (0.01, 1.0, 100.0)
    known = ~np.isnan(correct[:, 1])
    assert _auc(correct[known, 1], oof[known, 1]) > 0.9  # out of fold, not memorised
    assert np.allclose(prof.transform(x)[:, 2], prof.transform(x)[0, 2]) and prof.transform(x)[0, 2] > 0.99
    back = QueryProfiler.from_state(*prof.get_state())
    np.testing.assert_allclose(back.transform(x), prof.transform(x))


def test_euclidean_clusters_of_profiles() -> None:
    pts = np.array([[0.1, 0.9], [0.12, 0.88], [0.9, 0.1], [0.88, 0.12]])
    cents = fit_centroids(pts, 2, geometry="euclidean")
    labels = assign(pts, cents, "euclidean")
    assert labels[0] == labels[1] != labels[2] == labels[3]
    # never more centres than distinct points (no k-means warning, no empty cluster)
    assert len(fit_centroids(np.ones((10, 2)), 4, geometry="euclidean")) == 1


def test_profile_space_fits_serves_and_replays_consistently(train: Outcomes, test_set: Outcomes,
                                                             tmp_path: Path) -> None:
    c = Cascade(0.95, route_space="profile", n_clusters=3, n_folds=3, progress=False).fit(train)
    assert c.space_ == "profile" and c.profiler_ is not None and c.centroids_.shape == (3, len(c.models_))
    assert c.anchors_.shape[1] == c.embedder_.embed(["x"]).shape[1]  # unfamiliar: measured in the embedding
    r = c.replay(test_set)
    plans = c.plan_batch(test_set.prompts)
    assert [p.ladder[0] for p in plans] == [c.models_[j] for j in r.routed]
    assert [p.cluster for p in plans] == r.cluster.tolist()
    c.save(tmp_path / "p")
    back = Cascade.load(tmp_path / "p")
    assert back.space_ == "profile" and back.plan_batch(test_set.prompts) == plans


def test_auto_compares_both_spaces_and_keeps_the_best(train: Outcomes) -> None:
    c = Cascade(0.95, cluster_grid=(1, 3), n_folds=3, progress=False).fit(train)
    spaces = [(r["space"], r["n_clusters"]) for r in c.grid_report_]
    assert spaces == [("embedding", 1), ("embedding", 3), ("profile", 3)]
    best = min(c.grid_report_, key=lambda r: (not r["target_met"], r["band_score"]))
    assert (c.space_, c.n_clusters_) == (best["space"], best["n_clusters"])
    one = Cascade(0.95, cluster_grid=(1, 3), n_folds=3, route_space="embedding", progress=False).fit(train)
    assert {r["space"] for r in one.grid_report_} == {"embedding"} and one.profiler_ is None


def test_route_space_is_validated(train: Outcomes) -> None:
    with pytest.raises(ConfigError, match="route_space must be 'auto', 'embedding' or 'profile'"):
        Cascade(route_space="umap").fit(train)  # type: ignore[arg-type]


def test_artifact_from_before_route_spaces_still_loads(cascade: Cascade, test_set: Outcomes,
                                                       tmp_path: Path) -> None:
    c = cascade if cascade.space_ == "embedding" else Cascade(
        0.98, route_space="embedding", n_folds=3, progress=False).fit(test_set)
    c.save(tmp_path / "new")
    meta, arrays = load_artifact(tmp_path / "new", kind=ARTIFACT_KIND)
    for key in ("space", "profiler", "shrinkage"):
        meta.pop(key)
    meta["params"]["shrinkage"] = c.shrinkage_  # before "auto", the parameter was the number used
    arrays = {k: v for k, v in arrays.items() if k not in ("anchors", "profile_coef", "profile_intercept")}
    save_artifact(tmp_path / "old", kind=ARTIFACT_KIND, meta=meta, arrays=arrays)
    old = Cascade.load(tmp_path / "old")
    assert old.space_ == "embedding" and old.profiler_ is None and old.shrinkage_ is None
    assert old._s == c.shrinkage_
    np.testing.assert_array_equal(old.anchors_, c.centroids_)
    assert old.plan_batch(test_set.prompts) == c.plan_batch(test_set.prompts)
