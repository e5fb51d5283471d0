"""How the hub connects to agents, and clients to the hub: an agent is up only while its health
service says SERVING; an agent back on its port after a while is called at once, not after gRPC's
reconnect backoff; health checks of a connected agent reuse its connection; a client (an agent
starting before its hub) tries to reach a hub every 2 s or so, however long it was not there;
health checks of HTTP agents share one client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from a2a.types import TaskState
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agenthub.hub.config import HubSettings
from agenthub.hub.routing.connections import Connections
from agenthub.sdk import HubClient
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb.registry_pb2 import AgentRecord
from tests.conftest import eventually
from tests.switchable_agent import hub_with_switchable_agent


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
    async with hub_with_switchable_agent(settings) as running:
        agent, client = running.agent, running.client
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
    async with hub_with_switchable_agent(hub_settings(tmp_path, health_interval_s=0.1)) as running:
        agent, client = running.agent, running.client
        assert (await client.send("switchable", "hello")).status.state == TaskState.TASK_STATE_COMPLETED
        (message_peer,) = [peer for method, peer in agent.peers.calls if method == "SendStreamingMessage"]
        sent_at = len(agent.peers.calls)

        async def checked_three_times() -> bool:
            return len([m for m, _ in agent.peers.calls[sent_at:] if m == "Check"]) >= 3

        assert await eventually(checked_three_times, timeout=10)
        checks = {peer for method, peer in agent.peers.calls[sent_at:] if method == "Check"}
        assert checks == {message_peer}


async def test_a_client_tries_to_reach_a_hub_that_is_not_there_every_two_seconds_or_so() -> None:
    """Where the hub should be, a port that takes each connection and closes it. Called every
    0.2 s for 20 s, the client's channel connects every 2 s (gRPC's jitter: up to 2.4 s). gRPC's
    default waits 1 s, 1.6 s, 2.6 s, 4.1 s, 6.6 s... between tries (up to two minutes): an agent
    whose hub came up 27 s after it would have given up (at 30 s) before trying again (at ~43 s)."""
    tries: list[float] = []

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tries.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, HubClient(f"127.0.0.1:{port}") as client:
        until = time.monotonic() + 20
        while time.monotonic() < until:
            with contextlib.suppress(HubUnavailable):
                await client.list_agents()
            await asyncio.sleep(0.2)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(gaps) >= 6 and max(gaps) < 4.0, f"seconds between tries: {gaps}"


async def test_an_agent_is_up_only_while_its_health_service_says_serving() -> None:
    """A gRPC agent's own health service decides: NOT_SERVING and UNKNOWN are down, on a fresh
    channel and on a connected one; a server without the health service is up if it answers."""
    status = health_pb2.HealthCheckResponse.ServingStatus
    server, health_service = grpc.aio.server(), health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    bare = grpc.aio.server()
    bare_port = bare.add_insecure_port("127.0.0.1:0")
    await server.start()
    await bare.start()
    record = AgentRecord(name="a", endpoint=f"127.0.0.1:{port}", binding="GRPC")

    async def up_by_state(connections: Connections) -> list[bool]:
        seen = []
        for state in ("SERVING", "NOT_SERVING", "UNKNOWN", "SERVING"):
            await health_service.set("", status.Value(state))
            seen.append(await connections.is_up(record))
        return seen

    try:
        async with Connections() as connections:
            assert await up_by_state(connections) == [True, False, False, True]  # fresh channels
            shared = connections.channel(record.endpoint)
            await health_pb2_grpc.HealthStub(shared).Check(health_pb2.HealthCheckRequest())
            assert shared.get_state() == grpc.ChannelConnectivity.READY
            assert await up_by_state(connections) == [True, False, False, True]  # the connected one
            assert await connections.is_up(AgentRecord(name="b", endpoint=f"127.0.0.1:{bare_port}"))
    finally:
        await server.stop(None)
        await bare.stop(None)


async def test_health_checks_of_http_agents_share_one_client() -> None:
    """An agent on JSON-RPC or HTTP+JSON is checked by fetching its card. Three checks arrive over
    one kept-alive connection: the hub's shared client, not a client per check (each new one cost
    about 20 ms of CPU, its TLS context, every `health_interval_s` for every agent)."""
    peers: list[int] = []

    async def card(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client hung up
            while await reader.readuntil(b"\r\n\r\n"):
                peers.append(writer.get_extra_info("peername")[1])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()

    server = await asyncio.start_server(card, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    record = AgentRecord(name="a", binding="JSONRPC", card_url=f"{base}/.well-known/agent-card.json")
    async with server, Connections() as connections:
        assert [await connections.is_up(record) for _ in range(3)] == [True, True, True]
    assert len(peers) == 3 and len(set(peers)) == 1, peers
