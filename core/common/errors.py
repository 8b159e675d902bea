"""The exceptions crescade raises. Every one derives from :class:`CrescadeError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CrescadeError(Exception):
    """Base class of every error crescade raises on purpose."""


class RecordsError(CrescadeError, ValueError):
    """A record file (or in-memory record set) is malformed.

    The message names the file, the 1-based line and the column when they are known.
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, column: str | None = None
    ) -> None:
        self.path, self.line, self.column, self.reason = path, line, column, message
        where = ", ".join(
            p for p in (path, f"line {line}" if line is not None else None,
                        f"column {column!r}" if column else None) if p
        )
        super().__init__(f"{where}: {message}" if where else message)


class PricingError(CrescadeError, ValueError):
    """A price is unknown or malformed. An unknown price is never a silent zero."""


class ArtifactError(CrescadeError, ValueError):
    """A saved cascade artifact is missing, damaged, truncated, foreign or of another schema."""


class NotFittedError(CrescadeError, RuntimeError):
    """The estimator is used before `fit`."""


class PoolError(CrescadeError, ValueError):
    """The model pool is inconsistent (unknown, missing or duplicate model names)."""


class ConfigError(CrescadeError, ValueError):
    """A parameter value is out of range or of the wrong kind."""


class MissingExtraError(CrescadeError, ImportError):
    """An optional feature is used whose extra is not installed (the message names the ``pip install``)."""


class ModelFileError(CrescadeError, ValueError):
    """A model file that crescade loads (e.g. the ONNX embedder's) is missing or fails its size/sha256 check."""


@dataclass(frozen=True)
class TierFailure:
    """One tier's failure inside a dispatch: which model, and the error it raised."""

    tier: int
    model: str
    error: BaseException

    def describe(self) -> str:
        from .redact import redact

        try:
            text = str(self.error)
        except Exception:
            text = "<unprintable>"
        return f"tier {self.tier} ({self.model}): {type(self.error).__name__}: {redact(text)[:500]}"


class AllTiersFailedError(CrescadeError, RuntimeError):
    """Every tier of the ladder failed; ``failures`` lists each tier's error in order."""

    def __init__(self, failures: Sequence[TierFailure]) -> None:
        self.failures = list(failures)
        lines = "\n  ".join(f.describe() for f in self.failures)
        super().__init__(f"all {len(self.failures)} tier(s) failed:\n  {lines}")


class InputError(CrescadeError, ValueError):
    """A request the cascade cannot serve as given: no messages, nothing to route on, or content no tier accepts."""
