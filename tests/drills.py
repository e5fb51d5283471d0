"""Fault-drill machinery shared by tests/test_fault_*.py and scripts/drill.py.

A drill runs real processes (hub, agent, broker, PostgreSQL), drives them with `Load` — concurrent
senders, each a stock a2a-sdk client built from the card the hub serves — breaks something while
the load runs, repairs it, and then counts what happened to every request it sent:

- accepted: the hub took it (the stream's first event named its task);
- refused: the hub said no before taking it (with the gRPC code and how long the answer took);
- completed: its task ended COMPLETED with the agent's answer (seen on the stream, or read back
  with GetTask once the stream broke);
- failed: its task ended in another final state; lost: accepted but never ended;
- duplicated: reached a living agent twice, or shows twice in its thread.

`Figures` holds the counts and the timings and prints them for the README's reliability section.
`Watch` polls the hub's readiness (gRPC health and /readyz) and GetTask while a fault lasts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from a2a.client import Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.types import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
    a2a_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.hub import task_events
from agenthub.sdk import AgentHubError, HubClient
from agenthub.sdk.errors import HubUnavailable, ThreadNotFound
from agenthub.sdk.pb import operator_pb2 as op
from tests.ledger_agent import ANSWER, read_ledger
from tests.test_delivery import assert_thread_once

FINAL = task_events.TERMINAL


def grpc_code(error: BaseException) -> str:
    """The gRPC status code behind a client error (the a2a-sdk client keeps it as the cause)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, grpc.aio.AioRpcError):
            return cause.code().name
        cause = cause.__cause__
    return type(error).__name__


@dataclass
class Sent:
    """One request of the load and what became of it."""

    text: str
    sent_at: float
    task_id: str = ""
    context_id: str = ""
    state: int = TaskState.TASK_STATE_UNSPECIFIED
    answer: str = ""
    ended_at: float | None = None
    refused: str = ""  # the gRPC code of a refusal
    refused_after: float = 0.0
    stream_error: str = ""  # the gRPC code that broke the stream after the request was accepted
    read_back: bool = False  # its end was read with GetTask: its stream broke or was abandoned

    @property
    def accepted(self) -> bool:
        return bool(self.task_id)

    @property
    def ended(self) -> bool:
        return self.state in FINAL

    @property
    def completed(self) -> bool:
        return self.state == TaskState.TASK_STATE_COMPLETED and self.answer == ANSWER.format(self.text)


async def stock_client(http_url: str, agent: str) -> Client:
    """A streaming gRPC client built with a2a-sdk alone from the agent's card on the hub."""
    config = ClientConfig(
        streaming=True,
        supported_protocol_bindings=["GRPC"],
        use_client_preference=True,
        grpc_channel_factory=grpc.aio.insecure_channel,
    )
    return await ClientFactory(config).create_from_url(f"{http_url}/agents/{agent}")


