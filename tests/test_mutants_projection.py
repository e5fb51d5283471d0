"""Projection rules that mutation testing found unproven (scripts/mutate.py projection): a follow-up
request of a task goes after what the task already holds, in any arrival order of the first turn;
dead letters and cancel requests change nothing in the thread store (the events they cause do)."""

from __future__ import annotations

from pathlib import Path

from a2a.types import CancelTaskRequest, Message, Part, Role, SendMessageRequest

from agenthub.hub import envelopes
from agenthub.hub.log._base import Record
from agenthub.hub.recording.projection import project
from agenthub.hub.threads.sqlite import SqliteThreadStore
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind
from tests.test_projection import CONTEXT, TASK, conversation, record_in, stamp


def follow_up() -> Envelope:
    message = Message(message_id="m-more", role=Role.ROLE_USER, parts=[Part(text="and 2 + 2?")])
    return envelopes.make(
        Kind.KIND_REQUEST, SendMessageRequest(message=message), context_id=CONTEXT, task_id=TASK,
        sender="user", recipient="calc", created_at=stamp(10),
    )  # fmt: skip


async def test_a_follow_up_goes_after_the_first_turn_whatever_order_that_arrived_in(tmp_path: Path) -> None:
    request, *events = conversation()
    for n, first_turn in enumerate([[request, *events], [*events, request]]):
        async with SqliteThreadStore(tmp_path / f"{n}.db") as store:
            await record_in(store, [*first_turn, follow_up()])
            task = await store.get_task(TASK)
            assert task is not None
            texts = [m.parts[0].text for m in task.task.history]
            assert texts == ["1 + 1", "calling add", "1 + 1 = 2", "and 2 + 2?"], n


def test_dead_letters_and_cancel_requests_change_nothing() -> None:
    request = conversation()[0]
    dead = Envelope()
    dead.CopyFrom(request)
    dead.kind = Kind.KIND_DEAD_LETTER
    cancel = envelopes.make(Kind.KIND_CANCEL, CancelTaskRequest(id=TASK), context_id=CONTEXT, task_id=TASK)
    for envelope in (dead, cancel):
        record = Record("t", 0, 7, CONTEXT.encode(), envelope.SerializeToString(), 0)
        projection = project(envelope, record, None)
        assert (projection.messages, projection.statuses, projection.artifacts, projection.task) == (
            [],
            [],
            [],
            None,
        ), Kind.Name(envelope.kind)
