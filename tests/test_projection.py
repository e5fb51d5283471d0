"""Recording is order-independent: a request and its events give the same thread whichever the
recorder reads first (the log's topics are read in parallel), and recording twice changes nothing."""

from __future__ import annotations

from pathlib import Path

from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub import envelopes, task_events
from agenthub.hub.log._base import Record
from agenthub.hub.projection import project
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
