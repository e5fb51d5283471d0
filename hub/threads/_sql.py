"""The thread store written once in portable SQL; SQLite and PostgreSQL only supply a driver.

Queries use `?` placeholders and only what both databases understand; the few differences
(LEAST, GREATEST) come from the driver's `Dialect`. Thread listings read the summaries of
`_summary.py`, kept in the transaction of the messages they summarise. Schema changes are numbered
migrations per database, applied in order at start and recorded in `schema_migrations`.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from a2a.types import Task

from agenthub.hub.threads import _summary as summary
from agenthub.hub.threads._base import (
    ArtifactRow,
    MessageRow,
    Projection,
    StatusRow,
    TaskPage,
    TaskRow,
    ThreadFilter,
    ThreadPage,
    ThreadStore,
    state_name,
)

MESSAGE_COLUMNS = (
    "message_id, context_id, task_id, parent_task_id, sender, recipient, role, text, message_json,"
    ' created_at, topic, "partition", "offset", traceparent, envelope_id'
)
ARTIFACT_COLUMNS = (
    "task_id, artifact_id, context_id, parent_task_id, sender, recipient, name, text, artifact_json,"
    ' created_at, updated_at, topic, "partition", "offset", traceparent, envelope_id'
)
ARTIFACT_LATEST = ("name", "text", "artifact_json", "updated_at", "topic", '"partition"', '"offset"',
                   "traceparent", "envelope_id")  # fmt: skip
TASK_COLUMNS = "task_id, context_id, agent, parent_task_id, state, created_at, updated_at, task"
TABLES = ("applied", "messages", "tasks", "task_status", "artifacts", *summary.TABLES)
# Indexes that only serve reads (uniqueness and conflict targets are keys, never dropped), as the
# migrations create them; a bulk load drops them and builds them again at its end, or at the next
# start if it never ended. tests/test_bulk_load.py checks this table against the migrations.
READ_INDEXES = {
    "messages_context": "messages (context_id, created_at, seq)",
    "messages_context_message": "messages (context_id, message_id)",
    "tasks_context": "tasks (context_id, created_at)",
    "tasks_agent": "tasks (agent, updated_at)",
    "tasks_state": "tasks (state)",
    "task_status_task": "task_status (task_id, at, seq)",
    "artifacts_context": "artifacts (context_id, created_at)",
    "threads_updated": "threads (updated_at DESC, context_id)",
    "thread_names_name": "thread_names (name, context_id)",
}
T = TypeVar("T")
ROWS_PER_STATEMENT = 512  # rows of a multi-row INSERT (a power of two): 15 columns stay under 32k parameters


@dataclass(frozen=True)
class Dialect:
    """The SQL that differs between the databases."""

    least: str  # format with {a} and {b}
    greatest: str  # format with {a} and {b}


class Executor(Protocol):
    """One connection (or transaction) that runs statements."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; rows affected."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run a query; all rows."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row."""