class Load:
    """`senders` concurrent senders, each sending one request after another until stopped.

    Args:
        hub: gRPC address of the hub (for GetTask while settling).
        http_url: the hub's HTTP base URL (where the stock clients find the agent's card).
        agent: the agent every request goes to.
        senders: concurrent senders (default 12).
        call_timeout: the client's deadline for one streaming send (default 60 s).
        tag: prefix of every request text (so drills sharing an agent do not mix).
    """

    def __init__(
        self,
        hub: str,
        http_url: str,
        agent: str,
        *,
        senders: int = 12,
        call_timeout: float = 60.0,
        tag: str = "",
    ) -> None:
        self.hub = hub
        self.http_url = http_url
        self.agent = agent
        self.senders = senders
        self.call_timeout = call_timeout
        self.tag = tag or uuid.uuid4().hex[:6]
        self.sent: list[Sent] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[Client] = []

    async def start(self) -> None:
        self._clients = [await stock_client(self.http_url, self.agent) for _ in range(self.senders)]
        self._tasks = [asyncio.create_task(self._sender(n, c)) for n, c in enumerate(self._clients)]

    async def stop(self, grace: float = 30.0) -> None:
        """Stop sending; a send still waiting after `grace` seconds is abandoned (settle() finds
        its task's end with GetTask)."""
        self._stopping.set()
        _, pending = await asyncio.wait(self._tasks, timeout=grace) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.close()

    async def _sender(self, number: int, client: Client) -> None:
        count = 0
        while not self._stopping.is_set():
            count += 1
            sent = Sent(f"{self.tag} s{number} n{count}", time.monotonic())
            self.sent.append(sent)
            await self.send(client, sent)
            if sent.refused:
                await asyncio.sleep(0.2)  # a refused sender retries soon, as a client would

    async def send(self, client: Client, sent: Sent) -> None:
        """One streaming send, following its events until the task ends or the stream breaks."""
        message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=sent.text)])
        context = ClientCallContext(timeout=self.call_timeout)
        try:
            async for event in client.send_message(SendMessageRequest(message=message), context=context):
                self._observe(sent, event)
                if sent.ended:
                    return
        except Exception as exc:  # a drill counts every failure; nothing is re-raised
            if sent.accepted:
                sent.stream_error = grpc_code(exc)
            else:
                sent.refused, sent.refused_after = grpc_code(exc), time.monotonic() - sent.sent_at

    @staticmethod
    def _observe(sent: Sent, event: StreamResponse) -> None:
        kind = event.WhichOneof("payload")
        if kind == "task":
            sent.task_id, sent.context_id = event.task.id, event.task.context_id
            status = event.task.status
        elif kind == "status_update":
            status = event.status_update.status
        else:
            return
        if status.state in FINAL:
            sent.state, sent.ended_at = status.state, time.monotonic()
            sent.answer = status.message.parts[0].text if status.message.parts else ""

    async def settle(self, timeout: float = 60.0) -> None:
        """Read back, with GetTask, the end of every accepted request whose stream did not show it;
        gives up after `timeout` seconds (what is still open then is lost)."""
        deadline = time.monotonic() + timeout
        async with HubClient(self.hub) as client:
            for sent in self.sent:
                while sent.accepted and not sent.ended and time.monotonic() < deadline:
                    await self._read_back(client, sent)
                    if not sent.ended:
                        await asyncio.sleep(0.2)

    async def _read_back(self, client: HubClient, sent: Sent) -> None:
        try:
            task = await client.get_task(self.agent, sent.task_id)
        except AgentHubError:  # the hub or its store is not back yet: try again
            return
        if task.status.state in FINAL:
            ended_ago = time.time() - task.status.timestamp.ToNanoseconds() / 1e9  # when it really ended
            sent.state, sent.ended_at, sent.read_back = task.status.state, time.monotonic() - ended_ago, True
            sent.answer = task.status.message.parts[0].text if task.status.message.parts else ""

    def dump(self, path: Path, origin: float) -> None:
        """Every request as a JSON line (times in seconds from `origin`), for a look afterwards."""
        with path.open("a") as out:
            for sent in self.sent:
                row = {**sent.__dict__, "state": TaskState.Name(sent.state)}
                for key in ("sent_at", "ended_at"):
                    row[key] = None if row[key] is None else round(row[key] - origin, 2)
                out.write(json.dumps(row) + "\n")

    async def completed_at_least(self, n: int) -> bool:
        return sum(s.completed for s in self.sent) >= n


@dataclass
class Readings:
    """What `Watch` saw: readiness and GetTask answers over time (monotonic seconds)."""

    health: list[tuple[float, str]] = field(default_factory=list)  # (when, SERVING / NOT_SERVING / error)
    readyz: list[tuple[float, int, str]] = field(default_factory=list)  # (when, HTTP status, body)
    get_task: list[tuple[float, str]] = field(default_factory=list)  # (when, OK or the gRPC code)

    def health_between(self, start: float, end: float) -> set[str]:
        return {state for when, state in self.health if start <= when <= end}

    def readyz_between(self, start: float, end: float) -> list[tuple[int, str]]:
        return [(status, body) for when, status, body in self.readyz if start <= when <= end]

    def get_task_codes(self) -> collections.Counter[str]:
        return collections.Counter(code for _, code in self.get_task)

    def first_serving_after(self, moment: float) -> float | None:
        return next((when for when, state in self.health if when >= moment and state == "SERVING"), None)


