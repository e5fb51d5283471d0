"""Transparency: the same scenarios run directly against a plain a2a-sdk agent and through the hub
give the same results (states, answers, artifacts, error kinds), binding by binding."""

from __future__ import annotations

import uuid

import httpx
import pytest
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.types import CancelTaskRequest, GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.errors import A2AError

from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.plain_agent import serve_plain_agent

BINDINGS = ["JSONRPC", "HTTP+JSON"]


def question(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    )


async def client_for(url: str, binding: str, *, streaming: bool) -> Client:
    config = ClientConfig(
        streaming=streaming, supported_protocol_bindings=[binding], use_client_preference=True
    )
    return await ClientFactory(config).create_from_url(url)


async def scenarios(url: str, binding: str) -> list[object]:
    """What a client observes, reduced to what must not depend on whether a hub is in between."""
    blocking = await client_for(url, binding, streaming=False)
    streaming = await client_for(url, binding, streaming=True)
    observed: list[object] = []
    try:
        (reply,) = [e async for e in blocking.send_message(question("one"))]
        task = reply.task
        observed.append(("send", TaskState.Name(task.status.state), task.status.message.parts[0].text,
                         [p.text for a in task.artifacts for p in a.parts]))  # fmt: skip

        events = [e async for e in streaming.send_message(question("two"))]
        states = [e.status_update.status.state for e in events if e.HasField("status_update")]
        final = events[-1].status_update.status
        chunks = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
        observed.append(
            (
                "stream",
                TaskState.Name(states[-1]),
                final.message.parts[0].text,
                [p.text for a in chunks for p in a.parts],
            )
        )

        fetched = await blocking.get_task(GetTaskRequest(id=task.id))
        observed.append(
            (
                "get",
                TaskState.Name(fetched.status.state),
                [p.text for a in fetched.artifacts for p in a.parts],
            )
        )
        for name, call in (
            ("cancel-finished", blocking.cancel_task(CancelTaskRequest(id=task.id))),
            ("get-unknown", blocking.get_task(GetTaskRequest(id=str(uuid.uuid4())))),
        ):
            try:
                await call
                observed.append((name, "no error"))
            except A2AError as exc:
                observed.append((name, type(exc).__name__))
    finally:
        await blocking.close()
        await streaming.close()
    return observed


@pytest.mark.parametrize("binding", BINDINGS)
async def test_through_the_hub_is_like_direct(hub: Hub, client: HubClient, binding: str) -> None:
    async with serve_plain_agent() as base:
        await client.register_url(base)
        direct = await scenarios(base, binding)
        through = await scenarios(f"{hub.http_url}/agents/plain", binding)
    assert through == direct
    assert direct[0] == ("send", "TASK_STATE_COMPLETED", "plain: one", ["plain: one"])
    async with httpx.AsyncClient() as http:  # and the hub recorded what went through it
        threads = (await client.list_threads()).threads
        assert {t.first_text for t in threads} == {"one", "two"}
        assert (await http.get(f"{hub.http_url}/healthz")).status_code == 200
