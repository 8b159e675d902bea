"""What a request must look like before the cascade routes it, shared by both adapters.

The adapters translate their framework's messages into plain facts (each message's text, the kinds of
non-text content it carries, the tools bound) and ask this module; every problem is an
:class:`~crescade.errors.InputError` that names the message, the tool or the content at fault. Nothing is
silently rewritten: text the cascade cannot pass on (a lone surrogate) is refused, not replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..common.errors import InputError
from ..engine.decisions import Plan
from ..engine.pricing import INPUT_KINDS, ModelCard
from .jsonschema_lite import schema_problems

__all__ = ["check_messages", "check_tool", "restrict_to_inputs"]

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def check_messages(texts: Sequence[str], kinds: Sequence[set[str] | frozenset[str]]) -> set[str]:
    """Refuse a request with no messages, with nothing in it, or with text that is not valid Unicode;
    return the kinds of content it carries (``{"text"}`` at least).

    ``texts[i]`` is message ``i``'s text, ``kinds[i]`` the kinds of its other parts (``"image"``, ...).
    """
    if not texts:
        raise InputError("the request has no messages: give at least one message")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"message {i}: text must be a string, got {type(text).__name__}")
        m = _SURROGATE.search(text)
        if m:
            raise InputError(f"message {i}: invalid Unicode (a lone surrogate U+{ord(m.group()):04X} at character "
                             f"{m.start()}); encode the text properly before sending it")
    needed = {"text"}
    for ks in kinds:
        needed |= set(ks)
    if not any(t.strip() for t in texts) and needed == {"text"}:
        raise InputError(f"nothing to answer: all {len(texts)} message(s) are empty or whitespace")
    unknown = sorted(needed - set(INPUT_KINDS))
    if unknown:
        raise InputError(f"the request carries content of unsupported kind(s) {', '.join(map(repr, unknown))}; "
                         f"crescade routes {', '.join(INPUT_KINDS)}")
    return needed


def restrict_to_inputs(plan: Plan, cards: Mapping[str, ModelCard], needed: set[str]) -> Plan:
    """``plan`` cut down to the tiers whose card accepts every kind in ``needed``; an :class:`InputError`
    when none does."""
    if needed <= {"text"}:
        return plan
    keep = [i for i, m in enumerate(plan.ladder) if m in cards and needed <= cards[m].inputs]
    if not keep:
        extra = ", ".join(sorted(needed - {"text"}))
        raise InputError(f"the request has {extra} content and no model of its ladder {list(plan.ladder)} accepts "
                         f"it; declare the models that do with ModelCard(inputs=[...])")
    if len(keep) == len(plan.ladder):
        return plan
    th = plan.thresholds
    note = f"restricted to tiers accepting {', '.join(sorted(needed))}"
    thresholds = (*tuple(th[i] for i in keep[:-1]), 0.0) if len(th) == len(plan.ladder) else th
    return replace(plan, ladder=tuple(plan.ladder[i] for i in keep), thresholds=thresholds,
                   reason=f"{plan.reason}; {note}" if plan.reason else note)


def check_tool(name: Any, parameters: Any, *, index: int) -> None:
    """Refuse a tool whose name or parameter schema is not usable: the problem and the tool are named."""
    label = f"tool {index}" + (f" ({name!r})" if isinstance(name, str) else "")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise InputError(f"{label}: the name must be 1-128 letters, digits, '_', '-' or '.', got {name!r}")
    if parameters is None:
        return
    if not isinstance(parameters, Mapping):
        raise InputError(f"{label}: parameters must be a JSON Schema object, got {type(parameters).__name__}")
    problems = schema_problems(parameters)
    if problems:
        raise InputError(f"{label}: parameters are not a valid JSON Schema: {'; '.join(problems[:5])}")
    kind = parameters.get("type")
    if kind is not None and kind != "object":
        raise InputError(f"{label}: parameters must describe an object (type 'object'), got type {kind!r}")