class Watch:
    """Polls the hub every `interval` seconds while it runs: gRPC health, /readyz, and GetTask of
    tasks the load has accepted (which must exist, whatever is down)."""

    def __init__(self, hub: str, http_url: str, load: Load | None = None, *, interval: float = 0.2) -> None:
        self.hub = hub
        self.http_url = http_url
        self.load = load
        self.interval = interval
        self.readings = Readings()
        self._task: asyncio.Task[None] | None = None
        self._polled = asyncio.Event()  # set after each health reading

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def saw_serving_after(self, moment: float, timeout: float = 60.0) -> None:
        """Return once a poll has read SERVING after `moment` (bounded): the hub may say it is ready
        to another client before one of these polls, which under load can take seconds each."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.readings.first_serving_after(moment) is None:
                    self._polled.clear()
                    await self._polled.wait()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        async with grpc.aio.insecure_channel(self.hub) as channel, httpx.AsyncClient(timeout=2) as http:
            while True:
                now = time.monotonic()
                self.readings.health.append((now, await health_state(channel)))
                self._polled.set()
                self.readings.readyz.append((now, *await readyz(http, self.http_url)))
                if self.load is not None:
                    await self._probe_get_task(channel, now)
                await asyncio.sleep(self.interval)

    async def _probe_get_task(self, channel: grpc.aio.Channel, now: float) -> None:
        accepted = [s for s in self.load.sent if s.accepted] if self.load else []
        if not accepted:
            return
        sent = accepted[len(self.readings.get_task) % len(accepted)]
        request = GetTaskRequest(tenant=self.load.agent if self.load else "", id=sent.task_id)
        try:
            await a2a_pb2_grpc.A2AServiceStub(channel).GetTask(request, timeout=5)
            self.readings.get_task.append((now, "OK"))
        except grpc.aio.AioRpcError as exc:
            self.readings.get_task.append((now, exc.code().name))


async def health_state(channel: grpc.aio.Channel) -> str:
    """The hub's overall gRPC health ("" service): SERVING, NOT_SERVING, or the error's code."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def readyz(http: httpx.AsyncClient, http_url: str) -> tuple[int, str]:
    try:
        response = await http.get(f"{http_url}/readyz")
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__
    return response.status_code, response.text[:300]


