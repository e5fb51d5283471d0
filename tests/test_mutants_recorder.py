"""Redelivery through the recorder's own batching (scripts/mutate.py recorder): records replayed
after a crash, in a later batch or repeated inside one batch, leave the thread, the task and its
status rows exactly as recording each record once does; a record it cannot read is parked with
the reason and its source, and recording goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Record
from agenthub.hub.recording.recorder import record_batch
from agenthub.hub.server import Hub
from agenthub.hub.threads.sqlite import SqliteThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel
from tests.conftest import eventually
from tests.test_delivery import echo
from tests.test_delivery import records as delivered
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


async def test_a_record_the_recorder_cannot_read_is_parked_saying_why_and_where_from(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        topics = Topics(hub.settings.topic_prefix)
        garbage = await hub.log.produce(topics.inbox("echoer"), b"\xff\x00 not an envelope", key=b"ctx")

        source = f"{garbage.topic}/{garbage.partition}/{garbage.offset}".encode()

        async def parked() -> Record | None:
            """The parked copy of the garbage (its dead-lettered copy is parked too, from the dlq)."""
            kept = await delivered(hub.log, topics.parked)
            return next((r for r in kept if dict(r.headers)["agenthub-source"] == source), None)

        kept = await eventually(parked)
        assert kept is not None and (kept.value, kept.key) == (garbage.value, b"ctx")
        assert dict(kept.headers)["agenthub-error"].startswith(b"not an envelope")
        task = await client.send("echoer", "still here")  # the recorder goes on recording
        thread = await client.get_thread(task.context_id)
        texts = [m.text for m in thread.messages]
        assert (texts[0], texts[-1]) == ("still here", "echo: still here")
