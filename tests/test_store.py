"""Tests of crescade.engine.store: atomic artifact save/load, integrity checks, fingerprints."""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crescade.common.errors import ArtifactError, ConfigError
from crescade.engine import store
from crescade.engine.store import SCHEMA_VERSION, fingerprint, load_artifact, save_artifact

FILES = ("manifest.json", "meta.json", "arrays.npz")


def _arrays() -> dict[str, np.ndarray]:
    return {
        "centroids": np.random.default_rng(0).normal(size=(4, 3)),
        "counts": np.arange(5, dtype=np.int32),
        "mask": np.array([True, False]),
        "names": np.array(["gpt-4", "mixtral"]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 2)),
        "file": np.ones(2),  # names that would clash with np.savez's own parameters
        "allow_pickle": np.ones(1),
    }


META = {"k": 16, "lambda": 0.25, "models": ["a", "b"], "nested": {"x": None, "ok": True}, "ü": "☃"}


def _save(path: Path, meta: dict[str, Any] = META, kind: str = "cascade") -> None:
    save_artifact(path, kind=kind, meta=meta, arrays=_arrays())


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target)
    meta, arrays = load_artifact(target, kind="cascade")
    assert meta == META
    expected = _arrays()
    assert set(arrays) == set(expected)
    for name, arr in expected.items():
        assert arrays[name].dtype == arr.dtype and arrays[name].shape == arr.shape
        np.testing.assert_array_equal(arrays[name], arr)
    assert sorted(os.listdir(target)) == sorted(FILES)
    assert _siblings(target) == ["art"]


