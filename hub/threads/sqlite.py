"""SQLite thread store: the default, one file next to the embedded log."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiosqlite
from a2a.types import Task, TaskState

from agenthub.hub.threads._base import (
    MessageRow,
    Projection,
    StatusRow,
    TaskPage,
    TaskRow,
    ThreadPage,
    ThreadStore,
    ThreadSummary,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (envelope_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE, context_id TEXT NOT NULL,
    task_id TEXT NOT NULL, parent_task_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    role TEXT NOT NULL, text TEXT NOT NULL, message_json TEXT NOT NULL, created_at REAL NOT NULL,
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, traceparent TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_context ON messages (context_id, created_at, seq);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, context_id TEXT NOT NULL, agent TEXT NOT NULL, parent_task_id TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, task BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_context ON tasks (context_id, created_at);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent, updated_at);
CREATE TABLE IF NOT EXISTS task_status (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, state TEXT NOT NULL,
    text TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS task_status_task ON task_status (task_id, seq);
"""

_MESSAGE_COLUMNS = (
    "message_id, context_id, task_id, parent_task_id, sender, recipient, role, text, message_json,"
    ' created_at, topic, partition, "offset", traceparent'
)


class SqliteThreadStore(ThreadStore):
    """Thread store in one SQLite file.

    Args:
        path: the database file; created with its folder if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._db: aiosqlite.Connection | None = None

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex[:12],))
        await self._db.commit()
        async with self._db.execute("SELECT value FROM meta WHERE key = 'store_id'") as cur:
            row = await cur.fetchone()
        self.store_id = str(row[0]) if row else ""

    async def stop(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteThreadStore is not started")
        return self._db

    async def apply(self, projection: Projection) -> bool:
        db = self.db
        cur = await db.execute("INSERT OR IGNORE INTO applied VALUES (?)", (projection.envelope_id,))
        if cur.rowcount == 0:
            return False
        try:
            for m in projection.messages:
                await db.execute(
                    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                    (
                        m.message_id,
                        m.context_id,
                        m.task_id,
                        m.parent_task_id,
                        m.sender,
                        m.recipient,
                        m.role,
                        m.text,
                        m.message_json,
                        m.created_at,
                        m.topic,
                        m.partition,
                        m.offset,
                        m.traceparent,
                    ),
                )
            if projection.task is not None:
                t = projection.task
                await db.execute(
                    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET"
                    " state = excluded.state, updated_at = excluded.updated_at, task = excluded.task,"
                    " created_at = MIN(tasks.created_at, excluded.created_at)",
                    (
                        t.task_id,
                        t.context_id,
                        t.agent,
                        t.parent_task_id,
                        _state(t.task),
                        t.created_at,
                        t.updated_at,
                        t.task.SerializeToString(),
                    ),
                )
            for s in projection.statuses:
                await db.execute(
                    "INSERT INTO task_status (task_id, state, text, at) VALUES (?, ?, ?, ?)",
                    (s.task_id, s.state, s.text, s.at),
                )
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        return True

    async def get_task(self, task_id: str) -> TaskRow | None:
        async with self.db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        task = _task_row(row)
        task.history = await self._statuses(task_id)
        return task

    async def list_tasks(
        self,
        *,
        agent: str | None = None,
        context_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskPage:
        where, params = _where({"agent": agent, "context_id": context_id, "state": state})
        async with self.db.execute(f"SELECT COUNT(*) FROM tasks{where}", params) as cur:
            (total,) = await cur.fetchone() or (0,)
        query = f"SELECT * FROM tasks{where} ORDER BY updated_at DESC, task_id LIMIT ? OFFSET ?"
        async with self.db.execute(query, (*params, limit, offset)) as cur:
            tasks = [_task_row(row) async for row in cur]
        more = offset + len(tasks) < total
        return TaskPage(tasks, total, offset + len(tasks) if more else None)

    async def list_threads(self, *, agent: str | None = None, limit: int = 50, offset: int = 0) -> ThreadPage:
        having = " HAVING SUM(recipient = ? OR sender = ?) > 0" if agent else ""
        query = (
            "SELECT context_id, MIN(created_at), MAX(created_at), COUNT(*),"
            " GROUP_CONCAT(DISTINCT recipient), MIN(created_at) FROM messages GROUP BY context_id"
            f"{having} ORDER BY MAX(created_at) DESC LIMIT ? OFFSET ?"
        )
        params: tuple[Any, ...] = (agent, agent, limit + 1, offset) if agent else (limit + 1, offset)
        async with self.db.execute(query, params) as cur:
            rows = list(await cur.fetchall())
        threads = []
        for ctx, started, updated, count, agents, _ in rows[:limit]:
            first_query = "SELECT text FROM messages WHERE context_id = ? ORDER BY created_at, seq LIMIT 1"
            async with self.db.execute(first_query, (ctx,)) as cur:
                first = await cur.fetchone()
            names = sorted(a for a in (agents or "").split(",") if a and a != "user")
            threads.append(ThreadSummary(ctx, started, updated, count, names, first[0] if first else ""))
        return ThreadPage(threads, offset + limit if len(rows) > limit else None)

    async def thread_messages(self, context_id: str) -> list[MessageRow]:
        query = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE context_id = ? ORDER BY created_at, seq"
        async with self.db.execute(query, (context_id,)) as cur:
            return [MessageRow(*row) async for row in cur]

    async def thread_tasks(self, context_id: str) -> list[TaskRow]:
        query = "SELECT * FROM tasks WHERE context_id = ? ORDER BY created_at, task_id"
        async with self.db.execute(query, (context_id,)) as cur:
            tasks = [_task_row(row) async for row in cur]
        for task in tasks:
            task.history = await self._statuses(task.task_id)
        return tasks

    async def _statuses(self, task_id: str) -> list[StatusRow]:
        query = "SELECT task_id, state, text, at FROM task_status WHERE task_id = ? ORDER BY at, seq"
        async with self.db.execute(query, (task_id,)) as cur:
            return [StatusRow(*row) async for row in cur]


def _state(task: Task) -> str:
    return TaskState.Name(task.status.state)


def _task_row(row: Any) -> TaskRow:
    _, _, agent, parent, _, created, updated, blob = row
    task = Task()
    task.ParseFromString(blob)
    return TaskRow(task, agent, parent, created, updated)


def _where(filters: dict[str, str | None]) -> tuple[str, tuple[str, ...]]:
    used = {k: v for k, v in filters.items() if v}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())
