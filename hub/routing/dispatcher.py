"""The dispatcher: delivers every agent's inbox to the agent over A2A, and its answers to the log.

One consumer per hub instance reads every inbox (`<prefix>.inbox.*`, group `<prefix>.dispatch`)
and feeds one `Lane` per agent. In a lane, records of one context run one after another (their
order is the thread's order) and records of different contexts run concurrently up to
`max_in_flight`; a full lane, or an agent whose every replica has its circuit open, pauses its
inbox partitions, so waiting requests stay in the log, not in memory. An agent served by several
replicas gets each request on one healthy replica: a context stays on the replica it started on
while that one is healthy (else the rendezvous-hash winner among the healthy ones, which several
hub instances agree on), and a request whose replica is unreachable is retried on another.
An inbox offset is committed (batched, every `commit_interval_ms`) only once the request's
outcome is durably in the log: answered, failed with a reason, or dead-lettered. Producing an
outcome is retried until the log takes it; it is never skipped. Cancellations come from the
control topic and are kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections import OrderedDict, deque

import structlog
from a2a.types import SendMessageRequest, StreamResponse, TaskState
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes, task_events
from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.loops import Backoff, Readiness, SupervisedLoop, describe, retry_until_ok
from agenthub.hub.metrics import Metrics
from agenthub.hub.routing.breaker import Breaker
from agenthub.hub.routing.connections import AgentCallFailed
from agenthub.hub.routing.offsets import OffsetTracker
from agenthub.hub.routing.registry import Agent, Registry, Replica
from agenthub.hub.topics import Topics
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

log = structlog.get_logger(__name__)
CANCELS_KEPT = 100_000  # task ids whose cancellation is remembered
HOMES_KEPT = 10_000  # contexts per agent whose replica is remembered


class AgentUnreachable(Exception):
    """The agent failed transiently on every attempt."""


class Dispatcher(Lifecycle):
    """Runs every agent's lane from one inbox consumer, and applies cancel requests.

    Args:
        log: the log backend.
        registry: registered agents (where to reach them).
        settings: hub settings (attempts, backoff, circuit, timeouts, concurrency, fetch wait).
        readiness: where log outages and failing loops are reported.
    """

    def __init__(
        self,
        log: Log,
        registry: Registry,
        settings: HubSettings,
        readiness: Readiness | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._log = log
        self._metrics = metrics or Metrics()
        self._registry = registry
        self._settings = settings
        self._readiness = readiness or Readiness()
        self._topics = Topics(settings.topic_prefix)
        self._lanes: dict[str, Lane] = {}
        self._running: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._agent_tasks: dict[str, str] = {}  # hub task id -> the agent's own, for running calls
        self._placed: dict[str, Replica] = {}  # hub task id -> the replica running it
        self._canceled: OrderedDict[str, None] = OrderedDict()
        self._tracker = OffsetTracker()
        self.stopping = False  # set when the hub stops: an interrupted call is not a canceled task
        self._inbox: Consumer | None = None
        self._control: Consumer | None = None
        self._connections = registry.connections
        self._loops = [
            SupervisedLoop("dispatcher", self._run, self._readiness),
            SupervisedLoop("dispatcher-control", self._follow_control, self._readiness),
            SupervisedLoop("dispatcher-commits", self._commit_periodically, self._readiness),
            SupervisedLoop("dispatcher-registry", self._follow_registry, self._readiness),
        ]

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.control, partitions=1)
        self._control = self._log.consumer([self._topics.control], from_beginning=True)
        await self._control.start()
        self._inbox = self._log.consumer(
            group=self._topics.dispatch_group, pattern=self._topics.inbox_pattern, on_revoke=self._drain
        )
        await self._inbox.start()
        for loop in self._loops:
            await loop.start()

    async def joined(self) -> None:
        """Return once this instance's consumer group has assigned it its partitions."""
        if self._inbox is not None:
            await self._inbox.joined()

    async def stop(self) -> None:
        """Stop fetching, let in-flight requests finish (at most `drain_timeout_s`), commit, release.

        A request still running after that (its agent down, or slow) is interrupted without an
        outcome and left uncommitted: the next start delivers it again. Nothing is lost.
        """
        for loop in self._loops:
            await loop.stop()
        await asyncio.gather(*(lane.close(self._settings.drain_timeout_s) for lane in self._lanes.values()))
        await self._commit()
        for consumer in (self._inbox, self._control):
            if consumer is not None:
                await consumer.stop()
        self._inbox = self._control = None

    # ---- the inbox -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._inbox is not None
        while True:
            for record in await self._inbox.getmany(timeout_ms=self._log.idle_wait_ms, max_records=256):
                if self._tracker.taken(record):
                    continue  # fetched again after a rebalance: already ours, in flight or done
                self._tracker.take(record)
                self._lane(self._topics.agent_of_inbox(record.topic)).offer(record)

    def _lane(self, agent: str) -> Lane:
        lane = self._lanes.get(agent)
        if lane is None:
            lane = self._lanes[agent] = Lane(self, agent)
        return lane

    def pause(self, agent: str, paused: bool) -> None:
        """Stop (or resume) fetching an agent's inbox: its lane is full or its circuit is open."""
        if self._inbox is None:
            return
        inbox = {self._topics.inbox(agent)}
        if paused:
            self._inbox.pause(inbox)
        else:
            self._inbox.resume(inbox)

    def holds(self, task_id: str) -> bool:
        """Whether this instance is delivering the task right now (the watchdog leaves it alone)."""
        return task_id in self._running

    def finished(self, record: Record) -> None:
        self._tracker.finish(record)

    async def _commit_periodically(self) -> None:
        interval = self._settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._commit()

    async def _commit(self) -> None:
        offsets = self._tracker.committable()
        if offsets and self._inbox is not None:
            await self._inbox.commit(offsets)

    async def _drain(self, lost: set[TopicPartition]) -> None:
        """Before partitions may move to another hub instance: commit what is done, at once.

        Nothing waits for in-flight work here (a delegation in flight may need this very
        rebalance to finish). In-flight and waiting records stay ours: when the partitions come
        back, their records are not delivered twice (`_run` skips offsets already taken); when
        they went to another instance, it redelivers what was not committed (at-least-once).
        """
        await self._commit()

    async def _follow_registry(self) -> None:
        """A replica that registers again, or that health checks or heartbeats find back up, is
        alive: its circuit closes at once, without a probe. A change naming a replica that is down
        (its health checks fail) leaves its circuit as it is: an open one keeps probing. A replica
        that left takes its circuit with it."""
        async for change in self._registry.watch():
            lane = self._lanes.get(change.agent.name)
            if lane is None:
                continue
            replicas = [] if change.removed else list(change.agent.replicas)
            await lane.forget({r.endpoint for r in replicas})
            up = {r.endpoint for r in replicas if r.state != "down"}
            for endpoint in [change.endpoint] if change.endpoint else up:
                if endpoint in up:
                    lane.alive(endpoint)

    # ---- cancellation --------------------------------------------------------------------

    async def _follow_control(self) -> None:
        assert self._control is not None
        while True:
            for record in await self._control.getmany(timeout_ms=1000):
                with contextlib.suppress(DecodeError):
                    envelope = envelopes.decode(record)
                    if envelope.kind == Kind.KIND_CANCEL:
                        await self._cancel(envelope)

    async def _cancel(self, envelope: Envelope) -> None:
        self._canceled[envelope.task_id] = None
        if len(self._canceled) > CANCELS_KEPT:
            self._canceled.popitem(last=False)
        running = self._running.get(envelope.task_id)
        if running is None:
            return
        call, _ = running
        placed = self._placed.get(envelope.task_id)
        agent_task = self._agent_tasks.get(envelope.task_id, envelope.task_id)
        if placed is not None:  # tell the replica too, by its own task id; our call ends either way
            with contextlib.suppress(AgentCallFailed):
                await self._connections.to(placed.record, placed.card).cancel(agent_task)
        call.cancel()

    # ---- one request ---------------------------------------------------------------------

    async def process(self, lane: Lane, record: Record) -> None:
        """Deliver one inbox record; park it if it is unreadable. Never raises for a bad record."""
        try:
            envelope = envelopes.decode(record)
            if envelope.kind != Kind.KIND_REQUEST:
                return
            request = envelopes.unpack(envelope, SendMessageRequest)
        except (DecodeError, ValueError) as exc:
            await self.park(lane.agent, record, f"unreadable inbox record: {exc}")
            return
        try:
            await self.deliver(lane, envelope, request)
        except Exception as exc:  # a hub fault must fail the task visibly, never drop the request
            log.error("delivery failed inside the hub", agent=lane.agent, task=envelope.task_id,
                      error=describe(exc))  # fmt: skip
            await self.fail(lane.agent, envelope, "the hub failed while delivering it")

    async def deliver(self, lane: Lane, envelope: Envelope, request: SendMessageRequest) -> None:
        """Deliver one request to its agent and put its outcome in the log, whatever happens."""
        emitter = _Emitter(self, envelope, lane.agent)
        if _time_left(envelope) <= 0:
            reason = "the caller's deadline passed before the agent could be called"
            await emitter.outcome(
                task_events.status_event(
                    envelope.task_id, envelope.context_id, TaskState.TASK_STATE_FAILED, reason
                )
            )
            return
        if envelope.task_id in self._canceled:
            await emitter.outcome(
                task_events.status_event(
                    envelope.task_id,
                    envelope.context_id,
                    TaskState.TASK_STATE_CANCELED,
                    "canceled before delivery",
                )
            )
            return
        call = asyncio.create_task(self._attempts(lane, envelope, request, emitter))
        self._running[envelope.task_id] = (call, lane.agent)
        try:
            await call
        except asyncio.CancelledError:
            if not call.cancelled() or self.stopping:
                raise
            await emitter.outcome(
                task_events.status_event(
                    envelope.task_id,
                    envelope.context_id,
                    TaskState.TASK_STATE_CANCELED,
                    "canceled on request",
                )
            )
        except AgentUnreachable as exc:
            await self.fail(lane.agent, envelope, str(exc), emitter)
        finally:
            self._running.pop(envelope.task_id, None)
            self._agent_tasks.pop(envelope.task_id, None)
            self._placed.pop(envelope.task_id, None)

    async def fail(
        self, agent: str, envelope: Envelope, reason: str, emitter: _Emitter | None = None
    ) -> None:
        """Park the request in the dead-letter topic and end its task as failed, saying why."""
        await self._dead_letter(agent, envelope, reason)
        reason = f"{reason}; the request is parked in {self._topics.dlq(agent)}"
        event = task_events.status_event(
            envelope.task_id, envelope.context_id, TaskState.TASK_STATE_FAILED, reason
        )
        await (emitter or _Emitter(self, envelope, agent)).outcome(event)

    async def _attempts(
        self, lane: Lane, envelope: Envelope, request: SendMessageRequest, emitter: _Emitter
    ) -> None:
        """Call the agent until it answers, retrying transient failures with jittered backoff.

        Each attempt goes to one replica (see `Lane.choose`); one that failed transiently is not
        tried again for this request while another is admitted. While every replica's circuit is
        open, attempts wait and are not counted, nor is an unreachable replica's failure when
        another replica is left to try; the retry window and `max_attempts` bound how long a
        reachable but failing agent is retried.
        """
        settings = self._settings
        backoff = Backoff(settings.retry_backoff_s, settings.retry_backoff_cap_s)
        started = time.monotonic()
        attempts, calls, tried = 0, 0, set[str]()
        while True:
            window_left = settings.retry_window_s - (time.monotonic() - started)
            replica = await self._replica(lane, envelope, tried, window_left)
            emitter.begin_attempt(envelope.attempt + calls)  # each call its own event ids
            calls += 1
            try:
                reason = await self._call(lane, replica, envelope, request, emitter)
                if replica is not None:
                    lane.breaker(replica.endpoint).succeeded()
            except AgentCallFailed as exc:
                if not exc.transient:
                    reason = f"agent {lane.agent!r} rejected the request: {exc}"
                else:
                    moved = self._failed_on(lane, replica, exc, tried) if replica else False
                    attempts += 0 if moved else 1
                    if (
                        attempts >= settings.max_attempts
                        or time.monotonic() - started > settings.retry_window_s
                    ):
                        raise AgentUnreachable(
                            f"agent {lane.agent!r} failed {attempts} attempts (last: {exc})"
                        ) from None
                    where = replica.endpoint if replica else ""
                    log.warning("agent call failed, will retry", agent=lane.agent, task=envelope.task_id,
                                attempt=attempts, replica=where, error=str(exc))  # fmt: skip
                    if not moved:
                        await asyncio.sleep(backoff.next_delay())
                    continue
            if reason:
                await emitter.outcome(
                    task_events.status_event(
                        envelope.task_id, envelope.context_id, TaskState.TASK_STATE_FAILED, reason
                    )
                )
            return

    def _failed_on(self, lane: Lane, replica: Replica, exc: AgentCallFailed, tried: set[str]) -> bool:
        """Count a transient failure on its replica's circuit; whether it burns no attempt because
        the replica is unreachable and either its circuit is now open or another replica is left."""
        breaker = lane.breaker(replica.endpoint)
        breaker.failed(unreachable=exc.unreachable)
        tried.add(replica.endpoint)
        if not exc.unreachable:
            return False
        registered = self._registry.find(lane.agent)
        others = registered.replicas if registered else {}
        return breaker.is_open or any(e not in tried and not lane.is_open(e) for e in others)

    async def _replica(
        self, lane: Lane, envelope: Envelope, tried: set[str], window_left: float
    ) -> Replica | None:
        """The replica for the next attempt (None once the agent is deregistered). While every
        replica's circuit is open it waits, but not past the caller's deadline or the retry window
        (requests still in the inbox wait there, paused, for as long as it takes)."""
        wait = min(_time_left(envelope), window_left)
        try:
            async with asyncio.timeout(max(0.0, wait)):
                while True:
                    registered = self._registry.find(lane.agent)
                    if registered is None:
                        return None
                    chosen = lane.choose(registered, envelope.context_id, tried)
                    if chosen is not None:
                        return chosen
                    await lane.any_admitted(self._settings.breaker_probe_s)
        except TimeoutError:
            raise AgentUnreachable(
                f"agent {lane.agent!r} stayed unreachable for {self._settings.retry_window_s:.0f}s"
                " or until the caller's deadline"
            ) from None

    async def _call(
        self,
        lane: Lane,
        replica: Replica | None,
        envelope: Envelope,
        request: SendMessageRequest,
        emitter: _Emitter,
    ) -> str:
        """One streaming call to one replica; returns a failure reason if the agent ended without
        a final state (or is no longer registered)."""
        agent = lane.agent
        if replica is None:
            return f"agent {agent!r} was deregistered before it could answer"
        self._placed[envelope.task_id] = replica
        connection = self._connections.to(replica.record, replica.card)
        metadata = (
            ("agenthub-sender", envelope.sender),
            ("traceparent", envelope.traceparent),
            ("authorization", self._registry.authorization(replica.record)),  # the registration's own
        )
        events = connection.stream(
            _for_agent(request, envelope),
            tuple(m for m in metadata if m[1]),
            min(self._settings.agent_call_timeout_s, _time_left(envelope)),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                retargeted = task_events.retarget(event, envelope.task_id, envelope.context_id)
                agent_ids = task_events.ids_of(event)
                if agent_ids[0]:  # a cancel must name the task as the agent knows it
                    self._agent_tasks[envelope.task_id] = agent_ids[0]
                await emitter.emit(retargeted, agent_ids)
                if task_events.ends_call(event):
                    return ""
        return f"agent {agent!r} ended its stream without a final task state"

    async def probe(self, agent: str, endpoint: str) -> bool:
        """Whether a registered replica answers (for its circuit breaker)."""
        registered = self._registry.find(agent)
        replica = registered.replicas.get(endpoint) if registered else None
        return replica is not None and await self._connections.is_up(replica.record)

    # ---- producing -----------------------------------------------------------------------

    async def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: tuple[tuple[str, bytes], ...]
    ) -> None:
        """Produce until the log takes it: an outcome is never dropped for a log outage."""
        timeout = self._settings.produce_timeout_s  # one try; a try that hangs is an outage too
        await retry_until_ok(
            "log",
            lambda: asyncio.wait_for(self._log.produce(topic, value, key=key, headers=headers), timeout),
            self._readiness,
            retry_on=(TimeoutError, *self._log.outages),
        )

    def delivered(self, agent: str, state: str, seconds: float) -> None:
        """A request's outcome is in the log (a hub stopped mid-call never gets here: the request
        is delivered again)."""
        self._metrics.delivered(agent, state, seconds)

    async def _dead_letter(self, agent: str, envelope: Envelope, reason: str) -> None:
        dead = Envelope()
        dead.CopyFrom(envelope)
        dead.id = envelopes.derived_id(envelope.id, "dead-letter")
        dead.kind = Kind.KIND_DEAD_LETTER
        dead.causation_id = envelope.id
        dead.error = reason
        dead.attempt = envelope.attempt + self._settings.max_attempts - 1
        await self.produce(
            self._topics.dlq(agent),
            dead.SerializeToString(),
            envelope.context_id.encode(),
            envelopes.headers(dead),
        )
        self._metrics.dead_lettered(agent)
        log.error("request dead-lettered", agent=agent, task=envelope.task_id, reason=reason)

    async def park(self, agent: str, record: Record, reason: str) -> None:
        """Move an inbox record nobody can read to the dead-letter topic as it is, with the reason."""
        source = f"{record.topic}/{record.partition}/{record.offset}"
        extra = (("agenthub-error", reason.encode()), ("agenthub-source", source.encode()))
        await self.produce(self._topics.dlq(agent), record.value, record.key, record.headers + extra)
        self._metrics.dead_lettered(agent)
        log.error("unreadable inbox record dead-lettered", agent=agent, source=source, reason=reason)