async def wait_serving(hub: str, timeout: float = 60.0) -> float | None:
    """Seconds until the hub's gRPC health says SERVING, or None if it never did within `timeout`."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(hub) as channel:
        while time.monotonic() - started < timeout:
            if await health_state(channel) == "SERVING":
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    return None


@dataclass
class Figures:
    """A drill's figures, as the README's reliability section reports them."""

    drill: str
    backend: str
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest_refusal_s: float = 0.0
    time_to_recover_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "notes"}
        out["refused"] = dict(self.refused)
        return {**out, **self.notes}

    def line(self) -> str:
        recover = "-" if self.time_to_recover_s is None else f"{self.time_to_recover_s:.1f} s"
        refused = sum(self.refused.values())
        return (
            f"{self.drill} [{self.backend}]: accepted {self.accepted}, completed {self.completed}, "
            f"failed {self.failed}, lost {self.lost}, duplicated {self.duplicated} "
            f"(redelivered: {self.redelivered}), refused {refused} "
            f"{dict(self.refused) or ''} (slowest refusal {self.slowest_refusal_s:.1f} s), "
            f"time to recover {recover}"
        )

    def json(self) -> str:
        return json.dumps(self.as_dict(), default=str)


async def count(
    drill: str,
    backend: str,
    *loads: Load,
    ledger: Path | None = None,
    repaired_at: float | None = None,
    check_threads: bool = True,
    hub_died: bool = False,
) -> Figures:
    """The figures of a drill whose loads have been stopped and settled.

    Time to recover: from `repaired_at` until every request accepted before it had ended.
    `hub_died`: the drill killed the hub, so requests it had dispatched are handed to the agent
    again (redelivered, not duplicated).
    """
    figures = Figures(drill, backend)
    sent = [s for load in loads for s in load.sent]
    accepted = [s for s in sent if s.accepted]
    figures.accepted = len(accepted)
    figures.completed = sum(s.completed for s in accepted)
    figures.failed = sum(s.ended and not s.completed for s in accepted)
    figures.lost = sum(not s.ended for s in accepted)
    refusals = [s for s in sent if s.refused]
    figures.refused.update(s.refused for s in refusals)
    figures.slowest_refusal_s = max((s.refused_after for s in refusals), default=0.0)
    if repaired_at is not None:
        before = [s for s in accepted if s.sent_at < repaired_at]
        ends = [s.ended_at for s in before if s.ended_at is not None]
        if before and len(ends) == len(before):
            figures.time_to_recover_s = max(0.0, max(ends) - repaired_at)
    duplicated: dict[str, str] = {}
    if ledger is not None:
        twice, again = deliveries(ledger, [s.text for s in accepted], hub_died=hub_died)
        duplicated |= twice
        figures.redelivered = len(again)
    if check_threads and loads:
        duplicated |= await threads_with_duplicates(loads[0].hub, [s for s in accepted if s.completed])
    figures.duplicated = len(duplicated)
    figures.notes["duplicates"] = dict(list(duplicated.items())[:5])
    broken = collections.Counter(s.stream_error or "abandoned" for s in accepted if s.read_back)
    figures.notes["streams_without_their_end"] = dict(broken)
    if repaired_at is not None:
        figures.notes["read_back_ended_after_repair_s"] = sorted(
            round(s.ended_at - repaired_at, 1) for s in accepted if s.read_back and s.ended_at
        )[:20]
    figures.notes["not_completed"] = [
        (s.text, TaskState.Name(s.state), s.answer[:200]) for s in accepted if not s.completed
    ][:10]
    return figures


def deliveries(
    ledger: Path, texts: Iterable[str], *, hub_died: bool = False
) -> tuple[dict[str, str], set[str]]:
    """From an agent's ledger: the texts handed to the agent once too often (with why), and those
    handed again as at-least-once intends: after the agent that had them died (mid-call, or just
    after finishing, before its answer left), or (when `hub_died`) after the hub that had
    dispatched them died before the answer was in the log. A second answer that reached the hub
    shows in the thread (see `threads_with_duplicates`)."""
    lives: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for pid, what, text in read_ledger(ledger):
        lives[text].append((pid, what))
    twice: dict[str, str] = {}
    again: set[str] = set()
    for text in texts:
        delivered = [pid for pid, what in lives[text] if what == "deliver"]
        if len(delivered) != len(set(delivered)) and not hub_died:
            twice[text] = f"handed {len(delivered)} times to one agent process (ledger: {lives[text]})"
        elif len(delivered) > 1:
            again.add(text)
    return twice, again


async def threads_with_duplicates(
    hub: str, completed: list[Sent], catch_up_s: float = 90.0
) -> dict[str, str]:
    """Texts whose thread holds a message twice, or not exactly one request and one answer (or is
    missing), with why. A thread the hub says is not recorded yet (UNAVAILABLE: the recorder is
    catching up after the fault) is read again, for `catch_up_s` in all."""
    out: dict[str, str] = {}
    deadline = time.monotonic() + catch_up_s
    async with HubClient(hub) as client:
        for sent in completed:
            try:
                await _thread_once_when_recorded(client, sent, deadline)
            except (AssertionError, ThreadNotFound, HubUnavailable) as exc:
                out[sent.text] = f"thread {sent.context_id}: {type(exc).__name__}: {str(exc)[:300]}"
    return out


async def _thread_once_when_recorded(client: HubClient, sent: Sent, deadline: float) -> None:
    while True:
        try:
            return await assert_thread_once(client, sent.context_id, sent.text, ANSWER.format(sent.text))
        except HubUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def rebuild_would_write(hub: str) -> int:
    """How many records a rebuild of the thread store from the log would write (a dry run)."""
    written = 0
    async with HubClient(hub) as client:
        async for progress in client.rebuild(op.Selection(), apply=False):
            written = progress.written
    return written
