"""HubClient: talk to a hub from Python — agents, messages, threads — over its gRPC API.

A thin client: A2A calls use the standard `lf.a2a.v1.A2AService` with `tenant` = agent name, so
anything it does a stock A2A client can do too. Errors come back as `agenthub.sdk.errors` classes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import grpc
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
    a2a_pb2_grpc,
)

from agenthub.sdk._aio import Lifecycle
from agenthub.sdk.auth import ClientTls, hub_channel, resolve_key, resolve_tls
from agenthub.sdk.errors import AgentNotFound, ThreadNotFound, from_grpc
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import operator_pb2_grpc, registry_pb2_grpc, threads_pb2_grpc
from agenthub.sdk.pb import registry_pb2 as reg
from agenthub.sdk.pb import threads_pb2 as thr

T = TypeVar("T")


class HubClient(Lifecycle):
    """A connection to a hub.

    Args:
        address: the hub's gRPC address, host:port (default 127.0.0.1:50051).
        sender: who this client speaks for (an agent name when an agent delegates; default "user").
        timeout: default deadline of unary calls, in seconds (default 30).
        key: the API key or token to call with (default: `resolve_key()`: $AGENTHUB_KEY,
            $AGENTHUB_KEY_FILE, or the admin key `agenthub up` keeps in `.agenthub/`).
        tls / ca: TLS to the hub: a `ClientTls` (with a client certificate for mTLS), or on/off;
            `ca` is the CA file that verifies the hub and turns TLS on (default: `resolve_tls()`:
            $AGENTHUB_TLS, $AGENTHUB_TLS_CA, $AGENTHUB_TLS_CLIENT_CERT/_KEY).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        sender: str | None = None,
        timeout: float = 30.0,
        key: str | None = None,
        tls: bool | ClientTls | None = None,
        ca: Path | str | None = None,
    ) -> None:
        self.address = address
        self.sender = sender
        self.timeout = timeout
        self.key = resolve_key(key)
        self.tls = tls if isinstance(tls, ClientTls) else resolve_tls(tls, ca=ca)
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        if self._channel is None:
            self._channel = hub_channel(self.address, self.key, self.tls)

    async def stop(self) -> None:
        """Close the connection (also what leaving `async with` does)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = hub_channel(self.address, self.key, self.tls)
        return self._channel

    def _metadata(self, parent_task_id: str | None = None) -> tuple[tuple[str, str], ...]:
        pairs = [("agenthub-sender", self.sender or ""), ("agenthub-parent-task", parent_task_id or "")]
        return tuple(p for p in pairs if p[1])

    # ---- registry ------------------------------------------------------------------------

    async def register(self, card_json: str, endpoint: str, *, replica: bool = False) -> reg.AgentRecord:
        """Register (or update) an agent by its card and its A2A gRPC endpoint: with `replica`, as one
        more replica of its name; without, in place of the name's other endpoints."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        request = reg.RegisterAgentRequest(card_json=card_json, endpoint=endpoint, replica=replica)
        reply = await _call(stub.RegisterAgent(request, timeout=self.timeout))
        return reply.agent

    async def register_url(
        self, url: str, *, name: str = "", replica: bool = False, authorization: str = ""
    ) -> reg.AgentRecord:
        """Register any A2A agent by its base URL or card URL; the hub fetches and checks the card.
        `replica` adds it as one more replica of the name instead of replacing the name's endpoints;
        `authorization` is the Authorization value the hub sends when it calls the agent."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        request = reg.RegisterAgentRequest(url=url, name=name, replica=replica, authorization=authorization)
        reply = await _call(stub.RegisterAgent(request, timeout=self.timeout))
        return reply.agent

    async def deregister(self, name: str, endpoint: str = "") -> None:
        """Remove the agent's replica at `endpoint`, or with no endpoint the agent and all its replicas."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        request = reg.DeregisterAgentRequest(name=name, endpoint=endpoint)
        await _call(stub.DeregisterAgent(request, timeout=self.timeout))

    async def heartbeat(self, name: str, endpoint: str = "") -> None:
        """Tell the hub the replica at `endpoint` (or every replica of `name`) is alive."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        await _call(stub.Heartbeat(reg.HeartbeatRequest(name=name, endpoint=endpoint), timeout=self.timeout))

    async def list_agents(self) -> list[reg.AgentRecord]:
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        reply = await _call(stub.ListAgents(reg.ListAgentsRequest(), timeout=self.timeout))
        return list(reply.agents)

    async def get_agent(self, name: str) -> reg.AgentRecord:
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        record: reg.AgentRecord = await _call(
            stub.GetAgent(reg.GetAgentRequest(name=name), timeout=self.timeout)
        )
        return record

    async def watch_agents(self) -> AsyncIterator[reg.AgentChange]:
        """Every registered agent (changes with `endpoint` ""), then every change as it happens
        until you stop iterating: a replica registered, changed, left (`removed` when the agent
        went with it), or went down or came back up by the hub's health checks and heartbeats.
        Each change carries the agent as it is now, with every replica and its state."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        call = stub.WatchAgents(reg.WatchAgentsRequest())
        try:
            async for change in _streamed(call):
                yield change
        finally:
            call.cancel()

    # ---- messages ------------------------------------------------------------------------

    async def send(
        self,
        agent: str,
        text: str,
        *,
        context_id: str | None = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        timeout: float | None = 300.0,
    ) -> Task | Message:
        """Send a text message to an agent through the hub and wait for its answer."""
        stub = a2a_pb2_grpc.A2AServiceStub(self.channel)
        request = text_request(agent, text, context_id=context_id, task_id=task_id)
        reply = await _call(
            stub.SendMessage(request, metadata=self._metadata(parent_task_id), timeout=timeout)
        )
        return reply.task if reply.WhichOneof("payload") == "task" else reply.message

    async def stream(
        self,
        agent: str,
        text: str,
        *,
        context_id: str | None = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        timeout: float | None = 300.0,
    ) -> AsyncIterator[StreamResponse]:
        """Send a text message and yield the task's events as the agent produces them."""
        stub = a2a_pb2_grpc.A2AServiceStub(self.channel)
        request = text_request(agent, text, context_id=context_id, task_id=task_id)
        call = stub.SendStreamingMessage(request, metadata=self._metadata(parent_task_id), timeout=timeout)
        async for event in _streamed(call):
            yield event

    async def get_task(self, agent: str, task_id: str) -> Task:
        stub = a2a_pb2_grpc.A2AServiceStub(self.channel)
        task: Task = await _call(stub.GetTask(GetTaskRequest(tenant=agent, id=task_id), timeout=self.timeout))
        return task

    async def list_tasks(
        self,
        agent: str = "",
        *,
        context_id: str = "",
        state: TaskState = TaskState.TASK_STATE_UNSPECIFIED,
        page_size: int = 50,
        page_token: str = "",
    ) -> ListTasksResponse:
        """Tasks, newest first: of one agent ("" for every agent), one thread, one state."""
        stub = a2a_pb2_grpc.A2AServiceStub(self.channel)
        request = ListTasksRequest(
            tenant=agent, context_id=context_id, status=state, page_size=page_size, page_token=page_token
        )
        response: ListTasksResponse = await _call(stub.ListTasks(request, timeout=self.timeout))
        return response

    async def cancel_task(self, agent: str, task_id: str) -> Task:
        """Cancel a task ("" for the agent: whichever serves it); the task as it ended."""
        stub = a2a_pb2_grpc.A2AServiceStub(self.channel)
        request = CancelTaskRequest(tenant=agent, id=task_id)
        task: Task = await _call(stub.CancelTask(request, timeout=self.timeout))
        return task

    # ---- threads -------------------------------------------------------------------------

    async def list_threads(
        self,
        where: thr.ListThreadsRequest | None = None,
        *,
        agent: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> thr.ListThreadsResponse:
        """Threads, most recent first: all, those of `agent`, or those matching `where` (any filter)."""
        stub = threads_pb2_grpc.ThreadServiceStub(self.channel)
        request = thr.ListThreadsRequest()
        request.CopyFrom(where or thr.ListThreadsRequest(agent=agent))
        request.page_size, request.page_token = page_size, page_token
        response: thr.ListThreadsResponse = await _call(stub.ListThreads(request, timeout=self.timeout))
        return response

    def export_threads(self, request: thr.ExportThreadsRequest) -> AsyncIterator[str]:
        """JSON lines of the selected threads, in the requested format."""
        stub = threads_pb2_grpc.ThreadServiceStub(self.channel)
        return _lines(_streamed(stub.ExportThreads(request)))

    # ---- operators -----------------------------------------------------------------------

    async def replay(self, selection: op.Selection, *, batch: int = 256) -> AsyncIterator[op.ReplayEvent]:
        """Read selected records of the routing topics back, with progress events: each record in
        its own event's `record` (the hub sends them `batch` to a stream message)."""
        stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        async for event in _streamed(stub.Replay(op.ReplayRequest(selection=selection, batch=batch))):
            if event.HasField("records"):
                for record in event.records.records:
                    yield op.ReplayEvent(record=record)
            else:
                yield event

    def replay_raw(self, selection: op.Selection, *, batch: int = 256) -> AsyncIterator[op.ReplayEvent]:
        """`replay` with the records as they are in the log, `batch` to an event's `raw`, and
        progress: for a client that renders records itself (as `agenthub replay` does)."""
        stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        return _streamed(stub.Replay(op.ReplayRequest(selection=selection, batch=batch, raw=True)))

    def rebuild(
        self, selection: op.Selection, *, apply: bool = False, from_scratch: bool = False
    ) -> AsyncIterator[op.Progress]:
        """Rebuild the thread store from the log (a dry run unless `apply`)."""
        stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        request = op.RebuildRequest(selection=selection, apply=apply, from_scratch=from_scratch)
        return _streamed(stub.Rebuild(request))

    def redrive(
        self, selection: op.Selection, agent: str, *, apply: bool = False
    ) -> AsyncIterator[op.Progress]:
        """Send selected requests or dead letters to `agent`'s inbox again (a dry run unless `apply`)."""
        stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        return _streamed(stub.Redrive(op.RedriveRequest(selection=selection, agent=agent, apply=apply)))

    async def topic_stats(self) -> op.TopicStatsResponse:
        """Topics with their records, and each consumer group's committed offsets and lag."""
        stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        stats: op.TopicStatsResponse = await _call(
            stub.TopicStats(op.TopicStatsRequest(), timeout=self.timeout)
        )
        return stats

    async def get_thread(self, context_id: str) -> thr.Thread:
        """One thread whole: its messages, tasks and artifacts (ThreadNotFound if it has none)."""
        stub = threads_pb2_grpc.ThreadServiceStub(self.channel)
        try:
            thread: thr.Thread = await _call(
                stub.GetThread(thr.GetThreadRequest(context_id=context_id), timeout=self.timeout)
            )
        except AgentNotFound as exc:  # NOT_FOUND from the thread service is about the thread
            raise ThreadNotFound(exc.message) from None
        return thread


def text_request(
    agent: str, text: str, *, context_id: str | None = None, task_id: str | None = None
) -> SendMessageRequest:
    """An A2A SendMessageRequest carrying one text part, addressed to `agent`."""
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if context_id:
        message.context_id = context_id
    if task_id:
        message.task_id = task_id
    return SendMessageRequest(tenant=agent, message=message)


async def _streamed(call: AsyncIterator[T]) -> AsyncIterator[T]:
    """A server stream whose failure becomes an AgentHub error."""
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc) from None


async def _lines(lines: AsyncIterator[thr.ExportLine]) -> AsyncIterator[str]:
    async for line in lines:
        yield line.json


async def _call(awaitable):  # type: ignore[no-untyped-def]
    """Await a gRPC call, turning its failure into an AgentHub error."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc) from None
