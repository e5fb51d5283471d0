"""Batched SQL comes in a few shapes, so prepared statements are reused instead of piling up.

The recorder writes batches of any size. A multi-row INSERT (or an `IN (...)` list) shaped by the
exact row count made a new statement for nearly every batch: SQLite prepared each anew and its
statement cache held up to 128 of them per connection, about 30 MB of a hub's memory. Batches are
now cut into power-of-two chunks and `IN` lists padded to a power of two.
"""

from __future__ import annotations

from pathlib import Path

from agenthub.hub.threads._base import MessageRow, Projection, ThreadFilter
from agenthub.hub.threads._sql import _chunks, _padded
from agenthub.hub.threads.sqlite import SqliteThreadStore


def test_chunks_are_powers_of_two_in_order_and_padding_keeps_the_values() -> None:
    for count in range(0, 1200):
        items = list(range(count))
        chunks = list(_chunks(items, 512))
        assert [i for chunk in chunks for i in chunk] == items
        assert all(len(c) <= 512 and len(c) & (len(c) - 1) == 0 for c in chunks)
    for count in range(1, 100):
        padded = _padded(list(range(count)))
        assert set(padded) == set(range(count)) and padded[:count] == list(range(count))
        assert len(padded) & (len(padded) - 1) == 0 and len(padded) < 2 * count


def message(n: int) -> MessageRow:
    return MessageRow(f"m{n}", f"ctx{n}", f"t{n}", "", "user", "echo", "user", f"text {n}", "{}", float(n))


async def test_a_hundred_batch_sizes_make_a_handful_of_insert_statements(tmp_path: Path) -> None:
    async with SqliteThreadStore(tmp_path / "threads.db") as store:
        statements: set[str] = set()
        await store.db.set_trace_callback(statements.add)
        written = 0
        for size in range(1, 101):
            batch = [Projection(f"e{written + i}", messages=[message(written + i)]) for i in range(size)]
            await store.apply(batch)
            written += size
        inserts = {
            s.split(" VALUES ")[1].split(" ON CONFLICT ")[0].count("(")
            for s in statements
            if s.startswith("INSERT INTO messages")
        }
        assert inserts == {1, 2, 4, 8, 16, 32, 64}, "one shape per power of two, not one per batch size"
        page = await store.list_threads(ThreadFilter(), limit=written)
        assert len(page.threads) == written
