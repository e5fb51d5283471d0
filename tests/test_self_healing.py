"""Self-healing parts in isolation: supervised loops restart and report readiness, the watchdog ends a
task nobody owns, readiness shows on gRPC health and /readyz, and a send while the log refuses
writes is answered UNAVAILABLE at once, with nothing accepted."""

from __future__ import annotations

import asyncio
import re
import uuid

import grpc
import httpx
import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, Task, TaskState, a2a_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.hub import envelopes
from agenthub.hub.loops import Backoff, Readiness, SupervisedLoop
from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually


async def test_a_failing_loop_is_restarted_and_reported_until_it_recovers() -> None:
    readiness = Readiness()
    calls = 0
    healthy = asyncio.Event()

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("store is down")
        healthy.set()
        await asyncio.Event().wait()  # runs until stopped

    loop = SupervisedLoop("recorder", body, readiness, Backoff(base=0.01, cap=0.02))
    seen: list[bool] = []

    async def listener(ready: bool) -> None:
        seen.append(ready)

    readiness.on_change(listener)
    await loop.start()
    try:
        await asyncio.wait_for(healthy.wait(), 5)
        assert calls == 3 and loop.restarts == 2
        assert readiness.problems() == {"recorder": "ConnectionError: store is down"}
        readiness.up("recorder")  # a body marks itself up once its dependency answers again
        assert readiness.ready
        await asyncio.sleep(0)
        assert seen == [False, True]
    finally:
        await loop.stop()


def request_to(agent: str, text: str) -> SendMessageRequest:
    return SendMessageRequest(
        tenant=agent,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
    )


@pytest.mark.usefixtures("reference_agents")
async def test_the_watchdog_ends_a_task_nobody_owns(hub: Hub, client: HubClient) -> None:
    """A request recorded but never delivered (it sits on a topic no dispatcher reads) stays
    SUBMITTED until the watchdog's deadline, then ends FAILED with the reason, once."""
    task_id, context_id = envelopes.new_id(), envelopes.new_id()
    request = request_to("calculator", "1 + 1")
    request.message.task_id, request.message.context_id = task_id, context_id
    orphan = envelopes.make(
        Kind.KIND_REQUEST,
        request,
        task_id=task_id,
        context_id=context_id,
        sender="user",
        recipient="calculator",
    )
    await hub.log.produce(hub.replies.topic, orphan.SerializeToString(), key=context_id.encode())

    async def submitted() -> bool:
        row = await hub.store.get_task(task_id)
        return row is not None and row.task.status.state == TaskState.TASK_STATE_SUBMITTED

    assert await eventually(submitted)
    hub.watchdog._deadline_s = 0.2  # the deadline is a setting; this task is overdue right away
    await asyncio.sleep(0.3)
    assert await hub.watchdog.sweep() == 1
    assert await hub.watchdog.sweep() in (0, 1)  # until recorded it may be seen again: same event id

    async def failed() -> bool:
        task = await client.get_task("calculator", task_id)
        return task.status.state == TaskState.TASK_STATE_FAILED

    assert await eventually(failed)
    task = await client.get_task("calculator", task_id)
    assert "watchdog" in task.status.message.parts[0].text
    statuses = [s.state for s in (await hub.store.get_task(task_id)).history]  # type: ignore[union-attr]
    assert statuses.count("TASK_STATE_FAILED") == 1


