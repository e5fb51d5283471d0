"""The recorder: projects every routing topic into the thread store, exactly once per envelope.

It reads as consumer group `<prefix>.recorder`, applies each envelope's `Projection`, and commits
offsets only after the store has them, so a crash replays records instead of losing them (and
replays are harmless: projections are keyed by envelope id). Readers that need read-your-writes
(the A2A front, after producing) wait on `wait_recorded`.
"""

from __future__ import annotations

import asyncio

import structlog
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.projection import project
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk._aio import cancel_and_wait

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
            for record in records:
                await self._record(record)
            offsets = {r.tp: r.offset + 1 for r in records}
            await self._consumer.commit(offsets)
            self._recorded.update(offsets)
            self._advanced.set()
            self._advanced = asyncio.Event()

    async def _record(self, record: Record) -> None:
        try:
            await record_into(self._store, record)
        except (ValueError, DecodeError) as exc:  # logged loudly and left in the log, never skipped silently
            log.error(
                "unreadable record left in the log",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc),
            )


async def record_into(store: ThreadStore, record: Record) -> bool:
    """Project one record into a store; False if it was recorded already. ValueError or
    DecodeError when the record is not a readable envelope."""
    envelope = envelopes.decode(record)
    current = await store.get_task(envelope.task_id) if envelope.task_id else None
    return await store.apply(project(envelope, record, current))
