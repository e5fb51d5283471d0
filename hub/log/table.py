"""A small table kept in a compacted topic: every hub instance replays it at start and follows it,
so what one instance writes (a key, a policy rule) every other one applies within a fetch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record
from agenthub.hub.loops import Readiness, SupervisedLoop

log = structlog.get_logger(__name__)
V = TypeVar("V")


class CompactedTable(Lifecycle, Generic[V]):
    """`key -> value` rows of a one-partition compacted topic; an empty value deletes its key.

    Args:
        log: the log backend.
        topic: the compacted topic.
        decode: bytes -> value; a ValueError skips the record (something else wrote it).
        encode: value -> bytes.
        name: the part's name in readiness and logs.
        readiness: where the follower reports itself down while the log fails.
        on_change: told `(key, value)` after each row applied, `(key, None)` when a row goes (deleted,
            or replaced by a record that cannot be read: a stale value never outlives its successor).
    """

    def __init__(
        self,
        log: Log,
        topic: str,
        *,
        decode: Callable[[bytes], V],
        encode: Callable[[V], bytes],
        name: str,
        readiness: Readiness | None = None,
        on_change: Callable[[str, V | None], None] | None = None,
    ) -> None:
        self._log = log
        self._topic = topic
        self._decode, self._encode = decode, encode
        self._name = name
        self._on_change = on_change
        self.rows: dict[str, V] = {}
        self._position = 0
        self._advanced = asyncio.Event()
        self._consumer: Consumer | None = None
        self._loop = SupervisedLoop(name, self._follow, readiness)

    async def start(self) -> None:
        """Start following; returns once every row written so far is applied."""
        await self._log.ensure_topic(self._topic, partitions=1, compacted=True)
        self._consumer = self._log.consumer([self._topic], from_beginning=True)
        await self._consumer.start()
        await self._loop.start()
        await self.caught_up()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def caught_up(self) -> None:
        """Wait until every row written (by any instance) before this call is applied."""
        end = (await self._log.end_offsets(self._topic)).get(0, 0)
        while self._position < end:
            advanced = self._advanced
            await advanced.wait()

    async def put(self, key: str, value: V) -> None:
        """Write a row; applied here at once, on other instances within a fetch."""
        self._apply(await self._log.produce(self._topic, self._encode(value), key=key.encode()))

    async def delete(self, key: str) -> None:
        self._apply(await self._log.produce(self._topic, b"", key=key.encode()))

    def _apply(self, record: Record) -> None:
        key = (record.key or b"").decode(errors="replace")
        value: V | None = None
        if record.value:
            try:
                value = self._decode(record.value)
            except ValueError as exc:
                log.warning("unreadable row skipped", table=self._name, offset=record.offset, error=str(exc))
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = value
        if self._on_change is not None:
            self._on_change(key, value)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            records = await self._consumer.getmany(timeout_ms=self._log.idle_wait_ms)
            for record in records:
                self._apply(record)
                self._position = record.offset + 1
            if records:
                self._advanced.set()
                self._advanced = asyncio.Event()
