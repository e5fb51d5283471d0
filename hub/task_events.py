"""Small facts about A2A task events that the front, dispatcher and projection agree on."""

from __future__ import annotations

import uuid

from a2a.types import (
    Message,
    Part,
    Role,
    StreamResponse,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from agenthub.hub.envelopes import now

TERMINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
INTERRUPTED = frozenset({TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED})


def state_of(event: StreamResponse) -> TaskState | None:
    """The task state an event reports, if it reports one."""
    kind = event.WhichOneof("payload")
    if kind == "status_update":
        return event.status_update.status.state
    if kind == "task":
        return event.task.status.state
    if kind == "message":
        return TaskState.TASK_STATE_COMPLETED
    return None


def ends_call(event: StreamResponse) -> bool:
    """Whether this event ends the agent's turn: a terminal or interrupted state, or a direct message."""
    state = state_of(event)
    return state in TERMINAL or state in INTERRUPTED


def status_event(task_id: str, context_id: str, state: TaskState, text: str = "") -> StreamResponse:
    """A status update, with an agent message carrying `text` when given."""
    status = TaskStatus(state=state, timestamp=now())
    if text:
        status.message.CopyFrom(
            Message(
                message_id=str(uuid.uuid4()),
                role=Role.ROLE_AGENT,
                task_id=task_id,
                context_id=context_id,
                parts=[Part(text=text)],
            )
        )
    return StreamResponse(
        status_update=TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=status)
    )


def retarget(event: StreamResponse, task_id: str, context_id: str) -> StreamResponse:
    """The event with the hub's task and context ids, whatever ids the agent used."""
    copy = StreamResponse()
    copy.CopyFrom(event)
    kind = copy.WhichOneof("payload")
    target = getattr(copy, kind) if kind else None
    if kind == "task":
        copy.task.id, copy.task.context_id = task_id, context_id
        for message in copy.task.history:
            message.task_id, message.context_id = task_id, context_id
    elif kind == "message":
        copy.message.task_id, copy.message.context_id = task_id, context_id
    elif target is not None:
        target.task_id, target.context_id = task_id, context_id
        if kind == "status_update" and target.status.HasField("message"):
            target.status.message.task_id, target.status.message.context_id = task_id, context_id
    return copy
