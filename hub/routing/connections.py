"""How the hub reaches an agent: over its best A2A binding, the same way for every agent.

An SDK agent (and any agent whose card offers gRPC) is called with a raw gRPC stub, the fast path;
an agent that only speaks JSON-RPC or HTTP+JSON is called with a2a-sdk's client. Either way the
dispatcher sees one `Connection`: a stream of A2A events, and failures that say whether trying
again may help. Nothing here produces to the log.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import grpc
import httpx
from a2a.client import ClientCallContext, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.types import AgentCard, CancelTaskRequest, SendMessageRequest, StreamResponse, a2a_pb2_grpc
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError
from google.protobuf.json_format import Parse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.hub.log._base import Lifecycle
from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk.auth import resolve_tls
from agenthub.sdk.pb.registry_pb2 import AgentRecord

GRPC = TransportProtocol.GRPC.value
PREFERENCE = (GRPC, TransportProtocol.JSONRPC.value, TransportProtocol.HTTP_JSON.value)
TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
_TRANSIENT_HTTP = re.compile(r"Network communication error|HTTP Error (5\d\d|429)")
_UNREACHABLE_HTTP = re.compile(r"Network communication error|HTTP Error (502|503|504)")
Metadata = tuple[tuple[str, str], ...]
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


_CLASS_NAME = re.compile(r"(Unexpected )?<class '[\w.]+'>:?\s*")


def _without_class_names(details: str) -> str:
    """An agent's error text without the Python class names some servers put in it (a reason we
    record and show must not leak an agent's internals)."""
    return _CLASS_NAME.sub("", details).strip() or "the agent failed"


class AgentCallFailed(Exception):
    """A call to an agent failed; `transient` says whether another attempt may succeed, and
    `unreachable` whether the agent itself is not there (down, restarting), not this request."""

    def __init__(self, message: str, *, transient: bool, unreachable: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.unreachable = unreachable


class Connection(ABC):
    """One agent, reachable."""

    @abstractmethod
    def stream(
        self, request: SendMessageRequest, metadata: Metadata, timeout: float
    ) -> AsyncIterator[StreamResponse]:
        """The agent's events for one request (AgentCallFailed when the call fails)."""

    @abstractmethod
    async def cancel(self, task_id: str) -> None:
        """Ask the agent to cancel a task (best effort)."""


class GrpcConnection(Connection):
    """An agent's A2A gRPC service, called with a raw stub (no client machinery on the hot path)."""

    def __init__(self, channel: grpc.aio.Channel, tenant: str = "") -> None:
        self._stub = a2a_pb2_grpc.A2AServiceStub(channel)
        self._tenant = tenant

    async def stream(
        self, request: SendMessageRequest, metadata: Metadata, timeout: float
    ) -> AsyncIterator[StreamResponse]:
        request.tenant = self._tenant
        call = self._stub.SendStreamingMessage(request, metadata=metadata, timeout=timeout)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            message = f"{exc.code().name}: {_without_class_names(exc.details() or '')}"
            raise AgentCallFailed(
                message,
                transient=exc.code() in TRANSIENT_GRPC,
                unreachable=exc.code() == grpc.StatusCode.UNAVAILABLE,
            ) from None
        finally:
            call.cancel()

    async def cancel(self, task_id: str) -> None:
        try:
            await self._stub.CancelTask(CancelTaskRequest(id=task_id, tenant=self._tenant), timeout=2)
        except grpc.aio.AioRpcError:
            return  # best effort: the hub cancels its own call either way


class ClientConnection(Connection):
    """An agent reached over JSON-RPC or HTTP+JSON with a2a-sdk's client."""

    def __init__(self, card: AgentCard, binding: str, http: httpx.AsyncClient) -> None:
        config = ClientConfig(
            streaming=card.capabilities.streaming, supported_protocol_bindings=[binding],
            use_client_preference=True, httpx_client=http,
        )  # fmt: skip
        self._client = ClientFactory(config).create(card)

    async def stream(
        self, request: SendMessageRequest, metadata: Metadata, timeout: float
    ) -> AsyncIterator[StreamResponse]:
        context = ClientCallContext(service_parameters=dict(metadata))  # as HTTP headers
        try:
            async for event in self._client.send_message(request, context=context):
                yield event
        except A2AClientTimeoutError as exc:
            raise AgentCallFailed(f"timed out: {exc}", transient=True) from None
        except A2AClientError as exc:
            text = str(exc)
            raise AgentCallFailed(
                text,
                transient=bool(_TRANSIENT_HTTP.search(text)),
                unreachable=bool(_UNREACHABLE_HTTP.search(text)),
            ) from None
        except A2AError as exc:
            raise AgentCallFailed(f"{type(exc).__name__}: {exc}", transient=False) from None

    async def cancel(self, task_id: str) -> None:
        try:
            await self._client.cancel_task(CancelTaskRequest(id=task_id))
        except A2AError:
            return  # best effort, as over gRPC


class Connections(Lifecycle):
    """Shared channels and HTTP clients to every agent, by endpoint and binding (one set per hub:
    the dispatcher calls agents over them, the registry's health checks reuse them).

    Args:
        grace_s: how long a channel given up by `renew` may finish the calls still on it.
    """

    def __init__(self, grace_s: float = 300.0) -> None:
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}
        self._clients: dict[tuple[str, str, str], Connection] = {}
        self._http: httpx.AsyncClient | None = None
        self._grace_s = grace_s
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}  # closing, with grace

    async def stop(self) -> None:
        retired = list(self._retiring.values())
        await cancel_and_wait(*self._retiring)
        for channel in [*retired, *self._channels.values()]:
            await channel.close()  # at once: calls still on a retired channel end now
        self._channels.clear()
        self._clients.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def channel(self, endpoint: str, tls: bool = False) -> grpc.aio.Channel:
        if (endpoint, tls) not in self._channels:
            self._channels[endpoint, tls] = agent_channel(endpoint, tls)
        return self._channels[endpoint, tls]

    def http(self) -> httpx.AsyncClient:
        """The HTTP client shared by every JSON-RPC and HTTP+JSON agent (made on first use)."""
        if self._http is None:
            self._http = agent_http(httpx.Timeout(30.0, read=None))
        return self._http

    def renew(self, endpoint: str) -> None:
        """Reach `endpoint` on new channels from now on: its agent is back (its circuit closed).

        A channel that failed to connect waits longer and longer before it tries again (gRPC's
        reconnect backoff, up to two minutes) and fails every call meanwhile; a new one connects
        at once. The old channel closes once the calls still on it end (at most `grace_s`).
        """
        for channel_key in [k for k in self._channels if k[0] == endpoint]:
            channel = self._channels.pop(channel_key)
            retiring = asyncio.get_running_loop().create_task(channel.close(self._grace_s))
            self._retiring[retiring] = channel
            retiring.add_done_callback(self._retiring.pop)
        for client_key in [k for k in self._clients if k[0] == endpoint]:
            del self._clients[client_key]

    async def is_up(self, record: AgentRecord, timeout: float = 1.0) -> bool:
        """Whether the agent answers: gRPC health checks for gRPC agents, its card for the others.

        A health check goes over the replica's channel while that one is connected (no connection
        per check), else over a channel of its own, which connects at once: one still waiting to
        reconnect would say "down" for an agent that is back."""
        if (record.binding or GRPC) != GRPC:
            try:  # the shared client: a new one costs ~20 ms of CPU (its TLS context) per check
                return (await self.http().get(record.card_url, timeout=timeout)).status_code == 200
            except httpx.HTTPError:
                return False
        tls = serves_tls(Parse(record.card_json or "{}", AgentCard(), ignore_unknown_fields=True))
        shared = self._channels.get((record.endpoint, tls))
        if shared is not None and shared.get_state() == grpc.ChannelConnectivity.READY:
            return await _serving(shared, timeout)
        async with agent_channel(record.endpoint, tls) as channel:
            return await _serving(channel, timeout)

    def to(self, record: AgentRecord, card: AgentCard) -> Connection:
        """The connection to a registered agent, over the binding it was registered with (kept and
        reused: building a stub or client per call costs more than the call)."""
        binding = record.binding or GRPC
        key = (record.endpoint, binding, record.tenant)
        if key in self._clients:
            return self._clients[key]
        if binding == GRPC:
            channel = self.channel(record.endpoint, serves_tls(card))
            self._clients[key] = GrpcConnection(channel, record.tenant)
        else:
            self._clients[key] = ClientConnection(card, binding, self.http())
        return self._clients[key]