class SqlThreadStore(ThreadStore):
    """Every query of the thread store; subclasses connect, migrate and open transactions."""

    dialect: Dialect

    @abstractmethod
    def reader(self) -> Executor:
        """An executor for reads."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """An executor whose statements commit together, or not at all."""

    async def _load_store_id(self, db: Executor, new_id: str) -> None:
        await db.execute(
            "INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT DO NOTHING", (new_id,)
        )
        rows = await db.fetch("SELECT value FROM meta WHERE key = 'store_id'")
        self.store_id = str(rows[0][0])

    # ---- writes ----------------------------------------------------------------------------

    async def apply(self, projections: Sequence[Projection]) -> int:
        async with self.transaction() as db:
            accepted = await self._mark_applied(db, projections)
            messages = [m for p in accepted for m in p.messages]
            if messages:
                await self._insert_messages(db, messages)
            tasks = [p.task for p in accepted if p.task is not None]
            if tasks:
                await self._upsert_tasks(db, tasks)
            statuses = [s for p in accepted for s in p.statuses]
            if statuses:
                await db.executemany(
                    "INSERT INTO task_status (task_id, state, text, at) VALUES (?, ?, ?, ?)",
                    [(s.task_id, s.state, s.text, s.at) for s in statuses],
                )
            artifacts = [a for p in accepted for a in p.artifacts]
            if artifacts:
                await self._upsert_artifacts(db, artifacts)
        return len(accepted)

    async def _mark_applied(self, db: Executor, projections: Sequence[Projection]) -> list[Projection]:
        """The projections whose envelopes were not applied yet (the first of any repeated id),
        marked applied: one statement per `ROWS_PER_STATEMENT`, not one per envelope."""
        new: set[str] = set()
        for chunk in _chunks(projections, ROWS_PER_STATEMENT):
            query = (
                f"INSERT INTO applied (envelope_id) VALUES {', '.join(['(?)'] * len(chunk))}"
                " ON CONFLICT DO NOTHING RETURNING envelope_id"
            )
            new.update(row[0] for row in await db.fetch(query, [p.envelope_id for p in chunk]))
        accepted = []
        for projection in projections:
            if projection.envelope_id in new:
                new.discard(projection.envelope_id)
                accepted.append(projection)
        return accepted

    async def _insert_messages(self, db: Executor, messages: list[MessageRow]) -> None:
        """Insert messages (a message already in its task is left alone) and add the ones really
        inserted to their threads' summaries."""
        inserted: list[Sequence[Any]] = []
        for chunk in _chunks(messages, ROWS_PER_STATEMENT):
            query = (
                f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES"
                f" {', '.join([f'({_marks(range(15))})'] * len(chunk))}"
                f" ON CONFLICT DO NOTHING RETURNING {summary.RETURNED}"
            )
            params = [v for m in chunk for v in (
                m.message_id, m.context_id, m.task_id, m.parent_task_id, m.sender, m.recipient, m.role,
                m.text, m.message_json, m.created_at, m.topic, m.partition, m.offset, m.traceparent,
                m.envelope_id)]  # fmt: skip
            inserted += await db.fetch(query, params)
        threads, names = summary.deltas(inserted)
        if threads:
            await db.executemany(summary.upsert_sql(self.dialect.least, self.dialect.greatest), threads)
            await db.executemany(summary.NAMES_SQL, names)

    async def _upsert_artifacts(self, db: Executor, artifacts: list[ArtifactRow]) -> None:
        """Each row is the artifact joined so far: the latest sets the content, the first its time."""
        earliest = self.dialect.least.format(a="artifacts.created_at", b="excluded.created_at")
        latest = ", ".join(f"{c} = excluded.{c}" for c in ARTIFACT_LATEST)
        await db.executemany(
            f"INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES ({', '.join('?' * 16)})"
            f" ON CONFLICT (task_id, artifact_id) DO UPDATE SET {latest}, created_at = {earliest}",
            [(a.task_id, a.artifact_id, a.context_id, a.parent_task_id, a.sender, a.recipient, a.name, a.text,
              a.artifact_json, a.created_at, a.updated_at, a.topic, a.partition, a.offset, a.traceparent,
              a.envelope_id) for a in artifacts],
        )  # fmt: skip

    async def _upsert_tasks(self, db: Executor, tasks: list[TaskRow]) -> None:
        """Upsert each task row once: a batch's records of one task share one `TaskRow`, which was
        serialised and written again for every record. Rows keep the order the batch first touched
        them: sorting by task id put a rebuild's tasks in random rowid order, which its replies
        then update at random (SQLite: ~2-3 us more per record)."""
        latest = list({id(t): t for t in tasks}.values())  # same row object: written once
        earliest = self.dialect.least.format(a="tasks.created_at", b="excluded.created_at")
        await db.executemany(
            f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (task_id) DO UPDATE SET"
            f" state = excluded.state, updated_at = excluded.updated_at, task = excluded.task,"
            f" created_at = {earliest}",
            [(task.id, task.context_id, t.agent, t.parent_task_id, state_name(task.status.state),
              t.created_at, t.updated_at, task.SerializeToString(deterministic=True))
             for t in latest for task in (t.task,)],
        )  # fmt: skip

    async def wipe(self) -> None:
        async with self.transaction() as db:
            for table in TABLES:
                await db.execute(f"DELETE FROM {table}")

    @asynccontextmanager
    async def bulk_load(self) -> AsyncIterator[None]:
        """Inserting into nine indexes keyed by random ids was a third of a rebuild's store work;
        building them from the finished tables sorts once instead."""
        async with self.transaction() as db:
            for name in READ_INDEXES:
                await db.execute(f"DROP INDEX IF EXISTS {name}")
        try:
            yield
        finally:
            await asyncio.shield(self._build_read_indexes())

    async def _build_read_indexes(self) -> None:
        """Build the read indexes that are missing (all of them after a bulk load)."""
        async with self.transaction() as db:
            await self._create_read_indexes(db)

    @staticmethod
    async def _create_read_indexes(db: Executor) -> None:
        for name, definition in READ_INDEXES.items():
            await db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}")

    # ---- reads -----------------------------------------------------------------------------

    async def is_applied(self, envelope_id: str) -> bool:
        rows = await self.reader().fetch("SELECT 1 FROM applied WHERE envelope_id = ?", (envelope_id,))
        return bool(rows)

    async def applied_among(self, envelope_ids: Sequence[str]) -> set[str]:
        if not envelope_ids:
            return set()
        ids = _padded(envelope_ids)
        query = f"SELECT envelope_id FROM applied WHERE envelope_id IN ({_marks(ids)})"
        return {row[0] for row in await self.reader().fetch(query, ids)}

    async def get_task(self, task_id: str) -> TaskRow | None:
        return (await self.get_tasks([task_id])).get(task_id)

    async def get_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskRow]:
        if not task_ids:
            return {}
        db, ids = self.reader(), _padded(task_ids)
        marks = _marks(ids)
        tasks = {row[0]: _task_row(row) for row in await db.fetch(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({marks})", ids)}  # fmt: skip
        query = (
            f"SELECT task_id, state, text, at FROM task_status WHERE task_id IN ({marks}) ORDER BY at, seq"
        )
        for row in await db.fetch(query, ids):
            if row[0] in tasks:  # a status committed between the two reads belongs to a newer snapshot
                tasks[row[0]].history.append(StatusRow(*row))
        return tasks

    async def list_tasks(
        self,
        *,
        agent: str | None = None,
        context_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskPage:
        used = {k: v for k, v in {"agent": agent, "context_id": context_id, "state": state}.items() if v}
        where = (" WHERE " + " AND ".join(f"{k} = ?" for k in used)) if used else ""
        params = tuple(used.values())
        db = self.reader()
        (total,) = (await db.fetch(f"SELECT COUNT(*) FROM tasks{where}", params))[0]
        query = f"SELECT {TASK_COLUMNS} FROM tasks{where} ORDER BY updated_at DESC, task_id LIMIT ? OFFSET ?"
        tasks = [_task_row(row) for row in await db.fetch(query, (*params, limit, offset))]
        more = offset + len(tasks) < total
        return TaskPage(tasks, int(total), offset + len(tasks) if more else None)

    async def list_threads(self, where: ThreadFilter, *, limit: int = 50, offset: int = 0) -> ThreadPage:
        query, params = summary.listing_sql(where)
        db = self.reader()
        rows = await db.fetch(query, (*params, limit + 1, offset))
        contexts = _padded([row[0] for row in rows[:limit]])
        agents = await db.fetch(
            f"SELECT context_id, name FROM thread_names WHERE role = 'recipient'"
            f" AND context_id IN ({_marks(contexts)})",
            contexts,
        ) if contexts else []  # fmt: skip
        return summary.page(rows, agents, limit, offset)

    async def thread_messages(self, context_id: str) -> list[MessageRow]:
        query = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE context_id = ? ORDER BY created_at, seq"
        return [MessageRow(*row) for row in await self.reader().fetch(query, (context_id,))]

    async def thread_tasks(self, context_id: str) -> list[TaskRow]:
        query = f"SELECT {TASK_COLUMNS} FROM tasks WHERE context_id = ? ORDER BY created_at, task_id"
        tasks = [_task_row(row) for row in await self.reader().fetch(query, (context_id,))]
        for task in tasks:
            task.history = await self._statuses(task.task_id)
        return tasks

    async def thread_artifacts(self, context_id: str) -> list[ArtifactRow]:
        query = (
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE context_id = ?"
            " ORDER BY created_at, task_id, artifact_id"
        )
        return [ArtifactRow(*row) for row in await self.reader().fetch(query, (context_id,))]

    async def messages_with_id(self, context_id: str, message_id: str) -> list[MessageRow]:
        query = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE context_id = ? AND message_id = ?"
            " ORDER BY created_at, seq"
        )
        return [MessageRow(*row) for row in await self.reader().fetch(query, (context_id, message_id))]

    async def rows(self) -> AsyncIterator[tuple[str, tuple[Any, ...]]]:
        db = self.reader()
        queries = {
            "applied": "SELECT envelope_id FROM applied ORDER BY envelope_id",
            "messages": f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY task_id, message_id",
            "tasks": f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY task_id",
            "task_status": "SELECT task_id, state, text, at FROM task_status ORDER BY task_id, at, state",
            "artifacts": f"SELECT {ARTIFACT_COLUMNS} FROM artifacts ORDER BY task_id, artifact_id",
        }
        for table, query in queries.items():
            for row in await db.fetch(query):
                yield table, tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)

    async def _statuses(self, task_id: str) -> list[StatusRow]:
        query = "SELECT task_id, state, text, at FROM task_status WHERE task_id = ? ORDER BY at, seq"
        return [StatusRow(*row) for row in await self.reader().fetch(query, (task_id,))]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in chunks of power-of-two lengths up to `size` (a power of two), largest first.

    A multi-row statement then comes in a dozen shapes instead of one per row count, so the
    driver's statement cache keeps each shape prepared: with a shape per count it prepared nearly
    every batch anew and held up to 128 large prepared statements per connection (~30 MB)."""
    start = 0
    while start < len(items):
        length = min(size, 1 << ((len(items) - start).bit_length() - 1))
        yield items[start : start + length]
        start += length


def _padded(values: Sequence[T]) -> list[T]:
    """`values` with the last one repeated up to a power-of-two count, for `IN (...)` lists (a
    repeat changes no result), for the same reason as `_chunks`."""
    padded = list(values)
    return padded + padded[-1:] * ((1 << (len(padded) - 1).bit_length()) - len(padded))


def _task_row(row: Sequence[Any]) -> TaskRow:
    _, _, agent, parent, _, created, updated, blob = row
    task = Task()
    task.ParseFromString(bytes(blob))
    return TaskRow(task, agent, parent, created, updated)
