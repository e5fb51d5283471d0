"""`agenthub up`: the offline model, the hub and the reference agents as separate processes.

Starts them in dependency order, waits until each is ready, prints where to connect, starts again
a part that dies, and on Ctrl-C/SIGTERM stops them in reverse order (SIGTERM, then SIGKILL after a
grace period).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.hub.trust.keys import read_key_file, write_key_file
from agenthub.sdk.errors import ConfigError
from agenthub.sdk.pb import registry_pb2, registry_pb2_grpc, trust_pb2, trust_pb2_grpc

REFERENCE_AGENTS = ("calculator", "notes", "triage")
RESTART_LIMIT = 5  # deaths of one part within RESTART_WINDOW_S after which `up` stops everything
RESTART_WINDOW_S = 60.0
MAX_RESTART_PAUSE_S = 8.0  # pauses before a restart double from 1 s up to this
HUB_STOP_GRACE_S = 30.0  # the hub's own stop: calls in flight get a few seconds, agent calls its drain


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    deaths: list[float] = field(default_factory=list)  # when it died unasked, lately (monotonic)
    stop_grace_s: float = 10.0  # how long it may take to stop before it is killed

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def how_it_ended(self) -> str:
        code = self.exited()
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(ready: Callable[[], bool], child: Child, what: str, timeout: float) -> None:
    """Poll `ready()` until true; ConfigError if the child dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exited() is not None:
            raise ConfigError(f"{child.name} exited while starting ({what}); its log says:\n{child.tail()}")
        if ready():
            return
        time.sleep(0.2)
    raise ConfigError(f"{child.name} not ready after {timeout:.0f}s ({what}); see {child.log_path}")


def model_ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def hub_ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def registered(address: str, key_file: Path) -> set[str]:
    key = key_file.read_text().strip() if key_file.exists() else ""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = registry_pb2_grpc.RegistryServiceStub(channel).ListAgents(
                registry_pb2.ListAgentsRequest(),
                timeout=1,
                metadata=(("authorization", f"Bearer {key}"),) if key else None,
            )
        except grpc.RpcError:
            return set()
    return {a.name for a in reply.agents}


def agent_key(address: str, admin_key: str, agent: str, folder: Path) -> str:
    """The agent's own API key, kept in `folder`: made with the admin key the first time (or when
    the kept one no longer works, e.g. revoked), so a demo agent proves who it is as any agent would."""
    path = folder / f"{agent}.key"
    kept = read_key_file(path)
    with grpc.insecure_channel(address) as channel:
        stub = trust_pb2_grpc.TrustServiceStub(channel)
        if kept and _speaks_for(stub, kept, agent):
            return kept
        request = trust_pb2.CreateKeyRequest(
            name=f"{agent}-{secrets.token_hex(3)}", role="agent", agent=agent
        )
        reply = stub.CreateKey(request, metadata=(("authorization", f"Bearer {admin_key}"),), timeout=10)
    write_key_file(path, reply.secret)
    return str(reply.secret)


def _speaks_for(stub: trust_pb2_grpc.TrustServiceStub, key: str, agent: str) -> bool:
    try:
        me = stub.WhoAmI(
            trust_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=10
        )
    except grpc.RpcError:
        return False
    return bool(me.role == "agent" and me.agent == agent)


class Supervisor:
    """Runs the whole demo stack until told to stop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        http_port: int,
        data_dir: Path,
        model_port: int,
        model: bool = True,
        hub_args: Sequence[str] = (),
    ) -> None:
        """`hub_args` are more `agenthub serve` arguments for the hub (its log, store, default agent)."""
        self.address = f"{host}:{port}"
        self.http_url = f"http://{host}:{http_port}"
        self.model_url = f"http://127.0.0.1:{model_port}/v1"
        logs = data_dir / "logs"
        py = sys.executable
        self.model = (
            Child("model", [py, "-m", "agenthub.sdk.offline", "--port", str(model_port)], logs / "model.log")
            if model
            else None
        )
        self.hub = Child(
            "hub",
            [
                py,
                "-m",
                "agenthub.hub.cli",
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--data-dir",
                str(data_dir),
                "--auth",
                *hub_args,
            ],
            logs / "hub.log",
            stop_grace_s=HUB_STOP_GRACE_S,
        )
        # The hub writes its admin key here (the CLI in this folder picks it up); each agent gets a
        # key of its own, made with it and kept in keys/, so a thread's hops are proven, not claimed.
        self.key_file = (data_dir / "admin.key").absolute()
        self.agent_keys = (data_dir / "keys").absolute()
        env = {"AGENTHUB_MODEL_BASE_URL": self.model_url}
        self.agents = [
            Child(
                name, [py, "-m", f"agenthub.agents.{name}", "--hub", self.address], logs / f"{name}.log", env
            )
            for name in REFERENCE_AGENTS
        ]
        self._stop = threading.Event()

    def children(self) -> list[Child]:
        return [c for c in (self.model, self.hub, *self.agents) if c is not None]

    def start(self) -> None:
        try:
            if self.model is not None:
                self.model.start()
                wait_until(lambda: model_ready(self.model_url), self.model, "model server", 120)
            self.hub.start()
            wait_until(lambda: hub_ready(self.address), self.hub, "hub health", 60)
            admin = self.key_file.read_text().strip()
            for agent in self.agents:
                key = agent_key(self.address, admin, agent.name, self.agent_keys)
                agent.env = {**agent.env, "AGENTHUB_KEY": key}
                agent.start()
            names = set(REFERENCE_AGENTS)
            registration = lambda: names <= registered(self.address, self.key_file)  # noqa: E731
            wait_until(registration, self.agents[-1], "agent registration", 60)
        except BaseException:
            self.stop()
            raise

    def wait(self, say: Callable[[str], None]) -> Child | None:
        """Block until SIGINT/SIGTERM (None). A part that dies is started again after a pause, which
        `say`s why; one that died `RESTART_LIMIT` times within `RESTART_WINDOW_S` would only die
        again: it is returned, for `up` to stop everything."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        while not self._stop.wait(0.5):
            for child in self.children():
                if child.exited() is not None and not self._restart(child, say):
                    return child
        return None

    def _on_signal(self, *_: object) -> None:
        """The first Ctrl-C (or SIGTERM) stops the parts in order; another one while they stop
        kills what is left at once (the hub's log keeps what it acknowledged)."""
        if self._stop.is_set():
            for child in self.children():
                child.kill()
        self._stop.set()

    def _restart(self, child: Child, say: Callable[[str], None]) -> bool:
        """Start a dead part again, after a pause that doubles with its recent deaths; False when
        it died too often lately. A stop asked for during the pause wins."""
        now = time.monotonic()
        child.deaths = [t for t in child.deaths if now - t < RESTART_WINDOW_S] + [now]
        if len(child.deaths) >= RESTART_LIMIT:
            return False
        pause = min(2.0 ** (len(child.deaths) - 1), MAX_RESTART_PAUSE_S)
        ended = f"{child.name} {child.how_it_ended()}"
        say(f"{ended}; starting it again in {pause:.0f} s (its log: {child.log_path})")
        if not self._stop.wait(pause):
            child.start()
        return True

    def stop(self) -> None:
        for child in reversed(self.children()):
            child.stop()
