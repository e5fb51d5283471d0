"""Agent replicas: several endpoints serving one agent name, on both log backends.

Requests spread over the healthy replicas, a context stays on one replica, a replica killed with
SIGKILL under load loses nothing and answers nothing twice, `agents list` shows each replica's
health, one replica can leave alone, and the registry keeps replicas across a hub restart.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from a2a.types import TaskState
from google.protobuf.json_format import MessageToJson

from agenthub.hub.config import HubSettings
from agenthub.hub.routing import registry
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb.registry_pb2 import AgentRecord
from tests.conftest import eventually
from tests.ledger_agent import read_ledger
from tests.plain_agent import serve_plain_agent
from tests.processes import AgentProcess
from tests.test_cli import agenthub
from tests.test_delivery import TERMINAL, assert_thread_once, submit
from tests.test_operators import replayed

# Replicas are routing: every log backend, with the SQLite store.
pytestmark = pytest.mark.parametrize("threads_url", ["sqlite"], indirect=True)


def replica(name: str, hub: str, served: collections.Counter[str]) -> Agent:
    """One replica of `name`: answers with its own port, counting what it served in `served`."""
    agent: Agent

    @tool(return_direct=True)
    async def count(text: str) -> str:
        """Count and echo."""
        served[text] += 1
        return f"{agent.port}: {text}"

    agent = Agent(name, tools=[count], model=ScriptedModel(), hub=hub, memory=None, heartbeat_s=0.5)
    return agent


@asynccontextmanager
async def replicas(
    name: str, hub: str, count: int
) -> AsyncIterator[list[tuple[Agent, collections.Counter[str]]]]:
    """`count` SDK processes' worth of one agent (in this process, each on its own port)."""
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(count):
            served = collections.Counter[str]()
            out.append((await stack.enter_async_context(replica(name, hub, served)), served))
        yield out


def endpoints(record: AgentRecord) -> set[str]:
    return {r.endpoint for r in record.replicas}


async def test_requests_spread_over_replicas_and_a_context_stays_on_one(hub: Hub, client: HubClient) -> None:
    async with replicas("echo", hub.address, 3) as running:
        record = await client.get_agent("echo")
        assert endpoints(record) == {a.endpoint for a, _ in running}
        assert [r.state for r in record.replicas] == ["up"] * 3

        answers = await asyncio.gather(*(client.send("echo", f"job {i}") for i in range(30)))
        assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in answers)
        assert all(served for _, served in running), "a replica got no request"
        assert sum(sum(served.values()) for _, served in running) == 30

        first = await client.send("echo", "turn 0")
        ports = {first.status.message.parts[0].text.split(":")[0]}
        for turn in range(1, 6):
            task = await client.send("echo", f"turn {turn}", context_id=first.context_id)
            ports.add(task.status.message.parts[0].text.split(":")[0])
        assert len(ports) == 1, f"one context went to several replicas: {ports}"


async def test_agents_list_shows_replicas_and_one_replica_leaves_alone(hub: Hub, client: HubClient) -> None:
    async with replicas("echo", hub.address, 3) as running:
        code, out, _ = await agenthub("agents", "list", "--hub", hub.address, "--json")
        assert code == 0
        (listed,) = json.loads(out)
        assert {r["endpoint"] for r in listed["replicas"]} == {a.endpoint for a, _ in running}
        assert {r["state"] for r in listed["replicas"]} == {"up"}
        code, out, _ = await agenthub("agents", "list", "--hub", hub.address)
        assert code == 0 and "3/3 up" in out
        assert all(a.endpoint in out for a, _ in running)

        gone, served = running[0]
        await gone.stop()  # an SDK replica that stops while others are up deregisters itself only
        assert endpoints(await client.get_agent("echo")) == {a.endpoint for a, _ in running[1:]}
        before = sum(served.values())
        answers = await asyncio.gather(*(client.send("echo", f"after {i}") for i in range(10)))
        assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in answers)
        assert sum(served.values()) == before, "a deregistered replica still got requests"


