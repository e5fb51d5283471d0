"""How the hub connects to agents: an agent back on its port after a while is called at once, not
after gRPC's reconnect backoff; health checks of a connected agent reuse its connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from a2a.types import TaskState

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.conftest import eventually
from tests.switchable_agent import serve_switchable_agent


async def test_an_agent_back_on_its_port_is_called_at_once_not_after_a_reconnect_backoff(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The agent leaves its port for a while: gRPC keeps reconnecting to it, waiting longer each
    time (1 s, 1.6 s, 2.6 s, 4.1 s...), and a channel shares that wait with every other channel to
    the same address. The agent comes back on the same port and registers again, which closes its
    circuit: the next request must be answered on its first call. On a channel still waiting out
    its backoff, every call failed at once, the circuit opened again and its probe (on a channel
    sharing the wait) failed too, until the 1 s window ran out."""
    settings = hub_settings(
        tmp_path, breaker_threshold=1, breaker_probe_s=0.1, retry_backoff_s=0.01, retry_window_s=1.0
    )
    async with (
        Hub(settings) as hub,
        serve_switchable_agent() as agent,
        HubClient(hub.address) as client,
    ):
        await client.register_url(agent.base)
        assert (await client.send("switchable", "up")).status.state == TaskState.TASK_STATE_COMPLETED
        await agent.leave()
        gone = await client.send("switchable", "while gone")
        assert gone.status.state == TaskState.TASK_STATE_FAILED  # the circuit is open now
        await asyncio.sleep(11)  # reconnecting all along, now between tries 4.1 s and 6.6 s apart
        await agent.come_back()
        await client.register_url(agent.base)  # as a restarted agent does: its circuit closes
        task = await client.send("switchable", "back")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message


async def test_health_checks_of_a_connected_agent_go_over_its_connection(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Checked every 0.1 s after a message was sent to it, the agent sees every health check come
    from the address and port the message came from: no new connection per check."""
    async with (
        Hub(hub_settings(tmp_path, health_interval_s=0.1)) as hub,
        serve_switchable_agent() as agent,
        HubClient(hub.address) as client,
    ):
        await client.register_url(agent.base)
        assert (await client.send("switchable", "hello")).status.state == TaskState.TASK_STATE_COMPLETED
        (message_peer,) = [peer for method, peer in agent.peers.calls if method == "SendStreamingMessage"]
        sent_at = len(agent.peers.calls)

        async def checked_three_times() -> bool:
            return len([m for m, _ in agent.peers.calls[sent_at:] if m == "Check"]) >= 3

        assert await eventually(checked_three_times, timeout=10)
        checks = {peer for method, peer in agent.peers.calls[sent_at:] if method == "Check"}
        assert checks == {message_peer}
