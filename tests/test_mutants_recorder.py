"""Redelivery through the recorder's own batching (scripts/mutate.py recorder): records replayed
after a crash, in a later batch or repeated inside one batch, leave the thread, the task and its
status rows exactly as recording each record once does."""

from __future__ import annotations

from pathlib import Path

from agenthub.hub.log._base import Record
from agenthub.hub.recording.recorder import record_batch
from agenthub.hub.threads.sqlite import SqliteThreadStore
from tests.test_projection import CONTEXT, conversation, snapshot


def records() -> list[Record]:
    """The request and its two events, as one partition's records."""
    return [
        Record("t", 0, offset, CONTEXT.encode(), envelope.SerializeToString(), 0)
        for offset, envelope in enumerate(conversation())
    ]


async def test_replayed_and_repeated_records_change_nothing(tmp_path: Path) -> None:
    request, working, completed = records()
    async with SqliteThreadStore(tmp_path / "once.db") as store:
        assert (await record_batch(store, [request, working, completed]))[0] == 3
        once = await snapshot(store)
    async with SqliteThreadStore(tmp_path / "replayed.db") as store:
        assert (await record_batch(store, [request, working]))[0] == 2
        # after a crash the last batch comes again, with what followed it
        assert (await record_batch(store, [request, working, completed])) == (1, [])
        assert await snapshot(store) == once
    async with SqliteThreadStore(tmp_path / "repeated.db") as store:
        assert (await record_batch(store, [request, working, working, completed, completed]))[0] == 3
        assert await snapshot(store) == once
    assert once[1] == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