async def _serving(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Whether the agent on `channel` says it is serving (or answers at all)."""
    check = health_pb2_grpc.HealthStub(channel).Check
    try:
        reply = await check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        # An agent without the health service is still up if it answers at all.
        return exc.code() == grpc.StatusCode.UNIMPLEMENTED
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def serves_tls(card: AgentCard) -> bool:
    """Whether the agent's card says its gRPC interface takes TLS (an `https://` URL)."""
    return any(i.protocol_binding == GRPC and i.url.startswith("https://") for i in card.supported_interfaces)


def agent_channel(endpoint: str, tls: bool) -> grpc.aio.Channel:
    """A channel to an agent's gRPC port: over TLS verified as any AgentHub client verifies
    (`$AGENTHUB_TLS_CA`, else the system's roots; `$AGENTHUB_TLS_CLIENT_CERT`/`_KEY` for mTLS).

    Its connection is its own: gRPC otherwise shares one per address among all channels, with its
    reconnect backoff, so a health check on a new channel would fail while an old one waits."""
    if not tls:
        return grpc.aio.insecure_channel(endpoint, options=OWN_CONNECTION)
    return grpc.aio.secure_channel(endpoint, resolve_tls(True).credentials(), options=OWN_CONNECTION)


def agent_http(timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """An HTTP client for agents' JSON-RPC and HTTP+JSON interfaces (and their cards, for health):
    `https://` verified as `agent_channel` verifies, with `$AGENTHUB_TLS_CA` (else the system's
    roots), presenting `$AGENTHUB_TLS_CLIENT_CERT`/`_KEY` when set. (Fetching a card to register an
    agent is not this: it goes through the outbound policy, hub/outbound.py.)"""
    tls = resolve_tls(True)
    verify: ssl.SSLContext | bool = tls.ssl_context() if tls.ca or tls.cert or tls.key else True
    return httpx.AsyncClient(timeout=timeout, verify=verify)
