"""Benchmark equipment for scripts/bench.py: the echo agent, hub processes, callers and meters.

Every server is its own process on loopback: a thin A2A gRPC echo agent (this file, run with
`--serve-echo PORT`), hubs (`agenthub serve`, one process each, data in a temporary folder). The
client is the stock a2a-sdk gRPC stub in the benchmark's own process. Meters read /proc: a
process's CPU time (utime + stime, every thread) and its resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Never

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # children are exec'd at once: no fork handlers

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import GrpcHandler, RequestHandler
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Message,
    Part,
    Role,
    SendMessageRequest,
    a2a_pb2_grpc,
)
from a2a.utils.errors import UnsupportedOperationError
from google.protobuf.json_format import MessageToJson
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agenthub.hub.server import free_port  # noqa: E402
from agenthub.sdk import HubClient  # noqa: E402

PAYLOAD = "x" * 256
Call = Callable[[], Awaitable[None]]


# ---- the echo agent (its own process) -----------------------------------------------------------


class EchoHandler(RequestHandler):
    """Answers every message with the same text at once: the cheapest possible A2A agent."""

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Message:
        return _echo(params)

    async def on_message_send_stream(  # type: ignore[override]
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncIterator[Message]:
        yield _echo(params)

    async def _unsupported(self, *_: object) -> Never:
        raise UnsupportedOperationError("not part of the benchmark")

    # The rest of the A2A surface is refused: the benchmark only sends messages.
    on_get_task = on_list_tasks = on_cancel_task = _unsupported  # type: ignore[assignment]
    on_get_extended_agent_card = on_subscribe_to_task = _unsupported  # type: ignore[assignment]
    on_create_task_push_notification_config = on_get_task_push_notification_config = _unsupported  # type: ignore[assignment]
    on_list_task_push_notification_configs = on_delete_task_push_notification_config = _unsupported  # type: ignore[assignment]


def _echo(params: SendMessageRequest) -> Message:
    return Message(
        message_id=str(uuid.uuid4()), role=Role.ROLE_AGENT, context_id=params.message.context_id,
        parts=[Part(text=params.message.parts[0].text)],
    )  # fmt: skip


class ProxyHandler(EchoHandler):
    """Forwards each message to the agent over SendStreamingMessage and answers its final message:
    the two gRPC hops a hub request makes at least, with nothing logged or recorded."""

    def __init__(self, agent: str) -> None:
        self._address = agent
        self._agent: a2a_pb2_grpc.A2AServiceStub | None = None  # made in the server's loop

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Message:
        if self._agent is None:
            self._agent = a2a_pb2_grpc.A2AServiceStub(grpc.aio.insecure_channel(self._address))
        answer = Message()
        async for event in self._agent.SendStreamingMessage(params, timeout=60):
            answer = event.message
        return answer


async def serve_a2a(port: int, handler: RequestHandler) -> None:
    server = grpc.aio.server()
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


PR_SET_PDEATHSIG = 1


def _ended_with_the_benchmark() -> None:
    """In the child, before it runs (Linux): SIGTERM when the benchmark dies, however it dies, so a
    killed run leaves no hub or agent behind to take the CPU of the next one."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def process(*argv: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the duration of the block (SIGTERM at the end, as Ctrl-C would)."""
    child = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_ended_with_the_benchmark if sys.platform == "linux" else None,
    )  # fmt: skip
    try:
        yield child
    finally:
        child.terminate()
        child.wait(30)


@contextlib.asynccontextmanager
async def echo_agent() -> AsyncIterator[str]:
    """The echo agent in its own process; yields its address once it listens."""
    async with _a2a_server("--serve-echo") as address:
        yield address


@contextlib.asynccontextmanager
async def proxy(agent: str) -> AsyncIterator[RunningProcess]:
    """A pass-through A2A proxy to `agent` in its own process (see `ProxyHandler`)."""
    async with _a2a_server("--serve-proxy", agent) as address:
        yield RunningProcess(address, _served[address])


_served: dict[str, int] = {}  # address -> pid of the server process listening there


