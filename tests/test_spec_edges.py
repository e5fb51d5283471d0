"""A2A v1.0 edge cases on every binding, compared with what the specification requires.

Each test asks the same question over gRPC, JSON-RPC and HTTP+JSON with plain requests (no client
library that could hide the server's answer), and compares what each binding said with the
specification: section 3.3.4 (capability validation), 3.2.6 (A2A-Version), 5.4 (the error code
mapping table), 11 (HTTP+JSON) and the idempotent deletion of push-notification configs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentCardSignature,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskPushNotificationConfig,
    a2a_pb2_grpc,
)
from google.protobuf.json_format import MessageToDict, MessageToJson

from agenthub.agents import calculator
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.scripted import calculator_model

V1 = {"A2A-Version": "1.0"}
V2 = {"A2A-Version": "2.0"}


@pytest.fixture
async def calc(hub: Hub) -> AsyncIterator[str]:
    """The calculator agent on the hub (its card declares no extended card)."""
    async with calculator.build(hub=hub.address, model=calculator_model()):
        yield "calculator"


def rich_card(name: str) -> AgentCard:
    """A card with everything an agent may say about itself, extended card declared."""
    return AgentCard(
        name=name,
        description="Knows things the hub does not.",
        version="3.1.4",
        documentation_url="https://docs.example.com/oracle",
        icon_url="https://example.com/o.png",
        provider=AgentProvider(organization="Example", url="https://example.com"),
        supported_interfaces=[
            AgentInterface(url="127.0.0.1:9", protocol_binding="GRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(
            streaming=False,
            push_notifications=False,
            extended_agent_card=True,
            extensions=[
                AgentExtension(uri="https://example.com/ext/geo/v1", description="geo", required=False)
            ],
        ),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/markdown"],
        skills=[
            AgentSkill(
                id="predict", name="predict", description="Predicts", tags=["future"], examples=["Will it?"]
            ),
            AgentSkill(id="recall", name="recall", description="Recalls", tags=["past"]),
        ],
        signatures=[AgentCardSignature(protected="e30", signature="c2ln")],
    )


async def register(client: HubClient, card: AgentCard) -> None:
    """Register a card whose agent never runs: these edge cases never reach an agent."""
    from agenthub.sdk.pb import registry_pb2, registry_pb2_grpc

    stub = registry_pb2_grpc.RegistryServiceStub(client.channel)
    await stub.RegisterAgent(
        registry_pb2.RegisterAgentRequest(card_json=MessageToJson(card), endpoint="127.0.0.1:9")
    )


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}


async def grpc_code(call: Any) -> str:
    """The status name a gRPC call ends with ("OK" when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


def jsonrpc_code(reply: httpx.Response) -> int | str:
    """The JSON-RPC error code of a reply ("result" when it succeeds); JSON-RPC answers HTTP 200."""
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return int(body["error"]["code"]) if "error" in body else "result"


def rest_code(reply: httpx.Response) -> tuple[int, str]:
    """(HTTP status, A2A reason) of an HTTP+JSON reply; the reason is "" for a success."""
    if reply.status_code < 400:
        return reply.status_code, ""
    return reply.status_code, str(reply.json()["error"]["details"][0]["reason"])


async def test_extended_card_not_declared_is_unsupported_operation(
    hub: Hub, client: HubClient, calc: str
) -> None:
    """3.3.4: capabilities.extendedAgentCard unset -> UnsupportedOperationError (5.4: UNIMPLEMENTED,
    -32004, 400), never the public card in its place."""
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    async with httpx.AsyncClient(base_url=f"{hub.http_url}/agents/{calc}", headers=V1) as http:
        seen = {
            "GRPC": await grpc_code(stub.GetExtendedAgentCard(GetExtendedAgentCardRequest(tenant=calc))),
            "JSONRPC": jsonrpc_code(await http.post("/", json=rpc("GetExtendedAgentCard", {}))),
            "HTTP+JSON": rest_code(await http.get("/extendedAgentCard")),
        }
    assert seen == {"GRPC": "UNIMPLEMENTED", "JSONRPC": -32004, "HTTP+JSON": (400, "UNSUPPORTED_OPERATION")}


async def test_extended_card_declared_but_absent_is_not_configured(hub: Hub, client: HubClient) -> None:
    """3.3.4: declared but not configured -> ExtendedAgentCardNotConfiguredError (5.4:
    FAILED_PRECONDITION, -32007, 400)."""
    await register(client, rich_card("oracle"))
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    async with httpx.AsyncClient(base_url=f"{hub.http_url}/agents/oracle", headers=V1) as http:
        seen = {
            "GRPC": await grpc_code(stub.GetExtendedAgentCard(GetExtendedAgentCardRequest(tenant="oracle"))),
            "JSONRPC": jsonrpc_code(await http.post("/", json=rpc("GetExtendedAgentCard", {}))),
            "HTTP+JSON": rest_code(await http.get("/extendedAgentCard")),
        }
    assert seen == {
        "GRPC": "FAILED_PRECONDITION",
        "JSONRPC": -32007,
        "HTTP+JSON": (400, "EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
    }


async def test_deleting_a_push_config_is_idempotent(hub: Hub, client: HubClient, calc: str) -> None:
    """Deleting a config twice, or one that never existed, succeeds on every binding; the task
    must still exist (TaskNotFoundError otherwise)."""
    task = await client.send(calc, "1 + 2")
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    hook = "http://127.0.0.1:9/hook"
    configs = {}
    for binding in ("GRPC", "JSONRPC", "HTTP+JSON"):
        config = TaskPushNotificationConfig(tenant=calc, task_id=task.id, id=f"c-{binding}", url=hook)
        configs[binding] = (await stub.CreateTaskPushNotificationConfig(config)).id

    def delete_grpc(config_id: str, task_id: str = task.id) -> Any:
        request = DeleteTaskPushNotificationConfigRequest(tenant=calc, task_id=task_id, id=config_id)
        return grpc_code(stub.DeleteTaskPushNotificationConfig(request))

    async with httpx.AsyncClient(base_url=f"{hub.http_url}/agents/{calc}", headers=V1) as http:

        async def delete_jsonrpc(config_id: str, task_id: str = task.id) -> int | str:
            params = {"taskId": task_id, "id": config_id}
            return jsonrpc_code(await http.post("/", json=rpc("DeleteTaskPushNotificationConfig", params)))

        async def delete_rest(config_id: str, task_id: str = task.id) -> tuple[int, str]:
            return rest_code(await http.delete(f"/tasks/{task_id}/pushNotificationConfigs/{config_id}"))

        deletes = {"GRPC": delete_grpc, "JSONRPC": delete_jsonrpc, "HTTP+JSON": delete_rest}
        ok = {"GRPC": "OK", "JSONRPC": "result", "HTTP+JSON": (200, "")}
        for attempt in ("first", "again", "never existed"):
            config_id = {"never existed": "no-such-config"}.get(attempt, "")
            seen = {b: await delete(config_id or configs[b]) for b, delete in deletes.items()}
            assert seen == ok, attempt
        missing_task = {b: await delete("c", str(uuid.uuid4())) for b, delete in deletes.items()}
    assert missing_task == {"GRPC": "NOT_FOUND", "JSONRPC": -32001, "HTTP+JSON": (404, "TASK_NOT_FOUND")}
    listed = await stub.ListTaskPushNotificationConfigs(
        ListTaskPushNotificationConfigsRequest(tenant=calc, task_id=task.id)
    )
    assert list(listed.configs) == []


@pytest.mark.parametrize("version", ["2.0", "0.3", "banana"])
async def test_unsupported_version(hub: Hub, client: HubClient, calc: str, version: str) -> None:
    """3.2.6 / 5.4: an A2A-Version the hub does not speak -> VersionNotSupportedError: UNIMPLEMENTED
    on gRPC, -32009 on JSON-RPC, 400 on HTTP+JSON; for sends and reads alike."""
    task = await client.send(calc, "2 + 2")
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    metadata = (("a2a-version", version),)
    send = SendMessageRequest(
        tenant=calc,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="1 + 1")]),
    )
    message = MessageToDict(send.message)
    async with httpx.AsyncClient(
        base_url=f"{hub.http_url}/agents/{calc}", headers={"A2A-Version": version}
    ) as http:
        seen = {
            "GRPC": {
                await grpc_code(stub.SendMessage(send, metadata=metadata)),
                await grpc_code(stub.GetTask(GetTaskRequest(tenant=calc, id=task.id), metadata=metadata)),
            },
            "JSONRPC": {
                jsonrpc_code(await http.post("/", json=rpc("SendMessage", {"message": message}))),
                jsonrpc_code(await http.post("/", json=rpc("GetTask", {"id": task.id}))),
            },
            "HTTP+JSON": {
                rest_code(await http.post("/message:send", json={"message": message})),
                rest_code(await http.get(f"/tasks/{task.id}")),
            },
        }
    assert seen == {
        "GRPC": {"UNIMPLEMENTED"},
        "JSONRPC": {-32009},
        "HTTP+JSON": {(400, "VERSION_NOT_SUPPORTED")},
    }


