"""Delivery guarantees on both log backends: dead letters, record headers, a hub killed with SIGKILL
mid-flight, and (Kafka) two hub processes sharing one broker."""

from __future__ import annotations

import asyncio
import collections
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState, a2a_pb2_grpc

from agenthub.hub import envelopes
from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Record, TopicPartition
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, AgentHubError, HubClient, ScriptedModel, tool
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually
from tests.processes import hub_process

TERMINAL = {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED}


class Fragile(Agent):
    """While `poisonous`, crashes on any message that mentions poison (an error the hub retries: the
    agent is there, the call failed), counting those calls in `poisoned`; echoes the rest."""

    poisonous = True
    poisoned = 0

    async def handle(self, request: SendMessageRequest):  # type: ignore[no-untyped-def, override]
        if self.poisonous and "poison" in request.message.parts[0].text:
            self.poisoned += 1
            raise RuntimeError("cannot digest this")
        async for event in super().handle(request):
            yield event


@tool(return_direct=True)
def echo(text: str) -> str:
    """Echo the text."""
    return f"echo: {text}"


async def records(log, topic: str) -> list[Record]:  # type: ignore[no-untyped-def]
    out: list[Record] = []
    for partition in await log.end_offsets(topic):
        out += await log.read(TopicPartition(topic, partition), 0, 1000)
    return out


async def test_poison_message_is_dead_lettered_and_the_caller_sees_why(tmp_path, hub_settings):
    async with (
        Hub(hub_settings(tmp_path, max_attempts=3)) as hub,
        Fragile("fragile", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        task = await client.send("fragile", "here is poison")
        assert task.status.state == TaskState.TASK_STATE_FAILED
        reason = task.status.message.parts[0].text
        assert "failed 3 attempts" in reason and "cannot digest this" in reason
        assert f"{hub.settings.topic_prefix}.dlq.fragile" in reason

        (dead,) = await records(hub.log, Topics(hub.settings.topic_prefix).dlq("fragile"))
        envelope = envelopes.decode(dead)
        assert envelope.kind == Kind.KIND_DEAD_LETTER and envelope.task_id == task.id
        assert "cannot digest this" in envelope.error
        assert dict(dead.headers)["agenthub-kind"] == b"KIND_DEAD_LETTER"

        healthy = await client.send("fragile", "fine", context_id=task.context_id)
        assert healthy.status.message.parts[0].text == "echo: fine"  # the thread is not blocked
        thread = await client.get_thread(task.context_id)
        assert [m.text for m in thread.messages].count(reason) == 1


async def test_unreadable_inbox_record_is_parked_not_lost(tmp_path, hub_settings):
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        topics = Topics(hub.settings.topic_prefix)
        garbage = await hub.log.produce(topics.inbox("echoer"), b"\xff\x00 not an envelope", key=b"ctx")

        async def parked() -> list[Record]:
            return await records(hub.log, topics.dlq("echoer"))

        (dead,) = await eventually(parked)
        assert dead.value == garbage.value
        headers = dict(dead.headers)
        assert b"unreadable inbox record" in headers["agenthub-error"]
        assert headers["agenthub-source"] == f"{garbage.topic}/{garbage.partition}/{garbage.offset}".encode()
        task = await client.send("echoer", "still here")
        assert task.status.message.parts[0].text == "echo: still here"


async def test_routing_metadata_travels_in_record_headers(tmp_path, hub_settings):
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        request = SendMessageRequest(
            tenant="echoer",
            message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="hi")]),
        )
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        task = (await stub.SendMessage(request, metadata=(("traceparent", traceparent),))).task
        (inbox,) = await records(hub.log, Topics(hub.settings.topic_prefix).inbox("echoer"))
        headers = dict(inbox.headers)
        assert headers["agenthub-kind"] == b"KIND_REQUEST"
        assert headers["agenthub-recipient"] == b"echoer"
        assert headers["agenthub-sender"] == b"user"
        assert headers["agenthub-context-id"] == task.context_id.encode()
        assert headers["agenthub-task-id"] == task.id.encode()
        assert headers["agenthub-id"] == envelopes.decode(inbox).id.encode()
        assert headers["traceparent"] == traceparent.encode()
        assert inbox.key == task.context_id.encode()


# ---- hubs as real processes -------------------------------------------------------------------


