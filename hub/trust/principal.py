"""Principals and roles: who a caller is once the hub has authenticated it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a principal may do, from most to least (see `hub/trust/policy.py`)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AGENT = "agent"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `agent` is the agent an `agent` principal serves and speaks for. `method` says how it was
    authenticated: key, jwt, mtls, or none (the hub runs without authentication).
    """

    name: str
    role: Role
    agent: str = ""
    method: str = "none"

    @property
    def sender(self) -> str:
        """The name its messages are recorded under: an agent's own name, `user:<name>` otherwise."""
        if self.role is Role.AGENT:
            return self.agent
        return "user" if self.method == "none" else f"user:{self.name}"

    @property
    def authenticated(self) -> bool:
        return self.method != "none"


def is_person(sender: str) -> bool:
    """Whether a recorded sender is a person (`user`, `user:<name>`), not an agent: agent names
    cannot hold a colon."""
    return sender == "user" or sender.startswith("user:")


ANONYMOUS = Principal("anonymous", Role.ADMIN)
"""The caller of a hub running without authentication (a laptop): it may do everything, and its
`agenthub-sender` header is believed, as before there was authentication."""

CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("agenthub_principal", default=ANONYMOUS)
"""The principal of the call being served, set by the gate for every gRPC and HTTP request."""

SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("agenthub_source", default="")
"""The caller's address as the hub saw it (for the audit log)."""
