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
from tests.broker import Tansu, behind_a_link, s3_storage
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
from tests.ledger_agent import ANSWER, in_flight
from tests.postgres import PostgresCluster
from tests.processes import AgentProcess, HubProcess

AGENT = "counter"
GARBAGE = b"\xff\x00\x13 drill: not an envelope"
Step = Callable[[], Awaitable[None]]  # how a drill breaks a part, or repairs it


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


@dataclass
class Rig:
    """What a drill runs: its folder, the hub's settings, the hub and agent processes, the load."""

    workdir: Path
    settings: HubSettings
    hub: HubProcess
    agent: AgentProcess
    load: Load


@dataclass
class Timing:
    """How long the load runs before the fault (at least), while the part is down, and after."""

    warmup_s: float = 1.0
    outage_s: float = 5.0
    after_s: float = 4.0


@asynccontextmanager
async def _running(settings: HubSettings, workdir: Path, senders: int, delay: float) -> AsyncIterator[Rig]:
    """A hub process (ready), the ledger agent registered with it, and a load (not started);
    the processes are ended on the way out."""
    hub = HubProcess(settings, workdir / "hub")
    agent = AgentProcess(hub.address, workdir / "ledger.tsv", name=AGENT, delay=delay)
    try:
        await hub.start()
        await wait_serving(hub.address, 60)
        await agent.start()
        yield Rig(workdir, settings, hub, agent, Load(hub.address, hub.http_url, AGENT, senders=senders))
    finally:
        await agent.kill()
        await hub.stop()


async def _outage(
    rig: Rig,
    drill: str,
    fault: Step,
    repair: Step,
    timing: Timing,
    *,
    probe_get_task: bool = False,
    newcomers: int = 0,
) -> Run:
    """Load, fault, `outage_s`, repair, `after_s` more load; then every request's end read back and
    counted. `newcomers` fresh senders start at the fault (what does a new client get meanwhile?);
    `probe_get_task`: GetTask of accepted tasks all along (never NOT_FOUND)."""
    hub, loads = rig.hub, [rig.load]
    async with Watch(hub.address, hub.http_url, rig.load if probe_get_task else None) as watch:
        await _warm_up(rig.load, timing.warmup_s)
        await fault()
        fault_at = time.monotonic()  # the part is down from here
        if newcomers:
            loads.append(Load(hub.address, hub.http_url, AGENT, senders=newcomers, tag="outage"))
            await loads[-1].start()
        await asyncio.sleep(timing.outage_s)
        await repair()
        repaired_at = time.monotonic()
        await asyncio.sleep(timing.after_s)
        await asyncio.gather(*(load.stop(grace=90) for load in loads))
        for load in loads:
            await load.settle(90)
            load.dump(rig.workdir / "requests.jsonl", fault_at)
        await wait_serving(hub.address, 60)  # a loaded machine (CI's other worker) can take a while
        await watch.saw_serving_after(repaired_at)
    backend, ledger = _backend(rig.settings), rig.agent.ledger
    figures = await count(drill, backend, *loads, ledger=ledger, repaired_at=repaired_at)
    readings, notes = watch.readings, figures.notes
    serving = readings.first_serving_after(repaired_at)
    notes["down_s"] = round(repaired_at - fault_at, 1)
    notes["health_during_outage"] = sorted(readings.health_between(fault_at, repaired_at))
    notes["readyz_during_outage"] = sorted(set(readings.readyz_between(fault_at, repaired_at)))[:3]
    notes["serving_after_repair_s"] = None if serving is None else round(serving - repaired_at, 1)
    if serving is None and readings.readyz:
        notes["readyz_at_the_end"] = readings.readyz[-1][1:]
    return Run(figures, readings, fault_at, repaired_at, hub.log_tail(20_000))


async def _warm_up(load: Load, extra_s: float = 1.0, timeout: float = 60.0) -> None:
    """Start the load and let it flow: two answers per sender at least (or `timeout`), then `extra_s`."""
    await load.start()
    await eventually(lambda: load.completed_at_least(2 * load.senders), timeout=timeout, interval=0.1)
    await asyncio.sleep(extra_s)


# ---- 1. the thread store restarted --------------------------------------------------------------


