"""Any A2A agent joins by URL: a plain a2a-sdk agent (no AgentHub code) registered with
`agenthub agents register URL`, called over its own binding, routed through the log and recorded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, Task, TaskState
from a2a.utils.errors import InvalidParamsError

from agenthub.hub.log._base import TopicPartition
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import AgentHubError, HubClient
from tests.conftest import stock_client
from tests.plain_agent import PlainEcho, serve_plain_agent
from tests.test_cli import agenthub


def question(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    )


@pytest.mark.parametrize(
    "bindings",
    [("JSONRPC", "HTTP+JSON", "GRPC"), ("JSONRPC", "HTTP+JSON"), ("HTTP+JSON",)],
    ids=["grpc", "jsonrpc", "http-json"],
)
async def test_plain_agent_registered_by_url_works_through_the_hub(
    hub: Hub, client: HubClient, bindings: tuple[str, ...]
) -> None:
    async with serve_plain_agent(bindings) as base:
        code, out, err = await agenthub("agents", "register", base, "--hub", hub.address)
        assert code == 0, err
        best = "GRPC" if "GRPC" in bindings else bindings[0]
        assert f"registered plain ({best}" in out
        (record,) = [a for a in await client.list_agents() if a.name == "plain"]
        assert record.binding == best and record.card_url == f"{base}/.well-known/agent-card.json"

        for binding in ("GRPC", "JSONRPC", "HTTP+JSON"):  # every client binding of the hub reaches it
            a2a = await stock_client(hub, "plain", streaming=binding != "GRPC", binding=binding)
            try:
                events = [e async for e in a2a.send_message(question(f"hello over {binding}"))]
                last = events[-1]
                task = last.task if last.HasField("task") else None
                state = task.status.state if task else last.status_update.status.state
                assert state == TaskState.TASK_STATE_COMPLETED
                task_id = task.id if task else last.status_update.task_id
                fetched = await a2a.get_task(GetTaskRequest(id=task_id))
                assert fetched.status.message.parts[0].text == f"plain: hello over {binding}"
                thread = await client.get_thread(fetched.context_id)
                hops = [(m.sender, m.recipient, m.text) for m in thread.messages]
                assert hops[0] == ("user", "plain", f"hello over {binding}")
                assert hops.count(("plain", "user", f"plain: hello over {binding}")) == 1
            finally:
                await a2a.close()


async def test_registration_by_url_survives_a_restart(tmp_path: Path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    settings = hub_settings(tmp_path / "data", port=free_port(), http_port=free_port())
    async with serve_plain_agent() as base:
        async with Hub(settings) as hub, HubClient(hub.address) as client:
            await client.register_url(base)
        async with Hub(settings) as hub, HubClient(hub.address) as client:
            (record,) = await client.list_agents()
            assert (record.name, record.binding) == ("plain", "JSONRPC")
            task = await client.send("plain", "still there?")
            assert task.status.message.parts[0].text == "plain: still there?"
            await client.deregister("plain")
            assert not await client.list_agents()


async def test_register_with_another_name(hub: Hub, client: HubClient) -> None:
    async with serve_plain_agent() as base:
        record = await client.register_url(f"{base}/.well-known/agent-card.json", name="echo-two")
        assert record.name == "echo-two"
        task = await client.send("echo-two", "hi")
        assert task.status.message.parts[0].text == "plain: hi"
        card = json.loads((await client.get_agent("echo-two")).card_json)
        assert card["name"] == "echo-two"


@pytest.mark.parametrize(
    ("url", "exit_code", "words"),
    [
        ("http://127.0.0.1:{dead}", 5, "cannot fetch the agent card"),
        ("{plain}/not-a-card.json", 2, "not an A2A agent card"),
        ("ftp://example.invalid/agent", 2, "invalid agent URL"),
    ],
    ids=["unreachable", "not-a-card", "bad-url"],
)
async def test_bad_registrations_are_one_line_and_register_nothing(
    hub: Hub, client: HubClient, url: str, exit_code: int, words: str
) -> None:
    async with serve_plain_agent() as plain:
        target = url.format(dead=free_port(), plain=plain)
        code, out, err = await agenthub("agents", "register", target, "--hub", hub.address)
        assert code == exit_code and out == ""
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err
        assert not await client.list_agents()
        with pytest.raises(AgentHubError):
            await client.register_url(target)


@pytest.mark.parametrize("binding", ["GRPC", "JSONRPC", "HTTP+JSON"])
async def test_an_agent_registered_with_a_credential_gets_it_and_nobody_sees_it(
    hub: Hub, client: HubClient, binding: str
) -> None:
    """The registration's Authorization goes to the agent on every binding; it is sealed in the
    registry topic and absent from every answer; a caller's own credentials are never passed on."""
    secret = f"Bearer agent-secret-{uuid.uuid4().hex}"
    async with serve_plain_agent((binding,), require_authorization=secret) as base:
        code, out, err = await agenthub(
            "agents",
            "register",
            base,
            "--json",
            "--hub",
            hub.address,
            env={"AGENTHUB_AGENT_AUTHORIZATION": secret},
        )
        assert code == 0, err
        assert secret not in out and "sealed" not in out
        task = await client.send("plain", "hello")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED, task
        listed = await client.list_agents()
        assert all(not a.sealed_authorization for a in listed) and secret not in str(listed)
        registry = TopicPartition(Topics(hub.settings.topic_prefix).registry, 0)
        raw = await hub.log.read(registry, 0, 1000)
        assert raw and all(secret.encode() not in r.value for r in raw)

        await client.register_url(base)  # the same agent, registered with no credential: refused
        task = await client.send("plain", "hello again")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_FAILED
        reason = task.status.message.parts[0].text
        assert "rejected the request" in reason and ("401" in reason or "credentials" in reason), reason


class Refuses(PlainEcho):
    """Answers every request with an A2A error of its own (invalid params), counting them."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.calls += 1
        raise InvalidParamsError(message="the agent wants a number")


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_an_a2a_error_from_an_agent_over_http_fails_its_task_at_once_saying_why(
    hub: Hub, client: HubClient, binding: str
) -> None:
    """An agent's own A2A error is an answer, not an outage: one call, no retry, and the task fails
    with the agent's reason."""
    refuses = Refuses()
    async with serve_plain_agent((binding,), executor=refuses, name="refuses") as base:
        await client.register_url(base)
        task = await client.send("refuses", "seven")
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "the agent wants a number" in task.status.message.parts[0].text, task.status.message
    assert refuses.calls == 1
