"""The shortcuts of the recording path (issue 11) change no result.

A batch writes each task once, however many of its records touch it; summary deltas, status
times, state names, payload unpacking and message text are computed without protobuf's
Python-level helpers, and must say exactly what those helpers say, errors included.
"""

from __future__ import annotations

import gc
import random
from pathlib import Path

import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, StreamResponse, Task, TaskState
from google.protobuf.struct_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub import envelopes
from agenthub.hub.recording import content, projection
from agenthub.hub.threads import _summary, postgres, sqlite
from agenthub.hub.threads._base import Projection, TaskRow, ThreadStore, state_name
from agenthub.sdk.pb.envelope_pb2 import Kind


def open_store(threads_url: str | None, path: Path) -> ThreadStore:
    return (
        sqlite.SqliteThreadStore(path) if threads_url is None else postgres.PostgresThreadStore(threads_url)
    )


def task_row(state: int, created: float, updated: float, note: str) -> TaskRow:
    task = Task(id="t1", context_id="ctx")
    task.status.state = state  # type: ignore[assignment]
    task.metadata["note"] = note
    return TaskRow(task, "echo", "", created, updated)


async def test_a_task_touched_twice_in_a_batch_ends_as_its_last_row_with_its_first_time(
    threads_url: str | None, tmp_path: Path
) -> None:
    async with open_store(threads_url, tmp_path / "threads.db") as store:
        first = task_row(TaskState.TASK_STATE_SUBMITTED, 5.0, 5.0, "first")
        last = task_row(TaskState.TASK_STATE_COMPLETED, 3.0, 9.0, "last")
        assert await store.apply([Projection("e1", task=first), Projection("e2", task=last)]) == 2
        stored = await store.get_task("t1")
        assert stored is not None
        assert stored.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert stored.task.metadata["note"] == "last"
        assert (stored.created_at, stored.updated_at) == (3.0, 9.0)


async def test_records_sharing_a_task_row_write_it_once(tmp_path: Path) -> None:
    async with sqlite.SqliteThreadStore(tmp_path / "threads.db") as store:
        statements: list[str] = []
        await store.db.set_trace_callback(statements.append)
        shared = task_row(TaskState.TASK_STATE_WORKING, 1.0, 2.0, "shared")
        await store.apply([Projection(f"e{n}", task=shared) for n in range(5)])
        assert sum(s.startswith("INSERT INTO tasks") for s in statements) == 1
        stored = await store.get_task("t1")
        assert stored is not None and stored.task.metadata["note"] == "shared"


def test_summary_deltas_match_a_plain_recount() -> None:
    rng = random.Random(11)
    rows = [(f"ctx{rng.randrange(5)}", seq, float(rng.randrange(4)), rng.choice("ab"), rng.choice("xy"),
             f"text {seq}") for seq in range(200)]  # fmt: skip
    threads, names = _summary.deltas(rows)
    expected = []
    for context in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == context]
        first = min(mine, key=lambda r: (r[2], r[1]))
        expected.append((context, first[2], max(r[2] for r in mine), len(mine), first[1], first[5]))
    assert threads == expected
    assert names == sorted({(r[0], r[3], "sender") for r in rows} | {(r[0], r[4], "recipient") for r in rows})


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1_700_000_000, 999_999_999), (-62135596800, 0), (253402300799, 5), (-5, 7),
     (253402300800, 0), (-62135596801, 0), (1, -1), (1, 1_000_000_000)],
)  # fmt: skip
def test_status_times_compare_as_protobuf_says_out_of_range_included(seconds: int, nanos: int) -> None:
    stamp = Timestamp(seconds=seconds, nanos=nanos)
    try:
        wanted: int | str = stamp.ToNanoseconds()
    except ValueError as exc:
        wanted = str(exc)
    try:
        got: int | str = projection._nanos(stamp)
    except ValueError as exc:
        got = str(exc)
    assert got == wanted


def test_state_names_are_protobufs_and_an_unknown_state_is_still_an_error() -> None:
    for value in TaskState.DESCRIPTOR.values:
        assert state_name(value.number) == TaskState.Name(value.number)
    with pytest.raises(ValueError):
        state_name(999)


def test_a_payload_of_another_type_is_refused_as_before() -> None:
    request = SendMessageRequest(message=Message(message_id="m1", parts=[Part(text="hi")]))
    envelope = envelopes.make(Kind.KIND_REQUEST, request, task_id="t1", context_id="ctx")
    assert envelopes.unpack(envelope, SendMessageRequest) == request
    with pytest.raises(ValueError) as refused:
        envelopes.unpack(envelope, StreamResponse)
    assert (
        str(refused.value) == f"envelope {envelope.id} holds {envelope.payload.type_url}, not StreamResponse"
    )
    assert not envelope.payload.Unpack(StreamResponse())  # as Any.Unpack, the check it stands for, says


def test_message_text_is_the_same_whatever_the_parts() -> None:
    data = Part(data=Value(string_value="x"))
    cases = [
        [Part(text="one")],
        [Part(text="one"), Part(text="two")],
        [data],
        [Part(text="says"), data],
        [Part(raw=b"abc", filename="a.bin")],
        [],
    ]
    for parts in cases:
        message = Message(role=Role.ROLE_USER, parts=parts)
        kinds = [p.WhichOneof("content") for p in parts]
        has_text = "text" in kinds
        plain = "\n".join(
            content.describe(p) for p, k in zip(parts, kinds, strict=True) if k != "data" or not has_text
        )
        assert content.message_text(message) == plain


def test_collection_is_paused_for_a_batch_only_and_left_alone_when_someone_else_paused_it() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), projection.paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("a batch that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with projection.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
