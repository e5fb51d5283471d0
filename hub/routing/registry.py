"""The agent registry: which agents exist, their cards, and where the hub reaches them.

State lives in the compacted topic `<prefix>.registry` (key = agent name, empty value = removed),
so it survives restarts and every hub instance sees the same agents. Each instance replays the
topic at start and follows it; liveness (heartbeats, health checks) is kept in memory only.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from a2a.types import AgentCard
from google.protobuf.json_format import MessageToJson, ParseDict, ParseError
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.heads.validation import json_object
from agenthub.hub.log._base import Consumer, Lifecycle, Log
from agenthub.hub.loops import Readiness, SupervisedLoop
from agenthub.hub.routing.connections import GRPC, is_up
from agenthub.hub.routing.discovery import discover
from agenthub.hub.topics import Topics
from agenthub.sdk.errors import AgentNotFound, InvalidRequest
from agenthub.sdk.pb.registry_pb2 import AgentChange, AgentRecord

log = structlog.get_logger(__name__)

AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass
class Agent:
    """A registered agent as the hub sees it."""

    record: AgentRecord
    card: AgentCard

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def endpoint(self) -> str:
        return self.record.endpoint


def parse_card(card_json: str) -> AgentCard:
    """An A2A card from its JSON form; InvalidRequest with the parser's reason if it is not one."""
    try:
        card = ParseDict(json_object(card_json, "agent card"), AgentCard(), ignore_unknown_fields=True)
    except (ParseError, ValueError) as exc:
        raise InvalidRequest(f"invalid agent card: {exc}") from exc
    if not AGENT_NAME.match(card.name):
        raise InvalidRequest(
            f"invalid agent name {card.name!r}: use 1-63 lowercase letters, digits, '-' or '_'"
        )
    return card


