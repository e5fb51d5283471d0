"""The watchdog: no task stays SUBMITTED or WORKING forever.

Every `interval_s` it looks for tasks still open whose last update is older than `deadline_s`
and that no dispatcher of this instance is working on, and ends each as FAILED with the reason,
through the log like any other event (its id is derived from the task, so several instances
sharing a store end a task once). The deadline is longer than any live call may take (agent call
timeout plus the retry window), so a task it ends has no live owner. Should the agent still
answer later, its newer status wins, as for any status recorded late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from a2a.types import TaskState

from agenthub.hub import envelopes, task_events
from agenthub.hub.log._base import Lifecycle, Log
from agenthub.hub.loops import Readiness, SupervisedLoop
from agenthub.hub.threads._base import TaskRow, ThreadStore
from agenthub.sdk.pb.envelope_pb2 import Kind

log = structlog.get_logger(__name__)
OPEN_STATES = ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
PAGE = 500
WATCHDOG_NAMESPACE = "0f0c5a8e-4d1e-4f7a-9a51-776174636800"  # fixed: one watchdog event id per task


class Watchdog(Lifecycle):
    """Ends tasks that outlived their deadline with no live owner.

    Args:
        log: the log backend.
        store: the thread store (where open tasks are found).
        reply_topic: where the watchdog's FAILED events go (recorded like every reply).
        holds: whether this instance's dispatcher is working on a task right now.
        deadline_s: how long a task may go without an update (0 disables the watchdog).
        interval_s: seconds between two rounds.
        readiness: where a failing round is reported.
    """

    def __init__(
        self,
        log: Log,
        store: ThreadStore,
        reply_topic: str,
        holds: Callable[[str], bool],
        *,
        deadline_s: float,
        interval_s: float = 30.0,
        readiness: Readiness | None = None,
    ) -> None:
        self._log = log
        self._store = store
        self._reply_topic = reply_topic
        self._holds = holds
        self._deadline_s = deadline_s
        self._interval_s = interval_s
        self._loop = SupervisedLoop("watchdog", self._run, readiness)

    async def start(self) -> None:
        if self._deadline_s > 0:
            await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.sweep()

    async def sweep(self) -> int:
        """One round: end every overdue task; how many were ended."""
        cutoff = time.time() - self._deadline_s
        ended = 0
        for state in OPEN_STATES:
            for row in await self._overdue(state, cutoff):
                if not self._holds(row.task_id):
                    await self._end(row)
                    ended += 1
        return ended

    async def _overdue(self, state: str, cutoff: float) -> list[TaskRow]:
        """Open tasks in `state` last updated before `cutoff` (the listing is newest first)."""
        out: list[TaskRow] = []
        offset: int | None = 0
        while offset is not None:
            page = await self._store.list_tasks(state=state, limit=PAGE, offset=offset)
            out += [row for row in page.tasks if row.updated_at < cutoff]
            offset = page.next_offset
        return out

    async def _end(self, row: TaskRow) -> None:
        idle = time.time() - row.updated_at
        reason = (
            f"no progress for {idle:.0f}s and no dispatcher working on it: ended by the hub's watchdog"
            f" (deadline {self._deadline_s:.0f}s); send the message again to retry"
        )
        event = task_events.status_event(row.task_id, row.context_id, TaskState.TASK_STATE_FAILED, reason)
        envelope = envelopes.make(
            Kind.KIND_EVENT,
            event,
            id=envelopes.derived_id(WATCHDOG_NAMESPACE, row.task_id),
            task_id=row.task_id,
            context_id=row.context_id,
            parent_task_id=row.parent_task_id,
            sender=row.agent,
            recipient="user",
        )
        await self._log.produce(
            self._reply_topic,
            envelope.SerializeToString(),
            key=row.context_id.encode(),
            headers=envelopes.headers(envelope),
        )
        log.warning("task ended by the watchdog", task=row.task_id, agent=row.agent, idle_s=round(idle))