async def test_http_json_answers_in_its_media_type(hub: Hub, client: HubClient, calc: str) -> None:
    """HTTP+JSON answers, successes and errors, are `application/a2a+json` (the media type A2A
    registers); JSON-RPC answers stay `application/json`; streams are `text/event-stream`."""
    task = await client.send(calc, "3 + 3")
    body = {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "4 + 4"}]}}
    async with httpx.AsyncClient(base_url=f"{hub.http_url}/agents/{calc}", headers=V1) as http:
        rest = {
            "send": await http.post("/message:send", json=body),
            "get": await http.get(f"/tasks/{task.id}"),
            "list": await http.get("/tasks", params={"contextId": task.context_id}),
            "unknown task": await http.get(f"/tasks/{uuid.uuid4()}"),
            "bad token": await http.get("/tasks", params={"pageToken": "9" * 40}),
            "bad json": await http.post("/message:send", content=b"{nope"),
        }
        rpc_reply = await http.post("/", json=rpc("GetTask", {"id": task.id}))
        async with http.stream("POST", "/message:stream", json={**body}) as stream:
            stream_type = stream.headers["content-type"]
            await stream.aread()
    assert {name: (r.status_code, r.headers["content-type"]) for name, r in rest.items()} == {
        "send": (200, "application/a2a+json"),
        "get": (200, "application/a2a+json"),
        "list": (200, "application/a2a+json"),
        "unknown task": (404, "application/a2a+json"),
        "bad token": (400, "application/a2a+json"),
        "bad json": (400, "application/a2a+json"),
    }
    assert "page_token" in rest["bad token"].json()["error"]["message"]  # names the field
    assert rpc_reply.headers["content-type"] == "application/json"
    assert stream_type.startswith("text/event-stream")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_unsupported_content_type(hub: Hub, calc: str, content_type: str) -> None:
    """A body that is not JSON by its media type -> ContentTypeNotSupportedError (5.4: -32005 on
    JSON-RPC, 415 on HTTP+JSON), not a parse error; the same body as JSON is served."""
    message = {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "5 + 5"}]}
    rpc_body = json.dumps(rpc("SendMessage", {"message": message})).encode()
    rest_body = json.dumps({"message": {**message, "messageId": str(uuid.uuid4())}}).encode()
    async with httpx.AsyncClient(base_url=f"{hub.http_url}/agents/{calc}", headers=V1) as http:

        async def send(rpc_type: str, rest_type: str) -> dict[str, object]:
            return {
                "JSONRPC": jsonrpc_code(
                    await http.post("/", content=rpc_body, headers={"content-type": rpc_type})
                ),
                "HTTP+JSON": rest_code(
                    await http.post("/message:send", content=rest_body, headers={"content-type": rest_type})
                ),
            }

        refused = await send(content_type, content_type)
        served = await send("application/json", "application/a2a+json")
    assert refused == {"JSONRPC": -32005, "HTTP+JSON": (415, "CONTENT_TYPE_NOT_SUPPORTED")}
    assert served == {"JSONRPC": "result", "HTTP+JSON": (200, "")}


async def test_the_served_card_is_the_agents_own(hub: Hub, client: HubClient) -> None:
    """The card the hub serves keeps the agent's name, description, version, provider, skills,
    modes, extensions and capabilities; the hub adds only what it provides: its three interfaces,
    streaming and push notifications. The agent's signatures no longer match, so they go."""
    card = rich_card("oracle")
    await register(client, card)
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{hub.http_url}/agents/oracle/.well-known/agent-card.json")
    served = reply.json()
    mine = MessageToDict(card)
    hub_parts = {"supportedInterfaces", "capabilities", "signatures"}
    assert {k: v for k, v in served.items() if k not in hub_parts} == {
        k: v for k, v in mine.items() if k not in hub_parts
    }
    assert served["capabilities"] == {**mine["capabilities"], "streaming": True, "pushNotifications": True}
    assert "signatures" not in served
    assert [(i["protocolBinding"], i["url"]) for i in served["supportedInterfaces"]] == [
        ("GRPC", hub.address),
        ("JSONRPC", f"{hub.http_url}/agents/oracle/"),
        ("HTTP+JSON", f"{hub.http_url}/agents/oracle"),
    ]
