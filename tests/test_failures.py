"""Failures: an agent killed mid-task, bad input on the A2A front, and a hub restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from a2a.types import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
    a2a_pb2_grpc,
)

from agenthub.hub import envelopes
from agenthub.hub.log._base import TopicPartition
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parent.parent


async def start_slow_agent(hub: Hub, port: int, seconds: float) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.slow_agent",
        "--hub",
        hub.address,
        "--port",
        str(port),
        cwd=ROOT,
        env={**os.environ, "SLOW_AGENT_SECONDS": str(seconds)},
    )
    assert await eventually(lambda: _registered(hub, port), timeout=30), "slow agent did not register"
    return process


async def _registered(hub: Hub, port: int) -> bool:
    agent = hub.registry.find("slow")
    return agent is not None and agent.endpoint.endswith(f":{port}")


async def working(client: HubClient, task_id: str) -> bool:
    task = await client.get_task("slow", task_id)
    return task.status.state == TaskState.TASK_STATE_WORKING


async def all_records(hub: Hub, topic: str) -> list:
    out = []
    for partition in await hub.log.end_offsets(topic):
        out += await hub.log.read(TopicPartition(topic, partition), 0, 1000)
    return out


async def test_agent_killed_mid_task_fails_with_reason_and_keeps_the_request(tmp_path, hub_settings):
    async with Hub(hub_settings(tmp_path, max_attempts=2)) as hub, HubClient(hub.address) as client:
        port = free_port()
        agent = await start_slow_agent(hub, port, seconds=60)
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        request = SendMessageRequest(
            tenant="slow",
            message=Message(
                message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="hold this")]
            ),
        )
        request.configuration.return_immediately = True
        task = (await stub.SendMessage(request)).task
        assert await eventually(lambda: working(client, task.id), timeout=20)

        agent.send_signal(signal.SIGKILL)
        await agent.wait()

        async def failed():
            t = await client.get_task("slow", task.id)
            return t.status.state == TaskState.TASK_STATE_FAILED and t

        final = await eventually(failed, timeout=30)
        assert final, "task did not fail after the agent died"
        reason = final.status.message.parts[0].text
        assert "slow" in reason and "failed 2 attempts" in reason and ".dlq.slow" in reason

        topics = Topics(hub.settings.topic_prefix)
        inbox = [envelopes.decode(r) for r in await all_records(hub, topics.inbox("slow"))]
        assert [e.task_id for e in inbox] == [task.id], "the request left the log"
        dead = [envelopes.decode(r) for r in await all_records(hub, topics.dlq("slow"))]
        assert [(e.task_id, e.kind) for e in dead] == [(task.id, Kind.KIND_DEAD_LETTER)]
        assert "UNAVAILABLE" in dead[0].error


async def test_agent_restarted_within_retry_window_completes(tmp_path, hub_settings):
    settings = hub_settings(tmp_path, max_attempts=6, retry_backoff_s=0.3)
    async with Hub(settings) as hub, HubClient(hub.address) as client:
        port = free_port()
        agent = await start_slow_agent(hub, port, seconds=60)
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        request = SendMessageRequest(
            tenant="slow",
            message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="again")]),
        )
        request.configuration.return_immediately = True
        task = (await stub.SendMessage(request)).task
        assert await eventually(lambda: working(client, task.id), timeout=20)
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        replacement = await start_slow_agent(hub, port, seconds=0)
        try:

            async def completed():
                t = await client.get_task("slow", task.id)
                return t.status.state == TaskState.TASK_STATE_COMPLETED and t

            final = await eventually(completed, timeout=30)
            assert final and final.status.message.parts[0].text == "done: again"
            thread = await client.get_thread(task.context_id)
            assert [m.text for m in thread.messages].count("done: again") == 1
        finally:
            replacement.terminate()
            await replacement.wait()


async def test_hub_restart_keeps_registry_tasks_and_threads(tmp_path, hub_settings):
    from agenthub.agents import calculator
    from tests.scripted import calculator_model

    settings = hub_settings(tmp_path / "data", port=free_port(), http_port=free_port())
    async with (
        Hub(settings) as hub,
        calculator.build(hub=hub.address, model=calculator_model()),
        HubClient(hub.address) as client,
    ):
        task = await client.send("calculator", "3 * 5")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
    async with Hub(settings) as hub, HubClient(hub.address) as client:
        assert [a.name for a in await client.list_agents()] == ["calculator"]
        again = await client.get_task("calculator", task.id)
        assert again.status.state == TaskState.TASK_STATE_COMPLETED
        assert again.status.message.parts[0].text == "3 * 5 = 15"
        thread = await client.get_thread(task.context_id)
        assert next(m.text for m in thread.messages) == "3 * 5"
        assert [t.context_id for t in (await client.list_threads()).threads] == [task.context_id]
        async with calculator.build(hub=hub.address, model=calculator_model()):
            follow = await client.send("calculator", "1 + 2", context_id=task.context_id)
        assert follow.status.message.parts[0].text == "1 + 2 = 3"


def send_request(
    tenant: str, text: str | None = "hi", *, context_id: str = "", task_id: str = ""
) -> SendMessageRequest:
    message = Message(
        message_id=str(uuid.uuid4()), role=Role.ROLE_USER, context_id=context_id, task_id=task_id
    )
    if text is not None:
        message.parts.append(Part(text=text))
    return SendMessageRequest(tenant=tenant, message=message)


@pytest.mark.usefixtures("reference_agents")
@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (send_request("nobody"), grpc.StatusCode.NOT_FOUND, "no agent named 'nobody'"),
        (send_request(""), grpc.StatusCode.NOT_FOUND, "tenant"),
        (send_request("calculator", None), grpc.StatusCode.INVALID_ARGUMENT, "no parts"),
        (send_request("calculator", "x" * 2_000_000), grpc.StatusCode.INVALID_ARGUMENT, "at most"),
        (
            send_request("calculator", context_id="bad id with spaces"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid context_id",
        ),
        (send_request("calculator", task_id="no-such-task"), grpc.StatusCode.NOT_FOUND, "not found"),
        (
            SendMessageRequest(
                tenant="calculator", message=Message(role=Role.ROLE_USER, parts=[Part(text="x")])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "message_id",
        ),
    ],
    ids=[
        "unknown-tenant",
        "no-tenant",
        "empty-message",
        "oversized",
        "invalid-context-id",
        "unknown-task",
        "missing-message-id",
    ],
)
async def test_bad_send_gets_the_right_status(hub, client, request_, code, words):
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(request_)
    assert caught.value.code() == code
    assert words in caught.value.details()
    stream = stub.SendStreamingMessage(request_)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in stream:
            pass
    assert streamed.value.code() == code


@pytest.mark.usefixtures("reference_agents")
async def test_bad_reads_get_the_right_status(hub, client):
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTask(GetTaskRequest(tenant="calculator", id=str(uuid.uuid4())))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTask(GetTaskRequest(tenant="calculator", id="has spaces"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListTasks(ListTasksRequest(tenant="calculator", page_token="abc"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the hub keeps serving after bad input
    task = await client.send("calculator", "2 * 21")
    assert task.status.message.parts[0].text == "2 * 21 = 42"


@pytest.mark.usefixtures("reference_agents")
async def test_cancel_a_finished_task_is_refused(hub, client):
    from a2a.types import CancelTaskRequest

    task = await client.send("calculator", "1 + 1")
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelTask(CancelTaskRequest(tenant="calculator", id=task.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
