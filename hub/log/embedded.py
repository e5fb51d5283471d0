"""The embedded log backend: a durable single-machine log in one SQLite file.

Same semantics as Kafka for what the hub uses: topics with partitions, per-partition offsets,
consumer groups sharing partitions, committed group offsets that survive restarts. Writes are
group-committed by one writer task (many produces, one transaction). Consumers in this process
are woken the moment a record is appended, so there is no fetch-wait latency. It must never be
opened by two processes at once: it is the zero-setup backend, Kafka is the scale-out one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from agenthub.hub.log._base import Consumer, Headers, Log, OnRevoke, Record, TopicPartition, partition_for

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY, partitions INTEGER NOT NULL, compacted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, ts INTEGER NOT NULL, headers TEXT NOT NULL,
    PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
"""


def _encode_headers(headers: Headers) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _decode_headers(text: str) -> Headers:
    return tuple((k, v.encode("latin-1")) for k, v in json.loads(text))


class EmbeddedLog(Log):
    """SQLite-backed log.

    Args:
        path: the database file; created with its folder if missing.
        default_partitions: partitions of a topic created without an explicit count (default 4).
    """

    def __init__(self, path: str | Path, *, default_partitions: int = 4) -> None:
        self._path = Path(path)
        self.default_partitions = default_partitions
        self._db: aiosqlite.Connection | None = None
        self._topics: dict[str, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._pending: list[tuple[str, tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake_writer = asyncio.Event()
        self._changed = asyncio.Event()
        self._groups: dict[str, list[EmbeddedConsumer]] = {}
        self._topic_lock = asyncio.Lock()

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
        async with self._db.execute("SELECT name, partitions FROM topics") as cur:
            self._topics = {name: n async for name, n in cur}
        query = "SELECT topic, partition, MAX(offset) FROM records GROUP BY topic, partition"
        async with self._db.execute(query) as cur:
            self._ends = {TopicPartition(t, p): o + 1 async for t, p, o in cur}
        async with self._db.execute("SELECT grp, topic, partition, offset FROM group_offsets") as cur:
            self._committed = {(g, TopicPartition(t, p)): o async for g, t, p, o in cur}
        self._writer = asyncio.create_task(self._write_loop(), name="embedded-log-writer")

    async def stop(self) -> None:
        if self._writer is None:
            return
        await self._flush()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("EmbeddedLog is not started")
        return self._db

    async def ensure_topic(self, topic: str, partitions: int | None = None, compacted: bool = False) -> None:
        async with self._topic_lock:
            if topic in self._topics:
                return
            count = partitions or self.default_partitions
            await self._write("INSERT OR IGNORE INTO topics VALUES (?, ?, ?)", (topic, count, int(compacted)))
            self._topics[topic] = count
        self._signal()

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> Record:
        if topic not in self._topics:
            await self.ensure_topic(topic)
        tp = TopicPartition(topic, partition_for(key, self._topics[topic]))
        offset = self._ends.get(tp, 0)
        self._ends[tp] = offset + 1
        record = Record(topic, tp.partition, offset, key, value, int(time.time() * 1000), headers)
        await self._write(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
            (topic, tp.partition, offset, key, value, record.timestamp_ms, _encode_headers(headers)),
        )
        self._signal()
        return record

    def consumer(
        self,
        topics: Sequence[str] = (),
        *,
        group: str | None = None,
        pattern: str | None = None,
        from_beginning: bool = True,
        on_revoke: OnRevoke | None = None,
    ) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, list(topics), group, pattern, from_beginning, on_revoke)

    async def list_topics(self) -> dict[str, int]:
        return dict(self._topics)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: self._ends.get(TopicPartition(topic, p), 0) for p in range(self._topics.get(topic, 0))}

    async def read(self, tp: TopicPartition, start: int, limit: int) -> list[Record]:
        """Records of one partition from `start`, at most `limit` of them."""
        query = (
            "SELECT offset, key, value, ts, headers FROM records"
            " WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?"
        )
        async with self.db.execute(query, (tp.topic, tp.partition, start, limit)) as cur:
            return [
                Record(tp.topic, tp.partition, o, k, v, ts, _decode_headers(h))
                async for o, k, v, ts, h in cur
            ]

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        query = "SELECT MIN(offset) FROM records WHERE topic = ? AND partition = ? AND ts >= ?"
        async with self.db.execute(query, (tp.topic, tp.partition, timestamp_ms)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else self.end(tp)

    async def group_offsets(self, topics: Sequence[str]) -> dict[str, dict[TopicPartition, int]]:
        wanted = set(topics)
        out: dict[str, dict[TopicPartition, int]] = {}
        for (group, tp), offset in self._committed.items():
            if tp.topic in wanted:
                out.setdefault(group, {})[tp] = offset
        return out

    async def commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Persist a group's next-offsets (used by its consumers)."""
        for tp, offset in offsets.items():
            self._committed[(group, tp)] = offset
            await self._write(
                "INSERT OR REPLACE INTO group_offsets VALUES (?, ?, ?, ?)",
                (group, tp.topic, tp.partition, offset),
            )

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        return self._committed.get((group, tp))

    def end(self, tp: TopicPartition) -> int:
        return self._ends.get(tp, 0)

    def topics(self) -> dict[str, int]:
        return self._topics

    def changed(self) -> asyncio.Event:
        """An event the next append or topic creation sets: take it *before* looking for records."""
        return self._changed

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def join(self, group: str, member: EmbeddedConsumer) -> None:
        """Add a member; the others first give up (drain and commit) what moves to it."""
        members = self._groups.setdefault(group, [])
        before = {m: m.assignment() for m in members}
        members.append(member)
        await _revoke(before)

    async def leave(self, group: str, member: EmbeddedConsumer) -> None:
        members = self._groups.get(group, [])
        if member in members:
            members.remove(member)

    def members(self, group: str) -> list[EmbeddedConsumer]:
        return self._groups.get(group, [])

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((sql, params, future))
        self._wake_writer.set()
        await future

    async def _flush(self) -> None:
        while self._pending:
            await self._commit_batch()

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            await self._commit_batch()

    async def _commit_batch(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            for sql, params, _ in batch:
                await self.db.execute(sql, params)
            await self.db.commit()
        except Exception as exc:  # every waiting producer must learn its write failed
            log.error("embedded log write failed", error=str(exc))
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)


async def _revoke(before: dict[EmbeddedConsumer, set[TopicPartition]]) -> None:
    for member, owned in before.items():
        lost = owned - member.assignment()
        if lost:
            await member.revoked(lost)


class EmbeddedConsumer(Consumer):
    """A consumer of the embedded log; group members split partitions round-robin."""

    def __init__(
        self,
        log: EmbeddedLog,
        topics: list[str],
        group: str | None,
        pattern: str | None,
        from_beginning: bool,
        on_revoke: OnRevoke | None = None,
    ) -> None:
        self._log = log
        self._on_revoke = on_revoke
        self._topics = topics
        self._group = group
        self._pattern = re.compile(pattern) if pattern else None
        self._from_beginning = from_beginning
        self._positions: dict[TopicPartition, int] = {}
        self._started = False

    async def start(self) -> None:
        for topic in self._topics:
            await self._log.ensure_topic(topic)
        if self._group:
            await self._log.join(self._group, self)
        self._started = True
        for tp in self.assignment():  # fix positions now, so a tail reader misses nothing after start()
            self._position(tp)

    async def stop(self) -> None:
        if self._group and self._started:
            await self._log.leave(self._group, self)
        self._started = False

    async def revoked(self, lost: set[TopicPartition]) -> None:
        """Partitions moved to another member: let the owner finish them, then forget positions."""
        if self._on_revoke is not None:
            await self._on_revoke(lost)
        for tp in lost:
            self._positions.pop(tp, None)

    def _subscribed(self) -> list[TopicPartition]:
        topics = self._log.topics()
        names = set(self._topics)
        if self._pattern:
            names |= {t for t in topics if self._pattern.fullmatch(t)}
        return [TopicPartition(t, p) for t in sorted(names) for p in range(topics.get(t, 0))]

    def assignment(self) -> set[TopicPartition]:
        partitions = self._subscribed()
        if not self._group:
            return set(partitions)
        members = self._log.members(self._group)
        if self not in members:
            return set()
        index, count = members.index(self), len(members)
        return {tp for i, tp in enumerate(partitions) if i % count == index}

    def _position(self, tp: TopicPartition) -> int:
        if tp not in self._positions:
            committed = self._log.committed(self._group, tp) if self._group else None
            if committed is not None:
                self._positions[tp] = committed
            else:
                self._positions[tp] = 0 if self._from_beginning else self._log.end(tp)
        return self._positions[tp]

    async def getmany(self, timeout_ms: int | None = None, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + (timeout_ms if timeout_ms is not None else 1000) / 1000
        while True:
            changed = self._log.changed()
            records = await self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def _fetch(self, max_records: int) -> list[Record]:
        assigned = self.assignment()
        for tp in list(self._positions):
            if tp not in assigned:  # partition moved to another member: forget our position
                del self._positions[tp]
        out: list[Record] = []
        for tp in sorted(assigned):
            position = self._position(tp)
            if position >= self._log.end(tp) or len(out) >= max_records:
                continue
            records = await self._log.read(tp, position, max_records - len(out))
            if records:
                self._positions[tp] = records[-1].offset + 1
                out.extend(records)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self._group:
            raise RuntimeError("a consumer without a group cannot commit")
        await self._log.commit_group(self._group, offsets)