def _time_left(envelope: Envelope) -> float:
    """Seconds until the caller's deadline (infinity when it set none)."""
    if not envelope.HasField("deadline"):
        return float("inf")
    return envelope.deadline.ToNanoseconds() / 1e9 - time.time()


def _for_agent(request: SendMessageRequest, envelope: Envelope) -> SendMessageRequest:
    """The request as the agent sees it: its own server (no tenant), its own ids, hub ids in metadata.

    A follow-up (the caller answering an input-required turn) carries the agent's own task and
    context ids, which the front copied from the task: the agent continues the task it started.
    Otherwise the hub's task id means nothing to the agent, and the request starts a new task.
    """
    outgoing = SendMessageRequest()
    outgoing.CopyFrom(request)
    outgoing.tenant = ""
    outgoing.message.context_id = envelope.agent_context_id or envelope.context_id
    outgoing.message.task_id = envelope.agent_task_id
    outgoing.configuration.return_immediately = False
    outgoing.metadata.update(
        {
            "agenthub_task_id": envelope.task_id,
            "agenthub_parent_task_id": envelope.parent_task_id,
            "agenthub_sender": envelope.sender,
        }
    )
    return outgoing


class _Emitter:
    """Produces the events of one request to its reply topic, with ids stable across redelivery.

    An agent event's id is derived from (request, attempt, position), so a redelivered request
    reproduces the ids of what was already produced and the recorder keeps one copy, while two
    attempts never share an id. The hub's own outcome (failed, canceled) has one fixed id.
    """

    def __init__(self, dispatcher: Dispatcher, request: Envelope, agent: str) -> None:
        self._dispatcher = dispatcher
        self._request = request
        self._agent = agent
        self._attempt = 1
        self._seq = 0
        self._taken = time.monotonic()  # when the request was taken off the inbox

    def begin_attempt(self, attempt: int) -> None:
        """Events from now on belong to delivery attempt `attempt` (1-based)."""
        self._attempt, self._seq = attempt, 0

    async def emit(self, event: StreamResponse, agent_ids: tuple[str, str]) -> None:
        """Produce one of the agent's events (already in the hub's ids), noting the agent's own
        (task id, context id) for it in the envelope: the projection keeps them on the task."""
        self._seq += 1
        await self._produce(event, f"attempt-{self._attempt}-event-{self._seq}", agent_ids)

    async def outcome(self, event: StreamResponse) -> None:
        """Produce the hub's own final event for the request (at most one per request)."""
        await self._produce(event, "outcome")

    async def _produce(self, event: StreamResponse, name: str, agent_ids: tuple[str, str] = ("", "")) -> None:
        request = self._request
        envelope = envelopes.make(
            Kind.KIND_EVENT,
            event,
            id=envelopes.derived_id(request.id, name),
            attempt=self._attempt,
            context_id=request.context_id,
            task_id=request.task_id,
            parent_task_id=request.parent_task_id,
            sender=self._agent,
            recipient=request.sender,
            traceparent=request.traceparent,
            causation_id=request.id,
            agent_task_id=agent_ids[0],
            agent_context_id=agent_ids[1],
        )
        await self._dispatcher.produce(
            request.reply_topic,
            envelope.SerializeToString(),
            request.context_id.encode(),
            envelopes.headers(envelope),
        )
        if task_events.ends_call(event):  # the delivery's outcome, whoever produced it: count it
            state = TaskState.Name(task_events.state_of(event) or TaskState.TASK_STATE_UNSPECIFIED)
            self._dispatcher.delivered(self._agent, state, time.monotonic() - self._taken)


