"""Hubs and agents as real processes, so tests and drills can kill them (SIGKILL) and start them again.

`HubProcess` runs `agenthub serve` with a test's `HubSettings` (passed as `AGENTHUB_*` variables) on a
fixed port, its output appended to `<data_dir>.log` for diagnosis; `hub_process` is the same as a
context manager. `AgentProcess` runs `tests/ledger_agent.py`, which writes every delivery it gets
to a ledger file that survives its own deaths. Test equipment only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.hub.config import HubSettings
from agenthub.hub.server import free_port
from agenthub.sdk import AgentHubError, HubClient
from agenthub.sdk.pb import registry_pb2, registry_pb2_grpc
from tests.conftest import eventually

PER_PROCESS = {"host", "port", "http_port", "data_dir", "instance_id"}  # given per process, not shared


def env_of(settings: HubSettings) -> dict[str, str]:
    """Environment that gives an `agenthub serve` process the settings a test chose (all but the
    per-process ones: two processes from one `HubSettings` must not share ports or a reply topic)."""
    values = settings.model_dump(include=settings.model_fields_set - PER_PROCESS)
    return {f"AGENTHUB_{k.upper()}": str(v) for k, v in values.items() if v is not None}


class HubProcess:
    """`agenthub serve` on `port` with `data_dir`; `start()`, `kill()` and `start()` again.

    `start()` returns once the hub answers registry calls (not necessarily ready: see its health).
    """

    def __init__(self, settings: HubSettings, data_dir: Path, port: int | None = None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.port = port or free_port()
        self.http_port = free_port()
        self.log_path = data_dir.with_name(f"{data_dir.name}.log")
        self.process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def spawn(self) -> None:
        """Start the process and return at once (a drill times how long it takes to be ready)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agenthub.hub.cli", "serve", "--data-dir", str(self.data_dir),
                "--port", str(self.port), "--http-port", str(self.http_port),
                env={**os.environ, **env_of(self.settings)}, stdout=output, stderr=output,
            )  # fmt: skip

    async def start(self, timeout: float = 60.0) -> None:
        await self.spawn()
        async with HubClient(self.address) as probe:
            if not await eventually(lambda: _answers(probe), timeout=timeout):
                raise RuntimeError(f"hub process did not start; see {self.log_path}:\n{self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL: the hub gets no chance to finish anything."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM: a clean shutdown (in-flight work drains and commits)."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, sig: signal.Signals, timeout: float = 30.0) -> None:
        """Send `sig` and wait for the exit; a hub still running after `timeout` seconds is killed."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@asynccontextmanager
async def hub_process(
    settings: HubSettings, data_dir: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`agenthub serve` as its own process; killed at exit if still running."""
    hub = HubProcess(settings, data_dir, port)
    try:
        await hub.start(timeout=30)
        assert hub.process is not None
        yield hub.process
    except BaseException:  # the hub's own account of a failed test, in pytest's captured output
        print(f"--- {hub.log_path} (tail) ---\n{hub.log_tail()}")
        raise
    finally:
        await hub.kill()


async def _answers(client: HubClient) -> bool:
    try:
        await client.list_agents()
    except AgentHubError:  # not up yet
        return False
    return True


class AgentProcess:
    """`tests/ledger_agent.py` as a process on a fixed port: killed and restarted on the same port."""

    def __init__(self, hub: str, ledger: Path, *, name: str = "counter", delay: float = 0.5) -> None:
        self.hub = hub
        self.ledger = ledger
        self.name = name
        self.delay = delay
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until the hub lists it as registered from this process."""
        log_path = self.ledger.with_suffix(".log")
        with log_path.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.ledger_agent", "--hub", self.hub, "--port", str(self.port),
                "--name", self.name, "--ledger", str(self.ledger), "--delay", str(self.delay),
                stdout=output, stderr=output,
            )  # fmt: skip
        if not await eventually(self._serving, timeout=timeout):
            raise RuntimeError(f"agent process did not start; see {log_path}")
        if not await eventually(self._registered, timeout=timeout):
            raise RuntimeError(f"agent process did not register with the hub; see {log_path}")

    async def _registered(self) -> bool:
        """Whether the hub lists this process's endpoint among the agent's replicas (an agent
        serves before its registration is done: a client fetching its card then would get 404)."""
        async with grpc.aio.insecure_channel(self.hub) as channel:
            try:
                agent = await registry_pb2_grpc.RegistryServiceStub(channel).GetAgent(
                    registry_pb2.GetAgentRequest(name=self.name), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
        return any(r.endpoint.endswith(f":{self.port}") for r in agent.replicas)

    async def _serving(self) -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None
