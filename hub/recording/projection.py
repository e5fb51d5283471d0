"""How one envelope changes the thread store: a pure function, so it is easy to test and replay.

The recorder reads an envelope and the task it touches, and gets back a `Projection` to apply.
Topics are read in parallel, so an agent's event may be projected before the request that
caused it; every rule here therefore works whichever of the two arrives first, and readers order
a thread by the envelopes' creation time (stamped where each hop happened), not by arrival.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from a2a.types import Artifact, Message, Role, SendMessageRequest, StreamResponse, Task, TaskState, TaskStatus
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub import envelopes, task_events
from agenthub.hub.log._base import Record
from agenthub.hub.recording import content
from agenthub.hub.recording.protojson import TIMESTAMP_SECONDS
from agenthub.hub.threads._base import ArtifactRow, MessageRow, Projection, StatusRow, TaskRow, state_name
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

# Enum values read once: every `TaskState.X` is a Python-level lookup in protobuf's enum wrapper,
# visible in a rebuild's profile at a few of them per record.
_REQUEST, _EVENT = Kind.KIND_REQUEST, Kind.KIND_EVENT
_SUBMITTED, _COMPLETED = TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_COMPLETED
_USER, _AGENT = Role.ROLE_USER, Role.ROLE_AGENT


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a batch is recorded (then as before).

    Recording a batch makes tens of thousands of objects that live until its transaction ends:
    collections in between found them all alive, promoted them, and so brought on full
    collections of the hub's whole heap. In a hub rebuilding 20,000 records that was about a
    quarter of its CPU. Their memory is still freed as soon as they are dropped (reference
    counting); only cycles wait for the next collection, after the batch. If something else
    disabled collection, it is left to it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def project(envelope: Envelope, record: Record, current: TaskRow | None, *, json: bool = True) -> Projection:
    """The changes recording `envelope` makes, given the current state of its task (`json=False`:
    the caller wants only the task, so rows skip their JSON, the costly part)."""
    projection = Projection(envelope_id=envelope.id, json=json)
    kind = envelope.kind
    if kind == _REQUEST:
        _project_request(envelope, record, current, projection)
    elif kind == _EVENT:
        _project_event(envelope, record, current, projection)
    return projection


def _project_request(envelope: Envelope, record: Record, current: TaskRow | None, out: Projection) -> None:
    request = envelopes.unpack(envelope, SendMessageRequest)
    message = Message()
    message.CopyFrom(request.message)
    message.task_id, message.context_id = envelope.task_id, envelope.context_id
    out.messages.append(_row(envelope, record, message, out))
    at = envelopes.seconds_of(envelope.created_at)
    task = current or _new_task(envelope, at)
    history, message_id = task.task.history, message.message_id
    if not any(m.message_id == message_id for m in history):
        if any(m.role == _USER for m in history):
            history.append(message)
        else:  # the agent's answer was recorded first: the request still opens the task
            history.insert(0, message)
    if current is None:
        task.task.status.CopyFrom(TaskStatus(state=_SUBMITTED, timestamp=envelope.created_at))
    if not any(s.state == "TASK_STATE_SUBMITTED" for s in task.history):
        out.statuses.append(StatusRow(envelope.task_id, "TASK_STATE_SUBMITTED", "", at))
    elif envelope.causation_id:  # an operator re-drove it: back in flight, linked to what it re-drives
        resubmitted = TaskStatus(state=_SUBMITTED, timestamp=envelope.created_at)
        _keep_newer(task.task.status, resubmitted)
        text = (
            f"re-driven to {envelope.recipient} as attempt {envelope.attempt} (from {envelope.causation_id})"
        )
        out.statuses.append(StatusRow(envelope.task_id, "TASK_STATE_SUBMITTED", text, at))
    task.created_at = min(task.created_at, at)
    task.updated_at = max(task.updated_at, at)
    out.task = task


def _project_event(envelope: Envelope, record: Record, current: TaskRow | None, out: Projection) -> None:
    event = envelopes.unpack(envelope, StreamResponse)
    at = envelopes.seconds_of(envelope.created_at)
    task = current or _new_task(envelope, at, agent=envelope.sender)
    task_events.keep_agent_ids(task.task, envelope.agent_task_id, envelope.agent_context_id)
    kind = event.WhichOneof("payload")
    if kind == "status_update":
        _apply_status(envelope, record, task, event.status_update.status, out)
    elif kind == "artifact_update":
        update = event.artifact_update
        _apply_artifact(envelope, record, task, update.artifact, out, append=update.append)
    elif kind == "task":
        for artifact in event.task.artifacts:
            _apply_artifact(envelope, record, task, artifact, out)
        for message in event.task.history:
            if message.role == _AGENT:
                _add_message(envelope, record, task, message, out)
        if event.task.status.state != task.task.status.state:
            _apply_status(envelope, record, task, event.task.status, out)
    elif kind == "message":
        status = TaskStatus(state=_COMPLETED, timestamp=envelope.created_at)
        status.message.CopyFrom(event.message)
        _apply_status(envelope, record, task, status, out)
    task.updated_at = max(task.updated_at, at)
    out.task = task


def _apply_status(
    envelope: Envelope, record: Record, task: TaskRow, status: TaskStatus, out: Projection
) -> None:
    text = ""
    if status.HasField("message") and status.message.parts:
        text = _add_message(envelope, record, task, status.message, out).text
    _keep_newer(task.task.status, status)
    at = envelopes.seconds_of(status.timestamp) if status.HasField("timestamp") else task.updated_at
    out.statuses.append(StatusRow(task.task_id, state_name(status.state), text, at))


def _keep_newer(current: TaskStatus, status: TaskStatus) -> None:
    """Make `status` the task's current one unless that is newer: the log's topics are read in
    parallel, so an older status (a re-driven request's, a late event's) may be recorded last."""
    if not (current.HasField("timestamp") and status.HasField("timestamp")) or (
        _nanos(status.timestamp) >= _nanos(current.timestamp)
    ):
        current.CopyFrom(status)


def _nanos(stamp: Timestamp) -> int:
    """`stamp.ToNanoseconds()` (ValueError for a timestamp out of range) without its checks'
    Python-level function calls in the usual case."""
    seconds, nanos = stamp.seconds, stamp.nanos
    if seconds in TIMESTAMP_SECONDS and 0 <= nanos < 1_000_000_000:
        return seconds * 1_000_000_000 + nanos
    return stamp.ToNanoseconds()  # raises as protobuf does


def _add_message(
    envelope: Envelope, record: Record, task: TaskRow, message: Message, out: Projection
) -> MessageRow:
    copy = Message()
    copy.CopyFrom(message)
    copy.task_id, copy.context_id = task.task_id, task.context_id
    if not copy.message_id:
        copy.message_id = envelopes.derived_id(envelope.id, f"message-{len(out.messages)}")
    history, message_id = task.task.history, copy.message_id
    if not any(m.message_id == message_id for m in history):
        history.append(copy)
    row = _row(envelope, record, copy, out)
    out.messages.append(row)
    return row


def _apply_artifact(
    envelope: Envelope,
    record: Record,
    task: TaskRow,
    artifact: Artifact,
    out: Projection,
    *,
    append: bool = False,
) -> None:
    """Add an artifact to the task, or replace (or extend, when `append`: A2A's streamed chunks) the
    one with the same id; the thread gets the artifact as it now stands."""
    joined = _joined(task.task, artifact, append)
    at = envelopes.seconds_of(envelope.created_at)
    out.artifacts.append(
        ArtifactRow(
            task_id=task.task_id,
            artifact_id=joined.artifact_id,
            context_id=task.context_id,
            parent_task_id=envelope.parent_task_id or task.parent_task_id,
            sender=envelope.sender,
            recipient=envelope.recipient,
            name=joined.name,
            text=content.artifact_text(joined),
            artifact_json=content.kept_json(joined) if out.json else "",
            created_at=at,
            updated_at=at,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            traceparent=envelope.traceparent,
            envelope_id=envelope.id,
        )
    )


def _joined(task: Task, artifact: Artifact, append: bool) -> Artifact:
    for existing in task.artifacts:
        if existing.artifact_id == artifact.artifact_id:
            if append:
                existing.parts.extend(artifact.parts)
            else:
                existing.CopyFrom(artifact)
            return existing
    task.artifacts.append(artifact)
    return task.artifacts[-1]


def _new_task(envelope: Envelope, at: float, agent: str | None = None) -> TaskRow:
    """A task's first row; its metadata names its agent, since A2A's Task has no field for it."""
    serving = agent or envelope.recipient
    task = Task(id=envelope.task_id, context_id=envelope.context_id)
    task.metadata[task_events.AGENT] = serving
    return TaskRow(task, serving, envelope.parent_task_id, at, at)


def _row(envelope: Envelope, record: Record, message: Message, out: Projection) -> MessageRow:
    return MessageRow(
        message_id=message.message_id,
        context_id=envelope.context_id,
        task_id=envelope.task_id,
        parent_task_id=envelope.parent_task_id,
        sender=envelope.sender,
        recipient=envelope.recipient,
        role="agent" if message.role == _AGENT else "user",
        text=content.message_text(message),
        message_json=content.kept_json(message) if out.json else "",
        created_at=envelopes.seconds_of(envelope.created_at),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        traceparent=envelope.traceparent,
        envelope_id=envelope.id,
    )
