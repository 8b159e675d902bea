"""Offline token counting: provider counts, else tiktoken from a local BPE cache, else an estimate.

tiktoken downloads its BPE files on first use; crescade never lets it. An encoding is loaded only when
its cached file is already on disk (and its SHA-256 matches), looked up in, in order:
``$TIKTOKEN_CACHE_DIR``, llama-index-core's shipped ``_static/tiktoken_cache``, ``$DATA_GYM_CACHE_DIR``
and tiktoken's default ``<tmp>/data-gym-cache``. Otherwise counts are estimated as ``ceil(len / 4)``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.errors import ConfigError
from .decisions import UsageSource

__all__ = ["TokenCount", "count_tokens", "encoding_name_for", "resolve_usage"]

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# sha256 of each BPE file, as tiktoken_ext.openai_public checks them.
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
_LOCK = threading.Lock()
_STRENGTH = {"provider": 2, "tiktoken": 1, "estimate": 0}


@dataclass(frozen=True)
class TokenCount:
    """A token count and where it came from."""

    n: int
    source: UsageSource


def encoding_name_for(model: str | None) -> str:
    """``o200k_base`` for gpt-4o / 4.1 / 4.5 / 5 and o-series names, else ``cl100k_base``."""
    if not model:
        return "cl100k_base"
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name[3:]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def cache_file_name(encoding: str) -> str:
    """The file name tiktoken caches ``encoding``'s BPE file under (sha1 of its blob URL)."""
    return hashlib.sha1(_BLOB_URL.format(name=encoding).encode()).hexdigest()


def _llama_index_cache_dirs() -> list[str]:
    """llama-index-core's shipped tiktoken cache, located without importing llama_index."""
    try:
        spec = importlib.util.find_spec("llama_index")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.join(loc, "core", "_static", "tiktoken_cache") for loc in spec.submodule_search_locations]


def _package_cache_dirs() -> list[str]:
    """The BPE files shipped inside crescade (cl100k_base and o200k_base)."""
    return [str(Path(__file__).resolve().parents[1] / "data" / "tiktoken_cache")]


def candidate_cache_dirs() -> list[str]:
    """Directories searched for cached BPE files, in order."""
    dirs: list[str] = []
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        dirs.append(os.environ["TIKTOKEN_CACHE_DIR"])
    dirs.extend(_package_cache_dirs())
    dirs.extend(_llama_index_cache_dirs())
    if os.environ.get("DATA_GYM_CACHE_DIR"):
        dirs.append(os.environ["DATA_GYM_CACHE_DIR"])
    dirs.append(os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    return dirs


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_cached_bpe(encoding: str) -> str | None:
    """The first candidate directory holding a valid cached BPE file for ``encoding``, or ``None``."""
    expected = _EXPECTED_SHA256.get(encoding)
    if expected is None:
        return None
    fname = cache_file_name(encoding)
    for d in candidate_cache_dirs():
        path = Path(d) / fname
        try:
            # A file with the wrong hash would make tiktoken delete it and download: skip it.
            if path.is_file() and _sha256_of(path) == expected:
                return d
        except OSError:
            continue
    return None


@functools.cache
def _load_encoding(encoding: str) -> Any | None:
    """The tiktoken Encoding, loaded from a local cache only; ``None`` when unavailable."""
    with _LOCK:
        cache_dir = find_cached_bpe(encoding)
        if cache_dir is None:
            return None
        import tiktoken  # a dependency; imported here so that only counting pays for it

        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
        try:
            return tiktoken.get_encoding(encoding)
        except Exception:  # any tiktoken failure means: estimate instead
            return None
        finally:
            if saved is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved


def estimate_tokens(text: str) -> int:
    """Heuristic count: ``ceil(len(text) / 4)``, at least 1 for non-empty text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def count_tokens(text: str, *, model: str | None = None) -> TokenCount:
    """Count ``text``'s tokens offline with tiktoken if its BPE file is cached, else estimate."""
    if not isinstance(text, str):
        raise ConfigError(f"text must be a string, got {type(text).__name__}")
    if not text:
        enc = _load_encoding(encoding_name_for(model))
        return TokenCount(0, "tiktoken" if enc is not None else "estimate")
    enc = _load_encoding(encoding_name_for(model))
    if enc is not None:
        return TokenCount(len(enc.encode_ordinary(text)), "tiktoken")
    return TokenCount(estimate_tokens(text), "estimate")


def _check_count(label: str, n: int | None) -> None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ConfigError(f"{label} must be a non-negative integer or None, got {n!r}")


def resolve_usage(
    *,
    prompt_text: str,
    response_text: str,
    input_tokens: int | None,
    output_tokens: int | None,
    model: str | None,
) -> tuple[int, int, UsageSource]:
    """Input and output token counts: the provider's where given, else counted.

    The source is ``"provider"`` only when both counts were given; otherwise it is the weakest
    source used (``"tiktoken"`` or ``"estimate"``).
    """
    _check_count("input_tokens", input_tokens)
    _check_count("output_tokens", output_tokens)
    sources: list[UsageSource] = []
    if input_tokens is None:
        c = count_tokens(prompt_text, model=model)
        input_tokens = c.n
        sources.append(c.source)
    if output_tokens is None:
        c = count_tokens(response_text, model=model)
        output_tokens = c.n
        sources.append(c.source)
    source: UsageSource = min(sources, key=_STRENGTH.__getitem__) if sources else "provider"
    return input_tokens, output_tokens, source
