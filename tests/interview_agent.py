"""A plain a2a-sdk agent (no AgentHub code) that holds one conversation over several turns: it asks
for input twice (input-required) and completes on the third turn with everything it was told.

It notes the (task id, context id) of every turn it runs, so a test can see the agent's own side:
a follow-up that arrives under ids it does not know is refused by a2a-sdk (task not found), and one
under its own ids continues its task.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part

from tests.plain_agent import serve_plain_agent

QUESTIONS = ("What is your name?", "Where do you live?")


def summary(answers: list[str]) -> str:
    """The agent's final answer once it was told `answers` (one a turn)."""
    return "noted: " + " | ".join(answers)


class Interviewer(AgentExecutor):
    """Asks each question of QUESTIONS in turn, then completes with a summary of the answers."""

    def __init__(self) -> None:
        self.turns: list[tuple[str, str]] = []  # (task id, context id) of every turn, as the agent saw it
        self._answers: dict[str, list[str]] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        self.turns.append((task.id, task.context_id))
        answers = self._answers.setdefault(task.id, [])
        answers.append(context.get_user_input())
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if len(answers) <= len(QUESTIONS):
            question = updater.new_agent_message([Part(text=QUESTIONS[len(answers) - 1])])
            await updater.requires_input(question)
        else:
            await updater.complete(updater.new_agent_message([Part(text=summary(answers))]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()


@contextlib.asynccontextmanager
async def serve_interviewer(binding: str) -> AsyncIterator[tuple[str, Interviewer]]:
    """Serve the agent as "interviewer" on one A2A binding (its card on HTTP either way); yields its
    base URL and the executor, whose `turns` the test reads."""
    interviewer = Interviewer()
    async with serve_plain_agent((binding,), interviewer, name="interviewer") as base:
        yield base, interviewer
