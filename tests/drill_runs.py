"""The fault drills: each breaks one part of a running hub under concurrent load and repairs it.

Each drill is one async function that runs real processes in `workdir`, returns a `Run` (the
figures, what readiness and GetTask said along the way, and the moments of fault and repair), and
asserts nothing: tests/test_fault_*.py assert on the run, scripts/drill.py prints its figures.

1. `store_restart`: the thread store's PostgreSQL killed and started again mid-load.
2. `broker_outage`: the Kafka broker killed for longer than the produce timeout, restarted with its
   data (Tansu on S3).
3. `poison_records`: raw garbage on every topic the hub reads, then a hub restart.
4. `agent_restart`: the agent killed mid-load and restarted on its port within the retry window.
5. `hub_restart`: the hub killed and restarted; a send as soon as it says it is ready.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Log, Record, TopicPartition
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import AgentHubError, HubClient
from tests.broker import Link, Tansu, s3_storage
from tests.conftest import eventually
from tests.drills import (
    Figures,
    Load,
    Readings,
    Watch,
    count,
    rebuild_would_write,
    wait_serving,
)
from tests.ledger_agent import ANSWER
from tests.postgres import PostgresCluster
from tests.processes import AgentProcess, HubProcess

AGENT = "counter"
GARBAGE = b"\xff\x00\x13 drill: not an envelope"


@dataclass
class Run:
    """What one drill measured."""

    figures: Figures
    readings: Readings = field(default_factory=Readings)
    fault_at: float = 0.0
    repaired_at: float = 0.0
    hub_log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outage(self) -> tuple[float, float]:
        return self.fault_at, self.repaired_at


def settings_for(data_dir: Path, **values: Any) -> HubSettings:
    """A drill hub's settings: production defaults (retries, circuit, timeouts) but no periodic
    agent health checks, so only the drill's own faults happen."""
    return HubSettings(data_dir=data_dir, port=0, http_port=0, health_interval_s=0, **values)


def kafka_settings(bootstrap: str) -> dict[str, Any]:
    return {"log": "kafka", "bootstrap": bootstrap, "topic_prefix": f"drill{uuid.uuid4().hex[:8]}"}


async def _loaded(hub: HubProcess, workdir: Path, senders: int, delay: float) -> tuple[AgentProcess, Load]:
    """The hub ready, the ledger agent registered, a load built (not started)."""
    await hub.start()
    await wait_serving(hub.address, 60)
    agent = AgentProcess(hub.address, workdir / "ledger.tsv", name=AGENT, delay=delay)
    await agent.start()
    return agent, Load(hub.address, hub.http_url, AGENT, senders=senders)


async def _warm_up(load: Load, extra_s: float = 1.0, timeout: float = 60.0) -> None:
    """Start the load and let it flow: two answers per sender at least (or `timeout`), then `extra_s`."""
    await load.start()
    await eventually(lambda: load.completed_at_least(2 * load.senders), timeout=timeout, interval=0.1)
    await asyncio.sleep(extra_s)


def _readiness_notes(figures: Figures, readings: Readings, fault_at: float, repaired_at: float) -> None:
    """What gRPC health and /readyz said while the part was down, and how soon after the repair
    the hub said SERVING again."""
    figures.notes["health_during_outage"] = sorted(readings.health_between(fault_at, repaired_at))
    figures.notes["readyz_during_outage"] = sorted(set(readings.readyz_between(fault_at, repaired_at)))[:3]
    serving = readings.first_serving_after(repaired_at)
    figures.notes["serving_after_repair_s"] = None if serving is None else round(serving - repaired_at, 1)


# ---- 1. the thread store restarted --------------------------------------------------------------


