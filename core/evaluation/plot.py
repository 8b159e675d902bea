"""Cost–quality plots (PNG). Needs matplotlib: ``pip install 'crescade[plot]'``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..common.atomic import atomic_write
from ..common.errors import ConfigError

__all__ = ["cost_quality_plot"]


def _new_figure() -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no display), or ImportError naming the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "crescade.plot needs matplotlib; install it with: pip install 'crescade[plot]'"
        ) from exc
    fig = Figure(figsize=(8.0, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _curve(name: str, xy: tuple[npt.ArrayLike, npt.ArrayLike], log_x: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(xy[0], dtype=np.float64)
        y = np.asarray(xy[1], dtype=np.float64)
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"curves[{name!r}] must be a pair of numeric arrays: {exc}") from None
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ConfigError(f"curves[{name!r}] must be two non-empty 1-D arrays of one length")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError(f"curves[{name!r}] must be finite")
    if log_x and (x <= 0).any():
        raise ConfigError(f"curves[{name!r}] has a cost <= 0, which a log x axis cannot show")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _point(name: str, xy: tuple[float, float], log_x: bool) -> tuple[float, float]:
    try:
        x, y = float(xy[0]), float(xy[1])
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"points[{name!r}] must be a (cost, quality) pair, got {xy!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ConfigError(f"points[{name!r}] must be finite, got {(x, y)}")
    if log_x and x <= 0:
        raise ConfigError(f"points[{name!r}] has a cost <= 0, which a log x axis cannot show")
    return x, y


def cost_quality_plot(
    path: str | os.PathLike[str],
    *,
    curves: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    points: Mapping[str, tuple[float, float]],
    title: str,
    x_label: str = "cost relative to always-strongest",
    y_label: str = "accuracy",
    reference_lines: Mapping[str, float] | None = None,
    log_x: bool = False,
) -> None:
    """Write one PNG of the cost–quality plane to ``path`` (atomically: temp file, then ``os.replace``).

    ``curves``: name → (costs, qualities), drawn as lines with markers (sorted by cost).
    ``points``: name → (cost, quality), single labelled markers (single models, oracle, a calibrated point).
    ``reference_lines``: name → quality, dashed horizontal lines (e.g. 97 % / 99 % of the strongest).
    """
    refs = dict(reference_lines or {})
    checked_curves = {name: _curve(name, xy, log_x) for name, xy in curves.items()}
    checked_points = {name: _point(name, xy, log_x) for name, xy in points.items()}
    for name, level in refs.items():
        if not isinstance(level, (int, float, np.number)) or not math.isfinite(float(level)):
            raise ConfigError(f"reference_lines[{name!r}] must be a finite number, got {level!r}")
    if not checked_curves and not checked_points:
        raise ConfigError("curves and points are both empty: nothing to plot")

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, y) in checked_curves.items():
        ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.5, label=name)
    point_markers = "s^Dvp*hX<>"
    for k, (name, (px, py)) in enumerate(checked_points.items()):
        colour = f"C{(len(checked_curves) + k) % 10}"  # continue the cycle: no clash with the curves
        ax.scatter([px], [py], marker=point_markers[k % len(point_markers)], s=55, zorder=3, color=colour,
                   label=name)
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for name, level in refs.items():
        ax.axhline(float(level), linestyle="--", linewidth=1.0, color="grey", alpha=0.8)
        ax.annotate(
            name, (0.0, float(level)), xycoords=("axes fraction", "data"),
            textcoords="offset points", xytext=(3, 2), fontsize=8, color="dimgrey",
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()

    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
