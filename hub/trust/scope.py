"""Which resource a request of the hub's own services is about, as the gate needs it: the agent a
registry write acts for, and the thread filters narrowed to a caller's own threads."""

from __future__ import annotations

import json
from typing import Any

from agenthub.hub.trust.policy import sees_everything
from agenthub.hub.trust.principal import Principal

THREAD_LISTINGS = {"/agenthub.v1.ThreadService/ListThreads", "/agenthub.v1.ThreadService/ExportThreads"}


def agent_written(method: str, request: Any) -> str:
    """The agent a registry write is for: the card's name on register (or the name asked for with
    a URL), the request's name otherwise; '' when the request does not say (only admins pass)."""
    if method.endswith("/RegisterAgent"):
        if request.name:
            return str(request.name)
        try:
            card = json.loads(request.card_json or "{}")
        except json.JSONDecodeError:
            return ""
        return str(card.get("name", "")) if isinstance(card, dict) else ""
    return str(getattr(request, "name", ""))


def narrow_to_own_threads(method: str, request: Any, principal: Principal) -> None:
    """A user or agent lists and exports only threads it took part in (its sender name sent or
    received a message there); admins and operators see every thread."""
    if method not in THREAD_LISTINGS or sees_everything(principal):
        return
    where = request if method.endswith("/ListThreads") else request.filter
    where.agent = principal.sender
