"""The hub's HTTP head: agent cards at /agents/<name>/.well-known/agent-card.json, and liveness."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agenthub.hub.cards import hub_card
from agenthub.hub.config import HubSettings
from agenthub.hub.registry import Registry


def http_app(registry: Registry, settings: HubSettings, grpc_port: int) -> Starlette:
    """A Starlette app serving the hub's agent cards."""

    async def card(request: Request) -> Response:
        agent = registry.find(request.path_params["name"])
        if agent is None:
            return JSONResponse(
                {"error": f"no agent named {request.path_params['name']!r} is registered"}, status_code=404
            )
        body = MessageToDict(hub_card(agent.card, settings, grpc_port))
        return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})

    async def agents(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            [
                {
                    "name": a.name,
                    "state": a.record.state,
                    "card": f"{base}/agents/{a.name}/.well-known/agent-card.json",
                }
                for a in registry.list()
            ]
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/agents/{name}/.well-known/agent-card.json", card),
            Route("/agents", agents),
            Route("/healthz", healthz),
        ]
    )
