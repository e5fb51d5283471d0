"""The hub process: log, thread store, registry, recorder, dispatcher, A2A front, gRPC and HTTP servers.

`Hub` wires the parts in dependency order and stops them in reverse, so shutdown drains in-flight
work (dispatched requests finish and commit) before the log closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from pathlib import Path

import grpc
import structlog
import uvicorn
from a2a.types import a2a_pb2, a2a_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agenthub.hub.config import HubSettings
from agenthub.hub.heads.cards import CardPublisher
from agenthub.hub.heads.front import HubRequestHandler
from agenthub.hub.heads.guard import GuardInterceptor
from agenthub.hub.heads.http import http_app
from agenthub.hub.heads.services import HubGrpcHandler, RegistryServicer, ThreadServicer
from agenthub.hub.log._base import Lifecycle, Log
from agenthub.hub.loops import Readiness, SupervisedLoop
from agenthub.hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agenthub.hub.metrics import Metrics, MetricsInterceptor
from agenthub.hub.operators.operator import Operator
from agenthub.hub.operators.service import OperatorServicer
from agenthub.hub.outbound import OutboundPolicy
from agenthub.hub.push.notifier import Notifier, PushConfigs
from agenthub.hub.recording.recorder import Recorder
from agenthub.hub.routing.connections import Connections
from agenthub.hub.routing.dispatcher import Dispatcher
from agenthub.hub.routing.registry import Registry
from agenthub.hub.routing.replies import ReplyRouter
from agenthub.hub.routing.watchdog import Watchdog
from agenthub.hub.secret_box import SecretBox
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.tls import ListenerTls
from agenthub.hub.topics import Topics
from agenthub.hub.trust.gate import Gate
from agenthub.hub.trust.service import TrustServicer
from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk._server import NO_SHARED_PORT
from agenthub.sdk.errors import ConfigError
from agenthub.sdk.pb import (
    operator_pb2,
    operator_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    threads_pb2,
    threads_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)

log = structlog.get_logger(__name__)


def open_log(settings: HubSettings) -> Log:
    """The configured log backend (not started)."""
    if settings.log == "embedded":
        from agenthub.hub.log.embedded import EmbeddedLog

        return EmbeddedLog(settings.data_dir / "log.db", default_partitions=settings.partitions)
    from agenthub.hub.log.kafka import KafkaLog

    if not settings.bootstrap:
        raise ConfigError("--log kafka needs --bootstrap HOST:PORT (or AGENTHUB_BOOTSTRAP)")
    return KafkaLog(
        settings.bootstrap,
        default_partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        fetch_wait_ms=settings.fetch_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        idempotence=settings.kafka_idempotence,
        client_id=f"agenthub-{settings.instance_id}",
        group_instance_id=f"agenthub-{settings.instance_id}" if settings.kafka_static_membership else None,
    )


def open_store(settings: HubSettings) -> ThreadStore:
    """The configured thread store (not started): PostgreSQL or SQLite, by URL."""
    url = settings.threads_url or ""
    if url.startswith(("postgresql://", "postgres://")):
        from agenthub.hub.threads.postgres import PostgresThreadStore

        return PostgresThreadStore(url)
    from agenthub.hub.threads.sqlite import SqliteThreadStore

    if not url:
        return SqliteThreadStore(settings.data_dir / "threads.db")
    if url.startswith("sqlite:///"):
        return SqliteThreadStore(url.removeprefix("sqlite:///"))
    raise ConfigError(f"unsupported threads URL {url!r}: use postgresql://... or sqlite:///path")


def stable_instance_id(data_dir: Path) -> str:
    """This hub's instance id, kept in its data dir: a restarted hub keeps its reply topic and its
    static membership in consumer groups (no rebalance when it comes back quickly)."""
    path = data_dir / "instance-id"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    instance = uuid.uuid4().hex[:12]
    path.write_text(instance + "\n")
    return instance


ANSWER_GRACE_S = 2.0  # a stopping hub's wait for answers to the calls in flight
PORT_PICKS = 3  # tries at a free port when the hub picks it (port 0)
PORT_TRIES = 20  # random ports tried in the picking range before asking the kernel for one
FIRST_PICKED_PORT = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORT_RANGE_VARIABLE = "AGENTHUB_PORT_RANGE"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a server to bind soon. Picked at random in `picking_range()`,
    by default below the kernel's ephemeral range: outgoing connections take their ports from that
    range, so one of them could take a port the kernel handed out between this pick and the bind
    (test suites, drills and benchmarks start many servers beside many clients)."""
    low, high = picking_range()
    for _ in range(PORT_TRIES if high > low else 0):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind((host, random.randrange(low, high)))
            return int(sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def picking_range() -> tuple[int, int]:
    """Where picked ports come from: `AGENTHUB_PORT_RANGE=LOW-HIGH` (inclusive) when set (a range a
    firewall opens; processes sharing a machine, such as a test suite's workers, given ranges of
    their own never pick the same port), else from 10000 to the ephemeral range (empty: the kernel
    picks)."""
    given = os.environ.get(PORT_RANGE_VARIABLE)
    if given is None:
        return FIRST_PICKED_PORT, max(_ephemeral_low(), FIRST_PICKED_PORT)
    low, dash, high = given.partition("-")
    if not (dash and low.strip().isdigit() and high.strip().isdigit() and 0 < int(low) <= int(high) < 65536):
        raise ConfigError(f"invalid {PORT_RANGE_VARIABLE} {given!r}: expected LOW-HIGH, e.g. 20000-20999")
    return int(low), int(high) + 1


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux), else 0."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def check_exposure(settings: HubSettings) -> None:
    """A hub reachable from other machines must authenticate its callers, unless told `insecure`."""
    if settings.auth or settings.binds_loopback:
        return
    if not settings.insecure:
        raise ConfigError(
            f"refusing to serve on {settings.host} without authentication: turn it on (--auth) or,"
            " on a network you trust completely, pass --insecure"
        )
    log.warning("serving without authentication on a non-loopback address", host=settings.host)


