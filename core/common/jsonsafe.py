"""Turn results into strict JSON types: NaN/inf become ``None``, numpy scalars and arrays plain Python."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Dict keys become strings (floats as ``f"{k:g}"``), tuples and arrays lists, non-finite floats
    ``None``; anything else unknown is converted with ``str``.
    """
    if isinstance(obj, dict):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
