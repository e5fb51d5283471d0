"""Watching the registry: `HubClient.watch_agents()` and `agenthub agents watch` list the agents
registered now, then every change as it happens: a replica registered, gone down or back up (the
hub's health checks, told once a change, not once a check), removed. The dispatcher follows the
same stream: a replica reported down keeps its open circuit (its requests wait in the log), and one
reported back up gets its requests at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from a2a.types import TaskState

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from agenthub.sdk.pb.registry_pb2 import AgentChange
from tests.conftest import eventually
from tests.switchable_agent import hub_with_switchable_agent, serve_switchable_agent
from tests.test_cli import AGENTHUB
from tests.test_promises_routing import submit

# The registry is the same on either store: every log backend, with SQLite.
pytestmark = pytest.mark.parametrize("threads_url", ["sqlite"], indirect=True)

HEALTH_S = 0.2  # health checks on, often: a test hub has them off


@contextlib.asynccontextmanager
async def watching(client: HubClient) -> AsyncIterator[list[AgentChange]]:
    """Every change the watch gives, collected as it arrives."""
    seen: list[AgentChange] = []

    async def collect() -> None:
        async for change in client.watch_agents():
            seen.append(change)

    task = asyncio.create_task(collect())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def state_of(change: AgentChange, endpoint: str) -> str:
    return next((r.state for r in change.agent.replicas if r.endpoint == endpoint), "")


async def arrives(
    seen: list[AgentChange], wanted: Callable[[AgentChange], bool], after: int = 0
) -> AgentChange:
    """The first change past the first `after` that is `wanted`, once it has come."""

    async def found() -> AgentChange | None:
        return next((c for c in seen[after:] if wanted(c)), None)

    change = await eventually(found, timeout=20)
    assert change is not None, f"no such change among {[str(c) for c in seen]}"
    return change


async def test_a_watch_lists_the_agents_then_registrations_health_changes_and_removals(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path, health_interval_s=HEALTH_S)) as hub,
        serve_switchable_agent("early") as early,
        serve_switchable_agent("late") as late,
        HubClient(hub.address) as client,
    ):
        listed = await client.register_url(early.base)
        async with watching(client) as seen:
            first = await arrives(seen, lambda c: True)
            assert (first.agent.name, first.endpoint, first.removed) == ("early", "", False)
            assert [r.endpoint for r in first.agent.replicas] == [listed.endpoint]

            record = await client.register_url(late.base)
            endpoint = record.endpoint
            registered = await arrives(seen, lambda c: c.agent.name == "late")
            assert registered.endpoint == endpoint
            assert state_of(registered, endpoint) == "up"
            assert not registered.removed

            late.outage.down = True  # its server answers nothing: health checks fail
            down = await arrives(seen, lambda c: c.agent.name == "late" and state_of(c, endpoint) == "down")
            assert down.endpoint == endpoint
            assert down.agent.state == "down"  # its one replica is down
            changes = len(seen)

            async def told_again() -> bool:
                return len(seen) > changes

            assert not await eventually(told_again, timeout=10 * HEALTH_S), (
                f"a health check that changed nothing was told: {[str(c) for c in seen[changes:]]}"
            )

            late.outage.down = False
            up = await arrives(
                seen, lambda c: c.agent.name == "late" and state_of(c, endpoint) == "up", changes
            )
            assert up.endpoint == endpoint
            assert up.agent.state == "up"

            await client.deregister("late")
            removed = await arrives(seen, lambda c: c.removed)
            assert (removed.agent.name, removed.endpoint) == ("late", endpoint)
            assert not [c for c in seen if c.agent.name == "early" and c.endpoint], (
                "the healthy agent was reported changed"
            )


async def start_watch(hub: Hub, *args: str) -> asyncio.subprocess.Process:
    """`agenthub agents watch` against the hub, its output read here."""
    return await asyncio.create_subprocess_exec(
        *AGENTHUB, "agents", "watch", "--hub", hub.address, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def next_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), 30)).decode()


async def interrupt(process: asyncio.subprocess.Process) -> None:
    """Ctrl-C ends the watch: exit 0, no traceback."""
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode() + out.decode()


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_agents_watch_prints_the_agents_then_each_change_and_stops_on_ctrl_c(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        serve_switchable_agent("watched") as agent,
        HubClient(hub.address) as client,
    ):
        endpoint = (await client.register_url(agent.base)).endpoint
        watch = await start_watch(hub)
        assert (await next_line(watch)).split()[1:] == ["watched", "up", endpoint, "listed"]
        await client.deregister("watched")
        assert (await next_line(watch)).split()[1:] == ["watched", "up", endpoint, "removed"]
        await client.register_url(agent.base)
        assert (await next_line(watch)).split()[1:] == ["watched", "up", endpoint, "registered"]
        await interrupt(watch)

        watch = await start_watch(hub, "--json")
        listed = json.loads(await next_line(watch))
        assert (listed["event"], listed["endpoint"], listed["agent"]["name"]) == (
            "listed",
            endpoint,
            "watched",
        )
        await client.deregister("watched")
        removed = json.loads(await next_line(watch))
        assert (removed["event"], removed["endpoint"], removed["removed"]) == ("removed", endpoint, True)
        await interrupt(watch)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_replica_reported_down_keeps_its_open_circuit_and_one_back_up_gets_its_requests(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Its circuit open (one unreachable call) and its probe far off, the replica's health check
    fails: that change must not close its circuit, or the waiting request is sent to a replica
    known to be down. The check that finds it back up closes it: the request is answered at once,
    long before the probe would have run."""
    settings = hub_settings(
        tmp_path, breaker_threshold=1, breaker_probe_s=3600, retry_backoff_s=0.01, retry_window_s=1
    )  # health checks off: the test runs them when it wants them
    async with hub_with_switchable_agent(settings) as running:
        hub, agent, client = running.hub, running.agent, running.client
        endpoint = running.endpoint
        assert (await client.send("switchable", "while up")).status.state == TaskState.TASK_STATE_COMPLETED
        agent.outage.down = True
        first = await client.send("switchable", "while down")
        assert first.status.state == TaskState.TASK_STATE_FAILED
        assert (agent.outage.refused, agent.outage.served) == (1, 1)  # one call opened the circuit
        waiting = await submit(client, "switchable", "after the circuit opened")

        await hub.registry.check_health()
        assert state_of(AgentChange(agent=await client.get_agent("switchable")), endpoint) == "down"

        async def called() -> bool:
            return agent.outage.refused > 1

        assert not await eventually(called, timeout=2), "the down replica's circuit was closed"

        agent.outage.down = False
        await hub.registry.check_health()

        async def completed() -> bool:
            state = (await client.get_task("switchable", waiting.id)).status.state
            return state == TaskState.TASK_STATE_COMPLETED

        assert await eventually(completed, timeout=20)
        assert (agent.outage.refused, agent.outage.served) == (1, 2)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_state_is_told_when_it_changes_by_a_check_or_a_heartbeat_not_at_every_one(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Health checks run here by hand (off in the hub): two failing checks in a row are one
    change; the heartbeat that follows brings the replica back up, the next one changes nothing.
    Each change is the one right after the last: nothing was told in between."""
    async with hub_with_switchable_agent(hub_settings(tmp_path)) as running:
        hub, agent, client = running.hub, running.agent, running.client
        endpoint = running.endpoint
        async with watching(client) as seen:
            await arrives(seen, lambda c: True)
            agent.outage.down = True
            await hub.registry.check_health()
            await hub.registry.check_health()
            await client.heartbeat("switchable", endpoint)
            await client.heartbeat("switchable", endpoint)
            await client.deregister("switchable")
            await arrives(seen, lambda c: c.removed)
            assert [(c.endpoint, state_of(c, endpoint), c.removed) for c in seen[1:]] == [
                (endpoint, "down", False),
                (endpoint, "up", False),
                (endpoint, "", True),
            ]
