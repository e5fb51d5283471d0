"""PostgreSQL thread store (asyncpg): one store shared by many hub instances.

Same queries as SQLite (`_sql.py`); this module connects a pool, turns `?` into `$n`, and applies
the numbered migrations under an advisory lock, so instances starting together migrate once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from agenthub.hub.threads._sql import Dialect, Executor, SqlThreadStore
from agenthub.hub.threads._summary import BACKFILL
from agenthub.sdk.errors import ConfigError, HubUnavailable

MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE applied (envelope_id TEXT PRIMARY KEY);
    CREATE TABLE messages (
        seq BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, context_id TEXT NOT NULL,
        task_id TEXT NOT NULL, parent_task_id TEXT NOT NULL, sender TEXT NOT NULL,
        recipient TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, message_json TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL, traceparent TEXT NOT NULL);
    CREATE INDEX messages_context ON messages (context_id, created_at, seq);
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, context_id TEXT NOT NULL, agent TEXT NOT NULL, parent_task_id TEXT NOT NULL,
        state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        task BYTEA NOT NULL);
    CREATE INDEX tasks_context ON tasks (context_id, created_at);
    CREATE INDEX tasks_agent ON tasks (agent, updated_at);
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE task_status (
        seq BIGSERIAL PRIMARY KEY, task_id TEXT NOT NULL, state TEXT NOT NULL,
        text TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX task_status_task ON task_status (task_id, at, seq);
    """,
    # 2: message ids are unique per task, not across every thread; which envelope recorded a
    # message; artifacts as the thread shows them.
    """
    ALTER TABLE messages DROP CONSTRAINT messages_message_id_key;
    ALTER TABLE messages ADD CONSTRAINT messages_task_message UNIQUE (task_id, message_id);
    ALTER TABLE messages ADD COLUMN envelope_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX messages_context_message ON messages (context_id, message_id);
    CREATE TABLE artifacts (
        task_id TEXT NOT NULL, artifact_id TEXT NOT NULL, context_id TEXT NOT NULL,
        parent_task_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL, name TEXT NOT NULL,
        text TEXT NOT NULL, artifact_json TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL, traceparent TEXT NOT NULL, envelope_id TEXT NOT NULL,
        PRIMARY KEY (task_id, artifact_id));
    CREATE INDEX artifacts_context ON artifacts (context_id, created_at);
    """,
    # 3: thread summaries, so a listing reads a page instead of grouping every message.
    """
    CREATE TABLE threads (
        context_id TEXT PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, message_count BIGINT NOT NULL, first_seq BIGINT NOT NULL,
        first_text TEXT NOT NULL);
    CREATE INDEX threads_updated ON threads (updated_at DESC, context_id);
    CREATE TABLE thread_names (
        context_id TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL,
        PRIMARY KEY (context_id, role, name));
    CREATE INDEX thread_names_name ON thread_names (name, context_id);
    """
    + BACKFILL,
]
MIGRATION_LOCK = 0x6167_656E_7468_7562  # "agenthub"
_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def _storable(params: Sequence[Any]) -> list[Any]:
    """Parameters PostgreSQL accepts: TEXT cannot hold NUL, so a NUL in a string (an agent may well
    answer one) is stored as U+FFFD; the message's JSON keeps the exact text, escaped."""
    return [p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p for p in params]


class _Connection:
    """An asyncpg connection (or pool) as an `Executor`."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status = await self._db.execute(_numbered(sql), *_storable(params))
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return [tuple(row) for row in await self._db.fetch(_numbered(sql), *_storable(params))]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(_numbered(sql), [_storable(row) for row in rows])


class PostgresThreadStore(SqlThreadStore):
    """Thread store in a PostgreSQL database.

    Args:
        url: a libpq URL, e.g. postgresql://user@host:5432/agenthub.
        pool_size: largest number of connections (default 10).
    """

    dialect = Dialect(least="LEAST({a}, {b})", greatest="GREATEST({a}, {b})")

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self._pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise HubUnavailable(f"cannot reach the PostgreSQL thread store: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"invalid PostgreSQL URL: {exc}") from None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
            for version, script in enumerate(MIGRATIONS[done:], start=done + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1)", version)
            await self._load_store_id(_Connection(conn), uuid.uuid4().hex[:12])
            await self._create_read_indexes(_Connection(conn))  # a bulk load that never ended left them out

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresThreadStore is not started")
        return self._pool

    def reader(self) -> Executor:
        return _Connection(self.pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _Connection(conn)
