"""Thread listings come from summaries kept beside the messages: on both stores they say exactly
what grouping the messages says, whatever the batching, redeliveries and concurrent writers; they
survive a restart, fill themselves when an older store migrates, and a rebuild from scratch
refills them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from agenthub.hub.server import Hub
from agenthub.hub.threads import postgres, sqlite
from agenthub.hub.threads._base import MessageRow, Projection, ThreadFilter, ThreadStore, ThreadSummary
from agenthub.hub.threads._sql import MESSAGE_COLUMNS
from agenthub.sdk import HubClient
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import last
from tests.test_operators import traffic

NAMES = ["user", "calc", "triage", "writer"]
EVERYTHING = ThreadFilter()


def open_store(threads_url: str | None, path: Path) -> ThreadStore:
    return (
        sqlite.SqliteThreadStore(path) if threads_url is None else postgres.PostgresThreadStore(threads_url)
    )


def random_messages(seed: int, count: int = 120) -> list[MessageRow]:
    """Messages over a few threads with clashing times, some sharing (task, message id) pairs."""
    pick = random.Random(seed)
    out = []
    for n in range(count):
        context = f"ctx-{pick.randrange(7)}"
        sender, recipient = pick.sample(NAMES, 2)
        message_id = f"m{pick.randrange(count // 2)}"  # repeats: the first recorded stays
        out.append(MessageRow(
            message_id, context, f"{context}-task-{pick.randrange(2)}", "", sender, recipient,
            "user" if sender == "user" else "agent", f"text {n} {pick.choice(['50%', 'a_b', 'Hello'])}",
            "{}", float(pick.randrange(10)),
        ))  # fmt: skip
    return out


async def apply_in_batches(store: ThreadStore, messages: list[MessageRow], seed: int) -> None:
    """Each message as its own envelope, in random batches, some envelopes delivered twice."""
    pick = random.Random(seed)
    projections = [Projection(f"e-{seed}-{n}", messages=[m]) for n, m in enumerate(messages)]
    position = 0
    while position < len(projections):
        size = pick.randrange(1, 25)
        batch = projections[position : position + size]
        await store.apply(batch + pick.sample(batch, min(2, len(batch))))
        position += size


async def expected(store: ThreadStore, where: ThreadFilter = EVERYTHING) -> list[ThreadSummary]:
    """The listing that grouping every stored message gives (what ListThreads used to compute)."""
    contexts = sorted({row[1] async for table, row in store.rows() if table == "messages"})
    out = []
    for context in contexts:
        messages = await store.thread_messages(context)
        updated = max(m.created_at for m in messages)
        if where.agent and not any(where.agent in (m.sender, m.recipient) for m in messages):
            continue
        if where.text and not any(where.text.lower() in m.text.lower() for m in messages):
            continue
        if (where.since is not None and updated < where.since) or (
            where.until is not None and updated >= where.until
        ):
            continue
        agents = sorted({m.recipient for m in messages} - {"", "user"})
        started = min(m.created_at for m in messages)
        out.append(ThreadSummary(context, started, updated, len(messages), agents, messages[0].text))
    return sorted(out, key=lambda s: (-s.updated_at, s.context_id))


async def listed(store: ThreadStore, where: ThreadFilter = EVERYTHING) -> list[ThreadSummary]:
    """Every thread a filter lists, page by page (pages of 3)."""
    out: list[ThreadSummary] = []
    offset: int | None = 0
    while offset is not None:
        page = await store.list_threads(where, limit=3, offset=offset)
        out += page.threads
        offset = page.next_offset
    return out


FILTERS = [
    ThreadFilter(),
    ThreadFilter(agent="writer"),
    ThreadFilter(text="50%"),
    ThreadFilter(text="A_B"),
    ThreadFilter(since=5.0),
    ThreadFilter(until=8.0),
]


async def assert_listings_match(store: ThreadStore) -> None:
    for where in FILTERS:
        assert await listed(store, where) == await expected(store, where), where


@pytest.fixture
async def store(threads_url: str | None, tmp_path: Path) -> AsyncIterator[ThreadStore]:
    async with open_store(threads_url, tmp_path / "threads.db") as opened:
        yield opened


async def test_summaries_say_what_the_messages_say_and_survive_a_restart(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        await apply_in_batches(store, random_messages(1), seed=1)
        before = await listed(store)
        assert len(before) == 7 and sum(t.message_count for t in before) < 120  # repeated ids kept once
        await assert_listings_match(store)
    async with open_store(threads_url, tmp_path / "threads.db") as reopened:
        assert await listed(reopened) == before


async def test_concurrent_writers_lose_no_count(
    store: ThreadStore, threads_url: str | None, tmp_path: Path
) -> None:
    """Two store instances (two hub instances) writing the same threads at once."""
    async with open_store(threads_url, tmp_path / "threads.db") as other:
        await asyncio.gather(
            apply_in_batches(store, random_messages(2), seed=2),
            apply_in_batches(other, random_messages(3), seed=3),
        )
    await assert_listings_match(store)


V2_MESSAGES = [  # thread a: first message by time comes second; thread b: a tie broken by seq
    ("m1", "ctx-a", "t1", "", "user", "calc", "user", "later", "{}", 5.0, "t", 0, 1, "", "e1"),
    ("m2", "ctx-a", "t1", "", "calc", "user", "agent", "earlier", "{}", 2.0, "t", 0, 2, "", "e2"),
    ("m3", "ctx-b", "t2", "", "triage", "writer", "user", "tie one", "{}", 3.0, "t", 0, 3, "", "e3"),
    ("m4", "ctx-b", "t2", "", "writer", "triage", "agent", "tie two", "{}", 3.0, "t", 0, 4, "", "e4"),
]


async def make_v2_store(threads_url: str | None, path: Path) -> ThreadStore:
    """A store at schema version 2 (before summaries) holding messages; the object that migrates it."""
    insert = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({', '.join('?' * 15)})"
    if threads_url is None:
        async with aiosqlite.connect(path) as db:
            await db.executescript(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);"
                f"{sqlite.MIGRATIONS[0]}; {sqlite.MIGRATIONS[1]};"
                " INSERT INTO schema_migrations VALUES (1), (2);"
            )
            await db.executemany(insert, V2_MESSAGES)
            await db.commit()
        return sqlite.SqliteThreadStore(path)
    db = await asyncpg.connect(threads_url)
    try:
        await db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        await db.execute(postgres.MIGRATIONS[0])
        await db.execute(postgres.MIGRATIONS[1])
        await db.execute("INSERT INTO schema_migrations VALUES (1), (2)")
        await db.executemany(postgres._numbered(insert), V2_MESSAGES)
    finally:
        await db.close()
    return postgres.PostgresThreadStore(threads_url)


async def test_a_store_made_before_summaries_migrates_and_fills_them(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with await make_v2_store(threads_url, tmp_path / "threads.db") as store:
        assert [(t.context_id, t.message_count, t.first_text, t.agents) for t in await listed(store)] == [
            ("ctx-a", 2, "earlier", ["calc"]),
            ("ctx-b", 2, "tie one", ["triage", "writer"]),
        ]
        await assert_listings_match(store)
        more = MessageRow("m5", "ctx-b", "t2", "", "calc", "calc", "agent", "first now", "{}", 1.0)
        assert await store.apply([Projection("e5", messages=[more])]) == 1
        await assert_listings_match(store)
        texts = {t.context_id: t.first_text for t in await listed(store, ThreadFilter(agent="calc"))}
        assert texts == {"ctx-a": "earlier", "ctx-b": "first now"}


@pytest.mark.usefixtures("reference_agents")
async def test_a_rebuild_from_scratch_refills_the_summaries(hub: Hub, client: HubClient) -> None:
    await traffic(client)
    await hub.recorder.settle_all()
    live = await listed(hub.store)
    assert len(live) == 2 and live == await expected(hub.store)
    await last(client.rebuild(op.Selection(), apply=True, from_scratch=True))
    assert await listed(hub.store) == live
