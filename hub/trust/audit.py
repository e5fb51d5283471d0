"""The audit log: authentication failures, denied calls and every administrative or operator action,
appended to `<prefix>.audit` before the action's answer (the log is the system of record)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

from agenthub.hub.log._base import Lifecycle, Log, TopicPartition
from agenthub.hub.loops import describe
from agenthub.hub.trust.principal import CURRENT, SOURCE, Principal
from agenthub.sdk.errors import LogUnavailable

_READ_BATCH = 1000


@dataclass(frozen=True)
class AuditEvent:
    """One audited decision or action."""

    time: float
    principal: str
    role: str
    action: str
    resource: str
    decision: str
    reason: str
    source: str


class Auditor(Lifecycle):
    """Appends audit events and reads them back, oldest first."""

    def __init__(self, log: Log, topic: str, *, timeout_s: float = 5.0) -> None:
        self._log = log
        self._topic = topic
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._log.ensure_topic(self._topic, partitions=1)

    async def stop(self) -> None:
        return None

    async def record(
        self,
        action: str,
        resource: str,
        *,
        decision: str = "allowed",
        reason: str = "",
        principal: Principal | None = None,
    ) -> None:
        """Append one event; the principal and source default to those of the call being served.
        While the log cannot take it (within `timeout_s`), LogUnavailable: the call it records is
        answered UNAVAILABLE, never done or refused unrecorded."""
        who = principal or CURRENT.get()
        event = AuditEvent(
            time.time(), who.name, who.role.value, action, resource, decision, reason, SOURCE.get()
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._log.produce(
                    self._topic, json.dumps(asdict(event)).encode(), key=who.name.encode()
                )
        except (TimeoutError, *self._log.outages) as exc:
            raise LogUnavailable(
                f"the log is unavailable ({describe(exc)}): this call cannot be audited; retry shortly"
            ) from None

    async def read(
        self, *, since: float = 0.0, principal: str = "", action: str = "", limit: int = 1000
    ) -> list[AuditEvent]:
        """Events at or after `since`, of one principal and/or action (prefix) when given."""
        tp = TopicPartition(self._topic, 0)
        start = await self._log.offset_for_time(tp, int(since * 1000)) if since else 0
        out: list[AuditEvent] = []
        while len(out) < limit:
            records = await self._log.read(tp, start, _READ_BATCH)
            if not records:
                return out
            start = records[-1].offset + 1
            for record in records:
                event = _decode(record.value)
                if event is None or (principal and event.principal != principal):
                    continue
                if action and not event.action.startswith(action):
                    continue
                out.append(event)
        return out[:limit]


def _decode(value: bytes) -> AuditEvent | None:
    try:
        return AuditEvent(**json.loads(value))
    except (json.JSONDecodeError, TypeError):
        return None  # not written by an auditor: not an audit event
