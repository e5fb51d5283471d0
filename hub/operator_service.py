"""agenthub.v1.OperatorService: replay, rebuild, re-drive and topic stats over gRPC, so the CLI, a UI
or another tool drive the same `Operator`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agenthub.hub.operator import Operator
from agenthub.hub.services import abort_with, streamed
from agenthub.sdk.errors import AgentHubError
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import operator_pb2_grpc


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    """The operator service over one hub's `Operator`."""

    def __init__(self, operator: Operator) -> None:
        self._operator = operator

    async def Replay(
        self, request: op.ReplayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.ReplayEvent]:
        async for event in streamed(self._operator.replay(request.selection), context):
            yield event

    async def Rebuild(
        self, request: op.RebuildRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.Progress]:
        rebuild = self._operator.rebuild(
            request.selection, apply=request.apply, from_scratch=request.from_scratch
        )
        async for progress in streamed(rebuild, context):
            yield progress

    async def Redrive(
        self, request: op.RedriveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[op.Progress]:
        redrive = self._operator.redrive(request.selection, request.agent, apply=request.apply)
        async for progress in streamed(redrive, context):
            yield progress

    async def TopicStats(
        self, request: op.TopicStatsRequest, context: grpc.aio.ServicerContext
    ) -> op.TopicStatsResponse:
        try:
            return await self._operator.stats()
        except AgentHubError as exc:
            await abort_with(context, exc)
            raise