async def store_restart(
    workdir: Path,
    log_settings: dict[str, Any],
    *,
    senders: int = 12,
    warmup_s: float = 1.0,
    outage_s: float = 5.0,
    after_s: float = 4.0,
) -> Run:
    """PostgreSQL (the drill's own cluster) SIGKILLed mid-load and started again after `outage_s`."""
    # Its own temporary folder, not under `workdir`: the server runs as another user when root, and
    # pytest makes its own temporary folders private (again at each run's start, in any process).
    with PostgresCluster() as pg:
        admin = await asyncpg.connect(pg.url)
        await admin.execute("CREATE DATABASE drill")
        await admin.close()
        settings = settings_for(workdir / "hub", threads_url=pg.database_url("drill"), **log_settings)
        hub = HubProcess(settings, workdir / "hub")
        agent, load = await _loaded(hub, workdir, senders, delay=0.2)
        try:
            async with Watch(hub.address, hub.http_url, load) as watch:
                await _warm_up(load, warmup_s)
                fault_at = time.monotonic()
                await asyncio.to_thread(pg.kill)
                await asyncio.sleep(outage_s)
                await asyncio.to_thread(pg.start)
                repaired_at = time.monotonic()
                await asyncio.sleep(after_s)
                await load.stop()
                await load.settle(60)
                await wait_serving(hub.address, 30)
            figures = await count("store restart", _backend(settings), load, ledger=agent.ledger,
                                  repaired_at=repaired_at)  # fmt: skip
            figures.notes["rebuild_would_write"] = await _settled_rebuild(hub.address)
            figures.notes["get_task_answers"] = dict(watch.readings.get_task_codes())
            _readiness_notes(figures, watch.readings, fault_at, repaired_at)
            return Run(figures, watch.readings, fault_at, repaired_at, hub.log_tail(20_000))
        finally:
            await agent.kill()
            await hub.stop()


async def _settled_rebuild(hub: str, timeout: float = 30.0) -> int:
    """What a rebuild dry run would write once the recorder has caught up (bounded wait)."""
    written = [-1]

    async def caught_up() -> bool:
        written[0] = await rebuild_would_write(hub)
        return written[0] == 0

    await eventually(caught_up, timeout=timeout, interval=0.5)
    return written[0]


def _backend(settings: HubSettings) -> str:
    store = "postgres" if (settings.threads_url or "").startswith("postgres") else "sqlite"
    return f"{settings.log}/{store}"


# ---- 2. the broker down, then back with its data ------------------------------------------------


Step = Callable[[], Awaitable[None]]


@asynccontextmanager
async def _broker(mode: str) -> AsyncIterator[tuple[str, Step, Step]]:
    """A broker the drill can take away and bring back: its bootstrap address, how to break it and
    how to repair it.

    "kill": Tansu on S3 (moto), SIGKILLed and started again on its port with its data.
    "cut": Tansu in memory behind a `Link` that is cut (open connections reset, new ones refused,
    as with a dead broker) and restored; the broker itself keeps running with its data.
    """
    if mode == "kill":
        with s3_storage() as (storage, env):
            broker = Tansu(storage, env)
            await asyncio.to_thread(broker.start)
            try:
                yield (
                    broker.address,
                    partial(asyncio.to_thread, broker.kill),
                    partial(asyncio.to_thread, broker.start),
                )
            finally:
                broker.kill()
        return
    broker = Tansu()
    link = Link(broker.address)
    broker.advertise = link.address
    await asyncio.to_thread(broker.start)
    await link.restore()
    try:
        yield link.address, link.cut, link.restore
    finally:
        await link.cut()
        broker.kill()


