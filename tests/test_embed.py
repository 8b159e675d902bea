"""Tests of crescade.engine.embed: the offline TF-IDF + SVD embedder, the callable wrapper and as_embedder."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_records import make_prompts

from crescade.common.errors import ConfigError, NotFittedError
from crescade.engine.embed import CallableEmbedder, Embedder, TfidfSvdEmbedder, as_embedder, clip_text


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [p[2] for p in make_prompts(150, seed=3)]


@pytest.fixture(scope="module")
def fitted(corpus: list[str]) -> TfidfSvdEmbedder:
    return TfidfSvdEmbedder(n_components=16).fit(corpus)


def test_fit_embed_shape_and_unit_norm(fitted: TfidfSvdEmbedder, corpus: list[str]) -> None:
    x = fitted.embed(corpus[:10])
    assert x.shape == (10, 16)
    assert x.dtype == np.float64
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    assert isinstance(fitted, Embedder)


def test_embed_of_unknown_words_is_zero_not_nan(fitted: TfidfSvdEmbedder) -> None:
    x = fitted.embed(["zzzz qqqq xxxx", ""])
    assert x.shape == (2, 16)
    assert np.all(np.isfinite(x))
    assert np.all(x == 0.0)


def test_embed_empty_batch(fitted: TfidfSvdEmbedder) -> None:
    assert fitted.embed([]).shape == (0, 16)


def test_fit_is_deterministic(corpus: list[str]) -> None:
    a = TfidfSvdEmbedder(n_components=16, random_state=0).fit(corpus)
    b = TfidfSvdEmbedder(n_components=16, random_state=0).fit(corpus)
    np.testing.assert_array_equal(a.embed(corpus[:20]), b.embed(corpus[:20]))
    assert a.fingerprint() == b.fingerprint()
    # embedding the same text twice, alone or in a batch, gives the same row
    np.testing.assert_array_equal(a.embed([corpus[0]])[0], a.embed(corpus[:3])[0])


def test_similar_texts_are_closer_than_unrelated(fitted: TfidfSvdEmbedder) -> None:
    geo1 = "Which river and mountain border the capital near the glacier valley?"
    geo2 = "Which island, river and volcano lie near the coastline of the continent?"
    chem = "Which molecule, catalyst and electron drive the oxidation reaction in acid?"
    fin = "Which bond, dividend and loan yield the best interest on the equity portfolio?"
    e = fitted.embed([geo1, geo2, chem, fin])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2]
    assert sim[0, 1] > sim[0, 3]
    assert sim[2, 0] < sim[2, 2] and sim[3, 0] < sim[3, 3]


def test_state_round_trip_gives_identical_embeddings(fitted: TfidfSvdEmbedder, corpus: list[str]) -> None:
    meta, arrays = fitted.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert isinstance(meta["vocabulary"], list)
    back = TfidfSvdEmbedder.from_state(meta, {k: v.copy() for k, v in arrays.items()})
    texts = [*corpus[:25], "completely new words here", "river " * 50]
    np.testing.assert_array_equal(back.embed(texts), fitted.embed(texts))
    assert back.fingerprint() == fitted.fingerprint()


def test_from_state_rejects_mismatched_arrays(fitted: TfidfSvdEmbedder) -> None:
    meta, arrays = fitted.get_state()
    bad = dict(arrays)
    bad["embed_idf"] = arrays["embed_idf"][:-1]
    with pytest.raises(ConfigError):
        TfidfSvdEmbedder.from_state(meta, bad)
    with pytest.raises(ConfigError):
        TfidfSvdEmbedder.from_state({**meta, "vocabulary": [1, 2, 3]}, arrays)


def test_not_fitted_errors() -> None:
    e = TfidfSvdEmbedder()
    with pytest.raises(NotFittedError):
        e.embed(["hello"])
    with pytest.raises(NotFittedError):
        e.get_state()
    with pytest.raises(NotFittedError):
        e.fingerprint()


def test_fit_needs_two_texts() -> None:
    with pytest.raises(ConfigError):
        TfidfSvdEmbedder().fit(["only one"])


def test_small_corpus_fits_with_fewer_components() -> None:
    e = TfidfSvdEmbedder(n_components=64).fit(["alpha beta", "gamma delta", "alpha gamma"])
    x = e.embed(["alpha beta gamma"])
    assert 1 <= x.shape[1] < 64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)


def test_million_character_query_is_clipped(fitted: TfidfSvdEmbedder) -> None:
    huge = "river mountain capital " * 45_000 + "molecule catalyst acid"  # ~1M characters
    assert len(huge) > 1_000_000
    x = fitted.embed([huge])
    assert x.shape == (1, 16)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x), 1.0, atol=1e-6)
    # only the clipped text (head + tail) is read
    np.testing.assert_array_equal(x, fitted.embed([clip_text(huge, fitted.max_chars)]))


def test_clip_text_keeps_head_and_tail() -> None:
    assert clip_text("short", 100) == "short"
    t = "H" * 500 + "M" * 10_000 + "T" * 500
    c = clip_text(t, 1000)
    assert c.startswith("H" * 250) and c.endswith("T" * 500)
    assert len(c) <= 1001


# --------------------------------------------------------------------------- callables


def test_callable_embedder_normalises_and_clips() -> None:
    seen: list[list[str]] = []

    def fn(texts: list[str]) -> list[list[float]]:
        seen.append(texts)
        return [[float(len(t)), 1.0, 0.0] for t in texts]

    e = CallableEmbedder(fn, name="lens", max_chars=100)
    x = e.embed(["ab", "c" * 10_000])
    assert x.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    assert all(len(t) <= 101 for t in seen[0])
    assert e.fit(["x"]) is e
    assert e.fingerprint() == CallableEmbedder(fn, name="lens").fingerprint()


@pytest.mark.parametrize(
    "output",
    [
        [[1.0, 2.0]],  # one row for two texts
        [1.0, 2.0],  # 1-D
        [[1.0, np.nan], [1.0, 2.0]],  # NaN
        [[1.0, np.inf], [1.0, 2.0]],  # inf
        [[[1.0]], [[2.0]]],  # 3-D
    ],
)
def test_callable_embedder_validates_output(output: object) -> None:
    e = CallableEmbedder(lambda texts: output, name="bad")
    with pytest.raises(ConfigError):
        e.embed(["a", "b"])


class _LangChainLike:
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, float(len(t))] for t in texts]


class _LlamaIndexLike:
    def get_text_embedding_batch(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 2.0] for t in texts]


class _PlainEmbed:
    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4))


def test_as_embedder_accepts_framework_objects_and_callables() -> None:
    lc = as_embedder(_LangChainLike())
    assert isinstance(lc, CallableEmbedder)
    np.testing.assert_allclose(lc.embed(["abc"]), np.array([[1.0, 3.0]]) / np.sqrt(10.0))
    li = as_embedder(_LlamaIndexLike())
    assert isinstance(li, CallableEmbedder)
    assert li.embed(["a", "bb"]).shape == (2, 2)
    plain = as_embedder(_PlainEmbed())
    assert plain.embed(["x"]).shape == (1, 4)
    fn = as_embedder(lambda texts: [[1.0, 0.0]] * len(texts))
    assert fn.embed(["x", "y"]).shape == (2, 2)
    assert isinstance(as_embedder(None), TfidfSvdEmbedder)
    tf = TfidfSvdEmbedder()
    assert as_embedder(tf) is tf


def test_as_embedder_rejects_other_objects() -> None:
    with pytest.raises(ConfigError):
        as_embedder(42)
    with pytest.raises(ConfigError):
        as_embedder("not an embedder")
