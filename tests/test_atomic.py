"""Atomic writes: all or nothing, ordinary permissions, no temp file left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crescade.common.atomic import atomic_write, default_mode


def test_writes_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    with atomic_write(target) as f:
        f.write(b"hello")
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(target).st_mode) == default_mode()
    assert default_mode() & 0o044  # readable by others under a normal umask, unlike mkstemp's 0600


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
