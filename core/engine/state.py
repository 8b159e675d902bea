"""What a fitted :class:`~crescade.engine.cascade.Cascade` learned, in one dataclass, and how it is persisted.

:class:`CascadeState` lists every fitted attribute once (``Cascade`` exposes each as ``<name>_``). Each
field carries its :class:`Codec` in its metadata, so saving and loading are both derived from this one
field list (:func:`crescade.engine.store.dump_fields` / :func:`~crescade.engine.store.load_fields`): a new
field cannot be saved but forgotten on load. The artifact holds plain JSON and numeric arrays only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..common.errors import ArtifactError, ConfigError
from ..common.jsonsafe import json_safe
from .calibrate import DEFAULT_THRESHOLDS, CalibrationData
from .embed import CallableEmbedder, Embedder, TfidfSvdEmbedder, as_embedder
from .embed_onnx import OnnxMiniLMEmbedder
from .pricing import ModelCard
from .profile import QueryProfiler
from .stage2 import AnswerTable, QualityEstimator, TextScorer

__all__ = ["CascadeState", "Codec"]

Meta = dict[str, Any]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Codec:
    """How one field goes to (``dump``) and comes back from (``load``) the artifact's meta and arrays.

    ``load(name, meta, arrays, context)`` gets the loader's ``context`` (e.g. a user-supplied embedder).
    """

    dump: Callable[[str, Any], tuple[Meta, Arrays]]
    load: Callable[[str, Meta, Arrays, Meta], Any]


def _json(convert: Callable[[Any], Any] = lambda v: v, *, default: Any = None) -> Codec:
    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> Any:
        if name not in meta and default is not None:
            return default()
        return convert(meta[name])

    return Codec(lambda name, v: ({name: json_safe(v)}, {}), load)


def _array(dtype: type | None = None) -> Codec:
    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> np.ndarray:
        a = arrays[name]
        return a.astype(dtype) if dtype is not None else a

    return Codec(lambda name, v: ({}, {name: v}), load)


def _cards() -> Codec:
    return Codec(lambda name, v: ({name: {k: c.to_dict() for k, c in v.items()}}, {}),
                 lambda name, meta, arrays, ctx: {str(k): ModelCard(**{**c, "name": str(k)})
                                                  for k, c in meta[name].items()})


def _answer_tables() -> Codec:
    def dump(name: str, v: dict[tuple[int, int], AnswerTable]) -> tuple[Meta, Arrays]:
        return {name: [{"cluster": c, "model": j, "counts": t.counts, "total": t.total}
                       for (c, j), t in sorted(v.items())]}, {}

    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> dict[tuple[int, int], AnswerTable]:
        return {(int(t["cluster"]), int(t["model"])): AnswerTable({str(a): int(c) for a, c in t["counts"].items()},
                                                                  int(t["total"])) for t in meta[name]}

    return Codec(dump, load)


def _calib() -> Codec:
    def dump(name: str, d: CalibrationData) -> tuple[Meta, Arrays]:
        arrays = {"calib_labels": d.labels, "calib_correct": d.correct, "calib_cost": d.cost, "calib_p0": d.p0,
                  "calib_folds": d.folds}
        if d.p1 is not None:
            arrays["calib_p1"] = d.p1.astype(np.float32)
        return {}, arrays

    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> CalibrationData:
        return CalibrationData(
            labels=arrays["calib_labels"].astype(np.int64), correct=arrays["calib_correct"],
            cost=arrays["calib_cost"], p0=arrays["calib_p0"],
            p1=arrays["calib_p1"].astype(np.float64) if "calib_p1" in arrays else None,
            folds=arrays["calib_folds"].astype(np.int64))

    return Codec(dump, load)


_HONEST_KEYS = ("grid", "retention", "cost_ratio", "mode")


def _honest() -> Codec:
    def dump(name: str, v: dict[str, np.ndarray] | None) -> tuple[Meta, Arrays]:
        if v is None:
            raise ArtifactError("the honest curve is not computed: re-solve the plan before saving")
        return {}, {f"honest_{k}": v[k] for k in _HONEST_KEYS}

    return Codec(dump, lambda name, meta, arrays, ctx: {k: arrays[f"honest_{k}"] for k in _HONEST_KEYS})


def _embedder() -> Codec:
    def dump(name: str, e: Embedder) -> tuple[Meta, Arrays]:
        if isinstance(e, (TfidfSvdEmbedder, OnnxMiniLMEmbedder)):  # the ONNX one: a reference, no weights
            meta, arrays = e.get_state()
            return {name: meta}, arrays
        if isinstance(e, CallableEmbedder):
            return {name: {"kind": "callable", "name": e.name}}, {}
        raise ConfigError(f"cannot save a cascade whose embedder is {type(e).__name__}")

    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> Embedder:
        if meta[name]["kind"] == TfidfSvdEmbedder.kind:
            return TfidfSvdEmbedder.from_state(meta[name], arrays)
        if meta[name]["kind"] == OnnxMiniLMEmbedder.kind:
            given = ctx.get("embedder")
            return OnnxMiniLMEmbedder.from_state(meta[name], arrays,
                                                 like=given if isinstance(given, OnnxMiniLMEmbedder) else None)
        if ctx.get("embedder") is None:
            raise ArtifactError("this artifact was fitted with a custom embedder: pass it to Cascade.load(..., "
                                "embedder=...)")
        return as_embedder(ctx["embedder"])

    return Codec(dump, load)


def _qe() -> Codec:
    def dump(name: str, qe: QualityEstimator) -> tuple[Meta, Arrays]:
        meta, arrays = qe.get_state()
        return {name: meta}, arrays

    return Codec(dump, lambda name, meta, arrays, ctx: QualityEstimator.from_state(meta[name], arrays))


def _text() -> Codec:
    def dump(name: str, t: TextScorer) -> tuple[Meta, Arrays]:
        meta, arrays = t.get_state()
        return {name: meta}, arrays

    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> TextScorer:
        if name not in meta:
            raise ArtifactError("this artifact was saved by an older crescade whose quality estimator has no text "
                                "signal: fit the cascade again with this version")
        return TextScorer.from_state(meta[name], arrays)

    return Codec(dump, load)


def _profiler() -> Codec:
    def dump(name: str, p: QueryProfiler | None) -> tuple[Meta, Arrays]:
        if p is None:
            return {name: None}, {}
        meta, arrays = p.get_state()
        return {name: meta}, arrays

    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> QueryProfiler | None:
        return QueryProfiler.from_state(meta[name], arrays) if meta.get(name) is not None else None

    return Codec(dump, load)


def _anchors() -> Codec:
    def load(name: str, meta: Meta, arrays: Arrays, ctx: Meta) -> np.ndarray:
        # artifacts from before route spaces: the centroids were embedding centroids
        return arrays[name] if name in arrays else arrays["centroids"]

    return Codec(lambda name, v: ({}, {name: v}), load)


_DERIVED = Codec(lambda name, v: ({}, {}), lambda name, meta, arrays, ctx: None)
"""Not persisted: recomputed from the rest when the plan is re-solved."""


def _codec(codec: Codec) -> dict[str, Codec]:
    return {"codec": codec}


@dataclass
class CascadeState:
    """Everything ``Cascade.fit`` learns. ``Cascade`` exposes each field ``x`` as the attribute ``x_``."""

    models: list[str] = field(metadata=_codec(_json(lambda v: [str(x) for x in v])))
    """The pool, in calibration order."""
    cards: dict[str, ModelCard] = field(metadata=_codec(_cards()))
    """Price card per model (empty when fitted without prices)."""
    strongest: int = field(metadata=_codec(_json(int)))
    """Index of the most accurate model on the calibration data."""
    n_clusters: int = field(metadata=_codec(_json(int)))
    centroids: np.ndarray = field(metadata=_codec(_array()))
    """[k, d] cluster centres in the embedder's space."""
    embedder: Embedder = field(metadata=_codec(_embedder()))
    qe: QualityEstimator = field(metadata=_codec(_qe()))
    """The Stage-2 quality estimator."""
    text: TextScorer = field(metadata=_codec(_text()))
    """The learned text signal the quality estimator reads (hashed word n-grams of the answer)."""
    acc_table: np.ndarray = field(metadata=_codec(_array()))
    """[k, m] accuracy per cluster and model, shrunk toward the model's global accuracy."""
    count_table: np.ndarray = field(metadata=_codec(_array()))
    """[k, m] calibration records per cluster and model."""
    global_acc: np.ndarray = field(metadata=_codec(_array()))
    """[m] each model's accuracy over all calibration prompts."""
    cost_table: np.ndarray = field(metadata=_codec(_array()))
    """[k, m] mean $ per call."""
    latency_table: np.ndarray = field(metadata=_codec(_array()))
    """[k, m] mean latency in seconds (NaN where unknown)."""
    answer_tables: dict[tuple[int, int], AnswerTable] = field(metadata=_codec(_answer_tables()))
    """(cluster, model) -> counts of the model's most common final answers there."""
    calib: CalibrationData = field(metadata=_codec(_calib()))
    """Per-prompt calibration arrays (out-of-fold QE scores included): the knob is re-solved from them."""
    calib_prompt_ids: list[str] = field(metadata=_codec(_json(lambda v: [str(x) for x in v])))
    honest: dict[str, np.ndarray] | None = field(metadata=_codec(_honest()))
    """The cross-fitted (honest) retention and cost curve over the knob grid."""
    grid_report: list[dict[str, Any]] = field(metadata=_codec(_json(list, default=list)))
    """Per candidate number of clusters: target met, honest retention and cost."""
    first: np.ndarray = field(metadata=_codec(_array(np.int64)))
    """[k] the routed model of each cluster (the solved plan)."""
    tau_index: np.ndarray = field(metadata=_codec(_array(np.int64)))
    """[k] index of each cluster's gate threshold in the threshold grid."""
    ladders: list[list[int]] = field(metadata=_codec(_json(lambda v: [[int(j) for j in lad] for lad in v])))
    """Per cluster, the model indices tried in order."""
    expected: dict[str, Any] = field(metadata=_codec(_json(dict)))
    """What the plan is expected to achieve (honest retention, cost ratio, escalation rate, ...)."""
    frontier: list[dict[str, float]] = field(metadata=_codec(_DERIVED), default_factory=list)
    """Every candidate plan's in-sample accuracy and cost ratio (derived)."""
    unfamiliar_threshold: float = field(metadata=_codec(_json(float, default=lambda: 0.0)), default=0.0)
    """Similarity to the nearest centroid below which a query counts as unfamiliar."""
    general_ladder: list[int] = field(metadata=_codec(_DERIVED), default_factory=list)
    """The ladder unfamiliar queries get (derived from the calibration data and the knob)."""
    general_tau_index: int = field(metadata=_codec(_DERIVED), default=0)
    """Its gate threshold index (derived)."""
    shrinkage: float | None = field(metadata=_codec(_json(lambda v: None if v is None else float(v),
                                                          default=lambda: None)), default=None)
    """The pseudo-count per-cluster accuracy is shrunk with (``None``: the parameter, older artifacts)."""
    qe_C: float | None = field(metadata=_codec(_json(lambda v: None if v is None else float(v),
                                                     default=lambda: None)), default=None)
    """The quality estimator's regularisation (``None``: the parameter, older artifacts)."""
    space: str = field(metadata=_codec(_json(str, default=lambda: "embedding")), default="embedding")
    """Where the centroids live: ``"embedding"`` (query embeddings) or ``"profile"`` (learned query profiles)."""
    profiler: QueryProfiler | None = field(metadata=_codec(_profiler()), default=None)
    """Per-model P(correct | query embedding): maps a query to its profile (``None`` for one model)."""
    anchors: np.ndarray = field(metadata=_codec(_anchors()), default_factory=lambda: np.zeros((0, 0)))
    """[k', d] embedding-space centroids that "unfamiliar" is measured against (the centroids themselves when
    the space is the embedding)."""

    def check(self) -> None:
        """Raise :class:`ArtifactError` unless the fields fit together (shapes, indices, coverage)."""
        m, k = len(self.models), self.n_clusters
        shapes = {"acc_table": (k, m), "count_table": (k, m), "cost_table": (k, m), "latency_table": (k, m),
                  "global_acc": (m,), "first": (k,), "tau_index": (k,)}
        for key, shape in shapes.items():
            got = getattr(self, key).shape
            if got != shape:
                raise ArtifactError(f"array {key} has shape {got}, expected {shape}")
        if not 0 <= self.strongest < m:
            raise ArtifactError("strongest model index out of range")
        if self.first.min(initial=0) < 0 or self.first.max(initial=0) >= m or \
                self.tau_index.min(initial=0) < 0 or self.tau_index.max(initial=0) >= len(DEFAULT_THRESHOLDS):
            raise ArtifactError("plan indices out of range")
        if len(self.ladders) != k or any(not lad or min(lad) < 0 or max(lad) >= m for lad in self.ladders):
            raise ArtifactError("ladders do not match the pool")
        if set(self.answer_tables) != {(c, j) for c in range(k) for j in range(m)} or any(
                t.total < 0 or any(c < 0 for c in t.counts.values()) for t in self.answer_tables.values()):
            raise ArtifactError("answer tables do not cover every cluster and model with counts >= 0")
        n = len(self.calib_prompt_ids)
        if self.calib.correct.shape != (n, m) or self.calib.labels.shape != (n,):
            raise ArtifactError("calibration arrays do not match the pool")
        if self.centroids.shape[0] != k:
            raise ArtifactError("centroids do not match n_clusters")
        if self.space not in ("embedding", "profile"):
            raise ArtifactError(f"unknown routing space {self.space!r}")
        if self.space == "profile" and (
                self.profiler is None or self.profiler.coef_.shape[0] != self.centroids.shape[1]):
            raise ArtifactError("profile-space centroids need a query profiler of the same width")
        if self.anchors.ndim != 2 or self.anchors.shape[0] == 0:
            raise ArtifactError("anchors (embedding centroids for unfamiliar queries) are missing")
