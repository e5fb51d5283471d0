"""Redelivery through the recorder's own batching (scripts/mutate.py recorder): records replayed
after a crash, in a later batch or repeated inside one batch, leave the thread, the task and its
status rows exactly as recording each record once does; a record it cannot read is parked with
the reason and its source, recording goes on, and a wait for it says recorded. A store outage on
the embedded log (the SQLite store locked by another writer) shows in the hub's readiness while it
lasts, and a read-your-writes wait never says a record stuck behind it is recorded, nor one it
looks up in a store that is down (PostgreSQL stopped); a wait for a record another instance
records (looked up in the store) ends soon after the store has it, however long it waited. A read
while the store is stuck, before readiness says so, answers what the store holds once its bounded
wait for recording is over, never an internal error."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from a2a.types import GetTaskRequest, a2a_pb2_grpc

from agenthub.hub import envelopes
from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Record, TopicPartition
from agenthub.hub.recording.recorder import record_batch
from agenthub.hub.server import Hub
from agenthub.hub.threads.sqlite import SqliteThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.errors import StoreUnavailable, ThreadNotFound
from agenthub.sdk.pb import threads_pb2 as thr
from agenthub.sdk.pb import threads_pb2_grpc
from tests.conftest import eventually
from tests.postgres import PostgresCluster
from tests.test_delivery import echo
from tests.test_delivery import records as delivered
from tests.test_projection import CONTEXT, conversation, snapshot
from tests.test_promises_routing import submit


def records() -> list[Record]:
    """The request and its two events, as one partition's records."""
    return [
        Record("t", 0, offset, CONTEXT.encode(), envelope.SerializeToString(), 0)
        for offset, envelope in enumerate(conversation())
    ]


async def test_replayed_and_repeated_records_change_nothing(tmp_path: Path) -> None:
    request, working, completed = records()
    async with SqliteThreadStore(tmp_path / "once.db") as store:
        assert (await record_batch(store, [request, working, completed]))[0] == 3
        once = await snapshot(store)
    async with SqliteThreadStore(tmp_path / "replayed.db") as store:
        assert (await record_batch(store, [request, working]))[0] == 2
        # after a crash the last batch comes again, with what followed it
        assert (await record_batch(store, [request, working, completed])) == (1, [])
        assert await snapshot(store) == once
    async with SqliteThreadStore(tmp_path / "repeated.db") as store:
        assert (await record_batch(store, [request, working, working, completed, completed]))[0] == 3
        assert await snapshot(store) == once
    assert once[1] == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]


