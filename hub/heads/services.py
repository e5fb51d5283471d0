"""The hub's own gRPC services (registry, threads) and the A2A gRPC adapter with AgentHub's error table.

Servicers raise AgentHub errors and let them go: the server's `GuardInterceptor` (hub/heads/guard.py)
ends each call with the error's status from the one table, and turns anything unexpected into a
logged, generic INTERNAL. Client input is checked here with `agenthub.hub.heads.validation`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from a2a.server.request_handlers import GrpcHandler, RequestHandler
from a2a.types import TaskState
from a2a.utils.errors import A2AError
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.heads import validation
from agenthub.hub.heads.front import ID
from agenthub.hub.heads.guard import GuardedHandler, abort
from agenthub.hub.operators import export
from agenthub.hub.operators.operator import Operator
from agenthub.hub.recording import thread_view
from agenthub.hub.recording.recorder import Recorder
from agenthub.hub.routing.registry import Registry
from agenthub.hub.threads._base import (
    MessageRow,
    StatusRow,
    TaskRow,
    ThreadFilter,
    ThreadStore,
    ThreadSummary,
)
from agenthub.hub.threads.outage import not_recorded_yet
from agenthub.hub.trust.policy import sees_everything
from agenthub.hub.trust.principal import CURRENT, is_person
from agenthub.sdk.errors import InvalidRequest, ThreadNotFound
from agenthub.sdk.pb import registry_pb2 as reg
from agenthub.sdk.pb import registry_pb2_grpc, threads_pb2_grpc
from agenthub.sdk.pb import threads_pb2 as thr


class HubGrpcHandler(GrpcHandler):
    """a2a-sdk's gRPC adapter over the guarded handler; every error gets its status from the one
    table in `agenthub.sdk.errors` (the A2A specification's codes for A2A's own errors)."""

    def __init__(self, handler: RequestHandler) -> None:
        super().__init__(GuardedHandler(handler))

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        await abort(context, error)


def thread_filter(request: thr.ListThreadsRequest) -> ThreadFilter:
    """The store filter a listing (or export) request asks for."""
    if request.state and request.state not in TaskState.keys():  # noqa: SIM118 - an enum wrapper, not a dict
        raise InvalidRequest(
            f"unknown state {request.state!r}: use an A2A TaskState name like TASK_STATE_FAILED"
        )
    return ThreadFilter(
        agent=validation.text(request.agent, "agent") or None,
        state=request.state or None,
        text=validation.text(request.text, "text", validation.MAX_SEARCH_CHARS) or None,
        since=validation.timestamp(request.since, "since") if request.HasField("since") else None,
        until=validation.timestamp(request.until, "until") if request.HasField("until") else None,
    )


def _context_id(value: str) -> str:
    if not ID.match(value):
        raise InvalidRequest(f"invalid context_id {value[:40]!r}: use 1-128 URL-safe characters")
    return value


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """agenthub.v1.RegistryService over the registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def RegisterAgent(
        self, request: reg.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.RegisterAgentResponse:
        if request.url:
            agent = await self._registry.register_url(
                request.url, request.name, replica=request.replica, authorization=request.authorization
            )
        else:
            agent = await self._registry.register(
                request.card_json, request.endpoint, replica=request.replica
            )
        return reg.RegisterAgentResponse(agent=agent.record)

    async def DeregisterAgent(
        self, request: reg.DeregisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.DeregisterAgentResponse:
        await self._registry.deregister(request.name, request.endpoint)
        return reg.DeregisterAgentResponse()

    async def ListAgents(
        self, request: reg.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> reg.ListAgentsResponse:
        return reg.ListAgentsResponse(agents=[a.record for a in self._registry.list()])

    async def GetAgent(
        self, request: reg.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.AgentRecord:
        return self._registry.get(request.name).record

    async def Heartbeat(
        self, request: reg.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> reg.HeartbeatResponse:
        self._registry.heartbeat(request.name, request.endpoint)
        return reg.HeartbeatResponse()

    async def WatchAgents(
        self, request: reg.WatchAgentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[reg.AgentChange]:
        async for change in self._registry.watch():
            yield change


def _ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def summary_pb(s: ThreadSummary) -> thr.ThreadSummary:
    return thr.ThreadSummary(
        context_id=s.context_id,
        started_at=_ts(s.started_at),
        updated_at=_ts(s.updated_at),
        message_count=s.message_count,
        agents=s.agents,
        first_text=s.first_text,
    )


def message_pb(m: MessageRow) -> thr.ThreadMessage:
    return thr.ThreadMessage(
        message_id=m.message_id,
        context_id=m.context_id,
        task_id=m.task_id,
        parent_task_id=m.parent_task_id,
        sender=m.sender,
        recipient=m.recipient,
        role=m.role,
        text=m.text,
        message_json=m.message_json,
        created_at=_ts(m.created_at),
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        traceparent=m.traceparent,
        envelope_id=m.envelope_id,
    )


def task_pb(t: TaskRow) -> thr.ThreadTask:
    return thr.ThreadTask(
        task_id=t.task_id,
        context_id=t.context_id,
        agent=t.agent,
        parent_task_id=t.parent_task_id,
        state=TaskState.Name(t.task.status.state),
        created_at=_ts(t.created_at),
        updated_at=_ts(t.updated_at),
        history=[_status_pb(s) for s in t.history],
    )


def _status_pb(s: StatusRow) -> thr.StatusChange:
    return thr.StatusChange(state=s.state, text=s.text, at=_ts(s.at))


class ThreadServicer(threads_pb2_grpc.ThreadServiceServicer):
    """agenthub.v1.ThreadService over the thread store."""

    def __init__(
        self,
        store: ThreadStore,
        registry: Registry,
        operator: Operator,
        recorder: Recorder | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._operator = operator
        self._recorder = recorder  # read-your-writes: what this hub routed is recorded before a read

    async def _fresh(self, context_id: str = "") -> bool:
        """Wait until what this hub routed is recorded: of one thread, or of all of them; False
        if the wait ran out."""
        return self._recorder is None or await self._recorder.settle_thread(context_id)

    async def _visible_messages(self, context_id: str, settled: bool = True) -> list[MessageRow]:
        """A thread's messages, if the caller may read it: admins and operators any thread, others
        those they sent or received a message in (another's thread is "not found", as a missing one).
        `settled`: False if this hub routed records of the thread that may not be recorded yet."""
        messages = await self._store.thread_messages(_context_id(context_id))
        if not messages and not settled:
            raise not_recorded_yet(f"thread {context_id!r}")
        principal = CURRENT.get()
        taking_part = any(principal.sender in (m.sender, m.recipient) for m in messages)
        if not messages or not (sees_everything(principal) or taking_part):
            raise ThreadNotFound(f"no thread with id {context_id!r}")
        return messages

    async def ListThreads(
        self, request: thr.ListThreadsRequest, context: grpc.aio.ServicerContext
    ) -> thr.ListThreadsResponse:
        size = validation.page_size(request.page_size, default=50)
        where, offset = thread_filter(request), validation.page_offset(request.page_token)
        await self._fresh()
        page = await self._store.list_threads(where, limit=size, offset=offset)
        return thr.ListThreadsResponse(
            threads=[summary_pb(t) for t in page.threads],
            next_page_token=str(page.next_offset) if page.next_offset is not None else "",
        )

    async def GetThread(self, request: thr.GetThreadRequest, context: grpc.aio.ServicerContext) -> thr.Thread:
        settled = await self._fresh(request.context_id)
        messages = await self._visible_messages(request.context_id, settled)
        tasks = await self._store.thread_tasks(request.context_id)
        participants = {m.recipient for m in messages} | {m.sender for m in messages}
        agents = sorted(p for p in participants if not is_person(p))
        summary = ThreadSummary(
            request.context_id,
            messages[0].created_at,
            messages[-1].created_at,
            len(messages),
            agents,
            messages[0].text,
        )
        return thr.Thread(
            summary=summary_pb(summary),
            messages=[message_pb(m) for m in messages],
            tasks=[task_pb(t) for t in tasks],
            artifacts=await thread_view.artifacts(self._store, request.context_id),
        )

    async def ExportThreads(
        self, request: thr.ExportThreadsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[thr.ExportLine]:
        if request.context_id:
            await self._visible_messages(request.context_id)
        ids = await export.thread_ids(self._store, request.context_id, thread_filter(request.filter))
        if request.format == thr.EXPORT_FORMAT_CHAT:
            lines = export.chat_lines(self._store, self._registry, ids)
        else:
            lines = export.envelope_lines(self._operator, ids)
        async for line in lines:
            yield thr.ExportLine(json=line)
