"""Keeping secrets out of everything crescade writes: error texts in accounts, records, reports and logs.

Two defences, both applied by :func:`redact`: common secret shapes (``sk-…`` keys, ``Bearer`` tokens,
``api_key=…`` pairs) are masked wherever they appear, and the exact values of secrets crescade was
shown -- the API keys of the child models an adapter wraps, found by :func:`secrets_of` -- are masked
whatever their shape. Registered values are kept in memory only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["redact", "register_secrets", "secrets_of"]

PATTERNS = (
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/\-]+=*"),
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|secret|password|x-api-key)(\s*[=:]\s*)['\"]?[^\s'\",;]+"),
)
_MIN_SECRET = 8  # shorter values would mask ordinary words
_lock = threading.Lock()
_known: set[str] = set()
_SECRET_ATTRS = re.compile(r"(?i)(api_?key|token|secret|password|credential)")


def register_secrets(values: Iterable[str]) -> None:
    """Mask these exact values in everything :func:`redact` cleans from now on (short ones are ignored)."""
    fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET}
    if fresh:
        with _lock:
            _known.update(fresh)


def secrets_of(obj: Any, _depth: int = 0) -> list[str]:
    """Secret values held by a client object: ``SecretStr``-like fields (anything with
    ``get_secret_value()``) and string attributes named like keys or tokens, a few levels deep."""
    found: list[str] = []
    if _depth > 3 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return found
    fields = getattr(obj, "__dict__", None)
    if not isinstance(fields, dict):
        return found
    for name, value in list(fields.items()):
        getter = getattr(value, "get_secret_value", None)
        if callable(getter):
            try:
                secret = getter()
            except Exception:
                continue
            if isinstance(secret, str):
                found.append(secret)
        elif isinstance(value, str) and _SECRET_ATTRS.search(name):
            found.append(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
            found += secrets_of(value, _depth + 1)
    return found


def _mask(m: re.Match[str]) -> str:
    if m.lastindex:  # key=value: keep the key name
        return f"{m.group(1)}{m.group(2)}[redacted]"
    return "[redacted]"


def redact(text: str) -> str:
    """``text`` with every known secret and every secret-shaped token replaced by ``[redacted]``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern in PATTERNS:
        text = pattern.sub(_mask, text)
    return text