async def test_a_record_the_recorder_cannot_read_is_parked_saying_why_and_where_from(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        topics = Topics(hub.settings.topic_prefix)
        garbage = await hub.log.produce(topics.inbox("echoer"), b"\xff\x00 not an envelope", key=b"ctx")

        source = f"{garbage.topic}/{garbage.partition}/{garbage.offset}".encode()

        async def parked() -> Record | None:
            """The parked copy of the garbage (its dead-lettered copy is parked too, from the dlq)."""
            kept = await delivered(hub.log, topics.parked)
            return next((r for r in kept if dict(r.headers)["agenthub-source"] == source), None)

        kept = await eventually(parked)
        assert kept is not None and (kept.value, kept.key) == (garbage.value, b"ctx")
        assert dict(kept.headers)["agenthub-error"].startswith(b"not an envelope")
        # recording went past it: a wait for it says recorded (it never looks for it in the store)
        assert await hub.recorder.wait_recorded(garbage, timeout=5) is True
        task = await client.send("echoer", "still here")  # the recorder goes on recording
        thread = await client.get_thread(task.context_id)
        texts = [m.text for m in thread.messages]
        assert (texts[0], texts[-1]) == ("still here", "echo: still here")


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_store_outage_shows_in_readiness_and_no_wait_claims_what_it_holds_back(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Another writer holds the SQLite store's write lock: the request sent meanwhile is answered
    (the log has it), but the recorder cannot write it, so the hub's /readyz names the thread store
    and waiting for the request's record says not recorded; the lock released, readiness is back
    and the wait says recorded, as does a wait begun during the outage for a record the recorder
    parks (it waits for recording to go past it, never looks for it in the store)."""
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
        httpx.AsyncClient(base_url=hub.http_url) as http,
    ):
        first = await client.send("echoer", "before")
        assert (await client.get_thread(first.context_id)).messages[-1].text == "echo: before"
        inbox = Topics(hub.settings.topic_prefix).inbox("echoer")
        lock = sqlite3.connect(tmp_path / "threads.db", timeout=30, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            held = await client.send("echoer", "while the store is locked")
            (request,) = [
                r for r in await delivered(hub.log, inbox) if envelopes.decode(r).task_id == held.id
            ]

            async def down() -> dict[str, str]:
                reply = await http.get("/readyz")
                return dict(reply.json()["down"]) if reply.status_code == 503 else {}

            problems = await eventually(down, timeout=30)
            assert "thread store" in problems and "locked" in problems["thread store"], problems
            assert await hub.recorder.wait_recorded(request, timeout=0.5) is False
            # a record it will park, behind the outage: waited for as recording goes, not in the store
            garbage = await hub.log.produce(inbox, b"\xff\x00 not an envelope", key=b"ctx")
            parked = asyncio.create_task(hub.recorder.wait_recorded(garbage, timeout=60))
            await asyncio.sleep(0.2)
            assert not parked.done()
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        assert await eventually(ready, timeout=30)
        assert await hub.recorder.wait_recorded(request, timeout=30) is True
        assert await parked is True
        thread = await client.get_thread(held.context_id)
        texts = [m.text for m in thread.messages]
        assert (texts[0], texts[-1]) == ("while the store is locked", "echo: while the store is locked")


async def test_a_wait_for_another_instances_record_ends_once_the_store_has_it(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A record of a partition this recorder does not record is looked up in the store: not there,
    the wait says not recorded; recorded four seconds into a six-second wait (as the instance that
    owns it would), the wait says recorded: it keeps looking often, not ever more rarely."""
    async with Hub(hub_settings(tmp_path)) as hub:
        elsewhere = f"{hub.settings.topic_prefix}.another-instance"
        request = Record(elsewhere, 0, 0, CONTEXT.encode(), conversation()[0].SerializeToString(), 0)
        assert await hub.recorder.wait_recorded(request, timeout=0.3) is False
        waiting = asyncio.create_task(hub.recorder.wait_recorded(request, timeout=6.0))
        await asyncio.sleep(4.0)
        assert not waiting.done()
        assert (await record_batch(hub.store, [request]))[0] == 1
        assert await waiting is True


async def test_a_wait_on_a_partition_this_instance_records_ends_once_the_store_has_it(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A record of a partition this recorder owns but will not record itself (another instance
    sharing the store recorded it before a rebalance handed the partition over, so this one starts
    past it): the wait ends once the store has it, instead of waiting out its whole timeout."""
    async with Hub(hub_settings(tmp_path)) as hub:
        consumer = hub.recorder._consumer
        assert consumer is not None

        async def assigned() -> bool:  # on Kafka, once the group has handed out the partitions
            return bool(consumer.assignment())

        assert await eventually(assigned, timeout=30)
        owned = min(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        past = Record(
            owned.topic, owned.partition, 10**9, CONTEXT.encode(), conversation()[0].SerializeToString(), 0
        )
        assert await hub.recorder.wait_recorded(past, timeout=0.3) is False
        assert (await record_batch(hub.store, [past]))[0] == 1  # as the other instance would
        assert await hub.recorder.wait_recorded(past, timeout=30) is True
        poison = Record(owned.topic + ".elsewhere", 0, 0, CONTEXT.encode(), b"\xff\xff", 0)
        assert await hub.recorder.wait_recorded(poison, timeout=30) is False  # not an error


@pytest.mark.parametrize(
    ("backend", "threads_url"), [("embedded", "sqlite")], ids=["embedded-own-pg-server"], indirect=True
)
async def test_a_wait_that_looks_in_a_store_that_is_down_says_not_recorded(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The hub's PostgreSQL server (its own, stopped by the test): a wait for another instance's
    record, which looks the record up in the store, says not recorded at once, never recorded, for
    the read that follows to report the outage; while the server ran it found a recorded one."""
    with PostgresCluster() as pg:
        async with Hub(hub_settings(tmp_path, threads_url=pg.url)) as hub:
            elsewhere = f"{hub.settings.topic_prefix}.another-instance"
            request, working, _ = conversation()
            recorded = Record(elsewhere, 0, 0, CONTEXT.encode(), request.SerializeToString(), 0)
            assert (await record_batch(hub.store, [recorded]))[0] == 1
            assert await hub.recorder.wait_recorded(recorded, timeout=30) is True
            await asyncio.to_thread(pg.stop)
            held_back = Record(elsewhere, 0, 1, CONTEXT.encode(), working.SerializeToString(), 0)
            assert await hub.recorder.wait_recorded(held_back, timeout=30) is False


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_read_while_the_store_is_stuck_answers_what_it_holds(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The store's write lock is held by another writer and a send's records cannot be written: a
    thread read waits for recording only as long as its bound, then answers the thread as the store
    has it (the earlier turn), as the read-your-writes wait promises, instead of an internal error."""
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        HubClient(hub.address) as client,
    ):
        async with Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address):
            first = await client.send("echoer", "before")
        before = [m.text for m in (await client.get_thread(first.context_id)).messages]
        assert (before[0], before[-1]) == ("before", "echo: before")
        lock = sqlite3.connect(tmp_path / "threads.db", timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            await submit(client, "echoer", "while the store is locked")  # its agent is gone: it waits
            thread = await client.get_thread(first.context_id)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert [m.text for m in thread.messages] == before


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_read_of_what_is_not_recorded_yet_says_retry_not_not_found(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A send in a new thread while the recorder cannot write (the store's write lock held): reads
    of its task and thread, once their wait for recording runs out, answer UNAVAILABLE with the
    reason STORE_UNAVAILABLE (it exists, retry), never NOT_FOUND; once the store is free they find it."""
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        HubClient(hub.address) as client,
    ):
        async with Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address):
            await client.send("echoer", "registers the agent and creates the store")
        lock = sqlite3.connect(tmp_path / "threads.db", timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            task = await submit(client, "echoer", "while the store is locked")  # its agent is gone: it waits
            with pytest.raises(StoreUnavailable, match="not recorded yet"):
                await client.get_thread(task.context_id)
            with pytest.raises(StoreUnavailable, match="not recorded yet"):
                await client.get_task("echoer", task.id)
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        async def found() -> bool:  # once the recorder's retry, backing off, gets the store
            with contextlib.suppress(StoreUnavailable):
                return (await client.get_task("echoer", task.id)).id == task.id
            return False

        assert await eventually(found, timeout=60)
        assert [m.text for m in (await client.get_thread(task.context_id)).messages] == [
            "while the store is locked"
        ]
        with pytest.raises(ThreadNotFound):  # one this hub never routed is not found, at once
            await client.get_thread("never-sent")


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_read_waits_for_recording_only_until_just_before_the_callers_deadline(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A task and a thread whose newest record the recorder will not reach (10 s of waiting): a
    GetTask and a GetThread with a 3 s deadline are answered UNAVAILABLE "not recorded yet" before
    it, which the caller can act on, instead of running into DEADLINE_EXCEEDED."""
    async with Hub(hub_settings(tmp_path)) as hub:
        (owned, *_) = hub.recorder._consumer.assignment()  # type: ignore[union-attr]
        request = conversation()[0]
        hub.recorder.expect(request.task_id, Record(owned.topic, owned.partition, 10**9, CONTEXT.encode(),
                                                    request.SerializeToString(), 0))  # fmt: skip
        async with grpc.aio.insecure_channel(hub.address) as channel:
            reads = (
                a2a_pb2_grpc.A2AServiceStub(channel).GetTask(GetTaskRequest(id=request.task_id), timeout=3),
                threads_pb2_grpc.ThreadServiceStub(channel).GetThread(
                    thr.GetThreadRequest(context_id=CONTEXT), timeout=3
                ),
            )
            for read in reads:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await read
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
                assert "not recorded yet" in (caught.value.details() or "")


async def recorder_commits(hub: Hub) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The recorder group's committed offsets, and the ends of the routing topics."""
    topics = Topics(hub.settings.topic_prefix)
    routing = [t for t in await hub.log.list_topics() if topics.is_routing(t)]
    group = topics.recorder_group(hub.store.store_id)
    committed = (await hub.log.group_offsets(routing, group_prefix=group)).get(group, {})
    ends = {TopicPartition(t, p): end for t in routing for p, end in (await hub.log.end_offsets(t)).items()}
    return committed, {tp: end for tp, end in ends.items() if end}


async def test_the_recorder_commits_on_its_interval_and_when_it_stops(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Offsets are committed every `commit_interval_ms`, not after every batch (a commit is a log
    write): with a minute's interval, sends recorded after the first commit leave the group behind
    the log; stopping the hub commits what was recorded, so a restart records nothing again."""
    settings = hub_settings(tmp_path, commit_interval_ms=60_000)
    async with (
        Hub(settings) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        await client.send("echoer", "first")
        await hub.recorder.settle_all()
        await asyncio.sleep(0.2)  # the first batch's commit is due at once
        for n in range(3):
            await client.send("echoer", f"then {n}")
        await hub.recorder.settle_all()
        committed, ends = await recorder_commits(hub)
        assert committed and committed != ends, "every batch was committed at once"
    async with Hub(settings) as hub:
        committed, ends = await recorder_commits(hub)
        assert committed == ends, "stopping did not commit what was recorded"


async def test_recorded_offsets_are_committed_without_more_traffic(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The last batch's offsets do not wait for the next record: the recorder wakes at its commit
    interval while something is uncommitted."""
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        for n in range(3):
            await client.send("echoer", f"hello {n}")

        async def caught_up() -> bool:
            committed, ends = await recorder_commits(hub)
            return committed == ends

        assert await eventually(caught_up, timeout=10)


async def test_a_batch_lingers_unless_a_read_waits_for_it(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """With a minute's linger, sends that nothing reads (the agent keeps no memory of the thread)
    are not recorded one by one as they come: their records wait in the batch until a read waits for
    recording. That read (here a wait for everything, then a thread read right after a send) cuts
    the linger short and sees the whole turn, not the store of a minute ago. How many transactions
    the cut batch then takes depends on how the log hands the records over (on Kafka, the fetches
    still in flight come as batches of their own), so it is not counted."""
    async with (
        Hub(hub_settings(tmp_path, record_linger_ms=60_000)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address, memory=None),  # reads nothing
        HubClient(hub.address) as client,
    ):
        applied: list[int] = []
        apply = hub.store.apply

        async def counted(projections):  # type: ignore[no-untyped-def]
            applied.append(len(projections))
            return await apply(projections)

        hub.store.apply = counted  # type: ignore[method-assign]
        for n in range(3):
            await client.send("echoer", f"unread {n}")
        assert applied == [], f"{applied}: records of sends nobody read were recorded before the linger ended"
        assert await hub.recorder.settle_all()
        assert applied, "the wait for recording did not cut the linger short"

        read = await client.send("echoer", "read at once")
        thread = await client.get_thread(read.context_id)
        texts = [m.text for m in thread.messages]
        assert (texts[0], texts[-1]) == ("read at once", "echo: read at once")


async def test_a_thread_read_waits_for_its_own_thread_only(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A record of another thread that is not recorded yet (here: one the log will not have for
    long) holds back a wait for everything, not a read of this thread, which still sees its turn."""
    async with (
        Hub(hub_settings(tmp_path)) as hub,
        Agent("echoer", tools=[echo], model=ScriptedModel(), hub=hub.address, memory=None),
        HubClient(hub.address) as client,
    ):
        sent = await client.send("echoer", "mine")
        inbox = Topics(hub.settings.topic_prefix).inbox("echoer")
        (owned, *_) = [tp for tp in hub.recorder._consumer.assignment() if tp.topic == inbox]  # type: ignore[union-attr]
        elsewhere = Record(inbox, owned.partition, 10**9, b"another-thread", b"", 0)
        hub.recorder.expect("another-task", elsewhere)
        everything = asyncio.create_task(hub.recorder.settle_all(timeout=5))  # gives up after 5 s
        read = asyncio.create_task(client.get_thread(sent.context_id))  # waits 10 s at most
        done, _ = await asyncio.wait({everything, read}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {read}, "the read of one thread waited for another thread's record"
        texts = [m.text for m in (await read).messages]
        assert (texts[0], texts[-1]) == ("mine", "echo: mine")
        await everything
