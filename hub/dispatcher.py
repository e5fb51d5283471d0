"""The dispatcher: delivers each agent's inbox to the agent over A2A gRPC, and its answers to the log.

One worker per registered agent reads `<prefix>.inbox.<agent>` in group `<prefix>.dispatch.<agent>`.
Records of one context run one after another (their order is the thread's order); records of
different contexts run concurrently up to `max_in_flight`. An inbox offset is committed only once
the request's outcome is in the log: answered, failed with a reason, or dead-lettered. It never
drops a request silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

import structlog
from a2a.types import SendMessageRequest, StreamResponse, TaskState
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes, task_events
from agenthub.hub.config import HubSettings
from agenthub.hub.connections import AgentCallFailed, Connections
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.offsets import OffsetTracker
from agenthub.hub.registry import Registry
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind
from agenthub.sdk.pb.registry_pb2 import AgentChange

log = structlog.get_logger(__name__)

Emit = Callable[[StreamResponse], Awaitable[None]]


class AgentUnreachable(Exception):
    """The agent failed transiently on every attempt."""


class Dispatcher(Lifecycle):
    """Runs one `AgentWorker` per registered agent and applies cancel requests.

    Args:
        log: the log backend.
        registry: registered agents (workers follow its changes).
        store: the thread store (to skip requests whose task was canceled while queued).
        settings: hub settings (attempts, backoff, timeouts, concurrency, fetch wait).
    """

    def __init__(self, log: Log, registry: Registry, store: ThreadStore, settings: HubSettings) -> None:
        self._log = log
        self._registry = registry
        self._store = store
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._workers: dict[str, AgentWorker] = {}
        self._running: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._control: Consumer | None = None
        self._connections = Connections()

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.control, partitions=1)
        self._control = self._log.consumer([self._topics.control], from_beginning=False)
        await self._control.start()
        self._tasks = [
            asyncio.create_task(self._follow_registry(), name="dispatcher-registry"),
            asyncio.create_task(self._follow_control(), name="dispatcher-control"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await asyncio.gather(*(worker.stop() for worker in self._workers.values()))
        self._workers.clear()
        if self._control is not None:
            await self._control.stop()
        await self._connections.stop()

    async def _follow_registry(self) -> None:
        async for change in self._registry.watch():
            await self._on_change(change)

    async def _on_change(self, change: AgentChange) -> None:
        name = change.agent.name
        if change.removed:
            worker = self._workers.pop(name, None)
            if worker is not None:
                await worker.stop()
        elif name not in self._workers:
            worker = AgentWorker(self, name)
            self._workers[name] = worker
            await worker.start()

    async def _follow_control(self) -> None:
        assert self._control is not None
        while True:
            for record in await self._control.getmany(timeout_ms=1000):
                with contextlib.suppress(DecodeError):
                    envelope = envelopes.decode(record)
                    if envelope.kind == Kind.KIND_CANCEL:
                        await self._cancel(envelope)

    async def _cancel(self, envelope: Envelope) -> None:
        running = self._running.get(envelope.task_id)
        if running is None:
            return
        call, agent = running
        registered = self._registry.find(agent)
        if registered is not None:  # tell the agent too; its call is canceled either way
            await self._connections.to(registered.record, registered.card).cancel(envelope.task_id)
        call.cancel()

    async def deliver(self, agent: str, envelope: Envelope, request: SendMessageRequest) -> None:
        """Deliver one request to its agent and put its outcome in the log, whatever happens."""
        emitter = _Emitter(self._log, envelope, agent)
        task = await self._store.get_task(envelope.task_id)
        if task is not None and task.task.status.state == TaskState.TASK_STATE_CANCELED:
            return
        call = asyncio.create_task(self._attempts(agent, envelope, request, emitter))
        self._running[envelope.task_id] = (call, agent)
        try:
            await call
        except asyncio.CancelledError:
            if not call.cancelled():
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
            await self.fail(agent, envelope, str(exc), emitter)
        finally:
            self._running.pop(envelope.task_id, None)

    async def fail(
        self, agent: str, envelope: Envelope, reason: str, emitter: _Emitter | None = None
    ) -> None:
        """Park the request in the dead-letter topic and end its task as failed, saying why."""
        await self._dead_letter(agent, envelope, reason)
        reason = f"{reason}; the request is parked in {self._topics.dlq(agent)}"
        event = task_events.status_event(
            envelope.task_id, envelope.context_id, TaskState.TASK_STATE_FAILED, reason
        )
        await (emitter or _Emitter(self._log, envelope, agent)).outcome(event)

    async def _attempts(
        self, agent: str, envelope: Envelope, request: SendMessageRequest, emitter: _Emitter
    ) -> None:
        settings = self._settings
        last_error = ""
        for attempt in range(settings.max_attempts):
            if attempt:
                await asyncio.sleep(settings.retry_backoff_s * 2 ** (attempt - 1))
            emitter.begin_attempt(envelope.attempt + attempt)
            try:
                reason = await self._call(agent, envelope, request, emitter)
            except AgentCallFailed as exc:
                last_error = str(exc)
                if not exc.transient:
                    reason = f"agent {agent!r} rejected the request: {last_error}"
                else:
                    log.warning(
                        "agent call failed, will retry",
                        agent=agent,
                        task=envelope.task_id,
                        attempt=attempt + 1,
                        error=last_error,
                    )
                    continue
            if reason:
                await emitter.outcome(
                    task_events.status_event(
                        envelope.task_id, envelope.context_id, TaskState.TASK_STATE_FAILED, reason
                    )
                )
            return
        raise AgentUnreachable(
            f"agent {agent!r} failed {settings.max_attempts} attempts (last: {last_error})"
        )

    async def _call(
        self, agent: str, envelope: Envelope, request: SendMessageRequest, emitter: _Emitter
    ) -> str:
        """One streaming call; returns a failure reason if the agent ended without a final state."""
        registered = self._registry.find(agent)
        if registered is None:
            return f"agent {agent!r} was deregistered before it could answer"
        connection = self._connections.to(registered.record, registered.card)
        metadata = (("agenthub-sender", envelope.sender), ("traceparent", envelope.traceparent))
        events = connection.stream(
            _for_agent(request, envelope),
            tuple(m for m in metadata if m[1]),
            self._settings.agent_call_timeout_s,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                await emitter.emit(task_events.retarget(event, envelope.task_id, envelope.context_id))
                if task_events.ends_call(event):
                    return ""
        return f"agent {agent!r} ended its stream without a final task state"

    async def _dead_letter(self, agent: str, envelope: Envelope, reason: str) -> None:
        dead = Envelope()
        dead.CopyFrom(envelope)
        dead.id = envelopes.derived_id(envelope.id, "dead-letter")
        dead.kind = Kind.KIND_DEAD_LETTER
        dead.causation_id = envelope.id
        dead.error = reason
        dead.attempt = envelope.attempt + self._settings.max_attempts - 1
        await self._log.produce(
            self._topics.dlq(agent),
            dead.SerializeToString(),
            key=envelope.context_id.encode(),
            headers=envelopes.headers(dead),
        )
        log.error("request dead-lettered", agent=agent, task=envelope.task_id, reason=reason)

    async def park(self, agent: str, record: Record, reason: str) -> None:
        """Move an inbox record nobody can read to the dead-letter topic as it is, with the reason."""
        source = f"{record.topic}/{record.partition}/{record.offset}"
        extra = (("agenthub-error", reason.encode()), ("agenthub-source", source.encode()))
        await self._log.produce(
            self._topics.dlq(agent), record.value, key=record.key, headers=record.headers + extra
        )
        log.error("unreadable inbox record dead-lettered", agent=agent, source=source, reason=reason)


def _for_agent(request: SendMessageRequest, envelope: Envelope) -> SendMessageRequest:
    """The request as the agent sees it: its own server (no tenant), hub ids in metadata."""
    outgoing = SendMessageRequest()
    outgoing.CopyFrom(request)
    outgoing.tenant = ""
    outgoing.message.context_id = envelope.context_id
    outgoing.message.task_id = (
        ""  # the hub's task id means nothing to the agent: each hop starts its own task
    )
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

    def __init__(self, log: Log, request: Envelope, agent: str) -> None:
        self._log = log
        self._request = request
        self._agent = agent
        self._attempt = 1
        self._seq = 0

    def begin_attempt(self, attempt: int) -> None:
        """Events from now on belong to delivery attempt `attempt` (1-based)."""
        self._attempt, self._seq = attempt, 0

    async def emit(self, event: StreamResponse) -> None:
        """Produce one of the agent's events."""
        self._seq += 1
        await self._produce(event, f"attempt-{self._attempt}-event-{self._seq}")

    async def outcome(self, event: StreamResponse) -> None:
        """Produce the hub's own final event for the request (at most one per request)."""
        await self._produce(event, "outcome")

    async def _produce(self, event: StreamResponse, name: str) -> None:
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
        )
        await self._log.produce(
            request.reply_topic,
            envelope.SerializeToString(),
            key=request.context_id.encode(),
            headers=envelopes.headers(envelope),
        )


