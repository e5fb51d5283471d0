"""The recorder: projects every routing topic into the thread store, exactly once per envelope.

It reads as consumer group `<prefix>.recorder`, applies each envelope's `Projection`, and commits
offsets only after the store has them, so a crash replays records instead of losing them (and
replays are harmless: projections are keyed by envelope id). Readers that need read-your-writes
(the A2A front, after producing) wait on `wait_recorded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.projection import project
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk.pb.envelope_pb2 import Envelope

log = structlog.get_logger(__name__)


class Recorder(Lifecycle):
    """Consumes routing topics into a thread store.

    Args:
        log: the log backend.
        store: the thread store to project into.
        topics: topic naming.
        fetch_wait_ms: longest wait of one fetch when there is nothing to read (default 100).
    """

    def __init__(self, log: Log, store: ThreadStore, topics: Topics, *, fetch_wait_ms: int = 100) -> None:
        self._log = log
        self._store = store
        self._topics = topics
        self._fetch_wait_ms = fetch_wait_ms
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._recorded: dict[TopicPartition, int] = {}
        self._advanced = asyncio.Event()  # set (and replaced) each time recording moves forward

    async def start(self) -> None:
        self._consumer = self._log.consumer(
            group=self._topics.recorder_group(self._store.store_id), pattern=self._topics.routing_pattern
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def wait_recorded(self, record: Record, timeout: float = 10.0) -> bool:
        """Wait until `record` is in the store; False on timeout (the caller may read stale data).

        A record of a partition this instance does not record (another instance sharing the
        store owns it) is looked up in the store itself.
        """

        def done() -> bool:
            return self._recorded.get(record.tp, 0) > record.offset

        try:
            async with asyncio.timeout(timeout):
                if self._consumer is not None and record.tp in self._consumer.assignment():
                    while not done():
                        await self._advanced.wait()
                else:
                    await self._until_in_store(envelopes.decode(record).id)
        except TimeoutError:
            return False
        return True

    async def _until_in_store(self, envelope_id: str) -> None:
        delay = 0.002
        while not await self._store.is_applied(envelope_id):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            records = await self._consumer.getmany(timeout_ms=self._fetch_wait_ms)
            if not records:
                continue
            await record_batch(self._store, records)
            offsets = {r.tp: r.offset + 1 for r in records}
            await self._consumer.commit(offsets)
            self._recorded.update(offsets)
            self._advanced.set()
            self._advanced = asyncio.Event()


async def record_batch(store: ThreadStore, records: Sequence[Record]) -> int:
    """Project records into a store in one transaction; how many were new. A record that is not a
    readable envelope is logged loudly and left in the log, never skipped silently."""
    readable = [(record, envelope) for record in records if (envelope := _readable(record)) is not None]
    seen = await store.applied_among([envelope.id for _, envelope in readable])
    current = await store.get_tasks(
        sorted({e.task_id for _, e in readable if e.task_id and e.id not in seen})
    )
    projections = []
    for record, envelope in readable:
        if envelope.id in seen:
            continue
        seen.add(envelope.id)
        try:
            projection = project(envelope, record, current.get(envelope.task_id))
        except ValueError as exc:  # an envelope whose payload is not what its kind says
            _unreadable(record, exc)
            continue
        if projection.task is not None:  # later records of the batch build on this one
            projection.task.history.extend(projection.statuses)
            current[envelope.task_id] = projection.task
        projections.append(projection)
    return await store.apply(projections)


def _readable(record: Record) -> Envelope | None:
    try:
        return envelopes.decode(record)
    except DecodeError as exc:
        _unreadable(record, exc)
        return None


def _unreadable(record: Record, exc: Exception) -> None:
    log.error("unreadable record left in the log", topic=record.topic, partition=record.partition,
              offset=record.offset, error=str(exc))  # fmt: skip