class Lane:
    """One agent's share of the dispatcher: ordered per context, bounded, paused when full or when
    every replica's circuit is open. It keeps one circuit per replica and each context's replica."""

    def __init__(self, dispatcher: Dispatcher, agent: str) -> None:
        self._dispatcher = dispatcher
        self.agent = agent
        self._limit = dispatcher._settings.max_in_flight
        self._breakers: dict[str, Breaker] = {}
        self._homes: OrderedDict[str, str] = OrderedDict()  # context id -> endpoint of its replica
        self._waiting: deque[Record] = deque()
        self._chains: dict[bytes | None, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._paused = False

    def breaker(self, endpoint: str) -> Breaker:
        """The circuit of the replica at `endpoint` (made on first use)."""
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            settings = self._dispatcher._settings
            breaker = self._breakers[endpoint] = Breaker(
                f"{self.agent}@{endpoint}",
                functools.partial(self._dispatcher.probe, self.agent, endpoint),
                threshold=settings.breaker_threshold,
                probe_interval_s=settings.breaker_probe_s,
                on_change=functools.partial(self._circuit_changed, endpoint),
            )
        return breaker

    def _circuit_changed(self, endpoint: str, is_open: bool) -> None:
        """A closed circuit gets new channels (the old ones may still be waiting to reconnect)."""
        if not is_open:
            self._dispatcher._connections.renew(endpoint)
        self._pump()

    def is_open(self, endpoint: str) -> bool:
        breaker = self._breakers.get(endpoint)
        return breaker is not None and breaker.is_open

    def alive(self, endpoint: str) -> None:
        """The replica registered again, or came back up by a health check or heartbeat: its circuit
        closes at once."""
        breaker = self._breakers.get(endpoint)
        if breaker is not None:
            breaker.alive()

    async def forget(self, present: set[str]) -> None:
        """Drop the circuits of replicas no longer registered (their probes stop)."""
        for endpoint in [e for e in self._breakers if e not in present]:
            await self._breakers.pop(endpoint).stop()
        self._pump()

    @property
    def blocked(self) -> bool:
        """Whether every replica of the agent has its circuit open (its requests wait in the log)."""
        registered = self._dispatcher._registry.find(self.agent)
        return registered is not None and all(self.is_open(e) for e in registered.replicas)

    def choose(self, agent: Agent, context_id: str, tried: set[str]) -> Replica | None:
        """The replica for a request of `context_id`, among those whose circuit is closed, preferring
        ones not yet tried for this request and then ones whose health checks pass: the context's
        replica if it is one of them, else the rendezvous-hash winner. None if every circuit is open."""
        admitted = [r for r in agent.replica_list() if not self.is_open(r.endpoint)]
        fresh = [r for r in admitted if r.endpoint not in tried] or admitted
        healthy = [r for r in fresh if r.up] or fresh
        if not healthy:
            return None
        home = self._homes.get(context_id)
        chosen = next((r for r in healthy if r.endpoint == home), None) or max(
            healthy, key=lambda r: _rendezvous(context_id, r.endpoint)
        )
        self._homes[context_id] = chosen.endpoint
        self._homes.move_to_end(context_id)
        if len(self._homes) > HOMES_KEPT:
            self._homes.popitem(last=False)
        return chosen

    async def any_admitted(self, timeout: float) -> None:
        """Return once some replica's circuit closes, or after `timeout` seconds (to look again)."""
        waits = [asyncio.ensure_future(b.admitted()) for b in self._breakers.values()]
        if not waits:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def offer(self, record: Record) -> None:
        self._waiting.append(record)
        self._pump()

    async def close(self, grace_s: float) -> None:
        """Start nothing more, give what runs `grace_s` to finish, interrupt the rest (they stay
        uncommitted, so they are delivered again after a restart), stop probing."""
        self._waiting.clear()
        running = list(self._chains.values())
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            if late:
                self._dispatcher.stopping = True
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        for breaker in self._breakers.values():
            await breaker.stop()

    def _pump(self) -> None:
        """Start waiting records while there is room and a circuit is closed; pause otherwise."""
        blocked = self.blocked
        while self._waiting and self._in_flight < self._limit and not blocked:
            record = self._waiting.popleft()
            self._in_flight += 1
            previous = self._chains.get(record.key)
            task = asyncio.create_task(self._handle(previous, record))
            self._chains[record.key] = task
            task.add_done_callback(functools.partial(self._forget, record.key))
        paused = bool(self._waiting) or self._in_flight >= self._limit or blocked
        if paused != self._paused:
            self._paused = paused
            self._dispatcher.pause(self.agent, paused)

    def _forget(self, key: bytes | None, task: asyncio.Task[None]) -> None:
        if self._chains.get(key) is task:
            del self._chains[key]

    async def _handle(self, previous: asyncio.Task[None] | None, record: Record) -> None:
        done = False
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self._dispatcher.process(self, record)
            done = True
        finally:
            if done:  # interrupted by a stop, it stays uncommitted and comes back after a restart
                self._dispatcher.finished(record)
            self._in_flight -= 1
            self._pump()


def _rendezvous(context_id: str, endpoint: str) -> int:
    """The weight of a replica for a context: the highest wins, the same on every hub instance,
    and a replica leaving moves only its own contexts."""
    digest = hashlib.blake2b(f"{context_id}|{endpoint}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
