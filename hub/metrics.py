"""Prometheus metrics of one hub, served at `/metrics` on its HTTP port: the gRPC calls it answered,
the requests it delivered to agents and how they ended, dead letters, consumer lag and readiness.

Each hub has a registry of its own (a test process runs several hubs). Counters are filled by one
gRPC interceptor and by the dispatcher's delivery and dead-letter paths; lag and readiness are read
when Prometheus scrapes. Labels are method names, agent names, states and group kinds: never a
task id, a message or a credential.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agenthub.hub.heads.interceptors import Behavior, MethodInterceptor
from agenthub.hub.loops import Readiness
from agenthub.sdk.pb import operator_pb2 as op

# Latency buckets (seconds): a hop of the hub takes milliseconds; an agent with a model, seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The hub's counters, histograms and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._rpcs = Counter(
            "agenthub_grpc_requests", "gRPC calls the hub answered, by method and status code",
            ["method", "code"], registry=self.registry,
        )  # fmt: skip
        self._rpc_seconds = Histogram(
            "agenthub_grpc_request_seconds", "How long the hub took to answer a gRPC call, by method",
            ["method"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._deliveries = Counter(
            "agenthub_deliveries", "Requests taken from an inbox, by agent and the state they ended in",
            ["agent", "state"], registry=self.registry,
        )  # fmt: skip
        self._delivery_seconds = Histogram(
            "agenthub_delivery_seconds",
            "From taking a request off the inbox to its outcome in the log, retries included, by agent",
            ["agent"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._dead_letters = Counter(
            "agenthub_dead_letters", "Records put in an agent's dead-letter topic", ["agent"],
            registry=self.registry,
        )  # fmt: skip
        self._lag = Gauge(
            "agenthub_consumer_lag", "Records not yet consumed, by consumer group (prefix left out)",
            ["group"], registry=self.registry,
        )  # fmt: skip
        self._down = Gauge(
            "agenthub_part_down", "1 for each part of the hub that is down or still starting",
            ["part"], registry=self.registry,
        )  # fmt: skip
        self._ready = Gauge("agenthub_ready", "1 when every part of the hub is up", registry=self.registry)

    def answered(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        name = method.rsplit("/", 1)[-1]
        self._rpcs.labels(name, code.name).inc()
        self._rpc_seconds.labels(name).observe(seconds)

    def delivered(self, agent: str, state: str, seconds: float) -> None:
        """A request's delivery ended; `state` is the task state it left in the log."""
        self._deliveries.labels(agent, state.removeprefix("TASK_STATE_").lower()).inc()
        self._delivery_seconds.labels(agent).observe(seconds)

    def dead_lettered(self, agent: str) -> None:
        self._dead_letters.labels(agent).inc()

    def exposition(self, readiness: Readiness, stats: op.TopicStatsResponse, prefix: str) -> bytes:
        """The text Prometheus scrapes, with readiness and lag read now."""
        problems = readiness.problems()
        self._ready.set(0 if problems else 1)
        self._down.clear()
        for part in problems:
            self._down.labels(part).set(1)
        lag: dict[str, int] = {}
        for topic in stats.topics:
            for group in topic.groups:
                name = group.group.removeprefix(f"{prefix}.")
                lag[name] = lag.get(name, 0) + group.lag
        self._lag.clear()
        for name, records in lag.items():
            self._lag.labels(name).set(records)
        return generate_latest(self.registry)


class MetricsInterceptor(MethodInterceptor):
    """Counts and times every unary-request gRPC call by method and status code (outermost, so a
    refusal by the guard counts too). Streams written with `context.write` (health Watch) pass."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def wrap_unary(self, behavior: Behavior, method: str) -> Behavior:
        metrics = self._metrics

        async def metered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
            try:
                reply = await behavior(request, context)
                code = grpc.StatusCode.OK
                return reply
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                metrics.answered(method, _code(context, code), time.perf_counter() - started)

        return metered

    def wrap_stream(self, behavior: Behavior, method: str) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            return behavior
        metrics = self._metrics

        async def metered(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
            try:
                async with aclosing(behavior(request, context)) as items:
                    async for item in items:
                        yield item
                code = grpc.StatusCode.OK
            except (asyncio.CancelledError, GeneratorExit):  # the caller went away
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                metrics.answered(method, _code(context, code), time.perf_counter() - started)

        return metered


def _code(context: grpc.aio.ServicerContext, otherwise: grpc.StatusCode) -> grpc.StatusCode:
    """The status code the call ended with, as its handler set it (an abort), else `otherwise`."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else otherwise
