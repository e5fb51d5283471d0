"""The embedded log backend: a durable single-machine log in one SQLite file.

Same semantics as Kafka for what the hub uses: topics with partitions, per-partition offsets,
consumer groups sharing partitions, committed group offsets that survive restarts. Every write
waiting at one moment goes to SQLite in one transaction on the log's own thread (group commit:
one thread hop per batch, not per statement). A record is visible to consumers only once it is
committed, and recent records are kept in memory, so consumers read without touching SQLite.
Consumers are woken only for partitions that received records: an idle log costs nothing.
It must never be opened by two processes at once: it is the zero-setup backend, Kafka scales out.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from agenthub.hub.log._base import Consumer, Headers, Log, OnRevoke, Record, TopicPartition, partition_for

log = structlog.get_logger(__name__)
T = TypeVar("T")

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
_INSERT_RECORD = "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)"
_UPSERT_OFFSET = "INSERT OR REPLACE INTO group_offsets VALUES (?, ?, ?, ?)"
_INSERT_TOPIC = "INSERT OR IGNORE INTO topics VALUES (?, ?, ?)"
_READ = (
    "SELECT offset, key, value, ts, headers FROM records"
    " WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?"
)


def _encode_headers(headers: Headers) -> str:
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers]).decode()


def _decode_headers(text: str) -> Headers:
    return tuple([(k, v.encode("latin-1")) for k, v in orjson.loads(text)])


class _Tail:
    """The most recent records of one partition, in memory (`first` is the oldest kept offset)."""

    def __init__(self) -> None:
        self.records: deque[Record] = deque()

    @property
    def first(self) -> int:
        return self.records[0].offset if self.records else -1

    def slice(self, start: int, limit: int) -> list[Record]:
        base = self.first
        if base < 0 or start < base:
            return []
        index = start - base
        return [self.records[i] for i in range(index, min(len(self.records), index + limit))]


class EmbeddedLog(Log):
    """SQLite-backed log.

    Args:
        path: the database file; created with its folder if missing.
        default_partitions: partitions of a topic created without an explicit count (default 4).
        tail_records: records kept in memory for consumers, the newest of the whole log whatever
            their partition (default 8192): a budget for the log, not per partition, so memory
            does not grow with the number of agents.
    """

    outages = (sqlite3.OperationalError, OSError, TimeoutError)

    def __init__(self, path: str | Path, *, default_partitions: int = 4, tail_records: int = 8192) -> None:
        self._path = Path(path)
        self.default_partitions = default_partitions
        self._tail_records = tail_records
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._topics: dict[str, int] = {}
        self._reserved: dict[TopicPartition, int] = {}  # next offset handed to a producer
        self._visible: dict[TopicPartition, int] = {}  # next offset after the last committed record
        self._tails: dict[TopicPartition, _Tail] = {}
        self._kept: deque[_Tail] = deque()  # the tail of each record kept in memory, oldest first
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._pending: list[tuple[str, tuple[Any, ...], Record | None]] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake_writer = asyncio.Event()
        self._groups: dict[str, list[EmbeddedConsumer]] = {}
        self._consumers: set[EmbeddedConsumer] = set()
        self.generation = 0  # bumped when topics or group members change (assignments move)

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-log")
        await self._run(self._open)
        self._topics = dict(await self._query("SELECT name, partitions FROM topics"))
        ends = await self._query(
            "SELECT topic, partition, MAX(offset) FROM records GROUP BY topic, partition"
        )
        self._visible = {TopicPartition(t, p): o + 1 for t, p, o in ends}
        self._reserved = dict(self._visible)
        offsets = await self._query("SELECT grp, topic, partition, offset FROM group_offsets")
        self._committed = {(g, TopicPartition(t, p)): o for g, t, p, o in offsets}
        self._writer = asyncio.create_task(self._write_loop(), name="embedded-log-writer")

    def _open(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def stop(self) -> None:
        if self._writer is None:
            return
        while self._pending:
            await self._commit_batch()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the log's own thread (SQLite never blocks the event loop)."""
        if self._thread is None:
            raise RuntimeError("EmbeddedLog is not started")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        def fetch() -> list[Any]:
            assert self._db is not None
            return self._db.execute(sql, params).fetchall()

        return await self._run(fetch)

    # ---- writing -------------------------------------------------------------------------

    async def ensure_topic(self, topic: str, partitions: int | None = None, compacted: bool = False) -> None:
        if topic in self._topics:
            return
        count = partitions or self.default_partitions
        self._topics[topic] = count
        self.generation += 1
        self._notify_topic(topic)
        await self._write(_INSERT_TOPIC, (topic, count, int(compacted)))

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> Record:
        if topic not in self._topics:
            await self.ensure_topic(topic)
        tp = TopicPartition(topic, partition_for(key, self._topics[topic]))
        offset = self._reserved.get(tp, 0)
        self._reserved[tp] = offset + 1
        record = Record(topic, tp.partition, offset, key, value, int(time.time() * 1000), headers)
        params = (topic, tp.partition, offset, key, value, record.timestamp_ms, _encode_headers(headers))
        await self._write(_INSERT_RECORD, params, record)
        return record

    async def commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Persist a group's next-offsets (used by its consumers)."""
        for tp, offset in offsets.items():
            self._committed[(group, tp)] = offset
            self._pending.append((_UPSERT_OFFSET, (group, tp.topic, tp.partition, offset), None))
        if offsets:
            await self._wait_written()

    async def _write(self, sql: str, params: tuple[Any, ...], record: Record | None = None) -> None:
        self._pending.append((sql, params, record))
        await self._wait_written()

    async def _wait_written(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._wake_writer.set()
        await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            await self._commit_batch()

    async def _commit_batch(self) -> None:
        """Everything written since the last batch, in one transaction; then wake the readers."""
        batch, self._pending = self._pending, []
        waiting, self._waiting = self._waiting, []
        if not batch:
            _settle(waiting, None)
            return
        try:
            await self._run(self._write_all, [(sql, params) for sql, params, _ in batch])
        except sqlite3.Error as exc:  # every waiting producer must learn its write failed
            log.error("embedded log write failed", error=str(exc))
            _settle(waiting, exc)
            return
        for _, _, record in batch:
            if record is not None:
                self._publish(record)
        _settle(waiting, None)

    def _write_all(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _publish(self, record: Record) -> None:
        """A committed record becomes visible: kept in the tail, its readers woken."""
        tp = record.tp
        tail = self._tails.get(tp)
        if tail is None:
            tail = self._tails[tp] = _Tail()
        tail.records.append(record)
        self._kept.append(tail)
        if len(self._kept) > self._tail_records:  # the log's oldest kept record is its tail's oldest
            self._kept.popleft().records.popleft()
        self._visible[tp] = record.offset + 1
        for consumer in self._consumers:
            if consumer.wants(tp.topic):
                consumer.wake(tp)

    def _notify_topic(self, topic: str) -> None:
        for consumer in self._consumers:
            if consumer.wants(topic):
                consumer.reassign()

    # ---- reading -------------------------------------------------------------------------

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
        return {p: self.end(TopicPartition(topic, p)) for p in range(self._topics.get(topic, 0))}

    async def read(self, tp: TopicPartition, start: int, limit: int) -> list[Record]:
        """Records of one partition from `start`, at most `limit` of them (from memory if recent)."""
        end = self.end(tp)
        limit = min(limit, end - start)
        if limit <= 0:
            return []
        tail = self._tails.get(tp)
        if tail is not None and 0 <= tail.first <= start:
            return tail.slice(start, limit)
        rows = await self._query(_READ, (tp.topic, tp.partition, start, limit))
        return [Record(tp.topic, tp.partition, o, k, v, ts, _decode_headers(h)) for o, k, v, ts, h in rows]

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        query = "SELECT MIN(offset) FROM records WHERE topic = ? AND partition = ? AND ts >= ?"
        rows = await self._query(query, (tp.topic, tp.partition, timestamp_ms))
        return int(rows[0][0]) if rows and rows[0][0] is not None else self.end(tp)

    async def group_offsets(
        self, topics: Sequence[str], group_prefix: str
    ) -> dict[str, dict[TopicPartition, int]]:
        wanted = set(topics)
        out: dict[str, dict[TopicPartition, int]] = {}
        for (group, tp), offset in self._committed.items():
            if tp.topic in wanted and group.startswith(group_prefix):
                out.setdefault(group, {})[tp] = offset
        return out

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        return self._committed.get((group, tp))

    def end(self, tp: TopicPartition) -> int:
        """The next offset after the last committed (visible) record."""
        return self._visible.get(tp, 0)

    def topics(self) -> dict[str, int]:
        return self._topics

    # ---- groups --------------------------------------------------------------------------

    def attach(self, consumer: EmbeddedConsumer) -> None:
        self._consumers.add(consumer)

    def detach(self, consumer: EmbeddedConsumer) -> None:
        self._consumers.discard(consumer)

    async def join(self, group: str, member: EmbeddedConsumer) -> None:
        """Add a member; the others first give up (drain and commit) what moves to it."""
        members = self._groups.setdefault(group, [])
        before = {m: m.assignment() for m in members}
        members.append(member)
        self._regroup(group)
        await _revoke(before)

    async def leave(self, group: str, member: EmbeddedConsumer) -> None:
        members = self._groups.get(group, [])
        if member in members:
            members.remove(member)
            self._regroup(group)

    def _regroup(self, group: str) -> None:
        self.generation += 1
        for member in self._groups.get(group, []):
            member.reassign()

    def members(self, group: str) -> list[EmbeddedConsumer]:
        return self._groups.get(group, [])


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


async def _revoke(before: dict[EmbeddedConsumer, set[TopicPartition]]) -> None:
    for member, owned in before.items():
        lost = owned - member.assignment()
        if lost:
            await member.revoked(lost)


class EmbeddedConsumer(Consumer):
    """A consumer of the embedded log; group members split partitions round-robin.

    It keeps the partitions that may have records to read (`_ready`); the log wakes it when one
    of its partitions receives a record, so a fetch never scans partitions that did not change.
    """

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
        self._wanted: dict[str, bool] = {}
        self._assigned: set[TopicPartition] | None = None  # None: to be computed again
        self._ready: dict[TopicPartition, None] = {}  # ordered set: fair round-robin
        self._paused: set[str] = set()  # topics
        self._wake = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        for topic in self._topics:
            await self._log.ensure_topic(topic)
        self._log.attach(self)
        if self._group:
            await self._log.join(self._group, self)
        self._started = True
        self.reassign()
        for tp in self.assignment():  # fix positions now, so a tail reader misses nothing after start()
            self._position(tp)

    async def stop(self) -> None:
        self._log.detach(self)
        if self._group and self._started:
            await self._log.leave(self._group, self)
        self._started = False

    async def revoked(self, lost: set[TopicPartition]) -> None:
        """Partitions moved to another member: let the owner finish them, then forget positions."""
        if self._on_revoke is not None:
            await self._on_revoke(lost)
        for tp in lost:
            self._positions.pop(tp, None)

    def wants(self, topic: str) -> bool:
        """Whether this consumer subscribes to `topic` (memoized: patterns are matched once)."""
        wanted = self._wanted.get(topic)
        if wanted is None:
            wanted = topic in self._topics or bool(self._pattern and self._pattern.fullmatch(topic))
            self._wanted[topic] = wanted
        return wanted

    def wake(self, tp: TopicPartition) -> None:
        self._ready[tp] = None
        self._wake.set()

    def reassign(self) -> None:
        """Topics or members changed: compute the assignment again and look at every partition."""
        self._assigned = None
        self._wake.set()

    def assignment(self) -> set[TopicPartition]:
        if self._assigned is None:
            self._assigned = self._compute_assignment()
            for tp in list(self._positions):
                if tp not in self._assigned:  # partition moved to another member: forget our position
                    del self._positions[tp]
            self._ready.update(dict.fromkeys(sorted(self._assigned)))
        return self._assigned

    def _compute_assignment(self) -> set[TopicPartition]:
        topics = self._log.topics()
        names = sorted(t for t in topics if self.wants(t))
        partitions = [TopicPartition(t, p) for t in names for p in range(topics[t])]
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

    def pause(self, topics: Iterable[str]) -> None:
        self._paused |= set(topics)

    def resume(self, topics: Iterable[str]) -> None:
        resumed = set(topics)
        self._paused -= resumed
        self._ready.update(dict.fromkeys(sorted(tp for tp in self.assignment() if tp.topic in resumed)))
        self._wake.set()

    async def getmany(self, timeout_ms: int | None = None, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + (timeout_ms if timeout_ms is not None else 1000) / 1000
        while True:
            self._wake.clear()
            records = await self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await self._wake.wait()
            except TimeoutError:
                return []

    async def _fetch(self, max_records: int) -> list[Record]:
        assigned = self.assignment()
        out: list[Record] = []
        for tp in list(self._ready):
            if len(out) >= max_records:
                break
            if tp not in assigned:
                self._ready.pop(tp, None)
                continue
            if tp.topic in self._paused:
                continue
            position = self._position(tp)
            records = await self._log.read(tp, position, max_records - len(out))
            self._ready.pop(tp, None)
            if records:
                self._positions[tp] = records[-1].offset + 1
                out.extend(records)
                if self._positions[tp] < self._log.end(tp):
                    self._ready[tp] = None  # more to read: back of the line
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self._group:
            raise RuntimeError("a consumer without a group cannot commit")
        await self._log.commit_group(self._group, offsets)