class Hub(Lifecycle):
    """A running hub. `grpc_port` and `http_port` are the bound ports once started."""

    def __init__(self, settings: HubSettings) -> None:
        if "instance_id" not in settings.model_fields_set:
            settings = settings.model_copy(update={"instance_id": stable_instance_id(settings.data_dir)})
        check_exposure(settings)
        self.settings = settings
        self.tls = ListenerTls.from_settings(settings)
        self.grpc_port = settings.port or free_port(settings.host)
        self.http_port = settings.http_port or free_port(settings.host)
        topics = Topics(settings.topic_prefix)
        self.readiness = Readiness()
        self.log = open_log(settings)
        self.store = open_store(settings)
        self.gate = Gate(settings, self.log, topics, self.readiness)
        outbound = OutboundPolicy.from_settings(settings)
        box = SecretBox.from_settings(settings)  # seals push configs and agents' credentials
        self.connections = Connections(grace_s=settings.agent_call_timeout_s)  # to every agent
        self.registry = Registry(
            self.log,
            topics,
            health_interval=settings.health_interval_s,
            readiness=self.readiness,
            outbound=outbound,
            box=box,
            connections=self.connections,
        )
        self.recorder = Recorder(
            self.log,
            self.store,
            topics,
            readiness=self.readiness,
            commit_interval_ms=settings.commit_interval_ms,
            linger_ms=settings.record_linger_ms,
        )
        self.replies = ReplyRouter(self.log, topics.replies(settings.instance_id), readiness=self.readiness)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(self.log, self.registry, settings, self.readiness, self.metrics)
        self.watchdog = Watchdog(
            self.log,
            self.store,
            self.replies.topic,
            self.dispatcher.holds,
            deadline_s=settings.task_deadline_s,
            readiness=self.readiness,
        )
        self.operator = Operator(self.log, self.store, self.registry, topics, self.replies.topic)
        self.cards = CardPublisher(settings, self.grpc_port, self.http_port)
        self.push = PushConfigs(
            self.log,
            topics,
            box=box,
            outbound=outbound,
            readiness=self.readiness,
        )
        self.notifier = Notifier(
            self.log,
            self.push,
            topics,
            outbound=outbound,
            attempts=settings.push_attempts,
            backoff_s=settings.push_backoff_s,
            readiness=self.readiness,
        )
        self.handler = HubRequestHandler(
            self.log,
            self.registry,
            self.store,
            self.recorder,
            self.replies,
            settings,
            self.push,
            self.gate,
            self.readiness,
        )
        # The reply topic exists before the recorder subscribes, so this instance's answers are
        # recorded from the first one (a topic created later waits for the group to find it).
        self._parts: list[Lifecycle] = [
            self.log,
            self.connections,
            self.gate,
            self.store,
            self.registry,
            self.push,
            self.replies,
            self.recorder,
            self.dispatcher,
            self.notifier,
            self.watchdog,
        ]
        self._started: list[Lifecycle] = []
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._health: health.aio.HealthServicer | None = None
        self._health_names: list[str] = []
        self._joining: asyncio.Task[None] | None = None
        self._log_probe = SupervisedLoop("log-probe", self._probe_log, self.readiness)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.settings.host}:{self.http_port}"

    async def start(self) -> None:
        try:
            for part in self._parts:
                await part.start()
                self._started.append(part)
            self._joining = asyncio.create_task(self._until_joined(), name="hub-joining")
            await self._log_probe.start()
            await self._start_grpc()
            await self._start_http()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "hub started", grpc=self.address, http=self.http_url, tls=self.tls is not None,
            data_dir=str(self.settings.data_dir), event_loop=type(asyncio.get_running_loop()).__module__,
        )  # fmt: skip

    async def _start_grpc(self) -> None:
        limit = self.settings.max_message_bytes * 4
        receive = self.settings.max_message_bytes * 2  # as the HTTP head's body cap
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(self.metrics), GuardInterceptor(self.gate)],
            options=[
                ("grpc.max_receive_message_length", receive),
                ("grpc.max_send_message_length", limit),
                NO_SHARED_PORT,
            ],
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(HubGrpcHandler(self.handler), server)
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(self.registry), server)
        threads_pb2_grpc.add_ThreadServiceServicer_to_server(
            ThreadServicer(self.store, self.registry, self.operator, self.recorder), server
        )
        operator_pb2_grpc.add_OperatorServiceServicer_to_server(OperatorServicer(self.operator), server)
        trust_pb2_grpc.add_TrustServiceServicer_to_server(TrustServicer(self.gate), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [
            a2a_pb2.DESCRIPTOR.services_by_name["A2AService"].full_name,
            registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
            threads_pb2.DESCRIPTOR.services_by_name["ThreadService"].full_name,
            operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
            trust_pb2.DESCRIPTOR.services_by_name["TrustService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        self._listen(server)
        await server.start()
        self._grpc = server
        self._health, self._health_names = health_servicer, ["", *names]
        await self._report_health(self.readiness.ready)
        self.readiness.on_change(self._report_health)

    def _listen(self, server: grpc.aio.Server) -> None:
        """Bind the gRPC port. A port the settings name must be free; one the hub picked itself
        (port 0) that another process took since is picked again, a few times."""
        for _ in range(PORT_PICKS):
            address = f"{self.settings.host}:{self.grpc_port}"
            try:
                if self.tls:
                    server.add_secure_port(address, self.tls.grpc_credentials())
                else:
                    server.add_insecure_port(address)
                return
            except RuntimeError:  # grpc's way of saying the bind failed
                if self.settings.port:
                    break
                self.grpc_port = free_port(self.settings.host)
                self.cards = CardPublisher(self.settings, self.grpc_port, self.http_port)
        raise ConfigError(f"cannot listen on {address} (port in use?)")

    async def _report_health(self, ready: bool) -> None:
        """gRPC health follows readiness: NOT_SERVING while a part is down or still joining."""
        if self._health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._health_names:
            await self._health.set(name, status)

    async def _readyz(self, request: Request) -> Response:
        """HTTP readiness: 200 when every part is up, else 503 with what is down and why."""
        problems = self.readiness.problems()
        return JSONResponse({"ready": not problems, "down": problems}, status_code=503 if problems else 200)

    async def _metrics(self, request: Request) -> Response:
        """Prometheus metrics; consumer lag is left out while the log cannot say it."""
        try:
            stats = await asyncio.wait_for(self.operator.stats(), self.settings.produce_timeout_s)
        except (TimeoutError, *self.log.outages):
            stats = operator_pb2.TopicStatsResponse()
        body = self.metrics.exposition(self.readiness, stats, self.settings.topic_prefix)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    async def _probe_log(self) -> None:
        """While the log is reported down, ask it something cheap every second; when it answers,
        it is up again (so an idle hub becomes ready again without waiting for traffic)."""
        while True:
            await asyncio.sleep(1.0)
            if self.readiness.is_down("log"):
                with contextlib.suppress(TimeoutError, *self.log.outages):
                    await asyncio.wait_for(self.log.list_topics(), self.settings.produce_timeout_s)
                    self.readiness.up("log")

    async def _until_joined(self) -> None:
        """Ready only once this instance reads its share of the inboxes and routing topics."""
        self.readiness.starting("consumer groups")
        try:
            async with asyncio.timeout(self.settings.join_timeout_s):
                await asyncio.gather(self.dispatcher.joined(), self.recorder.joined())
        except TimeoutError:
            self.readiness.down("consumer groups", "not assigned partitions yet; still trying")
            await asyncio.gather(self.dispatcher.joined(), self.recorder.joined())
        self.readiness.up("consumer groups")

    async def _start_http(self) -> None:
        listener = self._http_listener()  # first: picking another port makes new cards
        app = http_app(
            self.handler,
            self.registry,
            self.cards,
            self.gate,
            max_body=self.settings.max_message_bytes * 2,
            origins=self.settings.cors_origins,
        )
        app.router.routes.insert(0, Route("/readyz", self._readyz))
        app.router.routes.insert(0, Route("/metrics", self._metrics))
        tls = self.tls.uvicorn_options() if self.tls else {}
        config = uvicorn.Config(
            app, host=self.settings.host, port=self.http_port, log_level="warning", lifespan="off", **tls
        )
        self._http = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[listener]), name="hub-http")
        while not self._http.started:
            if self._http_task.done():
                raise ConfigError(f"cannot serve HTTP on {self.settings.host}:{self.http_port}")
            await asyncio.sleep(0.01)

    def _http_listener(self) -> socket.socket:
        """Bind the HTTP port here, as `_listen` does the gRPC one: a port the hub picked that another
        process took since is picked again, and a busy port is a ConfigError. Left to uvicorn, a
        failed bind ends in `sys.exit` inside its task, which stops the whole event loop."""
        for _ in range(PORT_PICKS):
            family, kind, proto, _, address = socket.getaddrinfo(
                self.settings.host, self.http_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            listener = socket.socket(family, kind, proto)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                listener.bind(address)
                return listener
            except OSError:
                listener.close()
                if self.settings.http_port:
                    break
                self.http_port = free_port(self.settings.host)
                self.cards = CardPublisher(self.settings, self.grpc_port, self.http_port)
        raise ConfigError(f"cannot listen on {self.settings.host}:{self.http_port} (port in use?)")

    async def stop(self) -> None:
        log.info("hub stopping", answer_grace_s=ANSWER_GRACE_S, drain_timeout_s=self.settings.drain_timeout_s)
        await self._stop_heads()
        await cancel_and_wait(self._joining)
        self._joining = None
        await self._log_probe.stop()
        while self._started:
            await self._started.pop().stop()
        log.info("hub stopped")

    async def _stop_heads(self) -> None:
        """Take no new calls and give those in flight `ANSWER_GRACE_S` to be answered; then callers
        still waiting for an agent hear that the hub is stopping and which task to ask for again
        (UNAVAILABLE), instead of being cut off by a bare CANCELLED."""
        stopping = [asyncio.create_task(head) for head in (self._stop_http(), self._stop_grpc())]
        if (await asyncio.wait(stopping, timeout=ANSWER_GRACE_S))[1]:
            self.replies.stop_waiting()
        await asyncio.gather(*stopping)

    async def _stop_http(self) -> None:
        if self._http is None or self._http_task is None:
            return
        self._http.should_exit = True
        # uvicorn ends by itself once told to exit; over TLS, an idle keep-alive connection holds
        # it until the peer answers the TLS close (up to 30 s), so that wait is bounded.
        grace = self.settings.drain_timeout_s if self.tls else None
        if not (await asyncio.wait([self._http_task], timeout=grace))[0]:
            self._http.force_exit = True
            await asyncio.wait([self._http_task])
        self._http = self._http_task = None

    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=ANSWER_GRACE_S + 1)  # time to send the callers' UNAVAILABLE
            self._grpc = None
