"""Property-based fuzzing of every door of the hub: the A2A gRPC service, A2A JSON-RPC and A2A
HTTP+JSON, and the hub's own gRPC services (registry, threads, operator).

Every case is a client mistake or a valid request: none may be answered INTERNAL / UNKNOWN, 5xx or
-32603, or name an exception class; and the hub answers a plain question on every binding after
each fuzzer has run. One hub serves the whole module (embedded log, SQLite store: input handling
does not depend on the backend, and the parametrized suites cover the backends); a longer run is
`python scripts/fuzz.py`. Derandomized, so CI sees the same cases every run. What the fuzzers
found that depends on the store (a NUL character PostgreSQL cannot hold) is tested on every
backend and store.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2
from hypothesis import HealthCheck, given, settings

from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.pb import registry_pb2
from tests import fuzzing
from tests.fuzzing import Answer, BackgroundHub, GrpcCase, HttpCase

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundHub]:
    with BackgroundHub(tmp_path_factory.mktemp("fuzz") / "hub") as running:
        yield running


@pytest.fixture(scope="module")
def channel(fuzzed: BackgroundHub) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzzed.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def http(fuzzed: BackgroundHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.http_url, timeout=fuzzing.CALL_TIMEOUT_S) as client:
        yield client


def judged(answer: Answer) -> None:
    assert not fuzzing.faults(answer), answer


@settings(FUZZ, max_examples=1200)
@given(case=fuzzing.grpc_cases())
def test_grpc_services(channel: grpc.Channel, case: GrpcCase) -> None:
    judged(fuzzing.grpc_call(channel, case))


@settings(FUZZ, max_examples=600)
@given(case=fuzzing.jsonrpc_cases())
def test_jsonrpc(http: httpx.Client, case: HttpCase) -> None:
    judged(fuzzing.http_call(http, case, "jsonrpc"))


@settings(FUZZ, max_examples=600)
@given(case=fuzzing.rest_cases())
def test_http_json(http: httpx.Client, case: HttpCase) -> None:
    judged(fuzzing.http_call(http, case, "rest"))


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("SendMessage", b"\xff\xfe\x00garbage"),
        ("ListTasks", a2a_pb2.ListTasksRequest(tenant="echo", page_token="9" * 40).SerializeToString()),
        ("RegisterAgent", registry_pb2.RegisterAgentRequest(url="http://[::1").SerializeToString()),
    ],
    ids=["raw-bytes", "huge-page-token", "malformed-url"],
)
def test_the_drills_findings(channel: grpc.Channel, method: str, payload: bytes) -> None:
    """The malformed inputs the fault drills found answered as internal errors, each named."""
    (descriptor,) = [m for m in fuzzing.METHODS if m.name == method]
    answer = fuzzing.grpc_call(channel, GrpcCase(descriptor, payload, "1.0"))
    assert answer.status == "INVALID_ARGUMENT", answer
    judged(answer)


def test_thread_search_of_wildcards(channel: grpc.Channel) -> None:
    """LIKE wildcards are matched literally, and search text is bounded."""
    from agenthub.sdk.pb import threads_pb2, threads_pb2_grpc

    stub = threads_pb2_grpc.ThreadServiceStub(channel)
    assert list(stub.ListThreads(threads_pb2.ListThreadsRequest(text="%_%")).threads) == []
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListThreads(threads_pb2.ListThreadsRequest(text="%" * 100_000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "text" in caught.value.details()  # type: ignore[attr-defined]


def test_a_chunked_body_is_capped_while_it_streams(fuzzed: BackgroundHub) -> None:
    """A chunked body larger than the hub accepts is refused (413) before its end is even sent:
    the hub never holds more than its limit."""
    where = urlsplit(fuzzed.http_url)
    chunk = b"x" * 65536
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            f"POST /agents/{fuzzing.AGENT}/message:send HTTP/1.1\r\nHost: {where.netloc}\r\n"
            "Content-Type: application/json\r\nA2A-Version: 1.0\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            for _ in range(64):  # 4 MiB, twice the limit; the final zero-size chunk is never sent
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the hub answered and closed while we were still sending
        reply = b""
        while b"}}" not in reply and (data := sock.recv(65536)):  # the headers, then the JSON body
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"accepts at most" in reply


def test_serves_normally_afterwards(fuzzed: BackgroundHub) -> None:
    """After every fuzzer, a plain question is answered on every binding, and nothing the fuzzers
    sent was lost from the threads (parked as unrecordable)."""
    assert fuzzing.serves_normally(fuzzed) == dict.fromkeys(
        ["GRPC", "JSONRPC", "HTTP+JSON"], "TASK_STATE_COMPLETED"
    )
    assert fuzzing.parked(fuzzed) == 0


async def test_nul_characters_are_recorded(hub: Hub, client: HubClient) -> None:
    """A NUL in a message (PostgreSQL's TEXT cannot hold one) is still recorded, on every store:
    the thread keeps every message, the NUL shown as U+FFFD where the store cannot hold it."""
    async with Agent(fuzzing.AGENT, tools=[fuzzing.echo], model=ScriptedModel(), hub=hub.address):
        task = await client.send(fuzzing.AGENT, "a\x00b")
        thread = await client.get_thread(task.context_id)
    assert task.status.state == a2a_pb2.TASK_STATE_COMPLETED
    texts = [m.text.replace("\ufffd", "\x00") for m in thread.messages]
    assert texts[0] == "a\x00b" and texts[-1] == "echo: a\x00b"
