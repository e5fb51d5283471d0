"""Where the front hears back: one consumer of this instance's reply topic, fanned out by task id."""

from __future__ import annotations

import asyncio

import structlog
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record
from agenthub.hub.loops import Readiness, SupervisedLoop
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb.envelope_pb2 import Envelope

log = structlog.get_logger(__name__)

Reply = tuple[Envelope, Record]


class Waiter:
    """The replies of one task, in log order, as they arrive."""

    def __init__(self, router: ReplyRouter, task_id: str, context_id: str = "") -> None:
        self._router = router
        self.task_id = task_id
        self.context_id = context_id
        self.queue: asyncio.Queue[Reply | None] = asyncio.Queue()  # None: the hub stops waiting

    async def next(self, timeout: float) -> Reply | None:
        """The next reply (None: none will come); TimeoutError after `timeout` seconds without one;
        HubUnavailable once the hub stops waiting for replies (it is stopping)."""
        async with asyncio.timeout(timeout):
            reply = await self.queue.get()
        if reply is None:
            thread = f" (thread {self.context_id})" if self.context_id else ""
            raise HubUnavailable(
                "the hub is stopping; the request is kept in the log and will be delivered when a hub"
                f" is back: ask for task {self.task_id}{thread} again in a few seconds"
            )
        return reply

    def close(self) -> None:
        self._router.release(self)


class ReplyRouter(Lifecycle):
    """Reads `topic` from its end and hands each envelope to the waiters of its task.

    Args:
        log: the log backend.
        topic: this instance's reply topic.
        readiness: where a failing loop is reported.
    """

    def __init__(self, log: Log, topic: str, *, readiness: Readiness | None = None) -> None:
        self._log = log
        self.topic = topic
        self._waiters: dict[str, set[Waiter]] = {}
        self._consumer: Consumer | None = None
        self._waiting = True
        self._loop = SupervisedLoop("reply-router", self._run, readiness)

    async def start(self) -> None:
        await self._log.ensure_topic(self.topic)
        self._consumer = self._log.consumer([self.topic], from_beginning=False)
        await self._consumer.start()
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def open(self, task_id: str, context_id: str = "") -> Waiter:
        """Start collecting the replies of a task (before producing its request); its context id
        goes into what a caller hears if the hub stops meanwhile."""
        waiter = Waiter(self, task_id, context_id)
        self._waiters.setdefault(task_id, set()).add(waiter)
        if not self._waiting:
            waiter.queue.put_nowait(None)
        return waiter

    def stop_waiting(self) -> None:
        """Wake every caller still waiting for a reply, and any that starts waiting, with
        HubUnavailable naming its task: the hub is stopping and will not hear back."""
        self._waiting = False
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.queue.put_nowait(None)

    def release(self, waiter: Waiter) -> None:
        waiters = self._waiters.get(waiter.task_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.task_id]

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            for record in await self._consumer.getmany(timeout_ms=self._log.idle_wait_ms):
                try:
                    envelope = envelopes.decode(record)
                except DecodeError as exc:
                    log.error("unreadable reply", topic=record.topic, offset=record.offset, error=str(exc))
                    continue
                for waiter in self._waiters.get(envelope.task_id, ()):
                    waiter.queue.put_nowait((envelope, record))
