"""A plain A2A agent written with a2a-sdk alone (no AgentHub code): it serves its card, JSON-RPC and
HTTP+JSON, and answers every message with "plain: <text>". Tests register it with a hub by URL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part, Role, a2a_pb2_grpc
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.serving import bound, port_of, serving


class PlainEcho(AgentExecutor):
    """Works, adds an artifact, completes: the usual shape of an a2a-sdk agent."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        answer = f"plain: {context.get_user_input()}"
        await updater.add_artifact([Part(text=answer)], name="answer")
        await updater.complete(
            new_text_message(answer, context_id=task.context_id, task_id=task.id, role=Role.ROLE_AGENT)
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


class RequireAuthorization(grpc.aio.ServerInterceptor):
    """Refuses every gRPC call that does not carry the expected Authorization value."""

    def __init__(self, expected: str) -> None:
        self._expected = expected

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if dict(details.invocation_metadata or ()).get("authorization") == self._expected:
            return await continuation(details)

        async def refuse(request, context):  # type: ignore[no-untyped-def]
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong credentials")

        return grpc.unary_stream_rpc_method_handler(refuse)


class HttpRequireAuthorization:
    """Refuses every HTTP request but the card's without the expected Authorization value."""

    def __init__(self, app, expected: str) -> None:  # type: ignore[no-untyped-def]
        self._app, self._expected = app, expected

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        headers = dict(scope.get("headers") or ())
        public = scope.get("path", "").endswith("agent-card.json")
        if (
            scope["type"] == "http"
            and not public
            and headers.get(b"authorization") != self._expected.encode()
        ):
            await JSONResponse({"error": "missing or wrong credentials"}, status_code=401)(
                scope, receive, send
            )
            return
        await self._app(scope, receive, send)


def card(base: str, bindings: tuple[str, ...], grpc_address: str = "") -> AgentCard:
    urls = {"JSONRPC": f"{base}/", "HTTP+JSON": base, "GRPC": grpc_address}
    interfaces = [AgentInterface(url=urls[b], protocol_binding=b, protocol_version="1.0") for b in bindings]
    return AgentCard(
        name="plain", description="An a2a-sdk agent that knows nothing of AgentHub.", version="1.0.0",
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(streaming=True), default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="Echoes", tags=["test"])],
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serve_plain_agent(
    bindings: tuple[str, ...] = ("JSONRPC", "HTTP+JSON"),
    executor: AgentExecutor | None = None,
    name: str = "plain",
    require_authorization: str = "",
) -> AsyncIterator[str]:
    """Serve the plain agent (card and HTTP bindings, plus gRPC when asked) on free loopback ports;
    yields its base URL. Another `executor` (and `name`) serves another plain a2a-sdk agent; with
    `require_authorization`, every call but the card must carry that Authorization value."""
    sock = bound()
    base = f"http://127.0.0.1:{port_of(sock)}"
    grpc_server = grpc.aio.server(
        interceptors=[RequireAuthorization(require_authorization)] if require_authorization else []
    )
    # bound now, on a port the kernel picks: a port picked for the test's own servers (a hub it
    # starts later, on a port chosen in advance) cannot be this one
    grpc_address = f"127.0.0.1:{grpc_server.add_insecure_port('127.0.0.1:0')}"
    agent_card = card(base, bindings, grpc_address)
    agent_card.name = name
    handler = DefaultRequestHandler(executor or PlainEcho(), InMemoryTaskStore(), agent_card)
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), grpc_server)
    if "GRPC" in bindings:
        await grpc_server.start()
    app = Starlette(
        routes=[
            *create_agent_card_routes(agent_card),
            *create_jsonrpc_routes(handler, rpc_url="/"),
            *create_rest_routes(handler),
            Route("/not-a-card.json", lambda _: JSONResponse({"hello": "world"})),
        ]
    )
    if require_authorization:
        app.add_middleware(HttpRequireAuthorization, expected=require_authorization)
    try:
        async with serving(app, sock):
            yield base
    finally:
        await grpc_server.stop(grace=None)
