"""Artifact primitives: a directory holding ``manifest.json``, ``meta.json`` and ``arrays.npz``.

The store knows nothing of what it saves. The manifest records the artifact's kind, schema version and
the size and SHA-256 of every file; loading verifies all of them before parsing anything. Arrays are
saved without pickle and loaded with ``allow_pickle=False``. Every failure is an
:class:`~crescade.errors.ArtifactError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..common.atomic import default_mode
from ..common.errors import ArtifactError, ConfigError

__all__ = ["SCHEMA_VERSION", "dump_fields", "fingerprint", "load_artifact", "load_fields", "save_artifact"]

SCHEMA_VERSION = 1
T = TypeVar("T")
MANIFEST = "manifest.json"
META = "meta.json"
ARRAYS = "arrays.npz"
MAX_MANIFEST_BYTES = 1 << 20
MAX_META_BYTES = 64 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _crescade_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("crescade")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _canonical_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays cannot be fingerprinted")
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def fingerprint(obj: Any) -> str:
    """SHA-256 hex digest of ``obj`` as canonical JSON (sorted keys, compact, no NaN/inf).

    numpy scalars and arrays are converted to plain numbers and lists first.
    """
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_canonical_default)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot fingerprint object: {e}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- saving


def _fsync_dir(path: Path) -> None:
    """fsync a directory so renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` as ``np.savez`` writes it, with ``allow_pickle=False`` and any array names."""
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _file_entry(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ArtifactError(f"array name must be a non-empty string, got {name!r}")
        if not isinstance(arr, np.ndarray):
            raise ArtifactError(f"array {name!r}: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype.hasobject:
            raise ArtifactError(f"array {name!r}: dtype {arr.dtype} holds Python objects; not saved "
                                "(artifacts never use pickle)")
        out[name] = arr
    return out


def save_artifact(
    directory: str | os.PathLike[str], *, kind: str, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Write an artifact atomically: a previous artifact at ``directory`` survives any failure."""
    if not isinstance(kind, str) or not kind:
        raise ArtifactError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(meta, dict):
        raise ArtifactError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        meta_bytes = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False,
                                indent=1).encode("utf-8")
    except ValueError as e:
        raise ArtifactError(f"{META}: meta contains NaN or infinity, which JSON cannot hold ({e})") from None
    except TypeError as e:
        raise ArtifactError(f"{META}: meta is not JSON-serialisable ({e})") from None
    if len(meta_bytes) > MAX_META_BYTES:
        raise ArtifactError(f"{META}: meta is {len(meta_bytes)} bytes, more than {MAX_META_BYTES}")
    checked = _check_arrays(arrays)

    target = Path(directory)
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise ArtifactError(f"{target}: exists and is not a directory; refusing to replace it")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise ArtifactError(f"{target}: directory exists and is not an artifact (no {MANIFEST}); "
                                "refusing to replace it")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        os.chmod(tmp, default_mode(directory=True))
    except OSError as e:
        raise ArtifactError(f"{target}: cannot create a temporary directory: {e}") from None
    try:
        _write_file(tmp / META, meta_bytes)
        _write_npz(tmp / ARRAYS, checked)
        manifest = {
            "kind": kind,
            "schema_version": SCHEMA_VERSION,
            "crescade_version": _crescade_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {name: _file_entry(tmp / name) for name in (META, ARRAYS)},
        }
        _write_file(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
        _fsync_dir(tmp)
        _swap_in(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ArtifactError(f"{target}: cannot save artifact: {e}") from e
        raise


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp``; the old directory is removed only after the swap succeeded."""
    aside: Path | None = None
    if target.exists():
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
        os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    _fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# --------------------------------------------------------------------------- loading


def _read_json(path: Path, *, limit: int) -> Any:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ArtifactError(f"{path}: {size} bytes, more than the {limit} allowed")
        raw = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not UTF-8 text") from None
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{path}: invalid JSON ({e})") from None


def _check_manifest(manifest: Any, path: Path, kind: str) -> dict[str, dict[str, Any]]:
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: not a crescade manifest (expected a JSON object)")
    missing = [k for k in ("kind", "schema_version", "files") if k not in manifest]
    if missing:
        raise ArtifactError(f"{path}: not a crescade manifest (missing {', '.join(missing)})")
    version = manifest["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path}: schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema version {version} was written by a newer crescade; "
                            f"this one reads schema version {SCHEMA_VERSION}")
    if version < 1:
        raise ArtifactError(f"{path}: unsupported schema version {version}")
    if manifest["kind"] != kind:
        raise ArtifactError(f"{path}: artifact is of kind {manifest['kind']!r}, expected {kind!r}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{path}: 'files' must be an object")
    for name in (META, ARRAYS):
        if name not in files:
            raise ArtifactError(f"{path}: {name} is not listed")
    for name, entry in files.items():
        if not isinstance(name, str) or name in ("", ".", "..", MANIFEST) or "/" in name or "\\" in name:
            raise ArtifactError(f"{path}: invalid file name {name!r}")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256_RE.match(entry["sha256"]) or not isinstance(entry.get("size"), int)
                or isinstance(entry.get("size"), bool) or entry["size"] < 0):
            raise ArtifactError(f"{path}: entry of {name} must hold a sha256 hex digest and a size")
    return files


def _verify_file(path: Path, entry: dict[str, Any]) -> None:
    try:
        if not path.is_file():
            raise ArtifactError(f"{path}: missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(f"{path}: size {size} bytes, the manifest says {entry['size']} "
                                "(truncated or modified)")
        digest = _file_entry(path)["sha256"]
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read: {e.strerror or e}") from None
    if digest != entry["sha256"]:
        raise ArtifactError(f"{path}: checksum mismatch (file corrupted or modified)")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ArtifactError(f"{path}: not an .npz archive")
        with npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except ArtifactError:
        raise
    except ValueError as e:
        raise ArtifactError(f"{path}: cannot load arrays ({e})") from None
    except Exception as e:  # BadZipFile, OSError, EOFError, ...: all mean a damaged file
        raise ArtifactError(f"{path}: damaged array archive ({type(e).__name__}: {e})") from None


def load_artifact(
    directory: str | os.PathLike[str], *, kind: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Verify and load an artifact saved by :func:`save_artifact`: ``(meta, arrays)``."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no artifact here (not a directory)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing; {root} is not a crescade artifact")
    files = _check_manifest(_read_json(mpath, limit=MAX_MANIFEST_BYTES), mpath, kind)
    for name, entry in files.items():
        if name == META and entry["size"] > MAX_META_BYTES:
            raise ArtifactError(f"{root / name}: {entry['size']} bytes, more than {MAX_META_BYTES}")
        _verify_file(root / name, entry)
    meta = _read_json(root / META, limit=MAX_META_BYTES)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{root / META}: expected a JSON object, got {type(meta).__name__}")
    arrays = _load_npz(root / ARRAYS)
    return meta, arrays


# ---------------------------------------------------------------------- dataclasses of persisted fields
def dump_fields(obj: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The meta and arrays of a dataclass whose every field carries a ``codec`` (with ``dump(name, value)``)
    in its metadata, as :class:`crescade.engine.state.CascadeState` does."""
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(obj):
        m, a = f.metadata["codec"].dump(f.name, getattr(obj, f.name))
        meta.update(m)
        arrays.update(a)
    return meta, arrays


def load_fields(cls: type[T], meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                context: Mapping[str, Any] | None = None) -> T:
    """The dataclass ``cls`` rebuilt by each field's ``codec.load(name, meta, arrays, context)``; fields
    whose codec loads ``None`` keep their default."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        v = f.metadata["codec"].load(f.name, meta, arrays, dict(context or {}))
        if v is not None:
            values[f.name] = v
    return cls(**values)
