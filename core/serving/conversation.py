"""Conversation policy shared by the adapters: the tier a conversation may not drop below."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def conversation_floor(accounts: Iterable[Mapping[str, Any] | None], pool: Sequence[str]) -> str | None:
    """The model a conversation may not drop below, read statelessly from earlier cascade answers.

    ``accounts`` are the crescade accounts of the conversation's earlier assistant messages, oldest
    first (``None`` for messages the cascade did not produce). The latest answer that was escalated
    sets the floor to the model that answered it; a later answer that was itself floored carries its
    floor forward. Models no longer in ``pool``, and accounts that are not shaped like crescade's own
    (``escalated`` not ``True``, names that are not strings), are ignored.
    """
    for account in reversed(list(accounts)):
        if not isinstance(account, Mapping):
            continue
        model, floor = account.get("model"), account.get("floor")
        if account.get("escalated") is True and isinstance(model, str) and model in pool:
            return model
        if isinstance(floor, str) and floor in pool:
            return floor
    return None
