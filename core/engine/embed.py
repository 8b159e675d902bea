"""Query embedders: the protocol, the offline default (TF-IDF + SVD), a wrapper for any callable, and the names
``Cascade(embedder=...)`` and the CLI accept (``"tfidf"``, ``"minilm"``: :mod:`crescade.engine.embed_onnx`)."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..common.errors import ConfigError, NotFittedError
from .embed_onnx import OnnxMiniLMEmbedder

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to an ``[n, d]`` float array."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def clip_text(text: str, max_chars: int) -> str:
    """Bound the routing cost of huge inputs: keep the head and the (more informative) tail."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 4
    return text[:head] + "\n" + text[-(max_chars - head - 1):]


def _l2_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class TfidfSvdEmbedder:
    """Offline default embedder fitted on the calibration prompts: word 1–2-gram TF-IDF, then SVD.

    Needs no download. Fitting uses scikit-learn; embedding a single query is plain Python + numpy
    (a few hundred microseconds), and the fitted state is arrays and a vocabulary list (no pickle).
    """

    kind = "tfidf-svd"

    def __init__(
        self, n_components: int = 64, max_features: int = 20000, min_df: int = 2, max_chars: int = 8000,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.max_features = max_features
        self.min_df = min_df
        self.max_chars = max_chars
        self.random_state = random_state

    def _analyze(self, text: str) -> list[str]:
        words = _TOKEN.findall(clip_text(text, self.max_chars).lower())
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

    def fit(self, texts: Sequence[str]) -> TfidfSvdEmbedder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(texts) < 2:
            raise ConfigError(f"TfidfSvdEmbedder needs at least 2 texts to fit, got {len(texts)}")
        min_df = self.min_df if len(texts) >= 20 else 1
        vec = TfidfVectorizer(analyzer=self._analyze, sublinear_tf=True, min_df=min_df,
                              max_features=self.max_features)
        x = vec.fit_transform(list(texts))
        k = max(1, min(self.n_components, x.shape[1] - 1, x.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.random_state).fit(x)
        self.vocabulary_ = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        self._index = {t: i for i, t in enumerate(self.vocabulary_)}
        self.idf_ = vec.idf_.astype(np.float32)
        self.components_ = svd.components_.astype(np.float32)
        return self

    def _check(self) -> None:
        if not hasattr(self, "components_"):
            raise NotFittedError("TfidfSvdEmbedder is not fitted; call fit(texts) first")

    def _weights(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        counts = Counter(i for i in map(self._index.get, self._analyze(text)) if i is not None)
        if not counts:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        idx = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), dtype=np.float32, count=len(counts))
        w = tf * self.idf_[idx]
        return idx, w / np.float32(np.linalg.norm(w))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, shape ``[len(texts), n_components]``."""
        self._check()
        out = np.zeros((len(texts), self.components_.shape[0]), dtype=np.float64)
        for r, text in enumerate(texts):
            idx, w = self._weights(text)
            if len(idx):
                out[r] = self.components_[:, idx] @ w
        return _l2_rows(out)

    # --- persistence (plain data) ---
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check()
        meta = {"kind": self.kind, "n_components": self.n_components, "max_features": self.max_features,
                "min_df": self.min_df, "max_chars": self.max_chars, "random_state": self.random_state,
                "vocabulary": self.vocabulary_}
        return meta, {"embed_idf": self.idf_, "embed_components": self.components_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfSvdEmbedder:
        self = cls(n_components=int(meta["n_components"]), max_features=int(meta["max_features"]),
                   min_df=int(meta["min_df"]), max_chars=int(meta["max_chars"]),
                   random_state=int(meta["random_state"]))
        vocab = meta["vocabulary"]
        idf, comp = arrays["embed_idf"], arrays["embed_components"]
        if not (isinstance(vocab, list) and all(isinstance(t, str) for t in vocab)):
            raise ConfigError("embedder vocabulary must be a list of strings")
        if idf.shape != (len(vocab),) or comp.ndim != 2 or comp.shape[1] != len(vocab):
            raise ConfigError(
                f"embedder arrays do not match the vocabulary: idf {idf.shape}, components {comp.shape}, "
                f"vocabulary {len(vocab)}")
        self.vocabulary_ = list(vocab)
        self._index = {t: i for i, t in enumerate(self.vocabulary_)}
        self.idf_ = idf.astype(np.float32)
        self.components_ = comp.astype(np.float32)
        return self

    def fingerprint(self) -> str:
        self._check()
        h = hashlib.sha256(self.kind.encode())
        h.update("\n".join(self.vocabulary_).encode())
        h.update(self.components_.tobytes())
        return h.hexdigest()[:16]


class CallableEmbedder:
    """Wrap any ``texts -> vectors`` callable (e.g. LangChain ``Embeddings.embed_documents`` or
    LlamaIndex ``get_text_embedding_batch``) as an :class:`Embedder`; output is L2-normalised."""

    kind = "callable"

    def __init__(self, fn: Callable[[list[str]], Any], name: str = "callable", max_chars: int = 8000) -> None:
        self.fn = fn
        self.name = name
        self.max_chars = max_chars

    def fit(self, texts: Sequence[str]) -> CallableEmbedder:
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.asarray(self.fn([clip_text(t, self.max_chars) for t in texts]), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(texts) or not np.all(np.isfinite(out)):
            raise ConfigError(
                f"embedder {self.name!r} must return a finite [n, d] array for n={len(texts)} texts, "
                f"got shape {out.shape}")
        return _l2_rows(out)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"callable:{self.name}".encode()).hexdigest()[:16]


#: The embedders selectable by name (``Cascade(embedder="minilm")``, ``crescade calibrate --embedder minilm``).
EMBEDDERS: dict[str, Callable[[], Any]] = {"tfidf": TfidfSvdEmbedder, "minilm": OnnxMiniLMEmbedder}


def as_embedder(obj: Any) -> Any:
    """Accept a name of :data:`EMBEDDERS`, an :class:`Embedder`, a LangChain/LlamaIndex embeddings object or a
    plain callable (``None`` is the default, ``"tfidf"``)."""
    if obj is None:
        return TfidfSvdEmbedder()
    if isinstance(obj, str):
        if obj not in EMBEDDERS:
            raise ConfigError(f"unknown embedder {obj!r}: choose from {', '.join(map(repr, EMBEDDERS))}, or pass "
                              "an embedder object or a callable")
        return EMBEDDERS[obj]()
    if isinstance(obj, (TfidfSvdEmbedder, CallableEmbedder, OnnxMiniLMEmbedder)):
        return obj
    for attr in ("embed_documents", "get_text_embedding_batch"):
        if callable(getattr(obj, attr, None)):
            return CallableEmbedder(getattr(obj, attr), name=type(obj).__name__)
    if hasattr(obj, "embed") and callable(obj.embed):
        return CallableEmbedder(obj.embed, name=type(obj).__name__)
    if callable(obj):
        return CallableEmbedder(obj, name=getattr(obj, "__name__", type(obj).__name__))
    raise ConfigError(f"cannot use {type(obj).__name__} as an embedder: give an object with embed(texts), "
                      "embed_documents(texts), get_text_embedding_batch(texts), or a callable")