async def broker_outage(
    workdir: Path,
    *,
    mode: str = "cut",
    senders: int = 12,
    warmup_s: float = 1.0,
    outage_s: float = 12.0,
    after_s: float = 5.0,
) -> Run:
    """The Kafka broker gone for `outage_s` mid-load (see `_broker` for the modes), then back with
    its data; two fresh senders keep trying while it is gone."""
    async with _broker(mode) as (bootstrap, fault, repair):
        settings = settings_for(workdir / "hub", **kafka_settings(bootstrap))
        hub = HubProcess(settings, workdir / "hub")
        agent, load = await _loaded(hub, workdir, senders, delay=0.2)
        try:
            async with Watch(hub.address, hub.http_url) as watch:
                await _warm_up(load, warmup_s)
                fault_at = time.monotonic()
                await fault()
                newcomers = Load(hub.address, hub.http_url, AGENT, senders=2, tag="outage")
                await newcomers.start()
                await asyncio.sleep(outage_s)
                await repair()
                repaired_at = time.monotonic()
                await asyncio.sleep(after_s)
                await asyncio.gather(load.stop(grace=60), newcomers.stop(grace=60))
                await load.settle(90)
                await newcomers.settle(30)
                await wait_serving(hub.address, 30)
            for each in (load, newcomers):
                each.dump(workdir / "requests.jsonl", fault_at)
            figures = await count(f"broker outage ({mode})", _backend(settings), load, newcomers,
                                  ledger=agent.ledger, repaired_at=repaired_at)  # fmt: skip
            figures.notes["outage_s"] = outage_s
            _readiness_notes(figures, watch.readings, fault_at, repaired_at)
            return Run(figures, watch.readings, fault_at, repaired_at, hub.log_tail(20_000))
        finally:
            await agent.kill()
            await hub.stop()


# ---- 3. poison records on every topic -----------------------------------------------------------


async def poison_records(
    workdir: Path, log_settings: dict[str, Any], *, senders: int = 8, load_s: float = 3.0
) -> Run:
    """Garbage produced (with the log API) on the inbox, replies, registry, push and control
    topics of a running hub; load before and after a hub restart. The hub runs in this process
    so the drill can produce with its log (the embedded log is one process's)."""
    port, http_port = free_port(), free_port()
    settings = settings_for(workdir / "hub", **log_settings).model_copy(
        update={"port": port, "http_port": http_port, "instance_id": "drill"}
    )
    topics = Topics(settings.topic_prefix)
    agent = AgentProcess(f"127.0.0.1:{port}", workdir / "ledger.tsv", name=AGENT, delay=0.1)
    figures, phases = Figures("poison records", _backend(settings)), []
    poisoned: dict[str, Record] = {}
    try:
        for phase in ("before restart", "after restart"):
            async with Hub(settings) as hub:
                if not poisoned:
                    await agent.start()
                    poisoned = await _poison(hub.log, topics, settings.instance_id)
                load = Load(hub.address, hub.http_url, AGENT, senders=senders, tag=phase.split()[0])
                await load.start()
                await asyncio.sleep(load_s)
                await load.stop()
                await load.settle(60)
                phase_figures = await count("poison records", figures.backend, load, ledger=agent.ledger)
                phases.append((phase, phase_figures, hub.readiness.problems()))
                kept = await _where_poison_went(hub.log, topics, poisoned)
        for _, each, _ in phases:
            for name in ("accepted", "completed", "failed", "lost", "duplicated"):
                setattr(figures, name, getattr(figures, name) + getattr(each, name))
        figures.notes["poison_kept"] = kept
        figures.notes["problems_at_end_of_each_phase"] = {phase: p for phase, _, p in phases}
        return Run(figures, extra={"phases": phases, "kept": kept})
    finally:
        await agent.kill()


async def _poison(log: Log, topics: Topics, instance: str) -> dict[str, Record]:
    """One garbage record on each topic the hub reads."""
    targets = {
        "inbox": topics.inbox(AGENT),
        "replies": topics.replies(instance),
        "registry": topics.registry,
        "push": topics.push,
        "control": topics.control,
    }
    return {name: await log.produce(topic, GARBAGE, key=b"poison") for name, topic in targets.items()}


async def _where_poison_went(log: Log, topics: Topics, poisoned: dict[str, Record]) -> dict[str, Any]:
    """For each poison record: how many copies of it sit in the DLQ and in the parked topic, with
    the reasons given (headers agenthub-error / agenthub-source)."""
    kept: dict[str, Any] = {}
    dlq = await _records(log, topics.dlq(AGENT))
    parked = await _records(log, topics.parked)
    for name, record in poisoned.items():
        source = f"{record.topic}/{record.partition}/{record.offset}".encode()
        kept[name] = {
            where: [dict(r.headers).get("agenthub-error", b"").decode() for r in found
                    if dict(r.headers).get("agenthub-source") == source]
            for where, found in (("dlq", dlq), ("parked", parked))
        }  # fmt: skip
    return kept


