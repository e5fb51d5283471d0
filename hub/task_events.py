"""Small facts about A2A task events that the front, dispatcher and projection agree on."""

from __future__ import annotations

import uuid

from a2a.types import (
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from agenthub.sdk._events import now

TERMINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
INTERRUPTED = frozenset({TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED})
AGENT = "agenthub_agent"  # task metadata: the agent the hub routes the task to
AGENT_TASK_ID = "agenthub_agent_task_id"  # task metadata: the agent's own id for the hub's task
AGENT_CONTEXT_ID = "agenthub_agent_context_id"  # task metadata: the agent's own context id for it


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


def ids_of(event: StreamResponse) -> tuple[str, str]:
    """The task and context ids an event names (the agent's own, before `retarget`); "" if none."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        return event.task.id, event.task.context_id
    if kind is None:
        return "", ""
    target = getattr(event, kind)
    return target.task_id, target.context_id


def keep_agent_ids(task: Task, agent_task_id: str, agent_context_id: str) -> None:
    """Note on the hub's task the ids its agent knows it by (those given; the last ones win)."""
    for key, value in ((AGENT_TASK_ID, agent_task_id), (AGENT_CONTEXT_ID, agent_context_id)):
        if value:
            task.metadata[key] = value


def agent_of(task: Task) -> str:
    """The agent serving a task the hub returned, "" for a task from elsewhere."""
    fields = task.metadata.fields
    return fields[AGENT].string_value if AGENT in fields else ""


def agent_ids(task: Task) -> tuple[str, str]:
    """The agent's own (task id, context id) for the hub's task, "" where not known."""
    fields = task.metadata.fields
    task_id = fields[AGENT_TASK_ID].string_value if AGENT_TASK_ID in fields else ""
    context_id = fields[AGENT_CONTEXT_ID].string_value if AGENT_CONTEXT_ID in fields else ""
    return task_id, context_id


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