def counting_agent(name: str, hub: str, seen: collections.Counter[str], delay: float) -> Agent:
    """An agent that counts every request text it is handed, then echoes it after `delay`."""

    @tool(return_direct=True)
    async def count(text: str) -> str:
        """Count and echo."""
        seen[text] += 1
        await asyncio.sleep(delay)
        return f"counted: {text}"

    return Agent(name, tools=[count], model=ScriptedModel(), hub=hub, heartbeat_s=0.5)


async def submit(client: HubClient, agent: str, text: str) -> tuple[str, str]:
    """Send without waiting for the answer; (task id, context id)."""
    request = SendMessageRequest(
        tenant=agent,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
    )
    request.configuration.return_immediately = True
    task = (await a2a_pb2_grpc.A2AServiceStub(client.channel).SendMessage(request)).task
    return task.id, task.context_id


async def assert_thread_once(client: HubClient, context_id: str, text: str, answer: str) -> None:
    thread = await client.get_thread(context_id)
    texts = [m.text for m in thread.messages]
    ids = [m.message_id for m in thread.messages]
    assert len(ids) == len(set(ids)), f"a message was recorded twice in {context_id}"
    assert texts.count(text) == 1 and texts.count(answer) == 1, texts
    for task in thread.tasks:  # status rows too: a re-recorded envelope would add its status again
        changes = [(s.state, s.text, s.at.ToNanoseconds()) for s in task.history]
        assert len(changes) == len(set(changes)), f"a status was recorded twice in {task.task_id}"


async def test_hub_killed_mid_flight_loses_nothing(tmp_path: Path, hub_settings: Callable[..., HubSettings]):
    settings = hub_settings(tmp_path, max_attempts=5, retry_backoff_s=0.2)
    port, seen = free_port(), collections.Counter[str]()
    address = f"127.0.0.1:{port}"
    async with hub_process(settings, tmp_path / "data", port) as first:
        agent = counting_agent("counter", address, seen, delay=0.5)
        await agent.start()
        async with HubClient(address) as client:
            sent = [(text, *await submit(client, "counter", text)) for text in (f"job {i}" for i in range(8))]
            assert await eventually(lambda: _any_seen(seen), timeout=30), "no request reached the agent"
            first.send_signal(signal.SIGKILL)
            await first.wait()
    try:
        async with hub_process(settings, tmp_path / "data", port), HubClient(address) as client:
            for text, task_id, context_id in sent:

                async def finished(task_id: str = task_id):  # type: ignore[no-untyped-def]
                    task = await client.get_task("counter", task_id)
                    return task.status.state in TERMINAL and task

                task = await eventually(finished, timeout=60)
                assert task, f"{text} was lost"
                assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message
                await assert_thread_once(client, context_id, text, f"counted: {text}")
    finally:
        await agent.stop()
    assert set(seen) == {text for text, _, _ in sent}


async def _any_seen(seen: collections.Counter[str]) -> bool:
    return bool(seen)


@pytest.mark.parametrize("backend", ["kafka"])
async def test_two_hub_processes_share_one_broker(tmp_path: Path, hub_settings: Callable[..., HubSettings]):
    settings = hub_settings(tmp_path)
    ports, seen = (free_port(), free_port()), collections.Counter[str]()
    addresses = [f"127.0.0.1:{p}" for p in ports]
    async with (
        hub_process(settings, tmp_path / "one", ports[0]),
        hub_process(settings, tmp_path / "two", ports[1]),
        counting_agent("counter", addresses[0], seen, delay=0.05),
        HubClient(addresses[0]) as one,
        HubClient(addresses[1]) as two,
    ):

        async def both_know_the_agent() -> bool:
            names = [[a.name for a in await client.list_agents()] for client in (one, two)]
            return names == [["counter"], ["counter"]]

        assert await eventually(both_know_the_agent, timeout=30), "the registry is not shared"
        jobs = [(client, f"job {i} via {n}") for n, client in enumerate((one, two)) for i in range(15)]
        results = await asyncio.gather(*(client.send("counter", text, timeout=120) for client, text in jobs))
        assert [r.status.message.parts[0].text for r in results] == [f"counted: {t}" for _, t in jobs]
        assert seen == collections.Counter(text for _, text in jobs), "a request was delivered twice"
        for result, (_, text) in zip(results, jobs, strict=True):
            for client in (one, two):  # each hub's own store records every thread

                async def recorded(client: HubClient = client, context_id: str = result.context_id) -> bool:
                    try:
                        return len((await client.get_thread(context_id)).messages) >= 4
                    except AgentHubError:  # not recorded yet
                        return False

                assert await eventually(recorded, timeout=30)
                await assert_thread_once(client, result.context_id, text, f"counted: {text}")
