"""End to end with the stock a2a-sdk client over gRPC: card over HTTP, delegation, streaming,
GetTask/ListTasks, and the thread holding every hop exactly once."""

from __future__ import annotations

import uuid

import pytest
from a2a.types import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)

from agenthub.hub import task_events
from tests.conftest import stock_client

pytestmark = pytest.mark.usefixtures("reference_agents")


def question(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    )


async def collect(client, request) -> list[StreamResponse]:  # type: ignore[no-untyped-def]
    return [event async for event in client.send_message(request)]


async def test_card_names_the_hub_and_tenant(hub):
    client = await stock_client(hub, "triage", streaming=False)
    card = await client.get_extended_agent_card(__import__("a2a.types").types.GetExtendedAgentCardRequest())
    interface = card.supported_interfaces[0]
    assert interface.url == hub.address
    assert interface.tenant == "triage"
    assert interface.protocol_binding == "GRPC"
    assert [i.protocol_binding for i in card.supported_interfaces] == ["GRPC", "JSONRPC", "HTTP+JSON"]
    await client.close()


async def test_blocking_send_delegates_and_completes(hub, client):
    a2a = await stock_client(hub, "triage", streaming=False)
    (response,) = await collect(a2a, question("What is 12 + 30?"))
    task = response.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.status.message.parts[0].text == "12 + 30 = 42"
    assert [a.parts[0].text for a in task.artifacts] == ["12 + 30 = 42"]

    fetched = await a2a.get_task(GetTaskRequest(id=task.id))
    assert fetched.id == task.id and fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert fetched.history[0].parts[0].text == "What is 12 + 30?"

    listed = await a2a.list_tasks(ListTasksRequest(context_id=task.context_id))
    assert [t.id for t in listed.tasks] == [task.id]  # tenant = triage: the calculator's task is not listed
    everyone = await client.list_tasks("", context_id=task.context_id)
    assert len(everyone.tasks) == 2
    # each task names its agent in its metadata (A2A's Task has no field for it), the answer too
    assert sorted(task_events.agent_of(t) for t in everyone.tasks) == ["calculator", "triage"]
    assert task_events.agent_of(task) == task_events.agent_of(fetched) == "triage"

    thread = await client.get_thread(task.context_id)
    hops = [(m.sender, m.recipient, m.text) for m in thread.messages]
    assert hops[0] == ("user", "triage", "What is 12 + 30?")
    assert ("triage", "calculator", "What is 12 + 30?") in hops
    assert ("calculator", "triage", "12 + 30 = 42") in hops
    assert hops[-1] == ("triage", "user", "12 + 30 = 42")
    ids = [m.message_id for m in thread.messages]
    assert len(ids) == len(set(ids)), "a message was recorded twice"
    child = next(t for t in thread.tasks if t.agent == "calculator")
    assert child.parent_task_id == task.id
    assert next(s.state for s in child.history) == "TASK_STATE_SUBMITTED"
    assert child.history[-1].state == "TASK_STATE_COMPLETED"
    await a2a.close()


async def test_streaming_send_reports_progress(hub, client):
    a2a = await stock_client(hub, "triage", streaming=True)
    events = await collect(a2a, question("What is 6 * 7?"))
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert "status_update" in kinds and "artifact_update" in kinds
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert TaskState.TASK_STATE_WORKING in states
    assert states[-1] == TaskState.TASK_STATE_COMPLETED
    final = events[-1].status_update.status.message.parts[0].text
    assert final == "6 * 7 = 42"
    task_id = events[0].task.id
    fetched = await a2a.get_task(GetTaskRequest(id=task_id))
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    thread = await client.get_thread(fetched.context_id)
    texts = [m.text for m in thread.messages]
    assert texts.count("6 * 7 = 42") == 2  # once from calculator to triage, once from triage to the user
    await a2a.close()


async def test_non_blocking_send_returns_then_completes(hub, client):
    a2a = await stock_client(hub, "calculator", streaming=False)
    request = question("What is 2 + 2?")
    request.configuration.return_immediately = True
    (response,) = await collect(a2a, request)
    assert response.task.status.state in (
        TaskState.TASK_STATE_SUBMITTED,
        TaskState.TASK_STATE_WORKING,
        TaskState.TASK_STATE_COMPLETED,
    )
    from tests.conftest import eventually

    async def completed():
        task = await a2a.get_task(GetTaskRequest(id=response.task.id))
        return task.status.state == TaskState.TASK_STATE_COMPLETED and task

    task = await eventually(completed)
    assert task and task.status.message.parts[0].text == "2 + 2 = 4"
    await a2a.close()


async def test_follow_up_in_same_context(hub, client):
    first = await client.send("calculator", "1 + 1")
    second = await client.send("calculator", "2 + 3", context_id=first.context_id)
    assert second.context_id == first.context_id and second.id != first.id
    thread = await client.get_thread(first.context_id)
    assert [m.text for m in thread.messages if m.sender == "user"] == ["1 + 1", "2 + 3"]


async def test_a_sends_answer_is_what_get_task_returns_right_after(hub, client):
    """The answer comes from the log, before the recorder writes the store; a read right after the
    send still returns that very task (read-your-writes), field for field, on every binding shape."""
    a2a = await stock_client(hub, "calculator", streaming=False)
    for _ in range(3):
        (response,) = await collect(a2a, question("What is 2 + 3?"))
        answered = response.task
        assert answered.status.state == TaskState.TASK_STATE_COMPLETED
        fetched = await a2a.get_task(GetTaskRequest(id=answered.id))
        assert fetched == answered
        listed = await a2a.list_tasks(ListTasksRequest(context_id=answered.context_id))
        assert [t.id for t in listed.tasks] == [answered.id]
        assert listed.tasks[0].status == answered.status
    streamed = await stock_client(hub, "calculator", streaming=True)
    events = await collect(streamed, question("What is 4 + 5?"))
    last = events[-1].status_update if events[-1].HasField("status_update") else None
    assert last is not None and last.status.state == TaskState.TASK_STATE_COMPLETED
    fetched = await streamed.get_task(GetTaskRequest(id=last.task_id))
    assert fetched.status == last.status
    await a2a.close()
    await streamed.close()
