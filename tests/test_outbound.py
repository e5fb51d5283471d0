"""Outbound safety and push secrets: card fetches and webhooks reach only what the outbound policy
allows (loopback, link-local, metadata, private and reserved addresses refused unless configured;
redirects re-checked; responses capped; failures that do not tell a closed port from an open one),
and push credentials are sealed in the log, masked on reads, and still work after a restart.

Every server here is real and on loopback: a hub whose policy refuses loopback stands in for a hub
on a shared network, whose agents and webhooks are somewhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from a2a.types import (
    AuthenticationInfo,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    TaskPushNotificationConfig,
    TaskState,
    a2a_pb2_grpc,
)
from cryptography.fernet import Fernet
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agenthub.agents import calculator
from agenthub.hub import envelopes
from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import TopicPartition
from agenthub.hub.outbound import REFUSED, OutboundPolicy, classify
from agenthub.hub.push.notifier import MASK
from agenthub.hub.secret_box import KEY_FILE, SecretBox, Unsealable, is_sealed, load_or_create_key
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient
from agenthub.sdk.errors import ConfigError, HubUnavailable, InvalidRequest
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually
from tests.plain_agent import card as plain_card
from tests.scripted import calculator_model
from tests.serving import bound, port_of, serving
from tests.test_push import attempts, held_agent, restartable, send_with_push, submit, webhook

EMBEDDED = pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
BOTH_LOGS = pytest.mark.parametrize(
    ("backend", "threads_url"), [("embedded", "sqlite"), ("kafka", "sqlite")], indirect=True
)
NO_LOOPBACK = {"outbound_loopback": "refuse"}

# ---- the address classifier and the policy -------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
    ],
)
def test_addresses_are_classified(address: str, kind: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


def policy(**settings: object) -> OutboundPolicy:
    return OutboundPolicy.from_settings(HubSettings(**settings))  # type: ignore[arg-type]


def test_the_policy_allows_what_is_configured_and_never_metadata_by_a_range() -> None:
    strict = policy(host="0.0.0.0")
    ip = ipaddress.ip_address
    assert strict.refusal("h", ip("93.184.215.14")) is None
    assert strict.refusal("h", ip("10.1.2.3")) == "private"
    assert strict.refusal("localhost", ip("127.0.0.1")) == "loopback"  # a hub on the network

    allowing = policy(host="0.0.0.0", outbound_allow="10.0.0.0/8, 169.254.0.0/16, hooks.corp, *.svc.corp")
    assert allowing.refusal("h", ip("10.1.2.3")) is None
    assert allowing.refusal("h", ip("::ffff:10.1.2.3")) is None
    assert allowing.refusal("h", ip("169.254.1.1")) is None
    assert allowing.refusal("h", ip("169.254.169.254")) == "metadata"  # a range does not open it
    assert allowing.refusal("h", ip("192.168.1.1")) == "private"
    assert allowing.refusal("hooks.corp", ip("192.168.1.1")) is None
    assert allowing.refusal("a.b.svc.corp", ip("192.168.1.1")) is None
    assert allowing.refusal("svc.corp.evil", ip("192.168.1.1")) == "private"
    assert allowing.refusal("hooks.corp", ip("169.254.169.254")) == "metadata"  # nor does a name
    assert policy(outbound_allow="169.254.169.254/32").refusal("h", ip("169.254.169.254")) is None


@pytest.mark.parametrize(
    ("settings", "loopback"),
    [
        ({}, True),  # `agenthub up` and a default `serve`: bound to 127.0.0.1
        ({"host": "localhost"}, True),
        ({"host": "::1"}, True),
        ({"host": "0.0.0.0"}, False),  # a hub on the network
        ({"host": "10.0.0.5"}, False),
        ({"host": "0.0.0.0", "outbound_loopback": "allow"}, True),
        ({"outbound_loopback": "refuse"}, False),
    ],
)
def test_loopback_is_allowed_only_for_a_hub_on_loopback_unless_configured(
    settings: dict[str, object], loopback: bool
) -> None:
    assert policy(**settings).loopback is loopback


def test_allow_entries_are_checked_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="neither a CIDR nor a host name"):
        HubSettings(outbound_allow="10.0.0.0/8,not a host!")
    monkeypatch.setenv("AGENTHUB_OUTBOUND_ALLOW", "10.0.0.0/8,fd00::/8,hooks.corp")
    assert HubSettings().outbound_allow == ["10.0.0.0/8", "fd00::/8", "hooks.corp"]


def test_the_generated_key_is_private_and_stable_and_seals(tmp_path: Path) -> None:
    path = tmp_path / "data" / KEY_FILE
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary file left

    box = SecretBox(key)
    sealed = box.seal(b"token-abc")
    assert is_sealed(sealed) and b"token-abc" not in sealed
    assert box.open(sealed) == b"token-abc"
    assert box.open(b"\x0a\x03old") == b"\x0a\x03old"  # a record from before sealing reads as it is
    with pytest.raises(Unsealable):
        SecretBox(load_or_create_key(tmp_path / "other" / KEY_FILE)).open(sealed)
    with pytest.raises(ConfigError, match="Fernet key"):
        SecretBox(b"not a key")


# ---- card fetches ---------------------------------------------------------------------------


class Site:
    """A real HTTP server on loopback answering with `respond`; counts the requests it got."""

    def __init__(self, respond: Callable[[Request], Response]) -> None:
        self.socket = bound()
        self.port = port_of(self.socket)
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Request] = []
        self._respond = respond

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return self._respond(request)


@contextlib.asynccontextmanager
async def site(respond: Callable[[Site, Request], Response]) -> AsyncIterator[Site]:
    """Serve `respond(site, request)` for every GET on a free loopback port."""
    served = Site(lambda request: respond(served, request))
    app = Starlette(routes=[Route("/{path:path}", served.handle)])
    async with serving(app, served.socket):
        yield served


def card_json(base: str, interface: str | None = None) -> dict:
    """The plain agent's card served at `base`, its JSON-RPC interface at `interface` if given."""
    card = MessageToDict(plain_card(base, ("JSONRPC",)))
    if interface is not None:
        card["supportedInterfaces"][0]["url"] = interface
    return card


