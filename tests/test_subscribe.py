"""SubscribeToTask and CancelTask on a task that is still running, on every binding of the hub."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)

from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from tests.conftest import eventually, stock_client

BINDINGS = ["GRPC", "JSONRPC", "HTTP+JSON"]


@tool(return_direct=True, timeout=30)
async def ponder(text: str) -> str:
    """Think for a while, then answer."""
    await asyncio.sleep(3.0)  # long enough to be caught working on a busy 2-core machine
    return f"pondered: {text}"


def later(text: str) -> SendMessageRequest:
    request = SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    )
    request.configuration.return_immediately = True
    return request


@pytest.mark.parametrize("binding", BINDINGS)
async def test_subscribe_and_cancel_a_running_task(hub: Hub, client: HubClient, binding: str) -> None:
    async with Agent("sleepy", tools=[ponder], model=ScriptedModel(), hub=hub.address):
        a2a = await stock_client(hub, "sleepy", streaming=False, binding=binding)
        watcher = await stock_client(hub, "sleepy", streaming=True, binding=binding)
        try:
            (started,) = [e async for e in a2a.send_message(later("deep question"))]
            task_id = started.task.id

            assert await eventually(lambda: _working(a2a, task_id), timeout=20)
            events = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]
            assert events[0].HasField("task") and events[0].task.id == task_id
            final = events[-1].status_update.status
            assert final.state == TaskState.TASK_STATE_COMPLETED
            assert final.message.parts[0].text == "pondered: deep question"

            (second,) = [e async for e in a2a.send_message(later("never mind"))]
            assert await eventually(lambda: _working(a2a, second.task.id), timeout=20)
            canceled = await a2a.cancel_task(CancelTaskRequest(id=second.task.id))
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        finally:
            await a2a.close()
            await watcher.close()


async def _working(a2a, task_id: str) -> bool:  # type: ignore[no-untyped-def]
    task = await a2a.get_task(GetTaskRequest(id=task_id))
    return task.status.state == TaskState.TASK_STATE_WORKING