async def test_readiness_shows_on_grpc_health_and_readyz(hub: Hub) -> None:
    async def health() -> int:
        async with grpc.aio.insecure_channel(hub.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            return int(reply.status)

    assert await eventually(lambda: _is(health, health_pb2.HealthCheckResponse.SERVING))
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{hub.http_url}/readyz")).json() == {"ready": True, "down": {}}
        hub.readiness.down("thread store", "ConnectionRefusedError: connection refused")
        assert await eventually(lambda: _is(health, health_pb2.HealthCheckResponse.NOT_SERVING))
        reply = await http.get(f"{hub.http_url}/readyz")
        assert reply.status_code == 503
        assert reply.json()["down"] == {"thread store": "ConnectionRefusedError: connection refused"}
        hub.readiness.up("thread store")
        assert await eventually(lambda: _is(health, health_pb2.HealthCheckResponse.SERVING))
        assert (await http.get(f"{hub.http_url}/readyz")).status_code == 200


async def _is(probe, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await probe() == expected


@pytest.mark.usefixtures("reference_agents")
async def test_a_send_while_the_log_refuses_writes_is_unavailable_at_once(
    hub: Hub, client: HubClient
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    inbox = Topics(hub.settings.topic_prefix).inbox("calculator")
    before = await hub.log.end_offsets(inbox)
    produce = hub.log.produce

    async def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TimeoutError("broker not answering")

    hub.log.produce = down  # type: ignore[method-assign]  # the log, as a broker outage shows it
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(request_to("calculator", "2 + 2"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "log is unavailable" in (refused.value.details() or "")
        assert "retry" in (refused.value.details() or "")
        assert hub.readiness.is_down("log"), "readiness must say the log is down while sends are refused"
    finally:
        hub.log.produce = produce  # type: ignore[method-assign]

    async def ready_again() -> bool:  # the log answers again: the probe says so, with no traffic needed
        return hub.readiness.ready

    assert await eventually(ready_again, timeout=15)
    assert await hub.log.end_offsets(inbox) == before, "nothing may be accepted"
    answer = await client.send("calculator", "2 + 2")
    assert answer.status.message.parts[0].text == "2 + 2 = 4"


@tool(timeout=60)
async def dawdle(text: str) -> str:
    """Take far longer than the caller is willing to wait."""
    await asyncio.sleep(30)
    return text


async def test_the_callers_deadline_ends_the_agent_call(hub: Hub, client: HubClient) -> None:
    """A caller that gives up after 1 s does not leave the agent working for 30 s: the hub's call
    carries the caller's deadline, and the task ends FAILED saying so."""
    async with Agent("dawdler", tools=[dawdle], model=ScriptedModel(), hub=hub.address):
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        request = request_to("dawdler", "slowly")
        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await stub.SendMessage(request, timeout=1.0)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def ended() -> Task | None:
            listed = await client.list_tasks("dawdler")
            tasks = [t for t in listed.tasks if t.status.state == TaskState.TASK_STATE_FAILED]
            return tasks[0] if tasks else None

        task = await eventually(ended, timeout=15)
        assert task is not None, "the task must end within seconds of the caller's deadline, not after 30 s"
        assert "deadline" in task.status.message.parts[0].text.lower()  # missed in the call, or before it


def test_retry_policy_flags_are_checked_before_the_hub_starts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agenthub.hub.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--retry-window",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid retry_window_s: Input should be greater than 0"
    ]


@tool(timeout=60)
async def stall(text: str) -> str:
    """Never answer in time."""
    await asyncio.sleep(60)
    return text


@tool
async def answer(text: str) -> str:
    """Answer at once."""
    return f"answered: {text}"


async def test_a_stop_never_hangs_on_a_call_and_the_request_comes_back(tmp_path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    """Stopping a hub while an agent holds a request ends within the drain timeout; the request,
    left uncommitted, is delivered again by the next hub on the same log, and completes once."""
    settings = hub_settings(tmp_path / "hub", drain_timeout_s=0.5)
    async with (
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        Agent("worker", tools=[stall], model=ScriptedModel(), hub=hub.address),
    ):
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        request = request_to("worker", "the job")
        request.configuration.return_immediately = True
        task = (await stub.SendMessage(request)).task

        async def working() -> bool:
            return (await client.get_task("worker", task.id)).status.state == TaskState.TASK_STATE_WORKING

        assert await eventually(working, timeout=20)
        async with asyncio.timeout(30):  # would hang forever if the stop waited for the call
            await hub.stop()
    async with (
        Hub(hub_settings(tmp_path / "hub")) as again,
        HubClient(again.address) as client,
        Agent("worker", tools=[answer], model=ScriptedModel(), hub=again.address),
    ):

        async def completed() -> Task | None:
            t = await client.get_task("worker", task.id)
            return t if t.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await eventually(completed, timeout=60)
        assert done is not None and done.status.message.parts[0].text == "answered: the job"
        thread = await client.get_thread(task.context_id)
        assert [m.text for m in thread.messages].count("answered: the job") == 1


TASK_NAMED = re.compile(r"ask for task (\S+) \(thread (\S+)\) again")


@pytest.mark.parametrize("head", ["grpc", "jsonrpc"])
async def test_a_caller_waiting_when_the_hub_stops_hears_which_task_to_ask_for(  # type: ignore[no-untyped-def]
    tmp_path, hub_settings, head: str
) -> None:
    """A blocking send still waiting for its agent when the hub stops ends UNAVAILABLE, naming its
    task, rather than CANCELLED with gRPC's 'Cancelling all calls'; the next hub completes that
    task, once."""
    settings = hub_settings(tmp_path / "hub", drain_timeout_s=0.5)
    async with (
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        Agent("worker", tools=[stall], model=ScriptedModel(), hub=hub.address),
    ):
        waiting = asyncio.create_task(_blocking_send(hub, client, head, "the job"))
        await eventually(lambda: _has_working_task(client), timeout=20)
        async with asyncio.timeout(30):
            await hub.stop()
        code, message = await asyncio.wait_for(waiting, timeout=10)
    assert code == ("UNAVAILABLE" if head == "grpc" else -32051), message
    assert "the hub is stopping" in message, message
    named = TASK_NAMED.search(message)
    assert named is not None, message
    async with (
        Hub(hub_settings(tmp_path / "hub")) as again,
        HubClient(again.address) as client,
        Agent("worker", tools=[answer], model=ScriptedModel(), hub=again.address),
    ):

        async def completed() -> Task | None:
            t = await client.get_task("worker", named.group(1))
            return t if t.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await eventually(completed, timeout=60)
        assert done is not None and done.status.message.parts[0].text == "answered: the job"
        assert done.context_id == named.group(2)
        thread = await client.get_thread(done.context_id)
        assert [m.text for m in thread.messages].count("answered: the job") == 1


async def _blocking_send(hub: Hub, client: HubClient, head: str, text: str) -> tuple[object, str]:
    """Send `text` to the worker and wait for the answer: the error's code and message."""
    if head == "grpc":
        try:
            await a2a_pb2_grpc.A2AServiceStub(client.channel).SendMessage(request_to("worker", text))
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details() or ""
        raise AssertionError("the send was answered although its agent never answers")
    message = {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    async with httpx.AsyncClient(headers={"A2A-Version": "1.0"}, timeout=60) as http:
        error = (await http.post(f"{hub.http_url}/agents/worker/", json=body)).json()["error"]
    return error["code"], error["message"]


async def _has_working_task(client: HubClient) -> bool:
    tasks = (await client.list_tasks("worker")).tasks
    return any(t.status.state == TaskState.TASK_STATE_WORKING for t in tasks)
