"""Push notifications done by the hub for every agent: config RPCs, ordered webhook delivery with the
configured token and auth header, and a webhook that is down (retried and recorded, routing unharmed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import uvicorn
from a2a.types import (
    AuthenticationInfo,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
    a2a_pb2_grpc,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agenthub.hub.log._base import TopicPartition
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("reference_agents")


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[tuple[str, list[tuple[dict, dict]]]]:
    """A webhook server on a free port; yields its URL and the (headers, body) it received."""
    received: list[tuple[dict, dict]] = []

    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), json.loads(await request.body())))
        return Response(status_code=204)

    port = free_port()
    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        server.should_exit = True
        await task


def send_with_push(agent: str, text: str, url: str) -> SendMessageRequest:
    request = SendMessageRequest(
        tenant=agent,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
    )
    request.configuration.task_push_notification_config.CopyFrom(
        TaskPushNotificationConfig(
            url=url, token="s3cret", authentication=AuthenticationInfo(scheme="Bearer", credentials="abc")
        )
    )
    return request


def state_of(body: dict) -> str:
    if "statusUpdate" in body:
        return str(body["statusUpdate"]["status"]["state"])
    if "task" in body:
        return str(body["task"]["status"]["state"])
    return "artifact" if "artifactUpdate" in body else "other"


async def test_updates_reach_the_webhook_in_order(hub: Hub, client: HubClient) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    async with webhook() as (url, received):
        task = (await stub.SendMessage(send_with_push("calculator", "6 * 7", url))).task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED

        async def finished() -> bool:
            return any(state_of(body) == "TASK_STATE_COMPLETED" for _, body in received)

        assert await eventually(finished, timeout=20), received
        states = [state_of(body) for _, body in received]
        assert states[-1] == "TASK_STATE_COMPLETED" and "TASK_STATE_WORKING" in states
        assert states.index("TASK_STATE_WORKING") < states.index("artifact") < len(states) - 1
        headers = received[0][0]
        assert headers["x-a2a-notification-token"] == "s3cret"
        assert headers["authorization"] == "Bearer abc"
        bodies = [body for _, body in received]
        assert all(task.id in json.dumps(body) for body in bodies)

        listing = ListTaskPushNotificationConfigsRequest(tenant="calculator", task_id=task.id)
        (config,) = (await stub.ListTaskPushNotificationConfigs(listing)).configs
        assert (config.url, config.task_id) == (url, task.id)
        same = await stub.GetTaskPushNotificationConfig(
            GetTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
        )
        assert same == config
        await stub.DeleteTaskPushNotificationConfig(
            DeleteTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.GetTaskPushNotificationConfig(
                GetTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_webhook_that_is_down_is_retried_and_recorded_while_traffic_flows(
    hub: Hub, client: HubClient
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    task = (await stub.SendMessage(send_with_push("calculator", "1 + 2", dead))).task
    assert task.status.message.parts[0].text == "1 + 2 = 3"  # routing did not wait for the webhook
    other = await client.send("calculator", "2 + 2")
    assert other.status.message.parts[0].text == "2 + 2 = 4"
    thread = await client.get_thread(task.context_id)
    assert [m.text for m in thread.messages][-1] == "1 + 2 = 3"  # nothing lost from the thread

    topic = Topics(hub.settings.topic_prefix).push_attempts

    async def attempts() -> list[dict]:
        out = []
        for partition in await hub.log.end_offsets(topic):
            out += [
                json.loads(r.value) for r in await hub.log.read(TopicPartition(topic, partition), 0, 1000)
            ]
        return [a for a in out if a["task_id"] == task.id]

    async def retried() -> list[dict]:
        seen = await attempts()
        return seen if any(a["attempt"] >= 2 for a in seen) else []

    recorded = await eventually(retried, timeout=20)
    assert recorded and all(a["url"] == dead and a["error"] for a in recorded)


async def test_bad_push_configs_are_refused(hub: Hub, client: HubClient) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(send_with_push("calculator", "1 + 1", "ftp://nowhere"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTaskPushNotificationConfig(
            TaskPushNotificationConfig(
                tenant="calculator", task_id="no-such-task", url="http://127.0.0.1:1/x"
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