class Registry(Lifecycle):
    """Registered agents, backed by the registry topic.

    Args:
        log: the log backend.
        topics: topic naming.
        health_interval: seconds between health checks of each agent (default 5; 0 disables).
        readiness: where a failing registry loop is reported.
    """

    def __init__(
        self, log: Log, topics: Topics, *, health_interval: float = 5.0, readiness: Readiness | None = None
    ) -> None:
        self._log = log
        self._topics = topics
        self._health_interval = health_interval
        self._agents: dict[str, Agent] = {}
        self._watchers: set[asyncio.Queue[AgentChange]] = set()
        self._consumer: Consumer | None = None
        self._loops = [SupervisedLoop("registry", self._follow, readiness)]
        if health_interval > 0:
            self._loops.append(SupervisedLoop("registry-health", self._check_health, readiness))

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.registry, partitions=1, compacted=True)
        self._consumer = self._log.consumer([self._topics.registry], from_beginning=True)
        await self._consumer.start()
        while records := await self._consumer.getmany(timeout_ms=0):
            for record in records:
                self._apply(record.key, record.value)
        for loop in self._loops:
            await loop.start()

    async def stop(self) -> None:
        for loop in self._loops:
            await loop.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def get(self, name: str) -> Agent:
        agent = self._agents.get(name)
        if agent is None:
            raise AgentNotFound(f"no agent named {name!r} is registered (see `agenthub agents list`)")
        return agent

    def find(self, name: str) -> Agent | None:
        return self._agents.get(name)

    def list(self) -> list[Agent]:
        return sorted(self._agents.values(), key=lambda a: a.name)

    async def register(self, card_json: str, endpoint: str) -> Agent:
        """Register (or update) an agent served over gRPC; InvalidRequest for a bad card or endpoint."""
        card = parse_card(card_json)
        if not ENDPOINT.match(endpoint):
            raise InvalidRequest(
                f"invalid endpoint {endpoint!r}: expected host:port of the agent's A2A gRPC server"
            )
        return await self._save(card, AgentRecord(endpoint=endpoint, binding=GRPC))

    async def register_url(self, url: str, name: str = "") -> Agent:
        """Register (or update) any A2A agent by its base or card URL: fetch and check its card,
        and reach it over its best binding. AgentUnavailable / InvalidRequest say why not."""
        found = await discover(url)
        card = found.card
        if name:
            card.name = name
        if not AGENT_NAME.match(card.name):
            raise InvalidRequest(f"the card's name {card.name!r} is not a valid agent name: pass --name NAME")
        where = AgentRecord(
            endpoint=found.endpoint, binding=found.binding, tenant=found.tenant, card_url=found.card_url
        )
        return await self._save(card, where)

    async def _save(self, card: AgentCard, where: AgentRecord) -> Agent:
        stamp = Timestamp()
        stamp.GetCurrentTime()
        previous = self._agents.get(card.name)
        record = AgentRecord()
        record.CopyFrom(where)
        record.name, record.card_json, record.state = card.name, MessageToJson(card, indent=None), "up"
        record.last_heartbeat.CopyFrom(stamp)
        unchanged = previous is not None and _same_registration(previous.record, record)
        record.registered_at.CopyFrom(previous.record.registered_at if previous and unchanged else stamp)
        # The inbox exists before the first request, so instances start reading it now, not mid-call.
        await self._log.ensure_topic(self._topics.inbox(card.name))
        await self._log.produce(self._topics.registry, record.SerializeToString(), key=card.name.encode())
        self._apply(card.name.encode(), record.SerializeToString())
        log.info("agent registered", agent=card.name, endpoint=record.endpoint, binding=record.binding)
        return self._agents[card.name]

    async def deregister(self, name: str) -> None:
        self.get(name)
        await self._log.produce(self._topics.registry, b"", key=name.encode())
        self._apply(name.encode(), b"")
        log.info("agent deregistered", agent=name)

    def heartbeat(self, name: str) -> None:
        agent = self.get(name)
        agent.record.last_heartbeat.GetCurrentTime()
        agent.record.state = "up"

    async def watch(self) -> AsyncIterator[AgentChange]:
        """Every current agent, then every change, until the caller stops iterating."""
        queue: asyncio.Queue[AgentChange] = asyncio.Queue()
        for agent in self.list():
            queue.put_nowait(AgentChange(agent=agent.record))
        self._watchers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    def _apply(self, key: bytes | None, value: bytes) -> None:
        """Apply one registry record; one that cannot be read is reported and passed over (it
        stays in the topic for an operator), never allowed to stop the registry."""
        try:
            self._apply_record(key, value)
        except (DecodeError, UnicodeDecodeError, InvalidRequest) as exc:
            log.error("unreadable registry record passed over", key=repr(key)[:80], error=str(exc)[:200])

    def _apply_record(self, key: bytes | None, value: bytes) -> None:
        if not key:
            return
        name = key.decode()
        if not value:
            removed = self._agents.pop(name, None)
            if removed is not None:
                self._notify(AgentChange(agent=removed.record, removed=True))
            return
        record = AgentRecord()
        record.ParseFromString(value)
        current = self._agents.get(name)
        if current is not None and current.record == record:
            return
        self._agents[name] = Agent(record, parse_card(record.card_json))
        self._notify(AgentChange(agent=record))

    def _notify(self, change: AgentChange) -> None:
        for queue in self._watchers:
            queue.put_nowait(change)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            for record in await self._consumer.getmany(timeout_ms=1000):
                self._apply(record.key, record.value)

    async def _check_health(self) -> None:
        """Every `health_interval` seconds, check each distinct endpoint once (replicas and many
        agents behind one server cost one check), all at once, and mark its agents up or down."""
        while True:
            await asyncio.sleep(self._health_interval)
            by_place: dict[tuple[str, str, str], list[Agent]] = {}
            for agent in list(self._agents.values()):
                r = agent.record
                by_place.setdefault((r.endpoint, r.binding, r.card_url), []).append(agent)
            places = list(by_place.values())
            results = await asyncio.gather(*(is_up(agents[0].record) for agents in places))
            now = int(time.time())
            for agents, up in zip(places, results, strict=True):
                for agent in agents:
                    agent.record.state = "up" if up else "down"
                    if up:
                        agent.record.last_heartbeat.FromSeconds(now)


def _same_registration(a: AgentRecord, b: AgentRecord) -> bool:
    """Whether two registrations publish the same card at the same place (Last-Modified stays)."""
    fields = ("card_json", "endpoint", "binding", "tenant", "card_url")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
