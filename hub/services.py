"""The hub's own gRPC services (registry, threads) and the A2A gRPC adapter with AgentHub's error table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from a2a.server.request_handlers import GrpcHandler
from a2a.types import TaskState
from a2a.utils.errors import A2AError
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub import export
from agenthub.hub.operator import Operator
from agenthub.hub.registry import Registry
from agenthub.hub.threads._base import (
    MessageRow,
    StatusRow,
    TaskRow,
    ThreadFilter,
    ThreadStore,
    ThreadSummary,
)
from agenthub.sdk.errors import AgentHubError, InvalidRequest, ThreadNotFound, status_of
from agenthub.sdk.pb import registry_pb2 as reg
from agenthub.sdk.pb import registry_pb2_grpc, threads_pb2_grpc
from agenthub.sdk.pb import threads_pb2 as thr

T = TypeVar("T")


class HubGrpcHandler(GrpcHandler):
    """a2a-sdk's gRPC adapter; AgentHub's own errors get their codes from `agenthub.sdk.errors`."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, AgentHubError):
            await context.abort(status_of(error).grpc, error.message)
        await super().abort_context(error, context)


async def abort_with(context: grpc.aio.ServicerContext, error: AgentHubError) -> None:
    await context.abort(status_of(error).grpc, error.message)


async def streamed(items: AsyncIterator[T], context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
    """A server stream whose AgentHub errors end the call with their mapped status."""
    try:
        async for item in items:
            yield item
    except AgentHubError as exc:
        await abort_with(context, exc)


def page_offset(token: str) -> int:
    """The offset a page token stands for; InvalidRequest for a token we did not hand out."""
    try:
        offset = int(token or 0)
    except ValueError:
        raise InvalidRequest(f"invalid page_token {token!r}") from None
    if offset < 0:
        raise InvalidRequest(f"invalid page_token {token!r}")
    return offset


def thread_filter(request: thr.ListThreadsRequest) -> ThreadFilter:
    """The store filter a listing (or export) request asks for."""
    if request.state and request.state not in TaskState.keys():  # noqa: SIM118 - an enum wrapper, not a dict
        raise InvalidRequest(
            f"unknown state {request.state!r}: use an A2A TaskState name like TASK_STATE_FAILED"
        )
    return ThreadFilter(
        agent=request.agent or None,
        state=request.state or None,
        text=request.text or None,
        since=request.since.ToNanoseconds() / 1e9 if request.HasField("since") else None,
        until=request.until.ToNanoseconds() / 1e9 if request.HasField("until") else None,
    )


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """agenthub.v1.RegistryService over the registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def RegisterAgent(
        self, request: reg.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.RegisterAgentResponse:
        try:
            if request.url:
                agent = await self._registry.register_url(request.url, request.name)
            else:
                agent = await self._registry.register(request.card_json, request.endpoint)
        except AgentHubError as exc:
            await abort_with(context, exc)
            raise
        return reg.RegisterAgentResponse(agent=agent.record)

    async def DeregisterAgent(
        self, request: reg.DeregisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.DeregisterAgentResponse:
        try:
            await self._registry.deregister(request.name)
        except AgentHubError as exc:
            await abort_with(context, exc)
        return reg.DeregisterAgentResponse()

    async def ListAgents(
        self, request: reg.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> reg.ListAgentsResponse:
        return reg.ListAgentsResponse(agents=[a.record for a in self._registry.list()])

    async def GetAgent(
        self, request: reg.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> reg.AgentRecord:
        try:
            return self._registry.get(request.name).record
        except AgentHubError as exc:
            await abort_with(context, exc)
            raise

    async def Heartbeat(
        self, request: reg.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> reg.HeartbeatResponse:
        try:
            self._registry.heartbeat(request.name)
        except AgentHubError as exc:
            await abort_with(context, exc)
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

    def __init__(self, store: ThreadStore, registry: Registry, operator: Operator) -> None:
        self._store = store
        self._registry = registry
        self._operator = operator

    async def ListThreads(
        self, request: thr.ListThreadsRequest, context: grpc.aio.ServicerContext
    ) -> thr.ListThreadsResponse:
        size = request.page_size or 50
        try:
            where, offset = thread_filter(request), page_offset(request.page_token)
        except AgentHubError as exc:
            await abort_with(context, exc)
            raise
        page = await self._store.list_threads(where, limit=min(size, 500), offset=offset)
        return thr.ListThreadsResponse(
            threads=[summary_pb(t) for t in page.threads],
            next_page_token=str(page.next_offset) if page.next_offset is not None else "",
        )

    async def GetThread(self, request: thr.GetThreadRequest, context: grpc.aio.ServicerContext) -> thr.Thread:
        messages = await self._store.thread_messages(request.context_id)
        if not messages:
            await abort_with(context, ThreadNotFound(f"no thread with id {request.context_id!r}"))
        tasks = await self._store.thread_tasks(request.context_id)
        agents = sorted(({m.recipient for m in messages} | {m.sender for m in messages}) - {"user"})
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
        )

    async def ExportThreads(
        self, request: thr.ExportThreadsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[thr.ExportLine]:
        async for line in streamed(self._export(request), context):
            yield line

    async def _export(self, request: thr.ExportThreadsRequest) -> AsyncIterator[thr.ExportLine]:
        ids = await export.thread_ids(self._store, request.context_id, thread_filter(request.filter))
        if request.format == thr.EXPORT_FORMAT_CHAT:
            lines = export.chat_lines(self._store, self._registry, ids)
        else:
            lines = export.envelope_lines(self._operator, ids)
        async for line in lines:
            yield thr.ExportLine(json=line)