async def _records(log: Log, topic: str) -> list[Record]:
    if topic not in await log.list_topics():
        return []
    out: list[Record] = []
    for partition in await log.end_offsets(topic):
        out += await log.read(TopicPartition(topic, partition), 0, 10_000)
    return out


# ---- 4. the agent restarted ---------------------------------------------------------------------


async def agent_restart(
    workdir: Path,
    log_settings: dict[str, Any],
    *,
    senders: int = 12,
    warmup_s: float = 1.0,
    down_s: float = 3.0,
    after_s: float = 4.0,
) -> Run:
    """The agent SIGKILLed with ~`senders` requests in flight, restarted on its port after `down_s`."""
    settings = settings_for(workdir / "hub", **log_settings)
    hub = HubProcess(settings, workdir / "hub")
    agent, load = await _loaded(hub, workdir, senders, delay=1.0)
    try:
        async with Watch(hub.address, hub.http_url) as watch:
            await _warm_up(load, warmup_s)
            fault_at = time.monotonic()
            await agent.kill()
            await asyncio.sleep(down_s)
            await agent.start()
            repaired_at = time.monotonic()
            await asyncio.sleep(after_s)
            await load.stop(grace=90)
            await load.settle(90)
        figures = await count("agent restart", _backend(settings), load, ledger=agent.ledger,
                              repaired_at=repaired_at)  # fmt: skip
        figures.notes["agent_down_s"] = round(repaired_at - fault_at, 1)
        _readiness_notes(figures, watch.readings, fault_at, repaired_at)
        return Run(figures, watch.readings, fault_at, repaired_at, hub.log_tail(20_000))
    finally:
        await agent.kill()
        await hub.stop()


# ---- 5. the hub restarted -----------------------------------------------------------------------


async def hub_restart(
    workdir: Path,
    log_settings: dict[str, Any],
    *,
    senders: int = 8,
    warmup_s: float = 1.0,
    after_s: float = 4.0,
    probe_timeout_s: float = 30.0,
) -> Run:
    """The hub SIGKILLed mid-load and started again; one send the moment its health says SERVING."""
    settings = settings_for(workdir / "hub", **log_settings)
    hub = HubProcess(settings, workdir / "hub")
    agent, load = await _loaded(hub, workdir, senders, delay=0.2)
    try:
        await _warm_up(load, warmup_s)
        fault_at = time.monotonic()
        await hub.kill()
        await hub.spawn()
        ready_after = await wait_serving(hub.address, 90)
        repaired_at = time.monotonic()
        probe = await _probe_send(hub.address, probe_timeout_s)
        await asyncio.sleep(after_s)
        await load.stop(grace=60)
        await load.settle(90)
        figures = await count("hub restart", _backend(settings), load, ledger=agent.ledger,
                              repaired_at=repaired_at, hub_died=True)  # fmt: skip
        figures.notes["ready_after_s"] = None if ready_after is None else round(ready_after, 1)
        figures.notes["first_send_after_ready"] = probe
        return Run(figures, Readings(), fault_at, repaired_at, hub.log_tail(20_000), {"probe": probe})
    finally:
        await agent.kill()
        await hub.stop()


async def _probe_send(hub: str, timeout: float) -> dict[str, Any]:
    """One send with HubClient: answered (and how fast), or the error it got."""
    started = time.monotonic()
    async with HubClient(hub) as client:
        try:
            task = await client.send(AGENT, "probe after restart", timeout=timeout)
        except AgentHubError as exc:
            return {"answered": False, "error": f"{type(exc).__name__}: {exc.message}"[:300],
                    "after_s": round(time.monotonic() - started, 2)}  # fmt: skip
    answer = task.status.message.parts[0].text if task.HasField("status") else ""
    return {"answered": answer == ANSWER.format("probe after restart"), "answer": answer[:200],
            "after_s": round(time.monotonic() - started, 2)}  # fmt: skip
