"""A rebuild from scratch writes without the read indexes and builds them at its end (issue 11).

The indexes a bulk load drops must be exactly the ones the migrations made that only serve reads,
with the same definitions; they come back when the load ends, fails, or never ended (the next
start builds what is missing). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agenthub.hub.threads import postgres, sqlite
from agenthub.hub.threads._base import MessageRow, Projection, ThreadFilter, ThreadStore
from agenthub.hub.threads._sql import READ_INDEXES


def open_store(threads_url: str | None, path: Path) -> ThreadStore:
    return (
        sqlite.SqliteThreadStore(path) if threads_url is None else postgres.PostgresThreadStore(threads_url)
    )


async def read_indexes(store: ThreadStore) -> dict[str, str]:
    """The store's indexes that are not keys, as name -> "table (columns)"."""
    if isinstance(store, sqlite.SqliteThreadStore):
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql NOT LIKE '%UNIQUE%'"
    else:
        assert isinstance(store, postgres.PostgresThreadStore)
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        query += " AND indexdef NOT LIKE '%UNIQUE%'"
    rows = await store.reader().fetch(query)
    found = {}
    for _, sql in rows:
        if sql is None:
            continue  # SQLite's own index of a key
        shape = r"CREATE INDEX (?:IF NOT EXISTS )?(\w+) ON (?:public\.)?(\w+) (?:USING btree )?(\(.*\))"
        match = re.fullmatch(shape, sql)
        assert match, sql
        found[match[1]] = f"{match[2]} {match[3]}"
    return found


def message(n: int) -> MessageRow:
    return MessageRow(
        message_id=f"m{n}", context_id=f"c{n}", task_id=f"t{n}", parent_task_id="", sender="user",
        recipient="echo", role="user", text=f"hello {n}", message_json="{}", created_at=float(n),
        topic="inbox", partition=0, offset=n, traceparent="", envelope_id=f"e{n}",
    )  # fmt: skip


async def test_the_read_indexes_are_the_ones_the_migrations_make(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        assert await read_indexes(store) == READ_INDEXES


async def test_a_bulk_load_writes_without_them_and_builds_them_at_its_end(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        async with store.bulk_load():
            assert await read_indexes(store) == {}
            assert await store.apply([Projection(f"e{n}", messages=[message(n)]) for n in range(50)]) == 50
            page = await store.list_threads(ThreadFilter(), limit=5)
            assert [t.context_id for t in page.threads] == [f"c{n}" for n in range(49, 44, -1)]
        assert await read_indexes(store) == READ_INDEXES
        assert [m.text for m in await store.thread_messages("c7")] == ["hello 7"]

        with pytest.raises(RuntimeError, match="interrupted"):
            async with store.bulk_load():
                raise RuntimeError("interrupted")
        assert await read_indexes(store) == READ_INDEXES


async def test_a_bulk_load_that_never_ended_is_repaired_at_the_next_start(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        async with store.transaction() as db:  # what a bulk load did before its hub was killed
            for name in READ_INDEXES:
                await db.execute(f"DROP INDEX {name}")
        assert await read_indexes(store) == {}
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        assert await read_indexes(store) == READ_INDEXES
