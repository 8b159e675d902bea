"""Tests of crescade.engine.tokens: offline counting, cache lookup without network, usage resolution."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from crescade.common.errors import ConfigError
from crescade.engine import tokens
from crescade.engine.tokens import TokenCount, count_tokens, encoding_name_for, resolve_usage

CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"


def _no_network(*args: Any, **kwargs: Any) -> Any:
    pytest.fail(f"tiktoken tried to download: {args!r}")


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with an empty encoding cache, and tiktoken can never download."""
    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", _no_network)
    tokens._load_encoding.cache_clear()
    yield
    tokens._load_encoding.cache_clear()


@pytest.fixture
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No BPE file anywhere: every candidate directory is empty."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(empty))
    monkeypatch.setattr(tokens, "_llama_index_cache_dirs", lambda: [])
    monkeypatch.setattr(tokens, "_package_cache_dirs", lambda: [])
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(empty))
    return empty


def test_cache_file_names_match_tiktoken() -> None:
    assert tokens.cache_file_name("cl100k_base") == CL100K_FILE
    assert tokens.cache_file_name("o200k_base") == O200K_FILE


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        (None, "cl100k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("ft:gpt-4o-2024", "o200k_base"),
        ("gpt-4-1106-preview", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("mistralai/mixtral-8x7b-chat", "cl100k_base"),
    ],
)
def test_encoding_choice(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_estimate_when_no_cache(no_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    monkeypatch.setattr(tiktoken, "get_encoding", _no_network)
    assert count_tokens("abcdefghi") == TokenCount(3, "estimate")
    assert count_tokens("a") == TokenCount(1, "estimate")
    assert count_tokens("") == TokenCount(0, "estimate")
    assert count_tokens("x" * 400, model="gpt-4o") == TokenCount(100, "estimate")


def test_corrupt_cache_file_is_skipped_not_refetched(no_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    monkeypatch.setattr(tiktoken, "get_encoding", _no_network)
    bogus = no_cache / CL100K_FILE
    bogus.write_bytes(b"not a bpe file")
    assert count_tokens("hello world").source == "estimate"
    assert bogus.read_bytes() == b"not a bpe file"  # tiktoken would have deleted it and downloaded


def test_candidate_dirs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/t")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", "/d")
    monkeypatch.setattr(tokens, "_llama_index_cache_dirs", lambda: ["/l"])
    monkeypatch.setattr(tokens, "_package_cache_dirs", lambda: ["/p"])
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    gym = os.path.join(str(tmp_path), "data-gym-cache")
    assert tokens.candidate_cache_dirs() == ["/t", "/p", "/l", "/d", gym]
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    assert tokens.candidate_cache_dirs() == ["/p", "/l", gym]


def test_llama_index_lookup_does_not_import_it() -> None:
    before = "llama_index" in sys.modules
    dirs = tokens._llama_index_cache_dirs()
    assert ("llama_index" in sys.modules) == before
    assert all(d.endswith(os.path.join("core", "_static", "tiktoken_cache")) for d in dirs)


def test_llama_index_dir_found_via_spec(tmp_path: Path) -> None:
    """Found through the import system without importing llama_index (a fresh interpreter, so no earlier
    test's import of the real package can interfere)."""
    target = tmp_path / "site" / "llama_index" / "core" / "_static" / "tiktoken_cache"
    target.mkdir(parents=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from crescade.engine import tokens; "
        "dirs = tokens._llama_index_cache_dirs(); "
        "assert sys.argv[2] in dirs, dirs; assert 'llama_index' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site"), str(target)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_tiktoken_from_local_cache_only() -> None:
    assert tokens.find_cached_bpe("cl100k_base") in tokens._package_cache_dirs()  # shipped with crescade
    assert tokens.find_cached_bpe("o200k_base") in tokens._package_cache_dirs()
    original = os.environ.get("TIKTOKEN_CACHE_DIR")
    assert count_tokens("hello world") == TokenCount(2, "tiktoken")
    assert count_tokens("hello <|endoftext|> world").source == "tiktoken"  # special tokens are text
    assert count_tokens("") == TokenCount(0, "tiktoken")
    assert os.environ.get("TIKTOKEN_CACHE_DIR") == original  # restored after loading


def test_thread_safe_counting() -> None:
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(64)]
    expected = [count_tokens(t) for t in texts]
    tokens._load_encoding.cache_clear()
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(count_tokens, texts)) == expected


def test_resolve_usage_provider_first(no_cache: Path) -> None:
    assert resolve_usage(prompt_text="abcd" * 10, response_text="xy", input_tokens=7, output_tokens=0,
                         model=None) == (7, 0, "provider")
    assert resolve_usage(prompt_text="abcd" * 10, response_text="xy", input_tokens=7, output_tokens=None,
                         model=None) == (7, 1, "estimate")
    assert resolve_usage(prompt_text="abcd" * 10, response_text="", input_tokens=None, output_tokens=None,
                         model="gpt-4o") == (10, 0, "estimate")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_resolve_usage_rejects_bad_counts(bad: Any) -> None:
    with pytest.raises(ConfigError):
        resolve_usage(prompt_text="a", response_text="b", input_tokens=bad, output_tokens=1, model=None)


def test_count_tokens_rejects_non_string() -> None:
    with pytest.raises(ConfigError):
        count_tokens(b"bytes")  # type: ignore[arg-type]


def test_counts_match_the_recorded_cl100k_counts() -> None:
    """The shared data's token columns are cl100k_base counts: ours must agree exactly."""
    from crescade.engine.records import read_records

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routellm-gsm8k.csv.gz"
    for rec in read_records(data)[:40]:
        assert count_tokens(rec.prompt, model="gpt-4") == TokenCount(rec.input_tokens, "tiktoken")
        assert count_tokens(rec.response, model="gpt-4").n == rec.output_tokens
