"""TLS: the hub serves its gRPC and HTTP ports over TLS, stock a2a-sdk clients reach an agent through
it with the dev CA, plain text is refused, and with a client CA a client certificate is the caller.

Real hubs with `auth` on, certificates made by the code behind `agenthub certs dev`, the calculator
reference agent delegating over TLS with its own key, stock clients, raw gRPC and httpx.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor
from a2a.types import Task, TaskState
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.agents import calculator
from agenthub.hub.config import HubSettings
from agenthub.hub.devcerts import DevCerts, make_dev_certs
from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.auth import ClientTls
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb import trust_pb2 as tr
from agenthub.sdk.pb import trust_pb2_grpc
from tests.scripted import calculator_model
from tests.test_cli import agenthub
from tests.test_trust import KeyChain, question


@dataclass
class TlsHub:
    hub: Hub
    certs: DevCerts
    keys: dict[str, str]

    def credentials(self, client: DevCerts | None = None) -> grpc.ChannelCredentials:
        """Channel credentials trusting the dev CA, with `client`'s certificate when given (mTLS)."""
        pair = (client.client_key.read_bytes(), client.client_cert.read_bytes()) if client else (None, None)
        return grpc.ssl_channel_credentials(self.certs.ca.read_bytes(), *pair)

    def https(self, client: DevCerts | None = None) -> httpx.AsyncClient:
        """An httpx client trusting the dev CA, presenting `client`'s certificate when given."""
        context = ssl.create_default_context(cafile=self.certs.ca)
        if client:
            context.load_cert_chain(client.client_cert, client.client_key)
        return httpx.AsyncClient(verify=context, timeout=60)


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path / "certs")


async def start(
    tmp_path: Path, settings: HubSettings, certs: DevCerts, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TlsHub]:
    """The hub, with the calculator agent registered over TLS: with its own key, or on an mTLS hub
    with its own client certificate (CN `calculator`) and no key at all."""
    async with Hub(settings) as hub:
        keys = {"admin": (tmp_path / "hub" / "admin.key").read_text().strip()}
        _, keys["calculator"] = await hub.gate.keys.create("calculator-key", "agent", "calculator")
        _, keys["bob"] = await hub.gate.keys.create("bob", "user", "")
        with monkeypatch.context() as env:
            env.setenv("AGENTHUB_TLS_CA", str(certs.ca))
            if settings.tls_client_ca:
                own = make_dev_certs(certs.ca.parent, client="calculator")  # signed by the hub's CA
                env.setenv("AGENTHUB_TLS_CLIENT_CERT", str(own.client_cert))
                env.setenv("AGENTHUB_TLS_CLIENT_KEY", str(own.client_key))
                env.setenv("AGENTHUB_KEY_FILE", str(tmp_path / "no.key"))
            else:
                env.setenv("AGENTHUB_KEY", keys["calculator"])
            agent = calculator.build(hub=hub.address, model=calculator_model())
            assert (agent.hub.key is None) == bool(settings.tls_client_ca)
            await agent.start()
        try:
            yield TlsHub(hub, certs, keys)
        finally:
            await agent.stop()


