"""Every agent on every binding through the hub: the stock a2a-sdk client over gRPC, JSON-RPC and
HTTP+JSON (blocking and streaming), cards served well, and bad input on each binding."""

from __future__ import annotations

import uuid

import httpx
import pytest
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.conftest import stock_client

pytestmark = pytest.mark.usefixtures("reference_agents")
BINDINGS = ["GRPC", "JSONRPC", "HTTP+JSON"]
V1 = {"A2A-Version": "1.0"}


def question(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    )


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stock_client_on_every_binding(hub: Hub, client: HubClient, binding: str) -> None:
    blocking = await stock_client(hub, "triage", streaming=False, binding=binding)
    streaming = await stock_client(hub, "triage", streaming=True, binding=binding)
    try:
        (response,) = [e async for e in blocking.send_message(question("What is 12 + 30?"))]
        task = response.task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "12 + 30 = 42"

        events = [e async for e in streaming.send_message(question("What is 6 * 7?"))]
        states = [e.status_update.status.state for e in events if e.HasField("status_update")]
        assert events[0].HasField("task") and states[-1] == TaskState.TASK_STATE_COMPLETED
        assert events[-1].status_update.status.message.parts[0].text == "6 * 7 = 42"

        fetched = await blocking.get_task(GetTaskRequest(id=task.id))
        assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
        listed = await blocking.list_tasks(ListTasksRequest(context_id=task.context_id))
        assert [t.id for t in listed.tasks] == [task.id]
        with pytest.raises(TaskNotCancelableError, match="already TASK_STATE_COMPLETED"):
            await blocking.cancel_task(CancelTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError, match="not found"):
            await blocking.get_task(GetTaskRequest(id=str(uuid.uuid4())))

        thread = await client.get_thread(task.context_id)
        texts = [m.text for m in thread.messages]
        assert texts.count("What is 12 + 30?") == 2  # user -> triage, triage -> calculator
        assert texts.count("12 + 30 = 42") == 2  # calculator -> triage, triage -> user
    finally:
        await blocking.close()
        await streaming.close()


async def test_card_is_served_with_validators(hub: Hub) -> None:
    url = f"{hub.http_url}/agents/calculator/.well-known/agent-card.json"
    async with httpx.AsyncClient() as http:
        first = await http.get(url)
        assert first.status_code == 200
        bindings = [(i["protocolBinding"], i["url"]) for i in first.json()["supportedInterfaces"]]
        assert bindings == [
            ("GRPC", hub.address),
            ("JSONRPC", f"{hub.http_url}/agents/calculator/"),
            ("HTTP+JSON", f"{hub.http_url}/agents/calculator"),
        ]
        assert first.headers["cache-control"] == "public, max-age=60"
        tag, modified = first.headers["etag"], first.headers["last-modified"]
        assert (await http.get(url, headers={"If-None-Match": tag})).status_code == 304
        assert (await http.get(url, headers={"If-None-Match": '"stale"'})).status_code == 200
        assert (await http.get(url, headers={"If-Modified-Since": modified})).status_code == 304
        missing = await http.get(f"{hub.http_url}/agents/nobody/.well-known/agent-card.json")
        assert missing.status_code == 404 and "nobody" in missing.json()["error"]["message"]


def rpc(method: str, params: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


MESSAGE = {"message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "1 + 1"}]}}


@pytest.mark.parametrize(
    ("path", "body", "headers", "code"),
    [
        ("calculator/", b"{not json", {}, -32700),
        ("calculator/", rpc("Teleport", {}), {}, -32601),
        ("calculator/", rpc("GetTask", {"id": "no-such-task"}), {}, -32001),
        ("nobody/", rpc("SendMessage", MESSAGE), {}, -32040),
        (
            "calculator/",
            rpc("SendMessage", {"message": {"messageId": "m-2", "role": "ROLE_USER"}}),
            {},
            -32602,
        ),
        ("calculator/", rpc("SendMessage", MESSAGE), {"A2A-Version": "2.0"}, -32009),
    ],
    ids=["malformed-json", "unknown-method", "unknown-task", "unknown-agent", "empty-message", "bad-version"],
)
async def test_jsonrpc_errors(hub: Hub, path: str, body, headers: dict, code: int) -> None:
    async with httpx.AsyncClient(headers=V1) as http:
        url = f"{hub.http_url}/agents/{path}"
        sent = await (
            http.post(url, content=body)
            if isinstance(body, bytes)
            else http.post(url, json=body, headers=headers)
        )
        assert sent.status_code == 200
        assert sent.json()["error"]["code"] == code
        ok = await http.post(f"{hub.http_url}/agents/calculator/", json=rpc("SendMessage", MESSAGE))
        assert ok.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"  # still serving


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "reason"),
    [
        ("POST", "calculator/message:send", b"{not json", {}, 400, "INVALID_REQUEST"),
        (
            "POST",
            "calculator/message:send",
            b"1 + 1",
            {"content-type": "text/plain"},
            415,
            "CONTENT_TYPE_NOT_SUPPORTED",
        ),
        ("GET", "calculator/tasks/no-such-task", None, {}, 404, "TASK_NOT_FOUND"),
        ("POST", "nobody/message:send", MESSAGE, {}, 404, "AGENT_NOT_FOUND"),
        ("POST", "calculator/message:send", MESSAGE, {"A2A-Version": "2.0"}, 400, "VERSION_NOT_SUPPORTED"),
        (
            "POST",
            "calculator/message:send",
            {"message": {**MESSAGE["message"], "parts": [{"text": "x" * 1_200_000}]}},
            {},
            413,
            "MESSAGE_TOO_LARGE",
        ),
    ],
    ids=["malformed-json", "wrong-content-type", "unknown-task", "unknown-agent", "bad-version", "too-large"],
)
async def test_rest_errors(
    hub: Hub, method: str, path: str, body, headers: dict, status: int, reason: str
) -> None:
    async with httpx.AsyncClient(headers=V1) as http:
        url = f"{hub.http_url}/agents/{path}"
        kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body else {})
        sent = await http.request(method, url, headers=headers, **kwargs)
        assert sent.status_code == status
        error = sent.json()["error"]
        assert error["code"] == status and error["details"][0]["reason"] == reason
        ok = await http.post(f"{hub.http_url}/agents/calculator/message:send", json=MESSAGE)
        assert ok.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"  # still serving


async def test_grpc_refuses_another_major_version(hub: Hub, client: HubClient) -> None:
    import grpc
    from a2a.types import a2a_pb2_grpc

    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    request = question("1 + 1")
    request.tenant = "calculator"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(request, metadata=(("a2a-version", "2.0"),))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # A2A 5.4: VersionNotSupportedError
    assert "not supported" in caught.value.details()


async def test_requests_without_tenant_go_to_the_default_agent(tmp_path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    from a2a.types import a2a_pb2_grpc

    from agenthub.agents import calculator
    from tests.scripted import calculator_model

    async with (
        Hub(hub_settings(tmp_path, default_agent="calculator")) as hub,
        calculator.build(hub=hub.address, model=calculator_model()),
        HubClient(hub.address) as client,
    ):
        reply = await a2a_pb2_grpc.A2AServiceStub(client.channel).SendMessage(question("3 + 4"))  # no tenant
        assert reply.task.status.message.parts[0].text == "3 + 4 = 7"
