"""Front-door checks that mutation testing found unproven (scripts/mutate.py front): a follow-up
naming a task with any context other than the task's own is refused, whichever way the two ids
compare, while one naming no context or the task's own continues the task; an invalid id is
quoted in the error by its first 40 characters."""

from __future__ import annotations

import grpc
import pytest
from a2a.types import TaskState, a2a_pb2_grpc

from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.conftest import eventually
from tests.test_failures import send_request
from tests.test_promises_routing import Gate, gated_agent, state_becomes, submit, until


@pytest.mark.parametrize("other", ["0" * 36, "z" * 36], ids=["sorts-before", "sorts-after"])
async def test_a_follow_up_naming_another_context_is_refused_and_changes_nothing(
    hub: Hub, client: HubClient, other: str
) -> None:
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        task = await submit(client, "gated", "long")
        assert await until(lambda: gate.started == ["long"])
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        wrong = send_request("gated", "more", context_id=other, task_id=task.id)
        wrong.configuration.return_immediately = True  # accepted by mistake, it must not hang the test
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(wrong)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == f"task {task.id} belongs to context {task.context_id}"
        gate.open()
        done = await state_becomes(client, "gated", task.id, TaskState.TASK_STATE_COMPLETED)
        assert done.context_id == task.context_id
        assert gate.started == ["long"]  # the refused follow-up never reached the agent


@pytest.mark.usefixtures("reference_agents")
async def test_an_invalid_id_is_quoted_by_its_first_40_characters(client: HubClient) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    bad = "c" * 60 + " x"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SendMessage(send_request("calculator", context_id=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"invalid context_id {'c' * 40!r}: use 1-128 URL-safe characters"


@pytest.mark.parametrize("own_context", [False, True], ids=["task-only", "task-and-its-context"])
async def test_a_follow_up_naming_its_task_continues_it_in_the_tasks_context(
    hub: Hub, client: HubClient, own_context: bool
) -> None:
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        task = await submit(client, "gated", "long")
        assert await until(lambda: gate.started == ["long"])
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        context = task.context_id if own_context else ""
        follow_up = send_request("gated", "more", context_id=context, task_id=task.id)
        follow_up.configuration.return_immediately = True  # the turn ends only once the gate opens
        accepted = await stub.SendMessage(follow_up)
        assert (accepted.task.id, accepted.task.context_id) == (task.id, task.context_id)
        gate.open()
        assert await until(lambda: gate.started == ["long", "more"])

        async def more_answered() -> bool:
            # Until the follow-up's first status is recorded, the task still shows the first turn's end.
            parts = (await client.get_task("gated", task.id)).status.message.parts
            return bool(parts) and parts[0].text == "held: more"

        assert await eventually(more_answered, timeout=30), "the follow-up never became the task's status"
        done = await client.get_task("gated", task.id)
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        assert done.context_id == task.context_id