class AgentWorker(Lifecycle):
    """Consumes one agent's inbox with per-context ordering and bounded concurrency."""

    def __init__(self, dispatcher: Dispatcher, agent: str) -> None:
        self._dispatcher = dispatcher
        self.agent = agent
        settings = dispatcher._settings
        self._fetch_wait_ms = settings.fetch_wait_ms
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tracker = OffsetTracker()
        self._chains: dict[bytes | None, asyncio.Task[None]] = {}
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        topics = self._dispatcher._topics
        self._consumer = self._dispatcher._log.consumer(
            [topics.inbox(self.agent)], group=topics.dispatch_group(self.agent), on_revoke=self._drain
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"dispatch-{self.agent}")

    async def stop(self) -> None:
        """Stop fetching, let in-flight requests finish, commit, release."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._chains:
            await asyncio.gather(*self._chains.values(), return_exceptions=True)
        await self._commit()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _drain(self, lost: set[TopicPartition]) -> None:
        """Before partitions move to another hub instance: finish what is in flight and commit it."""
        if self._chains:
            await asyncio.gather(*self._chains.values(), return_exceptions=True)
        await self._commit()
        self._tracker.forget(lost)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            await self._slots.acquire()
            self._slots.release()
            records = await self._consumer.getmany(timeout_ms=self._fetch_wait_ms, max_records=64)
            for record in records:
                await self._slots.acquire()
                self._tracker.take(record)
                previous = self._chains.get(record.key)
                task = asyncio.create_task(self._handle(previous, record))
                self._chains[record.key] = task
                task.add_done_callback(functools.partial(self._forget, record.key))

    def _forget(self, key: bytes | None, task: asyncio.Task[None]) -> None:
        if self._chains.get(key) is task:
            del self._chains[key]

    async def _handle(self, previous: asyncio.Task[None] | None, record: Record) -> None:
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self._process(record)
        finally:
            self._tracker.finish(record)
            self._slots.release()
            await self._commit()

    async def _process(self, record: Record) -> None:
        try:
            envelope = envelopes.decode(record)
            if envelope.kind != Kind.KIND_REQUEST:
                return
            request = envelopes.unpack(envelope, SendMessageRequest)
        except (DecodeError, ValueError) as exc:
            await self._dispatcher.park(self.agent, record, f"unreadable inbox record: {exc}")
            return
        try:
            await self._dispatcher.deliver(self.agent, envelope, request)
        except Exception as exc:  # a hub fault must fail the task visibly, never drop the request
            log.exception("delivery failed inside the hub", agent=self.agent, task=envelope.task_id)
            await self._dispatcher.fail(self.agent, envelope, f"hub error while delivering: {exc!r}")

    async def _commit(self) -> None:
        offsets = self._tracker.committable()
        if offsets and self._consumer is not None:
            await self._consumer.commit(offsets)