async def test_register_by_url_with_replica_adds_and_without_repoints(hub: Hub, client: HubClient) -> None:
    async with serve_plain_agent() as one, serve_plain_agent() as two, serve_plain_agent() as three:
        for base in (one, two):
            code, out, err = await agenthub(
                "agents", "register", base, "--name", "echo", "--replica", "--hub", hub.address
            )
            assert code == 0, err
        record = await client.get_agent("echo")
        assert len(record.replicas) == 2 and "2 replicas" in out
        answers = await asyncio.gather(*(client.send("echo", f"job {i}") for i in range(6)))
        assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in answers)

        first, second = (await client.get_agent("echo")).replicas
        code, out, err = await agenthub(
            "agents", "deregister", "echo", "--endpoint", first.endpoint, "--hub", hub.address
        )
        assert code == 0 and f"replica {first.endpoint}" in out, err
        assert endpoints(await client.get_agent("echo")) == {second.endpoint}
        task = await client.send("echo", "one left")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED

        code, out, err = await agenthub("agents", "register", three, "--name", "echo", "--hub", hub.address)
        assert code == 0, err
        (only,) = (await client.get_agent("echo")).replicas
        assert only.endpoint.startswith(three)

        code, out, _ = await agenthub(
            "agents", "register", one, "--name", "echo", "--replica", "--hub", hub.address
        )
        assert code == 0 and len((await client.get_agent("echo")).replicas) == 2
        code, out, _ = await agenthub("agents", "deregister", "echo", "--hub", hub.address)
        assert code == 0 and "all replicas" in out
        assert not await client.list_agents()