def test_manifest_contents(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["kind"] == "cascade" and manifest["schema_version"] == SCHEMA_VERSION == 1
    assert isinstance(manifest["crescade_version"], str)
    assert datetime.fromisoformat(manifest["created"]).utcoffset().total_seconds() == 0
    for name in ("meta.json", "arrays.npz"):
        data = (target / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    with np.load(target / "arrays.npz", allow_pickle=False) as npz:  # a plain .npz
        assert set(npz.files) == set(_arrays())


def test_overwrite_replaces_previous(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target, meta={"v": 1})
    _save(target, meta={"v": 2})
    assert load_artifact(target, kind="cascade")[0] == {"v": 2}
    assert _siblings(target) == ["art"]


def test_empty_arrays_and_existing_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "art"
    target.mkdir()
    save_artifact(target, kind="k", meta={}, arrays={})
    assert load_artifact(target, kind="k") == ({}, {})


def test_refuses_to_replace_non_artifacts(tmp_path: Path) -> None:
    d = tmp_path / "home"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an artifact"):
        _save(d)
    assert (d / "precious.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        _save(f)


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ({"x": math.nan}, "NaN"),
        ({"x": [1.0, math.inf]}, "NaN or infinity"),
        ({"x": object()}, "not JSON-serialisable"),
        ({"x": np.float32(1.0)}, "not JSON-serialisable"),
    ],
)
def test_save_rejects_bad_meta(tmp_path: Path, meta: dict[str, Any], needle: str) -> None:
    with pytest.raises(ArtifactError, match=needle):
        save_artifact(tmp_path / "art", kind="k", meta=meta, arrays={})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_non_dict_meta_and_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="dict"):
        save_artifact(tmp_path / "a", kind="k", meta=[1], arrays={})  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match=r"'bad'.*object"):
        save_artifact(tmp_path / "a", kind="k", meta={}, arrays={"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ArtifactError, match="numpy array"):
        save_artifact(tmp_path / "a", kind="k", meta={}, arrays={"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ArtifactError, match="kind"):
        save_artifact(tmp_path / "a", kind="", meta={}, arrays={})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- corruption


def _load_error(target: Path, kind: str = "cascade") -> str:
    with pytest.raises(ArtifactError) as ei:
        load_artifact(target, kind=kind)
    msg = str(ei.value)
    assert str(target) in msg
    return msg.replace(str(target), "<dir>")  # the tmp path holds the test's name: keep it out of checks


@pytest.mark.parametrize("name", FILES)
def test_truncated_file(tmp_path: Path, name: str) -> None:
    target = tmp_path / "art"
    _save(target)
    path = target / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(target)
    assert name in msg


@pytest.mark.parametrize("name", FILES)
def test_truncated_to_zero(tmp_path: Path, name: str) -> None:
    target = tmp_path / "art"
    _save(target)
    (target / name).write_bytes(b"")
    assert name in _load_error(target)


@pytest.mark.parametrize(("name", "needle"), [("manifest.json", "invalid JSON"), ("meta.json", "checksum"),
                                              ("arrays.npz", "checksum")])
def test_flipped_byte(tmp_path: Path, name: str, needle: str) -> None:
    target = tmp_path / "art"
    _save(target)
    path = target / name
    data = bytearray(path.read_bytes())
    pos = 0 if name == "manifest.json" else len(data) // 2
    data[pos] ^= 0x41
    path.write_bytes(bytes(data))
    msg = _load_error(target)
    assert name in msg and needle in msg


@pytest.mark.parametrize("name", FILES)
def test_deleted_file(tmp_path: Path, name: str) -> None:
    target = tmp_path / "art"
    _save(target)
    (target / name).unlink()
    msg = _load_error(target)
    assert name in msg and "missing" in msg


def test_missing_directory(tmp_path: Path) -> None:
    assert "no artifact here" in _load_error(tmp_path / "nowhere")


def _edit_manifest(target: Path, **changes: Any) -> None:
    path = target / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "content",
    ['["not", "a", "manifest"]', '{"name": "some-other-tool", "version": 3}', '"text"', "\xff\xfe"],
)
def test_foreign_manifest(tmp_path: Path, content: str) -> None:
    target = tmp_path / "art"
    _save(target)
    (target / "manifest.json").write_bytes(content.encode("latin-1"))
    assert "manifest.json" in _load_error(target)


def test_wrong_kind(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target, kind="router")
    msg = _load_error(target, kind="cascade")
    assert "manifest.json" in msg and "'router'" in msg and "'cascade'" in msg


@pytest.mark.parametrize(("version", "needle"), [(SCHEMA_VERSION + 1, "newer"), (0, "unsupported"),
                                                 ("1", "integer")])
def test_schema_version(tmp_path: Path, version: Any, needle: str) -> None:
    target = tmp_path / "art"
    _save(target)
    _edit_manifest(target, schema_version=version)
    msg = _load_error(target)
    assert "manifest.json" in msg and needle in msg


def test_manifest_file_entries_checked(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target)
    files = json.loads((target / "manifest.json").read_text())["files"]
    _edit_manifest(target, files={**files, "../escape": files["meta.json"]})
    assert "invalid file name" in _load_error(target)
    _edit_manifest(target, files={"meta.json": files["meta.json"]})
    assert "arrays.npz is not listed" in _load_error(target)
    _edit_manifest(target, files={**files, "meta.json": {"sha256": "zz", "size": 1}})
    assert "sha256" in _load_error(target)


def test_oversized_manifest_and_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "art"
    _save(target)
    path = target / "manifest.json"
    original = path.read_bytes()
    path.write_bytes(original + b" " * (1 << 20))
    assert "more than" in _load_error(target)
    path.write_bytes(original)
    monkeypatch.setattr(store, "MAX_META_BYTES", 10)
    msg = _load_error(target)
    assert "meta.json" in msg and "more than" in msg


def _rewrite_consistently(target: Path, name: str, data: bytes) -> None:
    """Replace a file and update the manifest to match: only content checks can catch it."""
    (target / name).write_bytes(data)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (target / "manifest.json").write_text(json.dumps(manifest))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickled_object_array_is_refused_not_executed(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _save(target)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    np.savez(evil, x=np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    _rewrite_consistently(target, "arrays.npz", evil.read_bytes())
    msg = _load_error(target)
    assert "arrays.npz" in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "data"),
    [("arrays.npz", b"PK\x03\x04 definitely not a zip"), ("arrays.npz", np.lib.format.magic(1, 0) + b"xx"),
     ("meta.json", b"[1, 2]"), ("meta.json", b'{"x": NaN}'), ("meta.json", b"\xff")],
)
def test_consistent_manifest_but_bad_content(tmp_path: Path, name: str, data: bytes) -> None:
    target = tmp_path / "art"
    _save(target)
    _rewrite_consistently(target, name, data)
    assert name in _load_error(target)


# --------------------------------------------------------------------------- failed saves


def _assert_previous_intact(target: Path) -> None:
    assert load_artifact(target, kind="cascade")[0] == {"v": 1}
    assert _siblings(target) == [target.name]


def test_failure_while_writing_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "art"
    _save(target, meta={"v": 1})
    real = store._write_npz

    def half_then_fail(path: Path, arrays: dict[str, np.ndarray]) -> None:
        real(path, arrays)
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(store, "_write_npz", half_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        _save(target, meta={"v": 2})
    _assert_previous_intact(target)


def test_failure_during_swap_restores_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "art"
    _save(target, meta={"v": 1})
    real_rename = os.rename

    def failing_rename(src: Any, dst: Any) -> None:
        if ".tmp-" in os.fspath(src):
            raise OSError("rename failed (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(ArtifactError, match="simulated"):
        _save(target, meta={"v": 2})
    monkeypatch.undo()
    _assert_previous_intact(target)


def test_failure_on_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> None:
        raise OSError("no space (simulated)")

    monkeypatch.setattr(store, "_write_file", fail)
    with pytest.raises(ArtifactError, match="simulated"):
        _save(tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint() -> None:
    a = fingerprint({"b": [1, 2.5], "a": "x"})
    assert a == fingerprint({"a": "x", "b": [1, 2.5]})
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != fingerprint({"a": "x", "b": [1, 2.6]})
    assert fingerprint({"p": np.float64(0.5), "n": np.int64(3)}) == fingerprint({"p": 0.5, "n": 3})
    assert fingerprint(np.arange(3)) == fingerprint([0, 1, 2])
    expected = hashlib.sha256(b'{"a":1,"b":[true,null]}').hexdigest()
    assert fingerprint({"b": [True, None], "a": 1}) == expected
    for bad in ({"x": math.nan}, {"x": object()}, np.array([None], dtype=object)):
        with pytest.raises(ConfigError):
            fingerprint(bad)
