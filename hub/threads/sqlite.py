"""SQLite thread store: the default, one file next to the embedded log (aiosqlite)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from agenthub.hub.threads._sql import Dialect, Executor, SqlThreadStore
from agenthub.hub.threads._summary import BACKFILL

MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE applied (envelope_id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE, context_id TEXT NOT NULL,
        task_id TEXT NOT NULL, parent_task_id TEXT NOT NULL, sender TEXT NOT NULL,
        recipient TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, message_json TEXT NOT NULL,
        created_at REAL NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
        "offset" INTEGER NOT NULL, traceparent TEXT NOT NULL);
    CREATE INDEX messages_context ON messages (context_id, created_at, seq);
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, context_id TEXT NOT NULL, agent TEXT NOT NULL, parent_task_id TEXT NOT NULL,
        state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, task BLOB NOT NULL);
    CREATE INDEX tasks_context ON tasks (context_id, created_at);
    CREATE INDEX tasks_agent ON tasks (agent, updated_at);
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE task_status (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, state TEXT NOT NULL,
        text TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX task_status_task ON task_status (task_id, at, seq);
    """,
    # 2: message ids are unique per task, not across every thread; which envelope recorded a
    # message; artifacts as the thread shows them.
    """
    CREATE TABLE messages_2 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, context_id TEXT NOT NULL,
        task_id TEXT NOT NULL, parent_task_id TEXT NOT NULL, sender TEXT NOT NULL,
        recipient TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, message_json TEXT NOT NULL,
        created_at REAL NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
        "offset" INTEGER NOT NULL, traceparent TEXT NOT NULL, envelope_id TEXT NOT NULL DEFAULT '',
        UNIQUE (task_id, message_id));
    INSERT INTO messages_2 SELECT *, '' FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_2 RENAME TO messages;
    CREATE INDEX messages_context ON messages (context_id, created_at, seq);
    CREATE INDEX messages_context_message ON messages (context_id, message_id);
    CREATE TABLE artifacts (
        task_id TEXT NOT NULL, artifact_id TEXT NOT NULL, context_id TEXT NOT NULL,
        parent_task_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL, name TEXT NOT NULL,
        text TEXT NOT NULL, artifact_json TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        topic TEXT NOT NULL, "partition" INTEGER NOT NULL, "offset" INTEGER NOT NULL,
        traceparent TEXT NOT NULL, envelope_id TEXT NOT NULL, PRIMARY KEY (task_id, artifact_id))
        WITHOUT ROWID;
    CREATE INDEX artifacts_context ON artifacts (context_id, created_at);
    """,
    # 3: thread summaries, so a listing reads a page instead of grouping every message.
    """
    CREATE TABLE threads (
        context_id TEXT PRIMARY KEY, started_at REAL NOT NULL, updated_at REAL NOT NULL,
        message_count INTEGER NOT NULL, first_seq INTEGER NOT NULL, first_text TEXT NOT NULL) WITHOUT ROWID;
    CREATE INDEX threads_updated ON threads (updated_at DESC, context_id);
    CREATE TABLE thread_names (
        context_id TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL,
        PRIMARY KEY (context_id, role, name)) WITHOUT ROWID;
    CREATE INDEX thread_names_name ON thread_names (name, context_id);
    """
    + BACKFILL,
]


class _Connection:
    """An aiosqlite connection as an `Executor`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._db.execute(sql, params)
        return cursor.rowcount

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)


async def _connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=5000")
    return db


class SqliteThreadStore(SqlThreadStore):
    """Thread store in one SQLite file.

    Args:
        path: the database file; created with its folder if missing.
    """

    dialect = Dialect(least="MIN({a}, {b})", greatest="MAX({a}, {b})")

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._read_db: aiosqlite.Connection | None = None
        self._writing = asyncio.Lock()  # one transaction at a time on the one writing connection

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await _connect(self._path)
        await self._migrate(self._db)
        async with self.transaction() as db:
            await self._load_store_id(db, uuid.uuid4().hex[:12])
            await self._create_read_indexes(db)  # a bulk load that never ended left them out
        # Readers get their own connection: on the writer's they would see a batch half-applied.
        self._read_db = await _connect(self._path)

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        done = int(row[0]) if row else 0
        for version, script in enumerate(MIGRATIONS[done:], start=done + 1):
            await db.executescript(
                f"BEGIN; {script}; INSERT INTO schema_migrations VALUES ({version}); COMMIT;"
            )

    async def stop(self) -> None:
        for db in (self._read_db, self._db):
            if db is not None:
                await db.close()
        self._db = self._read_db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteThreadStore is not started")
        return self._db

    def reader(self) -> Executor:
        if self._read_db is None:
            raise RuntimeError("SqliteThreadStore is not started")
        return _Connection(self._read_db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """A transaction on the writing connection. Transactions of concurrent tasks (the
        recorder's, a rebuild's) wait for each other: on one connection their statements would
        mix, one's commit taking the other's half-done work, and a DROP INDEX landing between a
        query and the fetch of its rows failed with "database table is locked"."""
        async with self._writing:
            try:
                yield _Connection(self.db)
            except BaseException:
                await self.db.rollback()
                raise
            await self.db.commit()
