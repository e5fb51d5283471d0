"""Recording is order-independent: a request and its events give the same thread whichever the
recorder reads first (the log's topics are read in parallel), and recording twice changes nothing;
streamed artifact chunks are joined as A2A says, and big binaries are kept by reference."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskArtifactUpdateEvent,
    TaskState,
)
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub import envelopes, task_events
from agenthub.hub.log._base import Record
from agenthub.hub.recording import content
from agenthub.hub.recording.projection import project
from agenthub.hub.threads.sqlite import SqliteThreadStore
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

CONTEXT, TASK = "ctx-1", "task-1"


def stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=1_800_000_000 + seconds)


def conversation() -> list[Envelope]:
    """A user request to `calc`, then the agent's working and completed events."""
    message = Message(message_id="m-user", role=Role.ROLE_USER, parts=[Part(text="1 + 1")])
    request = envelopes.make(
        Kind.KIND_REQUEST, SendMessageRequest(message=message), context_id=CONTEXT, task_id=TASK,
        sender="user", recipient="calc", created_at=stamp(0),
    )  # fmt: skip
    events = []
    for n, (state, text) in enumerate(
        [(TaskState.TASK_STATE_WORKING, "calling add"), (TaskState.TASK_STATE_COMPLETED, "1 + 1 = 2")],
        start=1,
    ):
        event = task_events.status_event(TASK, CONTEXT, state, text)
        event.status_update.status.timestamp.CopyFrom(stamp(n))
        events.append(envelopes.make(
            Kind.KIND_EVENT, event, context_id=CONTEXT, task_id=TASK, sender="calc", recipient="user",
            created_at=stamp(n),
        ))  # fmt: skip
    return [request, *events]


async def record_in(store: SqliteThreadStore, order: list[Envelope]) -> None:
    for offset, envelope in enumerate(order):
        record = Record("t", 0, offset, CONTEXT.encode(), envelope.SerializeToString(), 0)
        await store.apply([project(envelope, record, await store.get_task(envelope.task_id))])


async def snapshot(store: SqliteThreadStore) -> tuple[object, ...]:
    task = await store.get_task(TASK)
    assert task is not None
    messages = [(m.sender, m.recipient, m.text) for m in await store.thread_messages(CONTEXT)]
    return (
        messages,
        [s.state for s in task.history],
        [m.parts[0].text for m in task.task.history],
        TaskState.Name(task.task.status.state),
    )


async def test_any_arrival_order_gives_the_same_thread(tmp_path: Path) -> None:
    results = set()
    request, *events = conversation()
    # One request's events share a partition, so they arrive in order; the request may come anywhere.
    orders = [[*events[:i], request, *events[i:]] for i in range(len(events) + 1)]
    for n, order in enumerate(orders):
        async with SqliteThreadStore(tmp_path / f"{n}.db") as store:
            await record_in(store, order)
            await record_in(store, order)  # redelivery: nothing changes
            results.add(repr(await snapshot(store)))
    assert len(results) == 1, "\n".join(sorted(results))
    (only,) = results
    assert only == repr(
        (
            [("user", "calc", "1 + 1"), ("calc", "user", "calling add"), ("calc", "user", "1 + 1 = 2")],
            ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"],
            ["1 + 1", "calling add", "1 + 1 = 2"],
            "TASK_STATE_COMPLETED",
        )
    )


def redriven_conversation() -> list[Envelope]:
    """A request whose first delivery failed (dead-lettered), an operator's re-drive of it, and the
    re-driven call's working and completed events."""
    request, *_ = conversation()
    failed = task_events.status_event(TASK, CONTEXT, TaskState.TASK_STATE_FAILED, "agent failed 3 attempts")
    failed.status_update.status.timestamp.CopyFrom(stamp(1))
    again = Envelope()
    again.CopyFrom(request)
    again.id, again.causation_id, again.attempt = envelopes.derived_id(request.id, "redrive"), request.id, 4
    again.created_at.CopyFrom(stamp(2))
    events = [failed]
    for n, (state, text) in enumerate(
        [(TaskState.TASK_STATE_WORKING, "calling add"), (TaskState.TASK_STATE_COMPLETED, "1 + 1 = 2")],
        start=3,
    ):
        event = task_events.status_event(TASK, CONTEXT, state, text)
        event.status_update.status.timestamp.CopyFrom(stamp(n))
        events.append(event)
    made = [
        envelopes.make(
            Kind.KIND_EVENT, event, context_id=CONTEXT, task_id=TASK, sender="calc", recipient="user",
            created_at=event.status_update.status.timestamp,
        )
        for event in events
    ]  # fmt: skip
    return [request, made[0], again, *made[1:]]