async def test_a_replica_killed_under_load_loses_nothing_and_answers_once(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    settings = hub_settings(tmp_path / "hub", health_interval_s=0.5, max_attempts=3)
    async with Hub(settings) as hub, HubClient(hub.address) as client:
        agents = [AgentProcess(hub.address, tmp_path / f"ledger{i}", delay=0.3) for i in range(3)]
        try:
            for agent in agents:
                await agent.start()
            assert await eventually(lambda: _replicas_up(client, 3), timeout=30), "replicas did not register"
            victim, survivors = agents[0], agents[1:]
            sent = await asyncio.gather(*(submit(client, "counter", f"job {i}") for i in range(45)))
            assert await eventually(lambda: _delivered(victim.ledger), timeout=30), "the victim got nothing"
            await victim.kill()
            sent += await asyncio.gather(*(submit(client, "counter", f"job {i}") for i in range(45, 60)))

            texts = [f"job {i}" for i in range(60)]
            for text, (task_id, context_id) in zip(texts, sent, strict=True):

                async def finished(task_id: str = task_id):  # type: ignore[no-untyped-def]
                    task = await client.get_task("counter", task_id)
                    return task.status.state in TERMINAL and task

                task = await eventually(finished, timeout=60)
                assert task, f"{text} was lost"
                assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message
                await assert_thread_once(client, context_id, text, f"counted: {text}")

            killed_done = {t for _, what, t in read_ledger(victim.ledger) if what == "done"}
            interrupted = {t for _, what, t in read_ledger(victim.ledger) if what == "deliver"} - killed_done
            assert interrupted, "the kill interrupted nothing: the drill proves no failover"
            done = collections.Counter(
                t for agent in survivors for _, what, t in read_ledger(agent.ledger) if what == "done"
            )
            assert set(texts) == killed_done | set(done), "a request was answered by nobody"
            twice = {t for t, n in done.items() if n > 1}
            assert not twice, f"answered twice by living replicas: {twice}"
            # A replica killed after its work but before its answer reached the hub worked for
            # nothing: the hub had no answer, so another replica did it again (at least once). The
            # hub must never send again what it had an answer for: such a task's one answer in the
            # log comes from a later attempt than the killed replica's.
            contexts = dict(zip(texts, (context_id for _, context_id in sent), strict=True))
            for text in killed_done & set(done):
                attempts = await completed_on_attempts(client, contexts[text])
                assert len(attempts) == 1 and attempts[0] > 1, (
                    f"{text}, finished by the killed replica, was answered on attempts {attempts}"
                )

            async def victim_down() -> bool:
                record = await client.get_agent("counter")
                states = {r.endpoint: r.state for r in record.replicas}
                return states.get(f"127.0.0.1:{victim.port}") == "down" and record.state == "up"

            assert await eventually(victim_down, timeout=15), (
                "agents list does not show the dead replica down"
            )
            code, out, _ = await agenthub("agents", "list", "--hub", hub.address)
            assert code == 0 and "2/3 up" in out and "down" in out
        finally:
            for agent in agents:
                await agent.kill()


async def completed_on_attempts(client: HubClient, context_id: str) -> list[int]:
    """The attempts of a thread's calls whose completed status is in the log."""
    return [
        envelope["attempt"]
        for _, envelope in await replayed(client, op.Selection(context_id=context_id))
        if envelope["kind"] == "KIND_EVENT"
        and envelope["payload"].get("status_update", {}).get("status", {}).get("state")
        == "TASK_STATE_COMPLETED"
    ]


async def _replicas_up(client: HubClient, count: int) -> bool:
    record = {a.name: a for a in await client.list_agents()}.get("counter")
    return record is not None and sum(r.state == "up" for r in record.replicas) == count


async def _delivered(ledger: Path) -> bool:
    return any(what == "deliver" for _, what, _ in read_ledger(ledger))


async def test_registry_keeps_replicas_across_a_hub_restart(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    settings = hub_settings(tmp_path / "hub", port=free_port(), http_port=free_port())
    topics = Topics(settings.topic_prefix)
    hub = Hub(settings)
    await hub.start()
    legacy = AgentRecord(name="old", card_json=json.dumps(_card("old")), endpoint="127.0.0.1:1", state="up")
    await hub.log.produce(
        topics.registry, legacy.SerializeToString(), key=b"old"
    )  # as written before replicas
    async with replicas("echo", hub.address, 2) as running:
        await hub.stop()
        async with Hub(settings) as again, HubClient(again.address) as client:
            assert endpoints(again.registry.get("echo").record) == {a.endpoint for a, _ in running}
            # the agents' channels to this address are in reconnect backoff, shared in-process
            assert await eventually(lambda: _reachable(client), timeout=30)
            assert endpoints(await client.get_agent("old")) == {"127.0.0.1:1"}
            await client.register(json.dumps(_card("old")), "127.0.0.1:1", replica=True)
            assert endpoints(await client.get_agent("old")) == {"127.0.0.1:1"}
            task = await client.send("echo", "still here")
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
        async with Hub(settings) as third, HubClient(third.address) as client:
            assert await eventually(lambda: _reachable(client), timeout=30)
            assert await eventually(lambda: _reachable(running[0][0].hub), timeout=30)
            assert endpoints(await client.get_agent("old")) == {"127.0.0.1:1"}, "the old record came back"
            assert len((await client.get_agent("echo")).replicas) == 2
            await running[0][0].stop()  # a replica leaving while another is up deregisters itself
            assert endpoints(await client.get_agent("echo")) == {running[1][0].endpoint}


async def test_a_dead_replica_goes_while_another_is_up_and_a_last_one_stays(
    hub: Hub, client: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "EXPIRE_AFTER_S", 0.0)  # the minute of grace, not the checks
    async with replicas("echo", hub.address, 1) as ((live, _),):
        dead = f"127.0.0.1:{free_port()}"  # e.g. the port it served on before a restart
        await client.register(MessageToJson(live.card()), dead, replica=True)
        await client.register(json.dumps(_card("lonely")), dead, replica=True)
        for check in range(registry.EXPIRE_AFTER_CHECKS):
            assert len((await client.get_agent("echo")).replicas) == 2, f"removed after {check} checks"
            await hub.registry.check_health()
        assert endpoints(await client.get_agent("echo")) == {live.endpoint}
        (last,) = (await client.get_agent("lonely")).replicas  # no other replica: it stays, down
        assert (last.endpoint, last.state) == (dead, "down")


async def _reachable(client: HubClient) -> bool:
    try:
        await client.list_agents()
    except HubUnavailable:
        return False
    return True


def _card(name: str) -> dict[str, object]:
    return {
        "name": name,
        "description": "a record from before replicas",
        "version": "1",
        "supportedInterfaces": [{"url": "127.0.0.1:1", "protocolBinding": "GRPC"}],
    }
