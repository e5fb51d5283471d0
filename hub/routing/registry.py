"""The agent registry: which agents exist, their cards, and the replicas that serve each one.

State lives in the compacted topic `<prefix>.registry`, one record per replica (key
`name@endpoint`, empty value = removed), so it survives restarts, every hub instance sees the same
agents, and two instances adding replicas of one name at once never overwrite each other. Records
written before replicas existed are keyed by the name alone and read as one replica. Each instance
replays the topic at start and follows it; liveness (heartbeats, health checks) is kept in memory,
and watchers are told when a replica goes down or comes back up.
A replica that keeps failing health checks while another replica of its agent is up is removed
(an agent restarted on a new port leaves no stale replica); the last replica always stays, so
queued requests wait for its return.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import structlog
from a2a.types import AgentCard
from google.protobuf.json_format import MessageToJson, ParseDict, ParseError
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.heads.validation import json_object
from agenthub.hub.log._base import Consumer, Lifecycle, Log
from agenthub.hub.loops import Readiness, SupervisedLoop
from agenthub.hub.outbound import OutboundPolicy
from agenthub.hub.routing.connections import GRPC, Connections
from agenthub.hub.routing.discovery import discover
from agenthub.hub.secret_box import SecretBox, Unsealable
from agenthub.hub.topics import Topics
from agenthub.sdk.errors import AgentNotFound, InvalidRequest
from agenthub.sdk.pb.registry_pb2 import AgentChange, AgentRecord
from agenthub.sdk.pb.registry_pb2 import Replica as ReplicaPb

log = structlog.get_logger(__name__)

AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
KEY_SEPARATOR = "@"  # never in an agent name, so `name@endpoint` splits at its first one
EXPIRE_AFTER_S = 60.0  # a replica failing health checks this long, while a sibling is up, is removed
EXPIRE_AFTER_CHECKS = 3  # ... and at least this many checks in a row (one missed check is no death)


def replica_key(name: str, endpoint: str) -> bytes:
    """The registry topic key of one replica."""
    return f"{name}{KEY_SEPARATOR}{endpoint}".encode()


@dataclass
class Replica:
    """One endpoint serving an agent: its record (card, place, liveness), topic key and stored value."""

    record: AgentRecord
    card: AgentCard
    key: bytes
    value: bytes  # as stored: its echo from the topic changes nothing (liveness is kept here)
    failed_checks: int = 0
    down_since: float = 0.0  # monotonic time of the first failed check in a row

    @property
    def endpoint(self) -> str:
        return self.record.endpoint

    @property
    def up(self) -> bool:
        return self.record.state != "down"

    def summary(self) -> ReplicaPb:
        r = self.record
        return ReplicaPb(
            endpoint=r.endpoint, binding=r.binding or GRPC, tenant=r.tenant, card_url=r.card_url,
            state=r.state, registered_at=r.registered_at, last_heartbeat=r.last_heartbeat,
        )  # fmt: skip


@dataclass
class Agent:
    """A registered agent as the hub sees it: the replicas that serve it, by endpoint."""

    name: str
    replicas: dict[str, Replica] = field(default_factory=dict)

    def replica_list(self) -> list[Replica]:
        """Its replicas in a stable order (by endpoint)."""
        return [self.replicas[e] for e in sorted(self.replicas)]

    @property
    def newest(self) -> Replica:
        """The replica registered last: its card is the agent's card."""
        return max(self.replicas.values(), key=lambda r: (r.record.registered_at.ToNanoseconds(), r.endpoint))

    @property
    def card(self) -> AgentCard:
        return self.newest.card

    @property
    def endpoint(self) -> str:
        return self.newest.endpoint

    @property
    def record(self) -> AgentRecord:
        """The agent as answers show it: the newest replica's record, up when any replica is up,
        and every replica."""
        record = AgentRecord()
        record.CopyFrom(self.newest.record)
        record.ClearField("sealed_authorization")  # a credential is never part of an answer
        record.state = "up" if any(r.up for r in self.replicas.values()) else "down"
        record.replicas.extend(r.summary() for r in self.replica_list())
        return record


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
    """Registered agents and their replicas, backed by the registry topic.

    Args:
        log: the log backend.
        topics: topic naming.
        health_interval: seconds between health checks of each replica (default 5; 0 disables).
        readiness: where a failing registry loop is reported.
        outbound: where card fetches of `register_url` may go (default: public addresses only).
        box: seals the credential a registration gives for calls to its agent.
    """

    def __init__(
        self,
        log: Log,
        topics: Topics,
        *,
        health_interval: float = 5.0,
        readiness: Readiness | None = None,
        outbound: OutboundPolicy | None = None,
        box: SecretBox | None = None,
        connections: Connections | None = None,
    ) -> None:
        self._log = log
        self.connections = connections or Connections()  # its owner starts and stops it
        self._box = box
        self._topics = topics
        self._outbound = outbound or OutboundPolicy()
        self._health_interval = health_interval
        self._agents: dict[str, Agent] = {}
        self._watchers: set[asyncio.Queue[AgentChange]] = set()
        self._written: dict[bytes, bytes] = {}  # key -> value written here, not yet read back
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

    async def register(self, card_json: str, endpoint: str, *, replica: bool = False) -> Agent:
        """Register an agent served over gRPC: as one more replica of its name with `replica`, else
        in place of the name's other endpoints. InvalidRequest for a bad card or endpoint."""
        card = parse_card(card_json)
        if not ENDPOINT.match(endpoint):
            raise InvalidRequest(
                f"invalid endpoint {endpoint!r}: expected host:port of the agent's A2A gRPC server"
            )
        return await self._save(card, AgentRecord(endpoint=endpoint, binding=GRPC), replica=replica)

    async def register_url(
        self, url: str, name: str = "", *, replica: bool = False, authorization: str = ""
    ) -> Agent:
        """Register any A2A agent by its base or card URL: fetch and check its card, and reach it
        over its best binding, sending `authorization` (kept sealed) with every call; `replica` as
        for `register`. AgentUnavailable / InvalidRequest say why not."""
        found = await discover(url, policy=self._outbound)
        card = found.card
        if name:
            card.name = name
        if not AGENT_NAME.match(card.name):
            raise InvalidRequest(f"the card's name {card.name!r} is not a valid agent name: pass --name NAME")
        where = AgentRecord(
            endpoint=found.endpoint, binding=found.binding, tenant=found.tenant, card_url=found.card_url
        )
        if authorization:
            if self._box is None:
                raise InvalidRequest("this hub keeps no secrets: it cannot store an agent's credential")
            where.sealed_authorization = self._box.seal(authorization.strip().encode())
        return await self._save(card, where, replica=replica)

    def authorization(self, record: AgentRecord) -> str:
        """The credential its registration gave for calls to this replica ('' when none or when
        this hub cannot open it: then the agent refuses, and says so)."""
        if not record.sealed_authorization or self._box is None:
            return ""
        try:
            return self._box.open(record.sealed_authorization).decode()
        except Unsealable:
            log.warning("an agent credential sealed with another secret key: give every hub the same"
                        " secret_key", agent=record.name)  # fmt: skip
            return ""

    async def _save(self, card: AgentCard, where: AgentRecord, *, replica: bool) -> Agent:
        stamp = Timestamp()
        stamp.GetCurrentTime()
        agent = self._agents.get(card.name)
        previous = agent.replicas.get(where.endpoint) if agent else None
        record = AgentRecord()
        record.CopyFrom(where)
        record.name, record.card_json, record.state = card.name, MessageToJson(card, indent=None), "up"
        record.last_heartbeat.CopyFrom(stamp)
        unchanged = previous is not None and _same_registration(previous.record, record)
        record.registered_at.CopyFrom(previous.record.registered_at if previous and unchanged else stamp)
        # The inbox exists before the first request, so instances start reading it now, not mid-call.
        await self._log.ensure_topic(self._topics.inbox(card.name))
        key = replica_key(card.name, record.endpoint)
        await self._put(key, record.SerializeToString())
        if previous is not None and previous.key != key:  # written before replicas: now under its new key
            await self._put(previous.key, b"")
        if not replica and agent is not None:  # re-pointed: the name's other endpoints go
            for other in list(agent.replicas.values()):
                if other.endpoint != record.endpoint:
                    await self._put(other.key, b"")
        log.info("agent registered", agent=card.name, endpoint=record.endpoint, binding=record.binding,
                 replica=replica, replicas=len(self._agents[card.name].replicas))  # fmt: skip
        return self._agents[card.name]

    async def deregister(self, name: str, endpoint: str = "") -> None:
        """Remove the replica at `endpoint`, or with no endpoint the agent and all its replicas."""
        agent = self.get(name)
        if endpoint and endpoint not in agent.replicas:
            raise AgentNotFound(f"agent {name!r} has no replica at {endpoint!r} (see `agenthub agents list`)")
        for replica in list(agent.replicas.values()):
            if not endpoint or replica.endpoint == endpoint:
                await self._put(replica.key, b"")
        log.info("agent deregistered", agent=name, endpoint=endpoint or "all")

    def heartbeat(self, name: str, endpoint: str = "") -> None:
        """The replica at `endpoint` (or every replica of the name) is alive; AgentNotFound when the
        hub does not know it, so the agent registers again."""
        agent = self.get(name)
        if endpoint and endpoint not in agent.replicas:
            raise AgentNotFound(f"agent {name!r} has no replica at {endpoint!r}: register again")
        revived: list[Replica] = []
        for replica in agent.replicas.values():
            if not endpoint or replica.endpoint == endpoint:
                replica.record.last_heartbeat.GetCurrentTime()
                if not replica.up:
                    revived.append(replica)
                replica.record.state = "up"
                replica.failed_checks = 0
        self._notify_states(revived)

    async def watch(self) -> AsyncIterator[AgentChange]:
        """Every current agent (`endpoint` ""), then every change until the caller stops iterating:
        a replica registered, changed or left, or went down or came back up (health checks and
        heartbeats report a change of state once, not every check)."""
        queue: asyncio.Queue[AgentChange] = asyncio.Queue()
        for agent in self.list():
            queue.put_nowait(AgentChange(agent=agent.record))
        self._watchers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    async def _put(self, key: bytes, value: bytes) -> None:
        """Write one registry record and apply it here at once (other instances follow the topic)."""
        self._written[key] = value  # before producing: the follower may read it back at once
        try:
            await self._log.produce(self._topics.registry, value, key=key)
        except BaseException:
            self._written.pop(key, None)
            raise
        self._apply(key, value)

    def _read_back(self, key: bytes | None, value: bytes) -> None:
        """Apply a record followed from the topic, unless this instance wrote a newer value for its
        key that the topic has not given back yet: a late echo must not undo a local write."""
        written = self._written.get(key) if key else None
        if written is not None and key is not None:
            if value != written:
                return
            del self._written[key]
        self._apply(key, value)

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
        name = key.decode().split(KEY_SEPARATOR, 1)[0]
        if not value:
            self._remove(name, key)
            return
        record = AgentRecord()
        record.ParseFromString(value)
        card = parse_card(record.card_json)
        agent = self._agents.setdefault(name, Agent(name))
        current = agent.replicas.get(record.endpoint)
        if current is not None and (current.key, current.value) == (key, value):
            return
        agent.replicas[record.endpoint] = Replica(record, card, key, value)
        self._notify(AgentChange(agent=agent.record, endpoint=record.endpoint))

    def _remove(self, name: str, key: bytes) -> None:
        """A tombstone: remove the replica stored under `key` (and the agent with its last one)."""
        agent = self._agents.get(name)
        gone = [r for r in agent.replicas.values() if r.key == key] if agent else []
        if agent is None or not gone:
            return
        del agent.replicas[gone[0].endpoint]
        if agent.replicas:
            self._notify(AgentChange(agent=agent.record, endpoint=gone[0].endpoint))
            return
        del self._agents[name]
        self._notify(AgentChange(agent=gone[0].record, removed=True, endpoint=gone[0].endpoint))

    def _notify_states(self, replicas: Iterable[Replica]) -> None:
        """Tell watchers that these replicas went up or down, once every state is set (so each
        change's agent shows its replicas as they are now). A replica replaced or removed while
        its check ran is no longer the agent's: its change is not told."""
        for replica in replicas:
            agent = self._agents.get(replica.key.decode().split(KEY_SEPARATOR, 1)[0])
            if agent is not None and agent.replicas.get(replica.endpoint) is replica:
                self._notify(AgentChange(agent=agent.record, endpoint=replica.endpoint))

    def _notify(self, change: AgentChange) -> None:
        for queue in self._watchers:
            queue.put_nowait(change)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            for record in await self._consumer.getmany(timeout_ms=1000):
                self._read_back(record.key, record.value)

    async def _check_health(self) -> None:
        """Every `health_interval` seconds, check each replica's health and expire dead ones."""
        while True:
            await asyncio.sleep(self._health_interval)
            await self.check_health()

    async def check_health(self) -> None:
        """Check each distinct place once (many agents behind one server cost one check), all at
        once, mark its replicas up or down, then remove replicas failing every check for
        `EXPIRE_AFTER_S` (and `EXPIRE_AFTER_CHECKS` checks) whose agent has another replica up."""
        by_place: dict[tuple[str, str, str], list[Replica]] = {}
        for agent in list(self._agents.values()):
            for replica in agent.replicas.values():
                r = replica.record
                by_place.setdefault((r.endpoint, r.binding, r.card_url), []).append(replica)
        places = list(by_place.values())
        results = await asyncio.gather(*(self.connections.is_up(replicas[0].record) for replicas in places))
        now, clock = int(time.time()), time.monotonic()
        flipped: list[Replica] = []
        for replicas, up in zip(places, results, strict=True):
            for replica in replicas:
                if replica.up != up:
                    flipped.append(replica)
                replica.record.state = "up" if up else "down"
                if up:
                    replica.record.last_heartbeat.FromSeconds(now)
                    replica.failed_checks = 0
                    continue
                replica.down_since = replica.down_since if replica.failed_checks else clock
                replica.failed_checks += 1
        self._notify_states(flipped)
        for agent in list(self._agents.values()):
            if any(r.up for r in agent.replicas.values()):
                for replica in [r for r in agent.replicas.values() if _expired(r, clock)]:
                    log.warning("replica down too long: removed", agent=agent.name, endpoint=replica.endpoint)
                    await self._put(replica.key, b"")


def _expired(replica: Replica, clock: float) -> bool:
    """Whether a replica has failed health checks long enough to be removed."""
    return replica.failed_checks >= EXPIRE_AFTER_CHECKS and clock - replica.down_since >= EXPIRE_AFTER_S


def _same_registration(a: AgentRecord, b: AgentRecord) -> bool:
    """Whether two registrations publish the same card at the same place (Last-Modified stays)."""
    fields = ("card_json", "endpoint", "binding", "tenant", "card_url")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
