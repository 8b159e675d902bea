"""Compatibility path: :mod:`crescade.serving.faults` under its documented name ``crescade.faults``."""

from .serving.faults import (
    FAULT_KINDS,
    Delivery,
    Fault,
    FaultKind,
    FaultSchedule,
    InjectedConnectionResetError,
    InjectedFault,
    InjectedMalformedResponseError,
    InjectedRateLimitError,
    InjectedServerError,
    InjectedStreamError,
    InjectedTimeoutError,
)

__all__ = [
    "FAULT_KINDS",
    "Delivery",
    "Fault",
    "FaultKind",
    "FaultSchedule",
    "InjectedConnectionResetError",
    "InjectedFault",
    "InjectedMalformedResponseError",
    "InjectedRateLimitError",
    "InjectedServerError",
    "InjectedStreamError",
    "InjectedTimeoutError",
]
