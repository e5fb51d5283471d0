"""The thread store interface: a projection of the log that can be rebuilt at any time.

A thread is an A2A context: every message (user, agent, agent-to-agent), every artifact (its
chunks joined), every task with its status history and its latest snapshot. A message id is
unique within its task (A2A ids are chosen by each sender, so two threads may both use "m1").
Writes come only from the recorder, as `Projection`s applied idempotently (keyed by envelope
id); reads serve the A2A front and the thread service.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from a2a.types import Task, TaskState

from agenthub.hub.log._base import Lifecycle

_STATE_NAMES = {value.number: value.name for value in TaskState.DESCRIPTOR.values}


def state_name(state: int) -> str:
    """`TaskState.Name(state)`, as the store keeps states (ValueError for a number no state has),
    without protobuf's enum wrapper: a Python-level lookup per call, several per recorded record."""
    return _STATE_NAMES.get(state) or TaskState.Name(state)


@dataclass
class MessageRow:
    """One recorded message."""

    message_id: str
    context_id: str
    task_id: str
    parent_task_id: str
    sender: str
    recipient: str
    role: str
    text: str
    message_json: str
    created_at: float
    topic: str = ""
    partition: int = 0
    offset: int = 0
    traceparent: str = ""
    envelope_id: str = ""  # the envelope that recorded it


@dataclass
class ArtifactRow:
    """One artifact of a task as it stands: every chunk recorded so far joined, as A2A appends them.

    `created_at` is when its first chunk was made, `updated_at` and the log position are its latest.
    """

    task_id: str
    artifact_id: str
    context_id: str
    parent_task_id: str
    sender: str
    recipient: str
    name: str
    text: str
    artifact_json: str
    created_at: float
    updated_at: float
    topic: str = ""
    partition: int = 0
    offset: int = 0
    traceparent: str = ""
    envelope_id: str = ""


@dataclass
class StatusRow:
    """One status change of a task."""

    task_id: str
    state: str
    text: str
    at: float


@dataclass
class TaskRow:
    """A task's latest snapshot and where it sits in the thread tree."""

    task: Task
    agent: str
    parent_task_id: str
    created_at: float
    updated_at: float
    history: list[StatusRow] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def context_id(self) -> str:
        return self.task.context_id


@dataclass
class Projection:
    """What recording one envelope changes; applied atomically, at most once per envelope id."""

    envelope_id: str
    messages: list[MessageRow] = field(default_factory=list)
    task: TaskRow | None = None
    statuses: list[StatusRow] = field(default_factory=list)
    artifacts: list[ArtifactRow] = field(default_factory=list)
    json: bool = True  # False when only the task is wanted: rows are left without their JSON


@dataclass
class ThreadSummary:
    """One line of a thread listing."""

    context_id: str
    started_at: float
    updated_at: float
    message_count: int
    agents: list[str]
    first_text: str


@dataclass(frozen=True)
class ThreadFilter:
    """Which threads a listing or an export wants; unset fields match everything."""

    agent: str | None = None  # threads in which this agent sent or received a message
    state: str | None = None  # threads with a task in this state (e.g. "TASK_STATE_FAILED")
    text: str | None = None  # a message or artifact of the thread contains it (any case)
    since: float | None = None  # last activity at or after (epoch seconds)
    until: float | None = None  # last activity before (epoch seconds)


@dataclass
class ThreadPage:
    threads: list[ThreadSummary]
    next_offset: int | None


@dataclass
class TaskPage:
    tasks: list[TaskRow]
    total: int
    next_offset: int | None


class ThreadStore(Lifecycle, ABC):
    """Where the recorder writes and readers read threads.

    `store_id` names the store itself (made once, kept in the store), so every hub instance
    writing to the same store can find the others' progress: it names the recorder's group.
    """

    store_id: str = ""

    @abstractmethod
    async def apply(self, projections: Sequence[Projection]) -> int:
        """Apply projections in order, in one transaction, each unless its envelope was applied
        already; how many were applied."""

    @abstractmethod
    async def is_applied(self, envelope_id: str) -> bool:
        """Whether the envelope was recorded (by any hub instance writing to this store)."""

    @abstractmethod
    async def applied_among(self, envelope_ids: Sequence[str]) -> set[str]:
        """Which of these envelopes were recorded already."""

    @abstractmethod
    async def get_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskRow]:
        """Several tasks' snapshots with their status histories (missing ones left out)."""

    @abstractmethod
    async def wipe(self) -> None:
        """Forget everything recorded (before a rebuild from the log); keeps the store id."""

    @abstractmethod
    def bulk_load(self) -> AbstractAsyncContextManager[None]:
        """Write a large amount at once (a rebuild from scratch) with the indexes that only serve
        reads dropped, and built again, sorted, when the block ends; reads meanwhile are slower."""

    @abstractmethod
    def rows(self) -> AsyncIterator[tuple[str, tuple[Any, ...]]]:
        """Every recorded row as (table, values), in a stable order: two stores compare row for row."""

    @abstractmethod
    async def get_task(self, task_id: str) -> TaskRow | None:
        """A task's snapshot with its status history."""

    @abstractmethod
    async def list_tasks(
        self,
        *,
        agent: str | None = None,
        context_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskPage:
        """Tasks, newest first, filtered."""

    @abstractmethod
    async def list_threads(self, where: ThreadFilter, *, limit: int = 50, offset: int = 0) -> ThreadPage:
        """Threads matching `where`, most recently updated first."""

    @abstractmethod
    async def thread_messages(self, context_id: str) -> list[MessageRow]:
        """Every message of a thread in recording order."""

    @abstractmethod
    async def thread_tasks(self, context_id: str) -> list[TaskRow]:
        """Every task of a thread in creation order."""

    @abstractmethod
    async def thread_artifacts(self, context_id: str) -> list[ArtifactRow]:
        """Every artifact of a thread, in the order their first chunks were made."""

    @abstractmethod
    async def messages_with_id(self, context_id: str, message_id: str) -> list[MessageRow]:
        """The messages of a thread that carry this id (one per task at most), oldest first."""
