"""The hub's HTTP head: every agent's card and its A2A JSON-RPC and HTTP+JSON bindings (with SSE
streaming) under /agents/<name>/, plus an agent listing and liveness.

The bindings are a2a-sdk's routes over the hub's one `RequestHandler`, so they behave exactly like
the gRPC head; the agent named in the URL plays the part of gRPC's `tenant`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import JSONRPCError
from a2a.server.request_handlers import RequestHandler
from a2a.server.request_handlers.response_helpers import EXCEPTION_MAP
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.utils.errors import A2A_ERROR_MAPPING, A2A_ERROR_REASONS, JSON_RPC_ERROR_CODE_MAP, ErrorMapping
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agenthub.hub.cards import CardPublisher, etag
from agenthub.hub.front import PATH_AGENT
from agenthub.hub.registry import Registry
from agenthub.sdk.errors import AGENTHUB_ERRORS, STATUS

CARD_MAX_AGE_S = 60


class PathAgentContextBuilder(DefaultServerCallContextBuilder):
    """Call contexts that carry the agent named by the URL (/agents/<name>/...)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[PATH_AGENT] = request.path_params.get("name", "")
        return context


def teach_a2a_our_errors() -> None:
    """a2a-sdk's JSON-RPC and REST heads look errors up by exact class in their own tables: add
    AgentHub's classes with the codes from `agenthub.sdk.errors.STATUS`, the one table."""
    for cls in AGENTHUB_ERRORS:
        status = STATUS[cls]
        A2A_ERROR_MAPPING[cls] = ErrorMapping(status.http, status.grpc.name, status.reason)
        A2A_ERROR_REASONS[cls] = status.reason
        JSON_RPC_ERROR_CODE_MAP[cls] = status.jsonrpc
        EXCEPTION_MAP[cls] = JSONRPCError


class BodyLimit:
    """Refuses a request whose declared body is larger than the hub accepts, before reading it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self._limit:
                message = f"request body is {int(length)} bytes; this hub accepts at most {self._limit}"
                await _problem(413, "INVALID_ARGUMENT", message)(scope, receive, send)
                return
        await self._app(scope, receive, send)


def http_app(
    handler: RequestHandler, registry: Registry, cards: CardPublisher, *, max_body: int
) -> Starlette:
    """The Starlette app of the hub's HTTP head; bodies over `max_body` bytes are refused with 413."""
    teach_a2a_our_errors()
    builder = PathAgentContextBuilder()

    async def card(request: Request) -> Response:
        name = request.path_params["name"]
        agent = registry.find(name)
        if agent is None:
            return _problem(404, "NOT_FOUND", f"no agent named {name!r} is registered")
        published = cards.publish(agent.card)
        modified_s = agent.record.registered_at.ToSeconds()
        headers = {
            "ETag": etag(published),
            "Cache-Control": f"public, max-age={CARD_MAX_AGE_S}",
            "Last-Modified": format_datetime(datetime.fromtimestamp(modified_s, UTC), usegmt=True),
        }
        if _not_modified(request, headers["ETag"], modified_s):
            return Response(status_code=304, headers=headers)
        return JSONResponse(MessageToDict(published), headers=headers)

    async def agents(request: Request) -> Response:
        return JSONResponse(
            [
                {"name": a.name, "state": a.record.state, "url": cards.base_url(a.name)}
                for a in registry.list()
            ]
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    per_agent: list[BaseRoute] = [
        Route("/.well-known/agent-card.json", card, methods=["GET"]),
        *create_jsonrpc_routes(handler, rpc_url="/", context_builder=builder),
        *(r for r in create_rest_routes(handler, context_builder=builder) if not isinstance(r, Mount)),
    ]
    return Starlette(
        routes=[
            Mount("/agents/{name}", routes=per_agent),
            Route("/agents", agents),
            Route("/healthz", healthz),
        ],
        middleware=[Middleware(BodyLimit, limit=max_body)],
    )


def _not_modified(request: Request, tag: str, modified_s: int) -> bool:
    """RFC 9110 conditional GET: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        return tag in {t.strip() for t in if_none_match.split(",")} or if_none_match.strip() == "*"
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return modified_s <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def _problem(status: int, code: str, message: str) -> JSONResponse:
    """An error in the A2A HTTP+JSON binding's shape."""
    return JSONResponse({"error": {"code": status, "status": code, "message": message}}, status_code=status)