async def store_restart(
    workdir: Path, log_settings: dict[str, Any], *, senders: int = 12, timing: Timing | None = None
) -> Run:
    """PostgreSQL (the drill's own cluster) SIGKILLed mid-load and started again after `outage_s`;
    GetTask of accepted tasks all along; a rebuild dry run once the recorder has caught up."""
    # Its own temporary folder, not under `workdir`: the server runs as another user when root, and
    # pytest makes its own temporary folders private (again at each run's start, in any process).
    with PostgresCluster() as pg:
        admin = await asyncpg.connect(pg.url)
        await admin.execute("CREATE DATABASE drill")
        await admin.close()
        settings = settings_for(workdir / "hub", threads_url=pg.database_url("drill"), **log_settings)
        async with _running(settings, workdir, senders, delay=0.2) as rig:
            fault, repair = partial(asyncio.to_thread, pg.kill), partial(asyncio.to_thread, pg.start)
            run = await _outage(rig, "store restart", fault, repair, timing or Timing(), probe_get_task=True)
            run.figures.notes["rebuild_would_write"] = await _settled_rebuild(rig.hub.address)
            run.figures.notes["get_task_answers"] = dict(run.readings.get_task_codes())
            return run


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


@asynccontextmanager
async def _broker(mode: str) -> AsyncIterator[tuple[str, Step, Step]]:
    """A broker the drill can take away and bring back: its bootstrap address, how to break it and
    how to repair it.

    "kill": Tansu on S3 (moto), SIGKILLed and started again on its port with its data. Only for
    small drills: Tansu 0.6.0 on S3 stops serving a partition's records past about the hundredth.
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
    async with behind_a_link() as link:
        yield link.address, link.cut, link.restore


async def broker_outage(
    workdir: Path, *, mode: str = "cut", senders: int = 12, timing: Timing | None = None
) -> Run:
    """The Kafka broker gone for `outage_s` mid-load (see `_broker` for the modes), then back with
    its data; two fresh senders keep trying while it is gone."""
    async with _broker(mode) as (bootstrap, fault, repair):
        settings = settings_for(workdir / "hub", **kafka_settings(bootstrap))
        async with _running(settings, workdir, senders, delay=0.2) as rig:
            timing = timing or Timing(outage_s=12.0)
            return await _outage(rig, f"broker outage ({mode})", fault, repair, timing, newcomers=2)


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
                await wait_serving(hub.address, 60)
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
    workdir: Path, log_settings: dict[str, Any], *, senders: int = 12, timing: Timing | None = None
) -> Run:
    """The agent SIGKILLed with ~`senders` requests in flight, restarted on its port after `outage_s`."""
    settings = settings_for(workdir / "hub", **log_settings)
    async with _running(settings, workdir, senders, delay=1.0) as rig:
        agent = rig.agent

        async def kill_mid_call() -> None:  # the moment the agent holds half the senders' requests
            await eventually(lambda: _holds(agent, senders // 2), timeout=30, interval=0.02)
            await agent.kill()

        timing = timing or Timing(outage_s=3.0)
        return await _outage(rig, "agent restart", kill_mid_call, agent.start, timing)


async def _holds(agent: AgentProcess, requests: int) -> bool:
    return in_flight(agent.ledger) >= requests


# ---- 5. the hub restarted -----------------------------------------------------------------------


async def hub_restart(
    workdir: Path,
    log_settings: dict[str, Any],
    *,
    senders: int = 8,
    timing: Timing | None = None,
    probe_timeout_s: float = 30.0,
) -> Run:
    """The hub SIGKILLed mid-load and started again; one send the moment its health says SERVING."""
    timing = timing or Timing()
    settings = settings_for(workdir / "hub", **log_settings)
    async with _running(settings, workdir, senders, delay=0.2) as rig:
        hub, load = rig.hub, rig.load
        await _warm_up(load, timing.warmup_s)
        fault_at = time.monotonic()
        await hub.kill()
        await hub.spawn()
        ready_after = await wait_serving(hub.address, 90)
        repaired_at = time.monotonic()
        probe = await _probe_send(hub.address, probe_timeout_s)
        await asyncio.sleep(timing.after_s)
        await load.stop(grace=60)
        await load.settle(90)
        figures = await count("hub restart", _backend(settings), load, ledger=rig.agent.ledger,
                              repaired_at=repaired_at, hub_died=True)  # fmt: skip
        figures.notes["ready_after_s"] = None if ready_after is None else round(ready_after, 1)
        figures.notes["first_send_after_ready"] = probe
        return Run(figures, Readings(), fault_at, repaired_at, hub.log_tail(20_000), {"probe": probe})


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
