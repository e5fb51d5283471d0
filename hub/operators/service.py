"""agenthub.v1.OperatorService: replay, rebuild, re-drive and topic stats over gRPC, so the CLI, a UI
or another tool drive the same `Operator`.

The selection a client sends is checked here (offsets and times a log can hold); errors go out
through the server's `GuardInterceptor` with their status from the one table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agenthub.hub.heads import validation
from agenthub.hub.operators.operator import Operator
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import operator_pb2_grpc

MAX_BATCH = 1000  # records per replay stream message, at most (a message stays well under gRPC's 4 MB)


def checked(selection: op.Selection) -> op.Selection:
    """The selection, if every value in it is one the log can be asked about."""
    for field in ("from_offset", "to_offset"):
        if selection.HasField(field):
            validation.offset(getattr(selection, field), field)
    for field in ("from_time", "to_time"):
        if selection.HasField(field):
            validation.timestamp(getattr(selection, field), field)
    for field in ("context_id", "agent", "sender", "kind"):
        validation.text(getattr(selection, field), field)
    for topic in selection.topics:
        validation.text(topic, "topics")
    return selection


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    """The operator service over one hub's `Operator`."""

    def __init__(self, operator: Operator) -> None:
        self._operator = operator

    async def Replay(
        self, request: op.ReplayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.ReplayEvent]:
        selection, batch = checked(request.selection), min(request.batch, MAX_BATCH)
        async for event in self._operator.replay(selection, batch, raw=request.raw):
            yield event

    async def Rebuild(
        self, request: op.RebuildRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.Progress]:
        selection = checked(request.selection)
        rebuild = self._operator.rebuild(selection, apply=request.apply, from_scratch=request.from_scratch)
        async for progress in rebuild:
            yield progress

    async def Redrive(
        self, request: op.RedriveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.Progress]:
        redrive = self._operator.redrive(checked(request.selection), request.agent, apply=request.apply)
        async for progress in redrive:
            yield progress

    async def TopicStats(
        self, request: op.TopicStatsRequest, context: grpc.aio.ServicerContext
    ) -> op.TopicStatsResponse:
        return await self._operator.stats()
