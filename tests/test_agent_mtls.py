"""The hub's calls to agents over TLS: an SDK agent's port can require a client certificate
(AGENTHUB_AGENT_TLS_CLIENT_CA), which the hub presents (AGENTHUB_TLS_CLIENT_CERT/_KEY), and an agent
registered by URL over JSON-RPC or HTTP+JSON at `https://` is verified with AGENTHUB_TLS_CA.

Real servers on loopback: a hub serving TLS, SDK agents, a stock a2a-sdk agent behind uvicorn with
TLS; certificates made by the code behind `agenthub certs dev`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import Task, TaskState
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette

from agenthub.hub.config import HubSettings
from agenthub.hub.devcerts import DevCerts, make_dev_certs
from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.errors import ConfigError
from tests.plain_agent import PlainEcho, card
from tests.serving import bound, port_of, serving


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    """The dev CA, a server certificate for localhost/127.0.0.1 and the client `dev-client`."""
    return make_dev_certs(tmp_path / "certs")


@pytest.fixture
async def hub(
    tmp_path: Path, certs: DevCerts, hub_settings: Callable[..., HubSettings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hub]:
    """A hub serving TLS whose environment trusts the dev CA and holds a client certificate from
    it: what it presents to agents (and what the test's clients and agents use to reach it)."""
    monkeypatch.setenv("AGENTHUB_TLS_CA", str(certs.ca))
    monkeypatch.setenv("AGENTHUB_TLS_CLIENT_CERT", str(certs.client_cert))
    monkeypatch.setenv("AGENTHUB_TLS_CLIENT_KEY", str(certs.client_key))
    monkeypatch.setenv("AGENTHUB_KEY_FILE", str(tmp_path / "no.key"))  # no auth: no key
    settings = hub_settings(tmp_path / "hub", tls_cert=certs.server_cert, tls_key=certs.server_key)
    async with Hub(settings) as running:
        yield running


async def health(endpoint: str, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(endpoint, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


async def test_an_agent_port_requires_the_hubs_client_certificate(
    hub: Hub, certs: DevCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CERT", str(certs.server_cert))
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_KEY", str(certs.server_key))
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CLIENT_CA", str(certs.ca))
    async with Agent("sealed", description="Echoes.", model=ScriptedModel(), hub=hub.address) as agent:
        assert agent.card().supported_interfaces[0].url == f"https://{agent.endpoint}"
        async with HubClient(hub.address) as client:
            task = await client.send("sealed", "only the hub gets in")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task.status.message.parts[0].text == "only the hub gets in"
        # the hub's health check presents it too
        assert await hub.connections.is_up(hub.registry.get("sealed").record)

        ca = certs.ca.read_bytes()
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # TLS, the right CA, no certificate
            await health(agent.endpoint, grpc.ssl_channel_credentials(ca))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = make_dev_certs(tmp_path / "other-ca")  # a client certificate another CA signed
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            pair = (stranger.client_key.read_bytes(), stranger.client_cert.read_bytes())
            await health(agent.endpoint, grpc.ssl_channel_credentials(ca, *pair))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(agent.endpoint, grpc.local_channel_credentials())  # plain text
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        pair = (certs.client_key.read_bytes(), certs.client_cert.read_bytes())  # the dev CA's: let in
        assert await health(agent.endpoint, grpc.ssl_channel_credentials(ca, *pair)) == (
            health_pb2.HealthCheckResponse.SERVING
        )


async def test_a_client_ca_without_a_certificate_or_unreadable_is_one_clear_line(
    certs: DevCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTHUB_AGENT_TLS_CERT", raising=False)
    monkeypatch.delenv("AGENTHUB_AGENT_TLS_KEY", raising=False)
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CLIENT_CA", str(certs.ca))
    with pytest.raises(ConfigError) as half:
        Agent("half", model=ScriptedModel())
    text = str(half.value)
    assert "\n" not in text and "AGENTHUB_AGENT_TLS_CLIENT_CA" in text and "AGENTHUB_AGENT_TLS_CERT" in text

    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CERT", str(certs.server_cert))
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_KEY", str(certs.server_key))
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CLIENT_CA", str(tmp_path / "missing-ca.pem"))
    agent = Agent("lost", model=ScriptedModel())
    with pytest.raises(ConfigError) as unreadable:
        await agent.start()
    text = str(unreadable.value)
    assert "\n" not in text and "client CA" in text and "missing-ca.pem" in text


@asynccontextmanager
async def https_plain_agent(certs: DevCerts, bindings: tuple[str, ...]) -> AsyncIterator[str]:
    """A stock a2a-sdk agent whose JSON-RPC and HTTP+JSON interfaces are served over HTTPS with a
    certificate from the dev CA, requiring a client certificate from it too. Its card is also served
    over plain HTTP on another port, for registration: the hub fetches cards through its outbound
    policy, which verifies with the public roots only. Yields that card's base URL."""
    secure_socket, plain_socket = bound(), bound()
    secure, plain = port_of(secure_socket), port_of(plain_socket)
    agent_card = card(f"https://127.0.0.1:{secure}", bindings)
    handler = DefaultRequestHandler(PlainEcho(), InMemoryTaskStore(), agent_card)
    app = Starlette(
        routes=[
            *create_agent_card_routes(agent_card),
            *create_jsonrpc_routes(handler, rpc_url="/"),
            *create_rest_routes(handler),
        ]
    )
    tls = {
        "ssl_certfile": str(certs.server_cert), "ssl_keyfile": str(certs.server_key),
        "ssl_ca_certs": str(certs.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }  # fmt: skip
    async with serving(app, secure_socket, **tls), serving(app, plain_socket):
        yield f"http://127.0.0.1:{plain}"


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_an_https_agent_registered_by_url_is_verified_with_the_hubs_ca(
    hub: Hub, certs: DevCerts, binding: str
) -> None:
    async with https_plain_agent(certs, (binding,)) as base, HubClient(hub.address) as client:
        record = await client.register_url(base)
        assert record.binding == binding and record.endpoint.startswith("https://127.0.0.1:")
        task = await client.send("plain", f"over {binding}, verified with the dev CA")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task.status.message.parts[0].text == f"plain: over {binding}, verified with the dev CA"
        assert await hub.connections.is_up(hub.registry.get("plain").record)
