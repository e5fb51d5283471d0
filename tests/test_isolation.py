"""Cross-agent isolation: a task is reachable only through the agent that owns it.

Agent `alpha` owns a task; every task RPC that names it through agent `beta` (gRPC tenant, the
JSON-RPC and HTTP+JSON heads under /agents/beta/) must answer TASK_NOT_FOUND — gRPC NOT_FOUND,
JSON-RPC -32001, HTTP 404 — and change nothing. The same call through `alpha` is the control: it
succeeds, or fails with a different, state-related error, so a NOT_FOUND is never a false alarm.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc
import httpx
import pytest
from a2a.types import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    a2a_pb2_grpc,
)

from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool

V1 = {"A2A-Version": "1.0"}
NOT_FOUND = {"GRPC": grpc.StatusCode.NOT_FOUND, "JSONRPC": -32001, "HTTP+JSON": 404}
OPERATIONS = [
    "get",
    "cancel",
    "subscribe",
    "push-create",
    "push-get",
    "push-list",
    "push-delete",
    "follow-up",
]


@tool(return_direct=True)
def repeat(text: str) -> str:
    """Repeat the text."""
    return f"repeat: {text}"


@dataclass
class Owned:
    """A completed task of `alpha`, with one push config, as its owner created them."""

    task: Task
    config: TaskPushNotificationConfig


@pytest.fixture
async def owned(hub: Hub, client: HubClient) -> AsyncIterator[Owned]:
    async with AsyncExitStack() as stack:
        for name in ("alpha", "beta"):
            await stack.enter_async_context(
                Agent(name, tools=[repeat], model=ScriptedModel(), hub=hub.address)
            )
        task = await client.send("alpha", "mine")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        config = await stub.CreateTaskPushNotificationConfig(
            TaskPushNotificationConfig(
                tenant="alpha", task_id=task.id, url=f"http://127.0.0.1:{free_port()}/hook", token="t"
            )
        )
        yield Owned(task, config)


class Caller:
    """One task operation on one binding, through the agent it is told; returns a comparable
    outcome: ("ok", value) or ("error", the binding's error code)."""

    def __init__(self, hub: Hub, client: HubClient, binding: str, owned: Owned) -> None:
        self.hub, self.binding, self.owned = hub, binding, owned
        self.stub = a2a_pb2_grpc.A2AServiceStub(client.channel)

    async def __call__(self, operation: str, agent: str) -> tuple[str, object]:
        if self.binding == "GRPC":
            return await self._grpc(operation, agent)
        async with httpx.AsyncClient(headers=V1, timeout=30) as http:
            if self.binding == "JSONRPC":
                return await self._jsonrpc(http, operation, agent)
            return await self._rest(http, operation, agent)

    def _follow_up(self) -> Message:
        return Message(
            message_id=str(uuid.uuid4()), role=Role.ROLE_USER, task_id=self.owned.task.id,
            parts=[Part(text="and again")],
        )  # fmt: skip

    async def _grpc(self, operation: str, agent: str) -> tuple[str, object]:
        task_id, config_id, stub = self.owned.task.id, self.owned.config.id, self.stub
        calls = {
            "get": lambda: stub.GetTask(GetTaskRequest(tenant=agent, id=task_id)),
            "cancel": lambda: stub.CancelTask(CancelTaskRequest(tenant=agent, id=task_id)),
            "push-create": lambda: stub.CreateTaskPushNotificationConfig(
                TaskPushNotificationConfig(tenant=agent, task_id=task_id, url="http://127.0.0.1:9/x")
            ),
            "push-get": lambda: stub.GetTaskPushNotificationConfig(
                GetTaskPushNotificationConfigRequest(tenant=agent, task_id=task_id, id=config_id)
            ),
            "push-list": lambda: stub.ListTaskPushNotificationConfigs(
                ListTaskPushNotificationConfigsRequest(tenant=agent, task_id=task_id)
            ),
            "push-delete": lambda: stub.DeleteTaskPushNotificationConfig(
                DeleteTaskPushNotificationConfigRequest(tenant=agent, task_id=task_id, id=config_id)
            ),
            "follow-up": lambda: stub.SendMessage(
                SendMessageRequest(tenant=agent, message=self._follow_up())
            ),
        }
        try:
            if operation == "subscribe":
                return "ok", [
                    e async for e in stub.SubscribeToTask(SubscribeToTaskRequest(tenant=agent, id=task_id))
                ]
            return "ok", await calls[operation]()
        except grpc.aio.AioRpcError as exc:
            return "error", exc.code()

    async def _jsonrpc(self, http: httpx.AsyncClient, operation: str, agent: str) -> tuple[str, object]:
        task_id, config_id = self.owned.task.id, self.owned.config.id
        method, params = {
            "get": ("GetTask", {"id": task_id}),
            "cancel": ("CancelTask", {"id": task_id}),
            "subscribe": ("SubscribeToTask", {"id": task_id}),
            "push-create": ("CreateTaskPushNotificationConfig", {"taskId": task_id, "url": "http://127.0.0.1:9/x"}),
            "push-get": ("GetTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}),
            "push-list": ("ListTaskPushNotificationConfigs", {"taskId": task_id}),
            "push-delete": ("DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}),
            "follow-up": ("SendMessage", {"message": {
                "messageId": str(uuid.uuid4()), "role": "ROLE_USER", "taskId": task_id,
                "parts": [{"text": "and again"}]}}),
        }[operation]  # fmt: skip
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = await http.post(f"{self.hub.http_url}/agents/{agent}/", json=body)
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            text = reply.text
            if '"error"' in text:
                import json

                first = next(line for line in text.splitlines() if line.startswith("data:"))
                return "error", json.loads(first.removeprefix("data:"))["error"]["code"]
            return "ok", text
        answer = reply.json()
        return ("error", answer["error"]["code"]) if "error" in answer else ("ok", answer["result"])

    async def _rest(self, http: httpx.AsyncClient, operation: str, agent: str) -> tuple[str, object]:
        task_id, config_id = self.owned.task.id, self.owned.config.id
        base = f"{self.hub.http_url}/agents/{agent}"
        configs = f"{base}/tasks/{task_id}/pushNotificationConfigs"
        method, url, body = {
            "get": ("GET", f"{base}/tasks/{task_id}", None),
            "cancel": ("POST", f"{base}/tasks/{task_id}:cancel", {}),
            "subscribe": ("POST", f"{base}/tasks/{task_id}:subscribe", {}),
            "push-create": ("POST", configs, {"taskId": task_id, "url": "http://127.0.0.1:9/x"}),
            "push-get": ("GET", f"{configs}/{config_id}", None),
            "push-list": ("GET", configs, None),
            "push-delete": ("DELETE", f"{configs}/{config_id}", None),
            "follow-up": ("POST", f"{base}/message:send", {"message": {
                "messageId": str(uuid.uuid4()), "role": "ROLE_USER", "taskId": task_id,
                "parts": [{"text": "and again"}]}}),
        }[operation]  # fmt: skip
        reply = await http.request(method, url, json=body)
        if reply.is_success:
            return "ok", reply.text
        return "error", reply.status_code


@pytest.mark.parametrize("binding", ["GRPC", "JSONRPC", "HTTP+JSON"])
async def test_another_agents_task_is_not_found_on_every_rpc(
    hub: Hub, client: HubClient, owned: Owned, binding: str
) -> None:
    call = Caller(hub, client, binding, owned)
    for operation in OPERATIONS:
        assert await call(operation, "beta") == ("error", NOT_FOUND[binding]), operation

    # Nothing changed: the task is as its owner left it, its push config is still there.
    assert await client.get_task("alpha", owned.task.id) == owned.task
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    listed = await stub.ListTaskPushNotificationConfigs(
        ListTaskPushNotificationConfigsRequest(tenant="alpha", task_id=owned.task.id)
    )
    assert [c.id for c in listed.configs] == [owned.config.id]
    beta_tasks = await client.list_tasks("beta", context_id=owned.task.context_id)
    assert list(beta_tasks.tasks) == []

    # The controls: through its owner the same calls reach the task (a completed task cannot be
    # canceled, subscribed to or continued: that is a different error, not NOT_FOUND).
    for operation in ("get", "push-get", "push-list"):
        assert (await call(operation, "alpha"))[0] == "ok", operation
    for operation in ("cancel", "subscribe", "follow-up"):
        outcome = await call(operation, "alpha")
        assert outcome[0] == "error" and outcome[1] != NOT_FOUND[binding], operation


async def test_listing_tasks_shows_only_the_agents_own(hub: Hub, client: HubClient, owned: Owned) -> None:
    listed = await a2a_pb2_grpc.A2AServiceStub(client.channel).ListTasks(ListTasksRequest(tenant="beta"))
    assert list(listed.tasks) == [] and listed.total_size == 0
    mine = await a2a_pb2_grpc.A2AServiceStub(client.channel).ListTasks(ListTasksRequest(tenant="alpha"))
    assert [t.id for t in mine.tasks] == [owned.task.id]
    async with httpx.AsyncClient(headers=V1) as http:
        rest = (await http.get(f"{hub.http_url}/agents/beta/tasks")).json()
        assert rest.get("tasks", []) == []
        body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
        rpc = (await http.post(f"{hub.http_url}/agents/beta/", json=body)).json()
        assert rpc["result"].get("tasks", []) == []


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_tenant_in_the_body_does_not_override_the_agent_in_the_url(
    hub: Hub, client: HubClient, owned: Owned, binding: str
) -> None:
    """/agents/beta/ speaks for beta only, whatever `tenant` the request body or query names."""
    task_id = owned.task.id
    async with httpx.AsyncClient(headers=V1) as http:
        if binding == "JSONRPC":
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "GetTask",
                "params": {"id": task_id, "tenant": "alpha"},
            }
            answer = (await http.post(f"{hub.http_url}/agents/beta/", json=body)).json()
            assert answer.get("error", {}).get("code") == -32001, answer
        else:
            reply = await http.get(f"{hub.http_url}/agents/beta/tasks/{task_id}", params={"tenant": "alpha"})
            assert reply.status_code == 404, reply.text
