"""A task as the front sees it while it waits: the request and the events in hand, projected in memory.

The front answers a send as soon as the agent's final event is in the log, without waiting for the
recorder: it projects the same envelopes with the same `project` function the recorder uses, so
the task it returns is the task the store will hold once the recorder has caught up.
"""

from __future__ import annotations

from a2a.types import Task, TaskState, TaskStatus

from agenthub.hub.log._base import Record
from agenthub.hub.recording.projection import project
from agenthub.hub.threads._base import TaskRow
from agenthub.sdk.pb.envelope_pb2 import Envelope


class TaskView:
    """One task, built from its envelopes as they are produced and received.

    Envelopes are projected only when the task is asked for: a send answered with a message never
    shows its task, so it pays nothing for it.
    """

    def __init__(self, current: TaskRow | None = None) -> None:
        self._row = current
        self._seen: set[str] = set()
        self._unprojected: list[tuple[Envelope, Record]] = []

    def apply(self, envelope: Envelope, record: Record) -> None:
        """Take one envelope of this task (again-seen envelopes are ignored, as in the store)."""
        if envelope.id not in self._seen:
            self._seen.add(envelope.id)
            self._unprojected.append((envelope, record))

    @property
    def row(self) -> TaskRow | None:
        """The task with every envelope taken so far projected, in the order they came."""
        for envelope, record in self._unprojected:
            projection = project(envelope, record, self._row, json=False)
            if projection.task is not None:
                projection.task.history.extend(projection.statuses)
                self._row = projection.task
        self._unprojected.clear()
        return self._row

    def shaped(self, configuration: object) -> Task:
        """The task trimmed as the request's configuration asks (history length, artifacts kept)."""
        row = self.row
        assert row is not None, "a view holds its request before it is shown"
        history = configuration.history_length if configuration.HasField("history_length") else None  # type: ignore[attr-defined]
        return shaped(row.task, history, True)


def shaped(task: Task, history_length: int | None, artifacts: bool) -> Task:
    """A copy of the task trimmed as a request asked (history length, artifacts)."""
    out = Task()
    out.CopyFrom(task)
    if history_length is not None:
        if history_length <= 0:
            del out.history[:]
        else:
            del out.history[: max(0, len(out.history) - history_length)]
    if not artifacts:
        del out.artifacts[:]
    if not out.HasField("status"):
        out.status.CopyFrom(TaskStatus(state=TaskState.TASK_STATE_SUBMITTED))
    return out