async def refused_registration(client: HubClient, url: str) -> str:
    """Register `url`, which must be refused by the outbound policy as INVALID_ARGUMENT; the message."""
    with pytest.raises(InvalidRequest) as caught:
        await client.register_url(url)
    message = str(caught.value)
    assert REFUSED in message, message
    assert not await client.list_agents()
    return message


@EMBEDDED
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1:8080",
        "http://192.168.1.20/agent",
        "http://169.254.10.10/",
        "http://[fe80::1]:8080/",
        "http://0.0.0.0:8080/",
        "http://2852039166/",  # 169.254.169.254 written as one number
    ],
)
async def test_registering_a_refused_address_is_refused(hub: Hub, client: HubClient, url: str) -> None:
    message = await refused_registration(client, url)
    assert "cannot fetch" not in message


@EMBEDDED
async def test_the_refusal_is_invalid_argument_on_the_wire(hub: Hub, client: HubClient) -> None:
    from agenthub.sdk.pb import registry_pb2, registry_pb2_grpc

    stub = registry_pb2_grpc.RegistryServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterAgent(registry_pb2.RegisterAgentRequest(url="http://169.254.169.254/"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert REFUSED in str(caught.value.details())


@EMBEDDED
async def test_loopback_by_address_or_by_name_is_refused_when_not_allowed(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A hub on a shared network (loopback refused): an agent on its loopback is not fetched, whether
    named by address or by a host name resolving to it; the server gets no request at all."""
    async with (
        site(lambda s, _: JSONResponse(card_json(s.url))) as agent,
        Hub(hub_settings(tmp_path / "hub", **NO_LOOPBACK)) as hub,
        HubClient(hub.address) as client,
    ):
        await refused_registration(client, agent.url)
        await refused_registration(client, f"http://localhost:{agent.port}")
        await refused_registration(client, f"http://[::ffff:127.0.0.1]:{agent.port}")
        assert agent.requests == []


@EMBEDDED
async def test_a_redirect_to_a_refused_address_is_not_followed(hub: Hub, client: HubClient) -> None:
    """The agent's server (allowed) redirects the card fetch to the metadata service: refused."""

    def redirect(_: Site, request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/iam/", status_code=302)

    async with site(redirect) as agent:
        await refused_registration(client, agent.url)
        assert len(agent.requests) == 1


@EMBEDDED
async def test_a_redirect_to_an_allowed_address_is_followed(hub: Hub, client: HubClient) -> None:
    async with (
        site(lambda s, _: JSONResponse(card_json(s.url))) as target,
        site(lambda _, r: RedirectResponse(f"{target.url}{r.url.path}", status_code=307)) as hop,
    ):
        record = await client.register_url(hop.url)
        assert record.name == "plain" and len(target.requests) == 1


@EMBEDDED
async def test_a_card_interface_on_a_refused_address_is_refused(hub: Hub, client: HubClient) -> None:
    """The card is fetched from an allowed server, but names the metadata service as the address
    the hub would send messages to."""
    async with site(lambda s, _: JSONResponse(card_json(s.url, "http://169.254.169.254/"))) as agent:
        message = await refused_registration(client, agent.url)
        assert "JSONRPC interface" in message


@EMBEDDED
async def test_an_oversized_card_is_not_read(hub: Hub, client: HubClient) -> None:
    def huge(s: Site, _: Request) -> Response:
        card = card_json(s.url)
        card["description"] = "x" * 2_000_000
        return JSONResponse(card)

    async with site(huge) as agent:
        with pytest.raises(InvalidRequest, match="over 1048576 bytes"):
            await client.register_url(agent.url)
        assert not await client.list_agents()


@contextlib.asynccontextmanager
async def tcp_server(answer: bytes | None) -> AsyncIterator[int]:
    """A TCP server on a free loopback port that writes `answer` and hangs up, or with None says
    nothing and keeps the connection open (as a port that swallows packets makes a client wait)."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer is None:
            held.append(writer)
            return
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@EMBEDDED
async def test_a_failed_fetch_does_not_tell_a_closed_port_from_an_open_or_silent_one(
    hub: Hub, client: HubClient
) -> None:
    """A closed port, a port that answers something that is not HTTP, and a port that never answers
    give one and the same error, bar the URL."""

    async def error_of(port: int) -> str:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(HubUnavailable) as caught:  # UNAVAILABLE, as the client maps it
            await client.register_url(url)
        return str(caught.value).replace(url, "URL")

    async with tcp_server(b"SSH-2.0-OpenSSH_9.6\r\n") as ssh, tcp_server(None) as silent:
        errors = {await error_of(free_port()), await error_of(ssh), await error_of(silent)}
    assert errors == {"cannot fetch the agent card at URL/.well-known/agent-card.json"}


# ---- push webhooks --------------------------------------------------------------------------


@EMBEDDED
@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/hook", "http://10.0.0.1/hook", "http://[fe80::1]/hook"]
)
async def test_a_webhook_on_a_refused_address_is_refused_when_configured(
    hub: Hub, client: HubClient, url: str
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    async with calculator.build(hub=hub.address, model=calculator_model()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(send_with_push("calculator", "1 + 1", url))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"pushNotificationConfig.url is {REFUSED}" in str(caught.value.details())

        task = (await stub.SendMessage(send_with_push("calculator", "1 + 2", "http://93.184.215.14/x"))).task
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTaskPushNotificationConfig(
                TaskPushNotificationConfig(tenant="calculator", task_id=task.id, url=url)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def event_ids(hub: Hub, task_id: str, since: dict[int, int]) -> set[str]:
    """The ids of the task's updates in the hub's reply topic from offsets `since` (what its webhooks
    are sent)."""
    topic = hub.replies.topic
    found: set[str] = set()
    for partition in await hub.log.end_offsets(topic):
        for record in await hub.log.read(TopicPartition(topic, partition), since.get(partition, 0), 10_000):
            envelope = envelopes.decode(record)
            if envelope.task_id == task_id and envelope.kind == Kind.KIND_EVENT:
                found.add(envelope.id)
    return found


@EMBEDDED
async def test_a_webhook_on_a_refused_address_is_never_called(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A config that got into the push topic before the policy refused its address (written by an
    older hub, as plain text): every update is given up at once, recorded as refused, and the
    webhook, alive on loopback, is never called."""
    settings = hub_settings(tmp_path / "hub", push_attempts=3, push_backoff_s=0.05, **NO_LOOPBACK)
    async with (
        webhook() as hook,
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        held_agent(hub) as gate,
    ):
        task = await submit(client, "held", "wait")
        old = TaskPushNotificationConfig(task_id=task.id, id="old", url=hook.url, token="t0ken")
        await hub.log.produce(Topics(settings.topic_prefix).push, old.SerializeToString(),
                              key=f"{task.id}/old".encode())  # fmt: skip
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        listing = ListTaskPushNotificationConfigsRequest(tenant="held", task_id=task.id)

        async def listed() -> list[TaskPushNotificationConfig]:
            return list((await stub.ListTaskPushNotificationConfigs(listing)).configs)

        (config,) = await eventually(listed)  # the plain record loads, and is shown masked
        assert (config.url, config.token) == (hook.url, MASK)
        since = await hub.log.end_offsets(hub.replies.topic)  # updates from here on meet the config
        gate.set()

        async def completed() -> bool:
            return (await client.get_task("held", task.id)).status.state == TaskState.TASK_STATE_COMPLETED

        assert await eventually(completed, timeout=30)

        async def every_update_given_up() -> list[dict]:
            expected = await event_ids(hub, task.id, since)
            tried = await attempts(hub, task.id)
            return tried if expected and {a["event_id"] for a in tried} >= expected else []

        tried = await eventually(every_update_given_up, timeout=30)
        assert all(a["attempt"] == 1 and a["gave_up"] and a["status"] == 0 for a in tried)
        assert {a["error"] for a in tried} == {REFUSED}
        assert hook.received == []


async def raw_values(hub: Hub) -> list[bytes]:
    """Every record value (and key) of every topic of the hub's prefix, as stored."""
    prefix = f"{hub.settings.topic_prefix}."
    out: list[bytes] = []
    for topic, partitions in (await hub.log.list_topics()).items():
        if not topic.startswith(prefix):
            continue
        for partition in range(partitions):
            for record in await hub.log.read(TopicPartition(topic, partition), 0, 100_000):
                out += [record.value or b"", record.key or b""]
    return out


@BOTH_LOGS
async def test_push_credentials_are_sealed_masked_and_work_after_a_restart(
    tmp_path: Path, hub_settings: Callable[..., HubSettings], capfd: pytest.CaptureFixture[str]
) -> None:
    """No token or credential in plain text in any topic of the hub (raw records) nor in a log line,
    and the push topic holds the configs sealed (URL too); reads show them masked; the hub, restarted
    with the key it generated into its data dir, sends the right Authorization header and token."""
    token, credentials = f"tok-{uuid.uuid4().hex}", f"cred-{uuid.uuid4().hex}"
    down = bound()
    url = f"http://127.0.0.1:{port_of(down)}/hook"
    settings = restartable(hub_settings, tmp_path, secret_key=None, push_attempts=1000, push_backoff_s=0.05)
    config = TaskPushNotificationConfig(
        url=url, token=token, authentication=AuthenticationInfo(scheme="Bearer", credentials=credentials)
    )
    async with (
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        calculator.build(hub=hub.address, model=calculator_model()),
    ):
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        request = send_with_push("calculator", "5 + 5", url)  # the webhook is down: updates wait
        request.configuration.task_push_notification_config.CopyFrom(config)
        task = (await stub.SendMessage(request)).task
        created = await stub.CreateTaskPushNotificationConfig(
            TaskPushNotificationConfig(tenant="calculator", task_id=task.id, id="second", url=url,
                                       token=token, authentication=config.authentication)
        )  # fmt: skip
        listing = ListTaskPushNotificationConfigsRequest(tenant="calculator", task_id=task.id)
        shown = [*(await stub.ListTaskPushNotificationConfigs(listing)).configs, created]
        shown.append(
            await stub.GetTaskPushNotificationConfig(
                GetTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id="second")
            )
        )
        for seen in shown:
            assert (seen.url, seen.token, seen.authentication.scheme) == (url, MASK, "Bearer")
            assert seen.authentication.credentials == MASK

        async def retrying() -> bool:
            return any(a["attempt"] >= 2 for a in await attempts(hub, task.id))

        assert await eventually(retrying, timeout=30)
        values = await raw_values(hub)
        for secret in (token, credentials):
            assert not [v for v in values if secret.encode() in v], f"{secret} in a topic"
        push_topic = TopicPartition(Topics(settings.topic_prefix).push, 0)
        stored = [r.value for r in await hub.log.read(push_topic, 0, 100)]
        assert len(stored) == 2 and all(is_sealed(v) and url.encode() not in v for v in stored)

    key_file = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    async with webhook(down) as hook, Hub(settings):
        await hook.completed(task.id)
        assert {(h["authorization"], h["x-a2a-notification-token"]) for h, _ in hook.received} == {
            (f"Bearer {credentials}", token)
        }
    logged = capfd.readouterr()
    assert token not in logged.out + logged.err and credentials not in logged.out + logged.err


@EMBEDDED
async def test_configs_sealed_with_another_key_are_skipped(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A hub given another key than the one that sealed a config cannot read it: it neither lists
    nor sends it (the fix is one `secret_key` for every instance, as the README says)."""
    settings = restartable(hub_settings, tmp_path)
    async with Hub(settings) as hub, HubClient(hub.address) as client, held_agent(hub):
        task = await submit(client, "held", "wait")
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        await stub.CreateTaskPushNotificationConfig(
            TaskPushNotificationConfig(tenant="held", task_id=task.id, url="http://127.0.0.1:9/x", token="t")
        )
    other = settings.model_copy(update={"secret_key": Fernet.generate_key().decode()})
    async with Hub(other) as hub, HubClient(hub.address) as client:
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        listing = ListTaskPushNotificationConfigsRequest(tenant="held", task_id=task.id)
        assert list((await stub.ListTaskPushNotificationConfigs(listing)).configs) == []
        assert hub.push.for_delivery(task.id) == []
