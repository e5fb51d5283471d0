"""The gate every call passes: who is calling (API key, JWT or client certificate), whether its
role and the policy let it, whether it is over its rate, and an audit record of every refusal."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import AsyncIterator

import structlog

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Lifecycle, Log
from agenthub.hub.log.table import CompactedTable
from agenthub.hub.loops import Readiness
from agenthub.hub.topics import Topics
from agenthub.hub.trust.audit import Auditor
from agenthub.hub.trust.keys import PREFIX, KeyStore
from agenthub.hub.trust.policy import (
    Action,
    InFlight,
    RateLimiter,
    Rule,
    decode_rule,
    encode_rule,
    may_act_for,
    may_call,
    role_allows,
)
from agenthub.hub.trust.principal import ANONYMOUS, CURRENT, Principal, Role
from agenthub.hub.trust.tokens import JwtVerifier
from agenthub.sdk.errors import InvalidRequest, PermissionDenied, RateLimited, Unauthenticated

log = structlog.get_logger(__name__)


class Gate(Lifecycle):
    """Authentication, authorization, rate limits and audit, for every head of one hub."""

    def __init__(self, settings: HubSettings, log: Log, topics: Topics, readiness: Readiness) -> None:
        self.required = settings.auth
        self._settings = settings
        self.keys = KeyStore(log, topics.keys, readiness=readiness)
        self.rules: CompactedTable[Rule] = CompactedTable(
            log, topics.policy, decode=decode_rule, encode=encode_rule, name="policy", readiness=readiness
        )
        self.audit = Auditor(log, topics.audit, timeout_s=settings.produce_timeout_s)
        self._jwt = (
            JwtVerifier(
                settings.jwt_jwks or "",
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience or "",
                role_claim=settings.jwt_role_claim,
                agent_claim=settings.jwt_agent_claim,
                name_claim=settings.jwt_name_claim,
            )
            if settings.jwt_issuer
            else None
        )
        self._limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self._in_flight = InFlight(settings.max_in_flight_per_principal)

    async def start(self) -> None:
        await self.keys.start()
        await self.rules.start()
        await self.audit.start()
        if self.required and await self.keys.bootstrap_admin(self._settings.admin_key_path):
            log.info("admin key written", path=str(self._settings.admin_key_path))

    async def stop(self) -> None:
        await self.rules.stop()
        await self.keys.stop()

    async def authenticate(self, authorization: str | None, client_cn: str | None = None) -> Principal:
        """The caller's principal from its `Authorization` value or, without one, from `client_cn`:
        the CN of a client certificate TLS verified (mTLS). A hub without authentication ignores
        credentials: every caller is ANONYMOUS (a key file left in a folder changes nothing)."""
        if not self.required:
            return ANONYMOUS
        if not authorization and client_cn:
            return await self._certified(client_cn)
        if not authorization:
            await self._refused("auth.failed", "", "no credentials")
            raise Unauthenticated("authentication required: send `authorization: Bearer <key or token>`")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        try:
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("use `authorization: Bearer <key or token>`")
            if token.startswith(PREFIX) or self._jwt is None:
                return self.keys.verify(token)
            return await self._jwt.verify(token)
        except Unauthenticated as exc:
            await self._refused("auth.failed", "", exc.message)
            raise

    async def _certified(self, cn: str) -> Principal:
        """The principal of a verified client certificate: its CN, with the role of the first
        `tls_client_roles` pattern it matches (an `agent` certificate speaks for the agent named CN)."""
        for entry in self._settings.tls_client_roles:
            pattern, _, role = entry.partition("=")
            if fnmatch.fnmatchcase(cn, pattern.strip()):
                kind = Role(role.strip())
                return Principal(cn, kind, agent=cn if kind is Role.AGENT else "", method="mtls")
        await self._refused("auth.failed", "", f"client certificate {cn!r} matches no tls_client_roles entry")
        raise Unauthenticated(f"client certificate {cn!r} is not allowed here (see tls_client_roles)")

    async def authorize(self, action: Action, agent: str = "", resource: str = "") -> Principal:
        """Check the current caller may do `action` (on `agent`, when the action calls one); the
        principal, or PermissionDenied / RateLimited, audited."""
        principal = CURRENT.get()
        if not role_allows(principal, action):
            reason = f"role {principal.role.value} may not {action.value}"
            await self._refused(action, resource or agent, reason)
            raise PermissionDenied(f"{principal.name} ({principal.role.value}) may not {action.value}")
        if agent and action is Action.SEND:
            rules = list(self.rules.rows.values())
            allowed, reason = may_call(rules, self._settings.policy_default, principal, agent)
            if not allowed:
                await self._refused(action, agent, reason)
                raise PermissionDenied(f"{principal.name} may not call agent {agent!r}: {reason}")
        try:
            self._limiter.take(principal.name)
        except RateLimited as exc:
            await self._refused(action, resource or agent, "rate limited")
            raise exc from None
        return principal

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        """Hold one of the current caller's in-flight sends for the duration (a refusal is audited)."""
        who = CURRENT.get().name
        try:
            self._in_flight.acquire(who)
        except RateLimited:
            await self._refused(Action.SEND, "", "in-flight quota")
            raise
        try:
            yield
        finally:
            self._in_flight.release(who)

    async def require_self(self, agent: str, action: str) -> None:
        """An agent principal acts only for its own agent (admins for any); PermissionDenied else."""
        principal = CURRENT.get()
        if not may_act_for(principal, agent):
            await self._refused(action, agent, "not this principal's agent")
            raise PermissionDenied(f"{principal.name} may not {action} agent {agent!r}")

    async def add_rule(self, effect: str, principal: str, role: str, agent: str) -> Rule:
        rule = Rule.new(effect, principal, role, agent, CURRENT.get().name)
        await self.audit.record("policy.add", f"{rule.effect} {rule.principal}/{rule.role} -> {rule.agent}")
        await self.rules.put(rule.id, rule)
        return rule

    async def remove_rule(self, rule_id: str) -> Rule:
        rule = self.rules.rows.get(rule_id)
        if rule is None:
            raise InvalidRequest(f"no policy rule {rule_id!r} (see `agenthub policy list`)")
        await self.audit.record("policy.remove", rule_id)
        await self.rules.delete(rule_id)
        return rule

    @property
    def default_effect(self) -> str:
        return self._settings.policy_default

    def list_rules(self) -> list[Rule]:
        return sorted(self.rules.rows.values(), key=lambda r: (r.created_at, r.id))

    async def _refused(self, action: str, resource: str, reason: str) -> None:
        await self.audit.record(action, resource, decision="denied", reason=reason)
        log.info("call refused", action=action, resource=resource, reason=reason)