@contextlib.asynccontextmanager
async def _a2a_server(mode: str, *argv: str) -> AsyncIterator[str]:
    port = free_port()
    with process(sys.executable, __file__, mode, str(port), *argv) as child:
        address = f"127.0.0.1:{port}"
        _served[address] = child.pid
        async with grpc.aio.insecure_channel(address) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
        try:
            yield address
        finally:
            del _served[address]


# ---- hubs -------------------------------------------------------------------------------------


@dataclass
class RunningProcess:
    """A server process: its gRPC address and pid."""

    address: str
    pid: int


@dataclass
class RunningHub:
    """A hub process: its gRPC address, pid and data folder."""

    address: str
    pid: int
    data_dir: Path


@contextlib.asynccontextmanager
async def hub(settings: dict[str, str]) -> AsyncIterator[RunningHub]:
    """`agenthub serve` with AGENTHUB_* `settings`, in a fresh temporary data folder; yields once
    its gRPC health says SERVING (its consumer groups have joined)."""
    port = free_port()
    env = {f"AGENTHUB_{k.upper()}": v for k, v in settings.items()}
    with tempfile.TemporaryDirectory(prefix="agenthub-bench-") as data:
        argv = ["--data-dir", data, "--port", str(port), "--http-port", str(free_port())]
        with process(sys.executable, "-m", "agenthub.hub.cli", "serve", *argv, env=env) as child:
            address = f"127.0.0.1:{port}"
            await until_healthy(address)
            yield RunningHub(address, child.pid, Path(data))


async def until_healthy(address: str, timeout: float = 120.0) -> None:
    async with asyncio.timeout(timeout), grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)


def echo_card(name: str, endpoint: str) -> str:
    card = AgentCard(
        name=name, description="benchmark echo", version="1",
        capabilities=AgentCapabilities(streaming=True),
        supported_interfaces=[AgentInterface(url=endpoint, protocol_binding="GRPC")],
    )  # fmt: skip
    return MessageToJson(card, indent=None)


async def register(address: str, names: list[str], endpoint: str, concurrency: int = 32) -> None:
    """Register every name as an agent served by `endpoint` (RegistryService, card JSON), then
    wait until the first and the last answer a message."""
    async with HubClient(address, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with gate:
                await client.register(echo_card(name, endpoint), endpoint)

        await asyncio.gather(*(one(name) for name in names))
        for name in {names[0], names[-1]}:
            await client.send(name, "ready", timeout=120)


# ---- callers and meters -----------------------------------------------------------------------


def request(tenant: str) -> SendMessageRequest:
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=PAYLOAD)])
    return SendMessageRequest(tenant=tenant, message=message)


@contextlib.asynccontextmanager
async def a2a_caller(address: str, tenants: list[str]) -> AsyncIterator[Call]:
    """A stock a2a-sdk stub sending one text per call, to the tenants in turn ("" = no tenant)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        turn = 0

        async def call() -> None:
            nonlocal turn
            tenant, turn = tenants[turn % len(tenants)], turn + 1
            await stub.SendMessage(request(tenant), timeout=60)

        yield call


@dataclass
class Result:
    """One measurement: median and 99th percentile latency (ms), messages per second."""

    p50: float
    p99: float
    rate: float


async def measure(call: Call, requests: int, concurrency: int, warmup: int = 20) -> Result:
    """Run `requests` calls with `concurrency` callers (after `warmup` calls at that concurrency)."""
    latencies: list[float] = []

    async def callers(count: int, record: bool) -> None:
        remaining = count

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                await call()
                if record:
                    latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(caller() for _ in range(concurrency)))

    await callers(warmup, record=False)
    began = time.perf_counter()
    await callers(requests, record=True)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(
        statistics.median(latencies) * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        len(latencies) / elapsed,
    )


def median_of(results: list[Result]) -> Result:
    return Result(*(statistics.median(getattr(r, f) for r in results) for f in ("p50", "p99", "rate")))


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user + system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def idle_cpu_percent(pid: int, seconds: float) -> float:
    """Share of one core the process used over `seconds` with nothing sent to it."""
    before, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - began)


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-echo"]:
    asyncio.run(serve_a2a(int(sys.argv[2]), EchoHandler()))
if __name__ == "__main__" and sys.argv[1:2] == ["--serve-proxy"]:
    asyncio.run(serve_a2a(int(sys.argv[2]), ProxyHandler(sys.argv[3])))
