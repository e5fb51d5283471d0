"""A port another server holds is an error, never a port shared in silence: gRPC binds with
SO_REUSEPORT unless told not to, and two hubs (or two agents) on one port would each get some of
the connections, so half the calls would find nothing registered."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToJson

from agenthub.hub import server
from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.errors import ConfigError
from tests.test_cli import agenthub, agenthub_env


async def test_a_hub_or_agent_on_a_port_in_use_refuses_to_start_and_the_first_keeps_serving(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with Hub(hub_settings(tmp_path / "first")) as first, HubClient(first.address) as client:
        taken = f"127.0.0.1:{first.grpc_port}"
        with pytest.raises(ConfigError) as refused:
            async with Hub(hub_settings(tmp_path / "second", port=first.grpc_port)):
                pass
        assert str(refused.value) == f"cannot listen on {taken} (port in use?)"

        code, out, err = await agenthub(
            "serve", "--port", str(first.grpc_port), "--data-dir", str(tmp_path / "cli"), timeout=120
        )
        assert (code, out) == (2, "") and err.strip().splitlines()[-1] == (
            f"error: cannot listen on {taken} (port in use?)"
        ), err
        assert "Traceback" not in err

        with pytest.raises(ConfigError) as refused:
            async with Agent("echo", model=ScriptedModel(), hub=None, port=first.grpc_port):
                pass
        assert str(refused.value) == f"cannot listen on {taken} (port in use?)"

        assert await client.list_agents() == []  # every call still reaches the first hub


async def test_a_hub_whose_picked_port_was_taken_meanwhile_picks_another(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """With port 0 the hub picks a free port when it is made and binds it when it starts; another
    process may take the port in between (test workers start hubs side by side)."""
    hub = Hub(hub_settings(tmp_path / "hub"))
    picked = hub.grpc_port
    squatter = grpc.aio.server()
    squatter.add_insecure_port(f"127.0.0.1:{picked}")
    await squatter.start()
    try:
        async with hub, HubClient(hub.address) as client:
            assert hub.grpc_port != picked
            card = Agent("probe", description="a card", hub=None, model=ScriptedModel()).card()
            await client.register(MessageToJson(card, indent=None), "127.0.0.1:9")  # nobody called
            async with httpx.AsyncClient() as http:
                card_url = f"{hub.http_url}/agents/probe/.well-known/agent-card.json"
                card = (await http.get(card_url)).json()
            grpc_urls = [i["url"] for i in card["supportedInterfaces"] if i["protocolBinding"] == "GRPC"]
            assert grpc_urls == [hub.address]  # the card says where the hub really listens
    finally:
        await squatter.stop(None)


async def test_a_taken_http_port_is_a_clear_error_and_a_picked_one_is_picked_again(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The HTTP head binds like the gRPC one. uvicorn, left to bind, ended a failed bind with
    `sys.exit` inside its task, which stopped the whole event loop (in the suite: every later test
    of that worker errored)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(ConfigError) as refused:
            async with Hub(hub_settings(tmp_path / "named", http_port=taken)):
                pass
        assert str(refused.value) == f"cannot listen on 127.0.0.1:{taken} (port in use?)"

        hub = Hub(hub_settings(tmp_path / "picked"))
        hub.http_port = taken  # as if another process took the port the hub picked
        async with hub, httpx.AsyncClient() as http:
            assert hub.http_port != taken
            answer = await http.get(f"{hub.http_url}/readyz")  # the head listens where the hub says
            assert answer.status_code in (200, 503) and "ready" in answer.json()  # 503: still joining


def test_a_picked_port_is_free_and_below_the_range_outgoing_connections_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outgoing connection takes its port from the ephemeral range: a port picked there can be
    gone by the time its server binds it (two CI runs lost an agent and a hub fixture that way)."""
    monkeypatch.delenv(server.PORT_RANGE_VARIABLE, raising=False)  # the default range
    low = server._ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert low <= server.FIRST_PICKED_PORT or server.FIRST_PICKED_PORT <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free, as promised


def test_ports_are_picked_in_the_range_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """`AGENTHUB_PORT_RANGE` bounds every pick (the suite gives each of its workers a range of
    its own, so one never takes a port the other picked); when the whole range is bound, the kernel
    picks a free port."""
    port = free_port()
    monkeypatch.setenv(server.PORT_RANGE_VARIABLE, f"{port}-{port}")
    assert server.picking_range() == (port, port + 1)
    assert free_port() == port
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        assert free_port() != port


@pytest.mark.parametrize("given", ["20000", "b-c", "30000-20000", "0-10", "60000-70000"])
async def test_a_port_range_that_is_not_one_is_refused_in_one_line(tmp_path: Path, given: str) -> None:
    code, _, err = await agenthub_env(
        {server.PORT_RANGE_VARIABLE: given}, "serve", "--port", "0", "--data-dir", str(tmp_path)
    )
    assert code == 2 and err.strip().splitlines() == [
        f"error: invalid AGENTHUB_PORT_RANGE {given!r}: expected LOW-HIGH, e.g. 20000-20999"
    ]
