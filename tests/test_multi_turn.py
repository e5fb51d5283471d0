"""Multi-turn with any agent: a third-party a2a-sdk agent that asks for input (input-required) is
driven over three turns through the hub, on each binding. The hub keeps the agent's own task and
context ids on its task (learned from the agent's events, kept in the log) and sends every
follow-up under them, so the agent sees one task; the thread holds every turn, in order."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from a2a.client import Client
from a2a.types import Message, Part, Role, SendMessageRequest, StreamResponse, Task, TaskState

from agenthub.hub import envelopes, task_events
from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Record
from agenthub.hub.recording.projection import project
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from agenthub.sdk.pb import threads_pb2 as thr
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually, stock_client
from tests.interview_agent import QUESTIONS, serve_interviewer, summary

TURNS = ("let us begin", "Ada", "London")
BINDINGS = ["GRPC", "JSONRPC", "HTTP+JSON"]
INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED


def follow_up(text: str, task: Task | None) -> SendMessageRequest:
    """A user's message; with `task`, the answer to that task's question (same task, same context)."""
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if task is not None:
        message.task_id, message.context_id = task.id, task.context_id
    return SendMessageRequest(message=message)


async def turn(a2a: Client, text: str, task: Task | None) -> tuple[str, TaskState, str]:
    """Send one turn with a stock client; (task id, state, the agent's words) where the turn ended."""
    events: list[StreamResponse] = [e async for e in a2a.send_message(follow_up(text, task))]
    last = events[-1]
    if last.HasField("task"):
        status, task_id = last.task.status, last.task.id
    else:
        status, task_id = last.status_update.status, last.status_update.task_id
    return task_id, status.state, status.message.parts[0].text


async def whole_thread(client: HubClient, context_id: str) -> thr.Thread:
    """The thread once the recorder holds the completed task (the front answers first)."""

    async def check() -> thr.Thread | None:
        thread = await client.get_thread(context_id)
        done = thread.tasks and thread.tasks[0].state == "TASK_STATE_COMPLETED"
        return thread if done and len(thread.messages) == 2 * len(TURNS) else None

    thread = await eventually(check)
    assert thread is not None, f"thread {context_id} was never recorded whole"
    return thread


EXPECTED_THREAD = [
    ("user", "interviewer", TURNS[0]),
    ("interviewer", "user", QUESTIONS[0]),
    ("user", "interviewer", TURNS[1]),
    ("interviewer", "user", QUESTIONS[1]),
    ("user", "interviewer", TURNS[2]),
    ("interviewer", "user", summary(list(TURNS))),
]


@pytest.mark.parametrize("binding", BINDINGS)
async def test_three_turns_on_each_binding_are_one_agent_task(
    hub: Hub, client: HubClient, binding: str
) -> None:
    """The client speaks `binding` to the hub, and the hub speaks it to the agent."""
    async with serve_interviewer(binding) as (base, interviewer):
        await client.register_url(base)
        blocking = await stock_client(hub, "interviewer", streaming=False, binding=binding)
        streaming = await stock_client(hub, "interviewer", streaming=True, binding=binding)
        try:
            task_id, state, words = await turn(blocking, TURNS[0], None)
            assert (state, words) == (INPUT_REQUIRED, QUESTIONS[0])
            task = await client.get_task("interviewer", task_id)
            second = await turn(streaming, TURNS[1], task)
            assert second == (task_id, INPUT_REQUIRED, QUESTIONS[1])
            third = await turn(blocking, TURNS[2], task)
            assert third == (task_id, TaskState.TASK_STATE_COMPLETED, summary(list(TURNS)))
        finally:
            await blocking.close()
            await streaming.close()

    agent_task, agent_context = interviewer.turns[0]
    assert interviewer.turns == [(agent_task, agent_context)] * 3  # the agent saw one task
    thread = await whole_thread(client, task.context_id)
    assert [t.task_id for t in thread.tasks] == [task_id]
    assert [(m.sender, m.recipient, m.text) for m in thread.messages] == EXPECTED_THREAD
    fetched = await client.get_task("interviewer", task_id)
    # every turn once; across turns, an answer the recorder read before its request may come first
    history = Counter(p.text for m in fetched.history for p in m.parts)
    assert history == Counter(text for *_, text in EXPECTED_THREAD)
    assert task_events.agent_ids(fetched) == (agent_task, agent_context)


async def test_the_agents_ids_survive_a_hub_restart(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The mapping lives in the log and the store, not in a hub's memory: a new hub instance on the
    same log and store continues the agent's task (HubClient, gRPC)."""
    settings = hub_settings(tmp_path / "hub")
    async with serve_interviewer("JSONRPC") as (base, interviewer):
        async with Hub(settings) as first, HubClient(first.address) as client:
            await client.register_url(base)
            task = await client.send("interviewer", TURNS[0])
            assert isinstance(task, Task) and task.status.state == INPUT_REQUIRED
        async with Hub(settings) as second, HubClient(second.address) as client:
            for text in TURNS[1:]:
                answer = await client.send("interviewer", text, context_id=task.context_id, task_id=task.id)
                assert isinstance(answer, Task) and answer.id == task.id
            assert answer.status.state == TaskState.TASK_STATE_COMPLETED
            assert [p.text for p in answer.status.message.parts] == [summary(list(TURNS))]
            thread = await whole_thread(client, task.context_id)
            assert [(m.sender, m.recipient, m.text) for m in thread.messages] == EXPECTED_THREAD
    assert len(set(interviewer.turns)) == 1 and len(interviewer.turns) == 3


def test_the_projection_keeps_the_agents_ids_from_the_log() -> None:
    """Rebuilding from the log gives the mapping back: it is in the agent's event envelopes."""
    event = task_events.status_event("hub-task", "hub-ctx", INPUT_REQUIRED, "your name?")
    envelope = envelopes.make(
        Kind.KIND_EVENT, event, task_id="hub-task", context_id="hub-ctx", sender="interviewer",
        recipient="user", agent_task_id="agent-task", agent_context_id="agent-ctx",
    )  # fmt: skip
    record = Record(topic="t", partition=0, offset=0, key=None, value=b"", timestamp_ms=0)
    projected = project(envelope, record, None).task
    assert projected is not None
    assert task_events.agent_ids(projected.task) == ("agent-task", "agent-ctx")
    hub_outcome = envelopes.make(Kind.KIND_EVENT, event, task_id="hub-task", context_id="hub-ctx")
    again = project(hub_outcome, record, projected).task  # the hub's own events name no agent ids
    assert again is not None and task_events.agent_ids(again.task) == ("agent-task", "agent-ctx")
