"""A rebuild from scratch writes without the read indexes and builds them at its end (issue 11).

The indexes a bulk load drops must be exactly the ones the migrations made that only serve reads,
with the same definitions; they come back when the load ends, fails, or never ended (the next
start builds what is missing). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from agenthub.hub.config import HubSettings
from agenthub.hub.threads import postgres, sqlite
from agenthub.hub.threads._base import MessageRow, Projection, ThreadFilter, ThreadStore
from agenthub.hub.threads._sql import READ_INDEXES
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import last
from tests.processes import HubProcess
from tests.test_delivery import echo


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


def sqlite_read_indexes(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        names = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    return names & set(READ_INDEXES)


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_hub_killed_in_a_bulk_load_comes_back_with_its_indexes(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A real `agenthub serve` is killed (SIGKILL) while a rebuild from scratch has the read
    indexes dropped, and held there by a lock on the store; started again on the same folder it
    has every index back, and a rebuild run again restores every thread."""
    data = tmp_path / "data"
    hub = HubProcess(hub_settings(data), data)
    await hub.start()
    db = data / "threads.db"
    try:
        async with (
            Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address, memory=None),
            HubClient(hub.address) as client,
        ):
            sent = [await client.send("echoer", f"hello {n}") for n in range(60)]
            lock = sqlite3.connect(db, timeout=30, isolation_level=None)
            try:
                for _ in range(5):  # the rebuild may end before the lock is taken: try again
                    rebuild = asyncio.create_task(
                        last(client.rebuild(op.Selection(), apply=True, from_scratch=True))
                    )
                    while sqlite_read_indexes(db) and not rebuild.done():  # noqa: ASYNC110 - a file
                        await asyncio.sleep(0.005)
                    lock.execute("BEGIN IMMEDIATE")  # the hub's next write waits for it
                    if not sqlite_read_indexes(db):
                        break
                    lock.execute("ROLLBACK")
                    await rebuild
                assert not sqlite_read_indexes(db), "every rebuild ended before the hub could be killed in it"
                await hub.kill()
                rebuild.cancel()
            finally:
                lock.close()
        assert not sqlite_read_indexes(db), "the kill did not land in the bulk load"
        await hub.start()
        assert sqlite_read_indexes(db) == set(READ_INDEXES)
        async with HubClient(hub.address) as client:
            again = await last(client.rebuild(op.Selection(), apply=True, from_scratch=True))
            assert again.written == again.total > 0
            for task in sent:
                texts = [m.text for m in (await client.get_thread(task.context_id)).messages]
                assert texts[-1].startswith("echo: hello")
        assert sqlite_read_indexes(db) == set(READ_INDEXES)
    finally:
        await hub.kill()


async def test_concurrent_transactions_of_one_sqlite_store_do_not_mix(tmp_path: Path) -> None:
    """SQLite writes through one connection: a transaction that fails while another commits must
    lose only its own work (they used to share one open transaction: the commit took the failing
    one's row, and its rollback could undo the other's)."""
    async with sqlite.SqliteThreadStore(tmp_path / "threads.db") as store:
        inside = asyncio.Event()

        async def failing() -> None:
            async with store.transaction() as db:
                await db.execute("INSERT INTO meta (key, value) VALUES ('failing', '1')")
                inside.set()
                await asyncio.sleep(0.1)  # the other transaction starts meanwhile
                raise RuntimeError("refused")

        async def committing() -> None:
            await inside.wait()
            async with store.transaction() as db:
                await db.execute("INSERT INTO meta (key, value) VALUES ('committing', '1')")

        outcomes = await asyncio.gather(failing(), committing(), return_exceptions=True)
        assert isinstance(outcomes[0], RuntimeError) and outcomes[1] is None
        keys = {key for (key,) in await store.reader().fetch("SELECT key FROM meta")}
        assert "committing" in keys and "failing" not in keys
