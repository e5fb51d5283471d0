"""agenthub.v1.TrustService: API keys, who-am-I, the audit log and the call policy over gRPC, for
the CLI (`agenthub keys`, `agenthub audit`, `agenthub policy`) and any other tool."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.trust.audit import AuditEvent
from agenthub.hub.trust.gate import Gate
from agenthub.hub.trust.keys import ApiKey
from agenthub.hub.trust.policy import Action, Rule
from agenthub.hub.trust.principal import CURRENT
from agenthub.sdk.errors import InvalidRequest
from agenthub.sdk.pb import trust_pb2 as tr
from agenthub.sdk.pb import trust_pb2_grpc

METHODS: dict[str, Action] = {
    "CreateKey": Action.KEYS,
    "ListKeys": Action.KEYS,
    "RevokeKey": Action.KEYS,
    "WhoAmI": Action.WHOAMI,
    "ReadAudit": Action.AUDIT,
    "AddRule": Action.POLICY_WRITE,
    "ListRules": Action.POLICY_READ,
    "RemoveRule": Action.POLICY_WRITE,
}


def _time(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def key_pb(key: ApiKey) -> tr.KeyInfo:
    return tr.KeyInfo(
        id=key.id, name=key.name, role=key.role, agent=key.agent, created_at=_time(key.created_at),
        revoked=key.revoked, created_by=key.created_by,
    )  # fmt: skip


def rule_pb(rule: Rule) -> tr.PolicyRule:
    return tr.PolicyRule(
        id=rule.id, effect=rule.effect, principal=rule.principal, role=rule.role, agent=rule.agent,
        created_at=_time(rule.created_at), created_by=rule.created_by,
    )  # fmt: skip


def event_pb(event: AuditEvent) -> tr.AuditEvent:
    return tr.AuditEvent(
        time=_time(event.time), principal=event.principal, role=event.role, action=event.action,
        resource=event.resource, decision=event.decision, reason=event.reason, source=event.source,
    )  # fmt: skip


class TrustServicer(trust_pb2_grpc.TrustServiceServicer):
    """Keys, policy and audit; the gate has already authorized the method (see METHODS)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    async def CreateKey(
        self, request: tr.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> tr.CreateKeyResponse:
        key, secret = await self._gate.keys.create(
            request.name, request.role, request.agent, created_by=CURRENT.get().name
        )
        await self._gate.audit.record("keys.create", f"{key.id} {key.name} ({key.role})")
        return tr.CreateKeyResponse(key=key_pb(key), secret=secret)

    async def ListKeys(
        self, request: tr.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> tr.ListKeysResponse:
        return tr.ListKeysResponse(keys=[key_pb(k) for k in self._gate.keys.list()])

    async def RevokeKey(self, request: tr.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> tr.KeyInfo:
        key = await self._gate.keys.revoke(request.key)
        await self._gate.audit.record("keys.revoke", f"{key.id} {key.name}")
        return key_pb(key)

    async def WhoAmI(self, request: tr.WhoAmIRequest, context: grpc.aio.ServicerContext) -> tr.Principal:
        who = CURRENT.get()
        return tr.Principal(name=who.name, role=who.role.value, agent=who.agent, method=who.method)

    async def ReadAudit(
        self, request: tr.ReadAuditRequest, context: grpc.aio.ServicerContext
    ) -> tr.ReadAuditResponse:
        if request.limit < 0:
            raise InvalidRequest(f"limit must be 0 (the default, 1000) or more, not {request.limit}")
        since = request.since.ToNanoseconds() / 1e9 if request.HasField("since") else 0.0
        events = await self._gate.audit.read(
            since=since, principal=request.principal, action=request.action, limit=request.limit or 1000
        )
        return tr.ReadAuditResponse(events=[event_pb(e) for e in events])

    async def AddRule(self, request: tr.AddRuleRequest, context: grpc.aio.ServicerContext) -> tr.PolicyRule:
        rule = request.rule
        return rule_pb(await self._gate.add_rule(rule.effect, rule.principal, rule.role, rule.agent))

    async def ListRules(
        self, request: tr.ListRulesRequest, context: grpc.aio.ServicerContext
    ) -> tr.ListRulesResponse:
        rules = [rule_pb(r) for r in self._gate.list_rules()]
        return tr.ListRulesResponse(rules=rules, default_effect=self._gate.default_effect)

    async def RemoveRule(
        self, request: tr.RemoveRuleRequest, context: grpc.aio.ServicerContext
    ) -> tr.PolicyRule:
        return rule_pb(await self._gate.remove_rule(request.id))
