"""The HTTP side of the gate: credentials become the call's principal, foreign web origins are
refused, and discovery (cards, the agent listing, liveness) stays public."""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agenthub.hub.tls import http_client_cn
from agenthub.hub.trust.gate import Gate
from agenthub.hub.trust.principal import CURRENT, SOURCE
from agenthub.sdk.errors import AgentHubError, Unauthenticated, status_of

PUBLIC = re.compile(r"^/(healthz|readyz|metrics|agents/?|agents/[^/]+/\.well-known/agent-card\.json)$")
JSONRPC = re.compile(r"^/agents/[^/]+/?$")


class HttpGate:
    """ASGI middleware: authenticates every non-public request and refuses cross-origin ones.

    A browser sends `Origin` on cross-origin requests; one not in `origins` is refused (403) before
    anything runs, so a web page cannot drive the hub from a user's browser, whatever its content
    type. Allowed origins get CORS headers from Starlette's CORSMiddleware around this one.
    """

    def __init__(self, app: ASGIApp, gate: Gate, origins: list[str]) -> None:
        self._app = app
        self._gate = gate
        self._origins = set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and origin not in self._origins and "*" not in self._origins:
            refused = f"requests from origin {origin!r} are not allowed (see cors_origins)"
            response = _refusal(scope, 403, "PERMISSION_DENIED", refused)
            await response(scope, receive, send)
            return
        client = scope.get("client")
        SOURCE.set(f"{client[0]}:{client[1]}" if client else "")
        if scope["method"] == "OPTIONS" or PUBLIC.match(scope["path"]):
            await self._app(scope, receive, send)
            return
        try:
            bearer = headers.get("authorization")
            certified = None if bearer else http_client_cn(scope.get("client"))  # a bearer wins
            CURRENT.set(await self._gate.authenticate(bearer, certified))
        except AgentHubError as exc:  # not authenticated, or the log cannot audit the refusal now
            status = status_of(exc)
            response = _refusal(scope, status.http, status.grpc.name, exc.message, jsonrpc=status.jsonrpc)
            if isinstance(exc, Unauthenticated):
                response.headers["WWW-Authenticate"] = 'Bearer realm="agenthub"'
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


def _refusal(scope: Scope, http: int, code: str, message: str, jsonrpc: int = -32056) -> JSONResponse:
    """A refusal in the shape of the binding asked: a JSON-RPC error, or the HTTP+JSON error object."""
    if scope["method"] == "POST" and JSONRPC.match(scope["path"]):
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": jsonrpc, "message": message}}
        return JSONResponse(body, status_code=http)
    return JSONResponse({"error": {"code": http, "status": code, "message": message}}, status_code=http)
