"""Authorization: what each role may do, the run-time policy of who may call which agent (kept in
the compacted `<prefix>.policy` topic so every instance enforces the same), and rate limits."""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from dataclasses import asdict, dataclass
from enum import StrEnum

from agenthub.hub.trust.principal import Principal, Role
from agenthub.sdk.errors import InvalidRequest, RateLimited


class Action(StrEnum):
    """Everything a call can do, as authorization sees it."""

    SEND = "a2a.send"  # SendMessage, SendStreamingMessage
    READ_TASKS = "a2a.read"  # GetTask, ListTasks, SubscribeToTask, push-config reads
    CANCEL = "a2a.cancel"
    PUSH = "a2a.push"  # create or delete a push-notification config
    EXTENDED_CARD = "a2a.extended-card"
    AGENTS_READ = "agents.read"
    AGENTS_WRITE = "agents.write"  # register, deregister, heartbeat
    THREADS_READ = "threads.read"
    REPLAY = "replay.read"  # replay to stdout, topic stats
    REPLAY_WRITE = "replay.write"  # rebuild, re-drive
    KEYS = "keys.manage"
    POLICY_READ = "policy.read"
    POLICY_WRITE = "policy.write"
    AUDIT = "audit.read"
    WHOAMI = "whoami"


_EVERYONE = {
    Action.SEND, Action.READ_TASKS, Action.CANCEL, Action.PUSH, Action.EXTENDED_CARD,
    Action.AGENTS_READ, Action.THREADS_READ, Action.WHOAMI,
}  # fmt: skip
ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: frozenset(
        _EVERYONE | {Action.REPLAY, Action.REPLAY_WRITE, Action.AUDIT, Action.POLICY_READ}
    ),
    Role.AGENT: frozenset(_EVERYONE | {Action.AGENTS_WRITE}),
    Role.USER: frozenset(_EVERYONE),
}
"""What each role may do. `agent` and `user` principals are further limited to their own resources
(an agent registers only itself; a user reads only its own tasks and threads): see `sees_everything`."""


def sees_everything(principal: Principal) -> bool:
    """Whether a principal reads every thread and task (admins and operators), not only its own."""
    return principal.role in (Role.ADMIN, Role.OPERATOR)


def role_allows(principal: Principal, action: Action) -> bool:
    return action in ALLOWED[principal.role]


def may_act_for(principal: Principal, agent: str) -> bool:
    """Whether a principal may register, deregister or speak for this agent (admins: any agent)."""
    return principal.role is Role.ADMIN or (principal.role is Role.AGENT and principal.agent == agent)


@dataclass(frozen=True)
class Rule:
    """Who may call which agent; `principal`, `role` and `agent` are globs."""

    id: str
    effect: str
    principal: str = "*"
    role: str = "*"
    agent: str = "*"
    created_at: float = 0.0
    created_by: str = ""

    @classmethod
    def new(cls, effect: str, principal: str, role: str, agent: str, created_by: str) -> Rule:
        if effect not in ("allow", "deny"):
            raise InvalidRequest(f"a rule's effect is allow or deny, not {effect!r}")
        if role not in ("*", "") and role not in {r.value for r in Role}:
            raise InvalidRequest(f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)} or *")
        return cls(
            uuid.uuid4().hex[:8], effect, principal or "*", role or "*", agent or "*", time.time(), created_by
        )

    def matches(self, principal: Principal, agent: str) -> bool:
        return (
            fnmatch.fnmatchcase(principal.name, self.principal)
            and fnmatch.fnmatchcase(principal.role.value, self.role)
            and fnmatch.fnmatchcase(agent, self.agent)
        )


def decode_rule(value: bytes) -> Rule:
    try:
        return Rule(**json.loads(value))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


def encode_rule(rule: Rule) -> bytes:
    return json.dumps(asdict(rule), sort_keys=True).encode()


def may_call(rules: list[Rule], default: str, principal: Principal, agent: str) -> tuple[bool, str]:
    """Whether the policy lets a principal call an agent, and the rule that decided: a matching deny
    wins, then a matching allow, then the default. Admins are never locked out."""
    if principal.role is Role.ADMIN:
        return True, "admin"
    matching = [r for r in rules if r.matches(principal, agent)]
    if denied := next((r for r in matching if r.effect == "deny"), None):
        return False, f"denied by policy rule {denied.id}"
    if allowed := next((r for r in matching if r.effect == "allow"), None):
        return True, f"allowed by policy rule {allowed.id}"
    return default == "allow", f"no policy rule allows calling {agent!r}"


class InFlight:
    """How many sends each principal has waiting for answers, held under a quota."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, who: str) -> None:
        """Count one more send of `who`; RateLimited when it would pass the quota."""
        if self._limit and self._counts.get(who, 0) >= self._limit:
            raise RateLimited(f"{who} already has {self._limit} sends in flight; retry when one ends")
        self._counts[who] = self._counts.get(who, 0) + 1

    def release(self, who: str) -> None:
        self._counts[who] -= 1
        if not self._counts[who]:
            del self._counts[who]


class RateLimiter:
    """A token bucket per principal: `rate` calls a second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, at)

    def take(self, who: str) -> None:
        """Spend one token of `who`; RateLimited with a Retry-After when there is none."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, at = self._buckets.get(who, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - at) * self._rate)
        if tokens < 1:
            wait = (1 - tokens) / self._rate
            self._buckets[who] = (tokens, now)
            raise RateLimited(f"{who} is over its rate limit ({self._rate:g}/s); retry in {wait:.1f} s", wait)
        self._buckets[who] = (tokens - 1, now)
