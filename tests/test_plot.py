"""Tests of crescade.evaluation.plot: a valid PNG is written atomically; bad input raises ConfigError."""

from __future__ import annotations

import builtins
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crescade.common.errors import ConfigError
from crescade.evaluation.plot import cost_quality_plot

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip()[-8:-4] == b"IEND"
    return width, height


def _example(path: Path, **kwargs: Any) -> None:
    costs = np.linspace(0.05, 1.0, 11)
    cost_quality_plot(
        path,
        curves={
            "cascade": (costs, 0.6 + 0.3 * np.sqrt(costs)),
            "random": (costs[::-1], 0.6 + 0.3 * costs[::-1]),
        },
        points={"weak": (0.05, 0.6), "strong": (1.0, 0.9), "oracle": (0.3, 0.95), "calibrated": (0.4, 0.88)},
        title="test plot",
        reference_lines={"97% of strongest": 0.873, "99% of strongest": 0.891},
        **kwargs,
    )


@pytest.mark.parametrize("log_x", [False, True])
def test_writes_valid_png(tmp_path: Path, log_x: bool) -> None:
    out = tmp_path / "sub" / "plot.png"
    _example(out, log_x=log_x)
    width, height = _png_size(out)
    assert width > 300 and height > 200
    assert out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temp file left behind


def test_overwrites_atomically(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    out.write_bytes(b"old")
    _example(out)
    _png_size(out)


def test_points_only_and_curves_only(tmp_path: Path) -> None:
    cost_quality_plot(tmp_path / "a.png", curves={}, points={"m": (1.0, 0.5)}, title="points")
    cost_quality_plot(tmp_path / "b.png", curves={"c": ([0, 1], [0.1, 0.2])}, points={}, title="curve")
    _png_size(tmp_path / "a.png")
    _png_size(tmp_path / "b.png")


def test_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    with pytest.raises(ConfigError, match="nothing to plot"):
        cost_quality_plot(out, curves={}, points={}, title="t")
    with pytest.raises(ConfigError, match="'c'"):
        cost_quality_plot(out, curves={"c": ([0, 1, 2], [0.1, 0.2])}, points={}, title="t")
    with pytest.raises(ConfigError, match="'c'"):
        cost_quality_plot(out, curves={"c": ([0, 1], [0.1, np.nan])}, points={}, title="t")
    with pytest.raises(ConfigError, match="log x"):
        cost_quality_plot(out, curves={"c": ([0, 1], [0.1, 0.2])}, points={}, title="t", log_x=True)
    with pytest.raises(ConfigError, match="'p'"):
        cost_quality_plot(out, curves={}, points={"p": (1.0,)}, title="t")  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="'r'"):
        cost_quality_plot(out, curves={}, points={"p": (1, 1)}, title="t", reference_lines={"r": np.inf})
    assert not out.exists()


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"crescade\[plot\]"):
        cost_quality_plot(tmp_path / "x.png", curves={}, points={"p": (1, 1)}, title="t")
