"""The hub's HTTP head: every agent's card and its A2A JSON-RPC and HTTP+JSON bindings (with SSE
streaming) under /agents/<name>/, plus an agent listing and liveness.

The bindings are a2a-sdk's routes over the hub's one `RequestHandler`, so they behave exactly like
the gRPC head; the agent named in the URL plays the part of gRPC's `tenant`. Around them, this module
only guards the door: bodies are capped while they stream in (chunked ones included), a body that
is not JSON by its declared media type or not UTF-8 is refused with the binding's own error, every
error carries the codes of the one table in `agenthub.sdk.errors`, and HTTP+JSON answers are
labelled `application/a2a+json`, the media type A2A registers for its JSON payloads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import JSONRPCError
from a2a.server.request_handlers import RequestHandler
from a2a.server.request_handlers.response_helpers import EXCEPTION_MAP, build_error_response
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.utils.constants import A2A_JSON_MEDIA_TYPE
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    A2A_ERROR_MAPPING,
    A2A_ERROR_REASONS,
    JSON_RPC_ERROR_CODE_MAP,
    A2AError,
    ContentTypeNotSupportedError,
    ErrorMapping,
    InvalidRequestError,
    JSONParseError,
)
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agenthub.hub.heads.cards import CardPublisher, etag
from agenthub.hub.heads.front import PATH_AGENT
from agenthub.hub.heads.guard import GuardedHandler
from agenthub.hub.heads.http_gate import HttpGate
from agenthub.hub.routing.registry import Registry
from agenthub.hub.trust.gate import Gate
from agenthub.sdk.errors import STATUS

CARD_MAX_AGE_S = 60
JSON_MEDIA_TYPES = frozenset({"application/json", A2A_JSON_MEDIA_TYPE})
Endpoint = Callable[[Request], Awaitable[Response]]


class PathAgentContextBuilder(DefaultServerCallContextBuilder):
    """Call contexts that carry the agent named by the URL (/agents/<name>/...)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[PATH_AGENT] = request.path_params.get("name", "")
        return context


def teach_a2a_our_errors() -> None:
    """a2a-sdk's JSON-RPC and REST heads look errors up by exact class in their own tables: give
    them every class of `agenthub.sdk.errors.STATUS`, the one table (AgentHub's own errors, and
    A2A's with the specification's codes where a2a-sdk's differ)."""
    for cls, status in STATUS.items():
        if not issubclass(cls, A2AError):
            continue
        A2A_ERROR_MAPPING[cls] = ErrorMapping(status.http, status.grpc.name, status.reason)
        A2A_ERROR_REASONS[cls] = status.reason
        JSON_RPC_ERROR_CODE_MAP[cls] = status.jsonrpc
        EXCEPTION_MAP[cls] = JSONRPCError


class BodyLimit:
    """Reads each request body whole before the app sees it, refusing (413) one that declares or
    turns out to be larger than the hub accepts: at most `limit` bytes are ever held, whether the
    body comes with a Content-Length or chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self._limit:
            await self._too_large(int(length), scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await self._too_large(size, scope, receive, send, at_least=True)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        await self._app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(
        self, size: int, scope: Scope, receive: Receive, send: Send, *, at_least: bool = False
    ) -> None:
        size_text = f"over {size}" if at_least else str(size)
        message = f"request body is {size_text} bytes; this hub accepts at most {self._limit}"
        await _problem(413, "INVALID_ARGUMENT", message)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the client as usual."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _unacceptable_body(request: Request, body: bytes) -> A2AError | None:
    """Why a request body cannot be read as A2A JSON: its declared media type, or its encoding."""
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and declared and declared not in JSON_MEDIA_TYPES:
        accepted = " or ".join(sorted(JSON_MEDIA_TYPES))
        return ContentTypeNotSupportedError(f"content type {declared!r} is not supported: send {accepted}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JSONParseError(f"the request body is not UTF-8 (invalid byte at position {exc.start})")
    return None


def _not_an_object(body: bytes) -> A2AError | None:
    """A body that cannot be a JSON object cannot be an HTTP+JSON request (protobuf's parser would
    name a Python exception for JSON that is not an object; malformed objects are left to it, its
    message says where they broke). Looks at the first character only: bodies are parsed once."""
    text = body.lstrip()
    if not text or text.startswith(b"{"):
        return None
    return InvalidRequestError("the request body must be a JSON object ({...})")


def jsonrpc_guarded(endpoint: Endpoint) -> Endpoint:
    """The JSON-RPC endpoint behind the body checks: a refused body is a JSON-RPC error (HTTP 200)."""

    async def guarded(request: Request) -> Response:
        problem = _unacceptable_body(request, await request.body())
        if problem is not None:
            return JSONResponse(build_error_response(None, problem))
        return await endpoint(request)

    return guarded


def rest_guarded(endpoint: Endpoint) -> Endpoint:
    """An HTTP+JSON endpoint behind the body checks (415 / 400), its JSON answers as A2A JSON."""

    async def guarded(request: Request) -> Response:
        body = await request.body()
        problem = _unacceptable_body(request, body) or _not_an_object(body)
        if problem is not None:
            payload = build_rest_error_payload(problem)
            response: Response = JSONResponse(payload, status_code=payload["error"]["code"])
        else:
            response = await endpoint(request)
        if response.headers.get("content-type", "").startswith("application/json"):
            response.headers["content-type"] = A2A_JSON_MEDIA_TYPE
        if response.status_code == 429:
            response.headers["Retry-After"] = "1"
        return response

    return guarded


def _guarded(routes: Sequence[BaseRoute], guard: Callable[[Endpoint], Endpoint]) -> list[BaseRoute]:
    return [
        Route(r.path, guard(r.endpoint), methods=r.methods)
        for r in routes
        if isinstance(r, Route)  # a2a-sdk's /{tenant} mount is left out: the URL names the agent
    ]


def http_app(
    handler: RequestHandler,
    registry: Registry,
    cards: CardPublisher,
    gate: Gate,
    *,
    max_body: int,
    origins: list[str],
) -> Starlette:
    """The Starlette app of the hub's HTTP head; bodies over `max_body` bytes are refused with 413,
    callers authenticated by the gate, browsers from other than `origins` refused."""
    teach_a2a_our_errors()
    builder = PathAgentContextBuilder()
    handler = GuardedHandler(handler)

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
        *_guarded(create_jsonrpc_routes(handler, rpc_url="/", context_builder=builder), jsonrpc_guarded),
        *_guarded(create_rest_routes(handler, context_builder=builder), rest_guarded),
    ]
    return Starlette(
        routes=[
            Mount("/agents/{name}", routes=per_agent),
            Route("/agents", agents),
            Route("/healthz", healthz),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type", "a2a-version"],
            ),
            Middleware(HttpGate, gate=gate, origins=origins),
            Middleware(BodyLimit, limit=max_body),
        ],
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
