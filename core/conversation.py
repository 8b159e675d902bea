"""Conversation policy shared by the adapters: the tier a conversation may not drop below."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def conversation_floor(accounts: Iterable[Mapping[str, Any] | None], pool: Sequence[str]) -> str | None:
    """The model a conversation may not drop below, read statelessly from earlier cascade answers.

    ``accounts`` are the crescade accounts of the conversation's earlier assistant messages, oldest
    first (``None`` for messages the cascade did not produce). The latest answer that was escalated
    sets the floor to the model that answered it; a later answer that was itself floored carries its
    floor forward. Models no longer in ``pool`` are ignored.
    """
    for account in reversed(list(accounts)):
        if not isinstance(account, Mapping):
            continue
        if account.get("escalated") and account.get("model") in pool:
            return str(account["model"])
        if account.get("floor") in pool:
            return str(account["floor"])
    return None