async def test_a_redriven_task_ends_in_its_last_status_whenever_the_redrive_lands(tmp_path: Path) -> None:
    """The re-drive (inbox topic) may be recorded after the events of the call it caused (replies
    topic): the task still ends COMPLETED, with the re-drive in its history at its time."""
    request, failed, again, *after = redriven_conversation()
    orders = [[request, failed, *after[:i], again, *after[i:]] for i in range(len(after) + 1)]
    for n, order in enumerate(orders):
        async with SqliteThreadStore(tmp_path / f"{n}.db") as store:
            await record_in(store, order)
            task = await store.get_task(TASK)
            assert task is not None
            assert TaskState.Name(task.task.status.state) == "TASK_STATE_COMPLETED", n
            assert [s.state for s in task.history] == [
                "TASK_STATE_SUBMITTED", "TASK_STATE_FAILED", "TASK_STATE_SUBMITTED", "TASK_STATE_WORKING",
                "TASK_STATE_COMPLETED",
            ], n  # fmt: skip
            assert task.history[2].text.startswith("re-driven to calc as attempt 4"), n


def chunked_answer() -> list[Envelope]:
    """A user request, then an artifact streamed in three chunks (A2A `append`), then completion."""
    request, *_ = conversation()
    events = []
    for n, (text, append) in enumerate([("The answer", False), (" is ", True), ("2", True)], start=1):
        update = TaskArtifactUpdateEvent(
            task_id=TASK, context_id=CONTEXT, append=append, last_chunk=n == 3,
            artifact=Artifact(artifact_id="a-1", name="answer", parts=[Part(text=text)]),
        )  # fmt: skip
        events.append(StreamResponse(artifact_update=update))
    events.append(task_events.status_event(TASK, CONTEXT, TaskState.TASK_STATE_COMPLETED))
    made = [
        envelopes.make(
            Kind.KIND_EVENT, event, context_id=CONTEXT, task_id=TASK, sender="calc", recipient="user",
            created_at=stamp(n),
        )
        for n, event in enumerate(events, start=1)
    ]  # fmt: skip
    return [request, *made]


async def test_streamed_artifact_chunks_join_once_in_any_arrival_order(tmp_path: Path) -> None:
    results = set()
    request, *events = chunked_answer()
    orders = [[*events[:i], request, *events[i:]] for i in range(len(events) + 1)]
    for n, order in enumerate(orders):
        async with SqliteThreadStore(tmp_path / f"{n}.db") as store:
            await record_in(store, order)
            await record_in(store, order)  # redelivery: nothing changes
            task = await store.get_task(TASK)
            assert task is not None
            rows = [
                (a.artifact_id, a.name, a.text, a.created_at, a.sender)
                for a in await store.thread_artifacts(CONTEXT)
            ]
            results.add(repr((rows, [[p.text for p in a.parts] for a in task.task.artifacts])))
    assert len(results) == 1, "\n".join(sorted(results))
    first_chunk_at = stamp(1).ToDatetime().timestamp()
    assert results.pop() == repr(
        ([("a-1", "answer", "The answer is 2", first_chunk_at, "calc")], [["The answer", " is ", "2"]])
    )


async def test_big_binary_parts_are_marked_in_the_thread_and_whole_in_the_task(tmp_path: Path) -> None:
    raw = b"\x00" * (content.INLINE_RAW_BYTES + 1)
    request, *_ = conversation()
    file_part = Part(raw=raw, filename="a.bin", media_type="application/octet-stream")
    update = TaskArtifactUpdateEvent(
        task_id=TASK, context_id=CONTEXT, artifact=Artifact(artifact_id="f", parts=[file_part])
    )
    event = envelopes.make(
        Kind.KIND_EVENT, StreamResponse(artifact_update=update), context_id=CONTEXT, task_id=TASK,
        sender="calc", recipient="user", created_at=stamp(1),
    )  # fmt: skip
    async with SqliteThreadStore(tmp_path / "s.db") as store:
        await record_in(store, [request, event])
        (row,) = await store.thread_artifacts(CONTEXT)
        task = await store.get_task(TASK)
    assert task is not None and task.task.artifacts[0].parts[0].raw == raw
    assert row.text == f"[file a.bin, application/octet-stream: {len(raw)} bytes]"
    (part,) = json.loads(row.artifact_json)["parts"]
    assert "raw" not in part and part["metadata"][content.OMITTED]["bytes"] == len(raw)


def test_recorded_times_are_epoch_seconds_in_any_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub on a host set to New York records the same instants as one on UTC (a naive UTC
    datetime read as local time would move every message and task by the zone's offset)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        request, working, _ = conversation()
        record = Record("t", 0, 0, CONTEXT.encode(), request.SerializeToString(), 0)
        opened = project(request, record, None)
        assert opened.messages[0].created_at == 1_800_000_000.0
        assert opened.task is not None and opened.task.created_at == 1_800_000_000.0
        status = project(working, record, opened.task).statuses[0]
        assert status.at == 1_800_000_001.0
        fresh = envelopes.make(Kind.KIND_REQUEST, SendMessageRequest(message=Message(message_id="m")))
        row = project(fresh, record, None).messages[0]
        assert abs(row.created_at - time.time()) < 60
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
