"""A plain a2a-sdk agent (tests/plain_agent.py's echo, gRPC binding) whose gRPC port can be made to
answer UNAVAILABLE, the status of an agent that is not there, without leaving its port or
registering again: what a hub sees of an agent that goes down and comes back on the same endpoint.
Its health checks are refused too while it is down, so a circuit breaker's probe finds it down.
It can also leave its port altogether and come back on it (`leave()`, `come_back()`): what a hub
sees of an agent process that is killed and started again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc
from starlette.applications import Starlette

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import HubClient
from tests.plain_agent import PlainEcho, card
from tests.serving import bound, port_of, serving


class Outage(grpc.aio.ServerInterceptor):
    """Refuses calls with UNAVAILABLE: every call while `down`, and the next `refuse_next`
    message calls (health checks are refused while any of those is left). Counts message calls."""

    def __init__(self) -> None:
        self.down = False
        self.refuse_next = 0
        self.refused = 0  # message calls answered UNAVAILABLE
        self.served = 0  # message calls let through to the agent

    def _refusing(self, method: str) -> bool:
        if self.down:
            return True
        if not method.endswith("/SendStreamingMessage") and not method.endswith("/SendMessage"):
            return self.refuse_next > 0
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return True
        return False

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        method = details.method
        message_call = method.endswith("/SendStreamingMessage") or method.endswith("/SendMessage")
        if not self._refusing(method):
            self.served += message_call
            return await continuation(details)
        self.refused += message_call

        async def refuse(request, context):  # type: ignore[no-untyped-def]
            await context.abort(grpc.StatusCode.UNAVAILABLE, "agent not there")

        if method.endswith("/SendStreamingMessage"):
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


class Peers(grpc.aio.ServerInterceptor):
    """Records where each call it lets through came from: (method name, the caller's address)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        name = details.method.rsplit("/", 1)[-1]
        if handler is None:
            return None
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def answer(request, context):  # type: ignore[no-untyped-def]
                self.calls.append((name, context.peer()))
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                answer, handler.request_deserializer, handler.response_serializer
            )
        streaming = handler.unary_stream

        async def stream(request, context):  # type: ignore[no-untyped-def]
            self.calls.append((name, context.peer()))
            async for item in streaming(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )


@dataclass
class Switchable:
    base: str  # where its card is served (register it with `register_url(base)`)
    outage: Outage
    peers: Peers
    _serve: Callable[[], Awaitable[grpc.aio.Server]]
    _server: grpc.aio.Server | None

    async def leave(self) -> None:
        """Stop serving gRPC: its port refuses connections, as a killed process's does."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def come_back(self) -> None:
        """Serve gRPC on the same port again, as a restarted process does."""
        if self._server is None:
            self._server = await self._serve()


@contextlib.asynccontextmanager
async def serve_switchable_agent(name: str = "switchable") -> AsyncIterator[Switchable]:
    """The echo agent on its gRPC binding (the card served over HTTP), up until told otherwise."""
    sock = bound()
    base = f"http://127.0.0.1:{port_of(sock)}"
    grpc_address = f"127.0.0.1:{free_port()}"
    agent_card = card(base, ("GRPC",), grpc_address)
    agent_card.name = name
    handler = DefaultRequestHandler(PlainEcho(), InMemoryTaskStore(), agent_card)
    outage, peers = Outage(), Peers()

    async def serve() -> grpc.aio.Server:
        grpc_server = grpc.aio.server(interceptors=[outage, peers])
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpc_server)
        grpc_server.add_insecure_port(grpc_address)
        await grpc_server.start()
        return grpc_server

    agent = Switchable(base, outage, peers, serve, await serve())
    try:
        async with serving(Starlette(routes=create_agent_card_routes(agent_card)), sock):
            yield agent
    finally:
        await agent.leave()


@dataclass
class Running:
    """A hub with the switchable agent registered, and a client of the hub."""

    hub: Hub
    agent: Switchable
    client: HubClient
    endpoint: str  # where the hub reaches the agent


@contextlib.asynccontextmanager
async def hub_with_switchable_agent(settings: HubSettings) -> AsyncIterator[Running]:
    """A hub on `settings`, the switchable agent registered with it by URL, and a client."""
    async with (
        Hub(settings) as hub,
        serve_switchable_agent() as agent,
        HubClient(hub.address) as client,
    ):
        record = await client.register_url(agent.base)
        yield Running(hub, agent, client, record.endpoint)
