"""What a client sees when the hub itself fails: a generic INTERNAL error with a reference, on every
head, never the exception's class, message or repr; the details go to the hub's log under that
reference. The fuzzers find no such failure left, so these tests break the hub on purpose: a
request handler and a gRPC servicer that raise, behind the real guard, the real gRPC server and
the real HTTP app.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from a2a.server.request_handlers import RequestHandler
from a2a.types import GetTaskRequest, a2a_pb2_grpc
from structlog.testing import capture_logs

from agenthub.hub.config import HubSettings
from agenthub.hub.heads.cards import CardPublisher
from agenthub.hub.heads.guard import GuardInterceptor
from agenthub.hub.heads.http import http_app
from agenthub.hub.heads.services import HubGrpcHandler, RegistryServicer
from agenthub.hub.log.embedded import EmbeddedLog
from agenthub.hub.loops import Readiness
from agenthub.hub.routing.registry import Registry
from agenthub.hub.server import free_port
from agenthub.hub.topics import Topics
from agenthub.hub.trust.gate import Gate
from agenthub.sdk.pb import registry_pb2, registry_pb2_grpc

SECRET = "password=hunter2 at /var/lib/agenthub/store.db"
REFERENCE = re.compile(r"reference ([0-9a-f]{12})")


async def _broken(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(SECRET)


# Every method of the A2A request handler fails the way a bug would.
BrokenHandler = type(
    "BrokenHandler", (RequestHandler,), {name: _broken for name in RequestHandler.__abstractmethods__}
)


class BrokenRegistryService(RegistryServicer):
    async def ListAgents(self, request: Any, context: Any) -> Any:
        raise KeyError(SECRET)


def reported(text: str, logs: list[MutableMapping[str, Any]]) -> None:
    """The answer names only a reference, and the log holds the details under that reference."""
    assert SECRET not in text and "RuntimeError" not in text and "KeyError" not in text
    match = REFERENCE.search(text)
    assert match, text
    (event,) = [e for e in logs if e.get("reference") == match.group(1)]
    assert event["event"] == "unexpected failure" and SECRET in repr(event["exc_info"])


@pytest.fixture
async def broken_grpc(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A real gRPC server with the hub's guard, over a broken A2A handler and registry service."""
    log = EmbeddedLog(tmp_path / "log.db")
    registry = Registry(log, Topics("t"))
    gate = Gate(HubSettings(data_dir=tmp_path), log, Topics("t"), Readiness())  # no auth: not started
    server = grpc.aio.server(interceptors=[GuardInterceptor(gate)])
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(HubGrpcHandler(BrokenHandler()), server)
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(BrokenRegistryService(registry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def test_grpc_answers_internal_with_a_reference_only(broken_grpc: grpc.aio.Channel) -> None:
    a2a = a2a_pb2_grpc.A2AServiceStub(broken_grpc)
    registry = registry_pb2_grpc.RegistryServiceStub(broken_grpc)
    calls = {  # a gRPC call starts as soon as it is made: each is made inside the log capture
        "A2A": lambda: a2a.GetTask(GetTaskRequest(tenant="x", id="t")),
        "registry": lambda: registry.ListAgents(registry_pb2.ListAgentsRequest()),
    }
    for name, call in calls.items():
        with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.INTERNAL, name
        reported(caught.value.details() or "", logs)


async def test_http_answers_internal_with_a_reference_only(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path)
    log = EmbeddedLog(tmp_path / "log.db")
    registry = Registry(log, Topics("t"))
    gate = Gate(settings, log, Topics("t"), Readiness())  # no auth: not started
    cards = CardPublisher(settings, free_port(), free_port())
    app = http_app(BrokenHandler(), registry, cards, gate, max_body=4096, origins=[])
    transport = httpx.ASGITransport(app=app)
    headers = {"A2A-Version": "1.0"}
    async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers) as http:
        with capture_logs() as logs:
            rpc = await http.post(
                "/agents/a/", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}}
            )
        assert rpc.json()["error"]["code"] == -32603
        reported(rpc.text, logs)
        with capture_logs() as logs:
            rest = await http.get("/agents/a/tasks/t")
        assert (rest.status_code, rest.json()["error"]["status"]) == (500, "INTERNAL")
        reported(rest.text, logs)