@pytest.fixture
async def tls_hub(
    tmp_path: Path, certs: DevCerts, hub_settings: Callable[..., HubSettings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TlsHub]:
    """A hub with authentication and TLS on both ports (no client certificates)."""
    settings = hub_settings(tmp_path / "hub", auth=True, tls_cert=certs.server_cert, tls_key=certs.server_key)
    async for running in start(tmp_path, settings, certs, monkeypatch):
        yield running


@pytest.fixture
async def mtls_hub(
    tmp_path: Path, certs: DevCerts, hub_settings: Callable[..., HubSettings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TlsHub]:
    """A hub requiring client certificates from the dev CA: `ops-*` are operators, `dev-*` users,
    `calculator` is that agent, any other CN nobody."""
    settings = hub_settings(
        tmp_path / "hub", auth=True, tls_cert=certs.server_cert, tls_key=certs.server_key,
        tls_client_ca=certs.ca, tls_client_roles="ops-*=operator,dev-*=user,calculator=agent",
    )  # fmt: skip
    async for running in start(tmp_path, settings, certs, monkeypatch):
        yield running


@pytest.mark.parametrize("binding", ["GRPC", "JSONRPC", "HTTP+JSON"])
async def test_stock_client_over_tls_reaches_an_agent_with_a_key(tls_hub: TlsHub, binding: str) -> None:
    hub, credentials = tls_hub.hub, tls_hub.credentials()
    assert hub.http_url.startswith("https://")
    async with tls_hub.https() as http:  # closed before the hub stops (a TLS close waits for the peer)
        config = ClientConfig(
            streaming=False, supported_protocol_bindings=[binding], use_client_preference=True,
            grpc_channel_factory=lambda url: grpc.aio.secure_channel(url, credentials), httpx_client=http,
        )  # fmt: skip
        client = await ClientFactory(config).create_from_url(
            f"{hub.http_url}/agents/calculator", interceptors=[AuthInterceptor(KeyChain(tls_hub.keys["bob"]))]
        )
        (reply,) = [e async for e in client.send_message(question("What is 5 + 5?", tenant=""))]
        assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
        card = (await http.get(f"{hub.http_url}/agents/calculator/.well-known/agent-card.json")).json()
        await client.close()
    urls = [i["url"] for i in card["supportedInterfaces"] if i["protocolBinding"] != "GRPC"]
    assert urls and all(url.startswith("https://") for url in urls), urls


async def test_plain_text_and_untrusted_clients_are_refused(tls_hub: TlsHub) -> None:
    hub = tls_hub.hub
    async with grpc.aio.insecure_channel(hub.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    plain = hub.http_url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{plain}/agents/calculator/.well-known/agent-card.json")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # no dev CA: not trusted
            await http.get(f"{hub.http_url}/agents/calculator/.well-known/agent-card.json")
    async with HubClient(hub.address, key=tls_hub.keys["bob"], tls=False) as client:
        with pytest.raises(HubUnavailable):
            await client.list_agents()


async def test_hub_client_and_cli_take_the_ca_from_options_or_env(tls_hub: TlsHub) -> None:
    hub = tls_hub.hub
    async with HubClient(hub.address, key=tls_hub.keys["bob"], ca=tls_hub.certs.ca) as client:
        assert [a.name for a in await client.list_agents()] == ["calculator"]
    env = {"AGENTHUB_TLS_CA": str(tls_hub.certs.ca), "AGENTHUB_KEY": tls_hub.keys["bob"]}
    code, out, err = await agenthub("whoami", "--hub", hub.address, "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["name"] == "bob"
    key = {"AGENTHUB_KEY": tls_hub.keys["bob"]}  # the CA from the app's own --ca option
    ca = str(tls_hub.certs.ca)
    code, out, err = await agenthub(
        "--ca", ca, "send", "calculator", "What is 2 + 3?", "--hub", hub.address, env=key
    )
    assert code == 0 and "5" in out, err


async def test_an_sdk_agent_serves_tls_and_the_hub_calls_it_over_tls(
    tls_hub: TlsHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs, hub = tls_hub.certs, tls_hub.hub
    monkeypatch.setenv("AGENTHUB_TLS_CA", str(certs.ca))  # for the hub, a client of agents, too
    monkeypatch.setenv("AGENTHUB_KEY", tls_hub.keys["admin"])
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_CERT", str(certs.server_cert))  # localhost, 127.0.0.1
    monkeypatch.setenv("AGENTHUB_AGENT_TLS_KEY", str(certs.server_key))
    async with Agent("sealed", description="Echoes.", model=ScriptedModel(), hub=hub.address) as agent:
        assert agent.card().supported_interfaces[0].url == f"https://{agent.endpoint}"
        async with grpc.aio.insecure_channel(agent.endpoint) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await hub.connections.is_up(hub.registry.get("sealed").record)  # health checks speak TLS
        async with HubClient(hub.address, key=tls_hub.keys["bob"]) as client:
            task = await client.send("sealed", "over TLS both ways")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "over TLS both ways"


async def whoami(hub: TlsHub, client: DevCerts | None, key: str | None = None) -> tr.Principal:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with grpc.aio.secure_channel(hub.hub.address, hub.credentials(client)) as channel:
        reply: tr.Principal = await trust_pb2_grpc.TrustServiceStub(channel).WhoAmI(
            tr.WhoAmIRequest(), metadata=metadata, timeout=30
        )
    return reply


async def test_a_client_certificate_is_its_principal_and_a_bearer_credential_wins(
    mtls_hub: TlsHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = mtls_hub.certs
    me = await whoami(mtls_hub, certs)
    assert (me.name, me.role, me.method) == ("dev-client", "user", "mtls")
    ops = make_dev_certs(certs.ca.parent, client="ops-7")  # the same CA, one more client
    me = await whoami(mtls_hub, ops)
    assert (me.name, me.role, me.method) == ("ops-7", "operator", "mtls")
    unlisted = make_dev_certs(certs.ca.parent, client="mallory")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await whoami(mtls_hub, unlisted)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    me = await whoami(mtls_hub, certs, key=mtls_hub.keys["bob"])
    assert (me.name, me.method) == ("bob", "key")
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # no client certificate: no connection
        await whoami(mtls_hub, None, key=mtls_hub.keys["bob"])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = make_dev_certs(tmp_path / "other-ca")  # a certificate the hub's CA did not sign
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await whoami(mtls_hub, stranger)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    monkeypatch.setenv("AGENTHUB_KEY_FILE", str(tmp_path / "none"))  # no key at all: the certificate alone
    tls = ClientTls(True, certs.ca, certs.client_cert, certs.client_key)
    async with HubClient(mtls_hub.hub.address, tls=tls) as client:
        assert client.key is None
        # The calculator registered with its own certificate (no key) and serves a certified user.
        assert [a.name for a in await client.list_agents()] == ["calculator"]
        task = await client.send("calculator", "What is 2 + 3?")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_COMPLETED
        thread = await client.get_thread(task.context_id)
    assert "user:dev-client" in {m.sender for m in thread.messages}
    me = await whoami(mtls_hub, make_dev_certs(certs.ca.parent, client="calculator"))
    assert (me.name, me.role, me.agent, me.method) == ("calculator", "agent", "calculator", "mtls")
    url = f"{mtls_hub.hub.http_url}/agents/calculator/.well-known/agent-card.json"
    async with mtls_hub.https(certs) as http:
        card = (await http.get(url)).json()
    assert "agenthub-mtls" in card["securitySchemes"]
    async with mtls_hub.https() as http:
        with pytest.raises(httpx.TransportError):  # HTTPS without a client certificate
            await http.get(url)


async def test_certs_dev_writes_a_ca_server_and_client_certificate(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    code, out, err = await agenthub(
        "certs", "dev", "--dir", str(folder), "--host", "hub.example", "--client", "alice", "--json"
    )
    assert code == 0, err
    made = json.loads(out)
    ca = check_written(made)
    assert Path(made["client_cert"]).name == "client-alice.pem" and "hub.example" in made["hosts"]
    code, out, err = await agenthub("certs", "dev", "--dir", str(folder))
    assert code == 0, err
    assert f"--tls-cert {folder / 'server.pem'}" in out and f"AGENTHUB_TLS_CA={folder / 'ca.pem'}" in out
    assert check_written(made) == ca  # the CA in the folder was reused


def check_written(made: dict[str, str]) -> bytes:
    """Every file `certs dev` names exists, private keys readable by their owner only; the CA."""
    for name in ("ca", "server_cert", "server_key", "client_cert", "client_key"):
        assert Path(made[name]).is_file(), name
        assert not name.endswith("key") or Path(made[name]).stat().st_mode & 0o077 == 0, name
    return Path(made["ca"]).read_bytes()


async def test_serve_refuses_half_a_tls_configuration_in_one_line(tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    for args in (["--tls-cert", str(certs.server_cert)], ["--tls-client-ca", str(certs.ca)]):
        code, _, err = await agenthub(
            "serve", "--port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "hub"), *args
        )
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "--tls-cert" in err and "--tls-key" in err


async def test_a_client_certificate_is_its_principal_on_the_http_bindings_too(mtls_hub: TlsHub) -> None:
    """HTTPS with a verified client certificate and no bearer: the certificate's CN is the caller
    on HTTP+JSON and JSON-RPC as on gRPC (recorded as `user:<CN>`), an unlisted CN is refused, and
    a bearer still wins over the certificate."""
    certs, base = mtls_hub.certs, f"{mtls_hub.hub.http_url}/agents/calculator"
    body = {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "2 + 2"}]}}
    v1 = {"A2A-Version": "1.0"}
    async with mtls_hub.https(certs) as http:
        rest = await http.post(f"{base}/message:send", json=body, headers=v1)
        assert rest.status_code == 200, rest.text
        rpc = await http.post(f"{base}/", headers=v1, json={
            "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {**body, "message": {**body["message"], "messageId": str(uuid.uuid4())}},
        })  # fmt: skip
        assert "result" in rpc.json(), rpc.text
        bearer = await http.post(
            f"{base}/message:send", headers={**v1, "authorization": f"Bearer {mtls_hub.keys['bob']}"},
            json={"message": {**body["message"], "messageId": str(uuid.uuid4())}},
        )  # fmt: skip
    task, other = rest.json()["task"], bearer.json()["task"]
    async with HubClient(
        mtls_hub.hub.address,
        key=mtls_hub.keys["admin"],
        tls=ClientTls(True, certs.ca, certs.client_cert, certs.client_key),
    ) as admin:
        senders = {m.sender for m in (await admin.get_thread(task["contextId"])).messages}
        assert "user:dev-client" in senders
        senders = {m.sender for m in (await admin.get_thread(other["contextId"])).messages}
        assert "user:bob" in senders and "user:dev-client" not in senders
    async with mtls_hub.https(make_dev_certs(certs.ca.parent, client="mallory")) as http:
        refused = await http.post(f"{base}/message:send", json=body, headers=v1)
    assert refused.status_code == 401
