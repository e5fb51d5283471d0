"""The recorder: projects every routing topic into the thread store, exactly once per envelope.

It reads as consumer group `<prefix>.recorder.<store id>`, applies each fetched batch's
`Projection`s in one store transaction, and commits offsets only after the store has them, so a
crash replays records instead of losing them (replays are harmless: projections are keyed by
envelope id). Offsets are committed every `commit_interval_ms`, not after every batch: a commit
is a log write, and one per batch took the log's writer from the replies that callers wait for.
For the same reason a batch lingers (`linger_ms`) to take what comes meanwhile, unless a read is
waiting for recording: under light load, recording each request as it came competed with the
request's own reply.

While the store is down it retries the same batch with backoff (the log keeps everything
meanwhile) and readiness says so; a record that cannot be projected is parked in
`<prefix>.parked` with the reason, never skipped silently. Nobody waits for it on the hot path:
reads that need read-your-writes call `settle()` for their task only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import OrderedDict
from collections.abc import Sequence

import structlog
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.loops import Readiness, SupervisedLoop, describe, retry_until_ok
from agenthub.hub.recording.projection import paused_gc, project
from agenthub.hub.threads._base import Projection, ThreadStore
from agenthub.hub.threads.outage import STORE_OUTAGES
from agenthub.hub.topics import Topics
from agenthub.sdk.pb.envelope_pb2 import Envelope

log = structlog.get_logger(__name__)
EXPECTED_KEPT = 10_000  # tasks whose latest record is remembered for read-your-writes
STORE_LOOKUP_AFTER_S = 0.05  # a wait on a partition this instance records asks the store after this
ANSWER_MARGIN_S = 0.5  # a read-your-writes wait ends this long before the caller's deadline

CALLER_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
"""When the caller of the call being served stops waiting (time.monotonic()), set by the gRPC guard
from the call's deadline: a read's wait for recording ends before it, so the caller is told "not
recorded yet, retry" instead of running into DEADLINE_EXCEEDED."""


class Unprojectable(Exception):
    """A record that is not a readable envelope, or whose payload is not what its kind says."""

    def __init__(self, record: Record, reason: str) -> None:
        super().__init__(reason)
        self.record = record


class Recorder(Lifecycle):
    """Consumes routing topics into a thread store.

    Args:
        log: the log backend.
        store: the thread store to project into.
        topics: topic naming.
        readiness: where a store outage is reported while it lasts.
        commit_interval_ms: how often offsets of recorded records are committed (default 100).
        linger_ms: how long a batch waits for more records before it is recorded (default 20).
    """

    def __init__(
        self,
        log: Log,
        store: ThreadStore,
        topics: Topics,
        *,
        readiness: Readiness | None = None,
        commit_interval_ms: int = 100,
        linger_ms: int = 20,
    ) -> None:
        self._log = log
        self._store = store
        self._topics = topics
        self._readiness = readiness or Readiness()
        self._consumer: Consumer | None = None
        self._loop = SupervisedLoop("recorder", self._run, self._readiness)
        self._recorded: dict[TopicPartition, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}  # recorded, not committed yet
        self._commit_interval_ms = commit_interval_ms
        self._next_commit = 0.0  # time.monotonic() of the next commit due
        self._linger_s = linger_ms / 1000
        self._waiting = 0  # reads waiting for a record this instance records
        self._wanted = asyncio.Event()  # set while there are any: batches do not linger
        self._advanced = asyncio.Event()  # set (and replaced) each time recording moves forward
        self._expected: OrderedDict[str, Record] = OrderedDict()
        self._latest: dict[TopicPartition, Record] = {}  # newest record expected, per partition
        self._threads: OrderedDict[bytes, dict[TopicPartition, Record]] = OrderedDict()  # per thread

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.parked)
        self._consumer = self._log.consumer(
            group=self._topics.recorder_group(self._store.store_id),
            pattern=self._topics.routing_pattern,
            on_revoke=self._revoked,
        )
        await self._consumer.start()
        await self._loop.start()

    async def joined(self) -> None:
        """Return once this instance's consumer group has assigned it its partitions."""
        if self._consumer is not None:
            await self._consumer.joined()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._consumer is not None:
            with contextlib.suppress(*self._log.outages):  # unsaid, they are recorded again: harmless
                await self._commit()
            await self._consumer.stop()
            self._consumer = None

    # ---- read-your-writes ----------------------------------------------------------------

    def expect(self, task_id: str, record: Record) -> None:
        """`record` is the newest record of `task_id` this instance produced or saw."""
        if self._is_recorded(record):  # a read of the task has nothing to wait for
            self._expected.pop(task_id, None)
            return
        self._expected[task_id] = record
        self._expected.move_to_end(task_id)
        if len(self._expected) > EXPECTED_KEPT:
            self._expected.popitem(last=False)
        _keep_newest(self._latest, record)
        if record.key:  # every routed record is keyed by its thread (context id)
            _keep_newest(self._threads.setdefault(record.key, {}), record)
            self._threads.move_to_end(record.key)
            if len(self._threads) > EXPECTED_KEPT:
                self._threads.popitem(last=False)

    async def settle(self, task_id: str, timeout: float = 10.0) -> bool:
        """Wait until the newest record this instance knows of `task_id` is in the store (bounded);
        False if it may not be yet (a read finding no task then says "not recorded yet", not
        "not found")."""
        if self._readiness.is_down("thread store"):
            return False  # the read that follows says the store is unavailable, at once
        record = self._expected.get(task_id)
        if record is None:
            return True
        if await self.wait_recorded(record, _within_call(timeout)):
            self._expected.pop(task_id, None)
            return True
        return False

    async def settle_all(self, timeout: float = 10.0) -> bool:
        """Wait until every record this instance produced or saw is in the store (bounded): the
        newest of each partition, kept as they come, so a read does not walk every task."""
        return await self._settle_newest(self._latest, timeout)

    async def settle_thread(self, context_id: str, timeout: float = 10.0) -> bool:
        """`settle_all` for one thread's records: a read of a thread (an agent reading its memory
        on every turn) waits for its own thread, not for everything the hub routed meanwhile.
        No thread (""): every thread, as `settle_all`. False as `settle`."""
        if not context_id:
            return await self.settle_all(timeout)
        key = context_id.encode()
        newest = self._threads.get(key)
        settled = await self._settle_newest(newest, timeout) if newest else True
        if not newest:
            self._threads.pop(key, None)
        return settled

    async def _settle_newest(self, newest: dict[TopicPartition, Record], timeout: float) -> bool:
        """Wait until the records of `newest` (one per partition) are in the store, forgetting
        them; False if some may not be (the wait ran out, or the store is down)."""
        if self._readiness.is_down("thread store"):
            return False
        settled, timeout = True, _within_call(timeout)
        with contextlib.suppress(TimeoutError):  # bounded: the read that follows may be stale
            async with asyncio.timeout(timeout):
                for tp, record in list(newest.items()):
                    if not await self.wait_recorded(record, timeout):
                        settled = False
                    elif newest.get(tp) is record:
                        del newest[tp]
                return settled
        return False

    def _forget_met(self) -> None:
        """Drop the oldest expectations (of tasks, of threads) already recorded, so what is
        remembered is what a read may still have to wait for, not the last `EXPECTED_KEPT` records
        of a busy hub."""
        expected = self._expected
        while expected:
            task_id, record = next(iter(expected.items()))
            if not self._is_recorded(record):
                break
            del expected[task_id]
        threads = self._threads
        while threads:
            key, newest = next(iter(threads.items()))
            if not all(map(self._is_recorded, newest.values())):
                return
            del threads[key]

    def _is_recorded(self, record: Record) -> bool:
        return self._recorded.get(record.tp, 0) > record.offset

    async def wait_recorded(self, record: Record, timeout: float = 10.0) -> bool:
        """Wait until `record` is in the store; False on timeout (the caller may read stale data).

        A record of a partition this instance does not record (another instance sharing the
        store owns it) is looked up in the store itself; so is one of a partition it records, if
        that takes a moment (see `_until_recorded_anywhere`).
        """
        if self._is_recorded(record):
            return True
        envelope_id = _envelope_id(record)
        try:
            async with asyncio.timeout(timeout):
                if self._consumer is not None and record.tp in self._consumer.assignment():
                    await self._until_recorded_anywhere(record, envelope_id)
                elif envelope_id is not None:
                    await self._until_in_store(envelope_id)
                else:
                    return False  # not an envelope: nothing to look up, and another instance parks it
        except TimeoutError:
            return False
        except STORE_OUTAGES:
            return False  # the read that follows reports the outage
        return True

    async def _until_recorded(self, record: Record) -> None:
        self._waiting += 1
        self._wanted.set()
        try:
            while not self._is_recorded(record):
                await self._advanced.wait()
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._wanted.clear()

    async def _until_recorded_anywhere(self, record: Record, envelope_id: str | None) -> None:
        """Until this instance records `record`, or the store has it otherwise. Instances sharing
        a store share its partitions: one handed a partition after another recorded past `record`
        starts beyond it, and one that loses the partition never records it; both waited out the
        read's whole timeout (10 s per thread read under rebalances)."""
        if envelope_id is None:  # never in the store by id: only this instance's progress tells
            return await self._until_recorded(record)
        here = asyncio.ensure_future(self._until_recorded(record))
        elsewhere = asyncio.ensure_future(self._until_in_store(envelope_id, after=STORE_LOOKUP_AFTER_S))
        try:
            done, _ = await asyncio.wait((here, elsewhere), return_when=asyncio.FIRST_COMPLETED)
            done.pop().result()  # a store outage raises here
        finally:
            for waiting in (here, elsewhere):
                waiting.cancel()
            await asyncio.gather(here, elsewhere, return_exceptions=True)

    async def _until_in_store(self, envelope_id: str, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        delay = 0.002
        while not await self._store.is_applied(envelope_id):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # ---- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            records = await self._consumer.getmany(timeout_ms=self._fetch_wait())
            if records and self._linger_s:
                records += await self._more()
            if records:
                await self._record(records)
                offsets = {r.tp: r.offset + 1 for r in records}
                self._recorded.update(offsets)
                self._uncommitted.update(offsets)
                self._forget_met()
                self._advanced.set()
                self._advanced = asyncio.Event()
            if self._uncommitted and time.monotonic() >= self._next_commit:
                await self._commit()

    async def _more(self) -> list[Record]:
        """What comes while the batch lingers (cut short when a read waits for recording)."""
        assert self._consumer is not None
        if not self._wanted.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):
                    await self._wanted.wait()
        return await self._consumer.getmany(timeout_ms=0)

    def _fetch_wait(self) -> int:
        """Wake at the commit interval while offsets wait to be committed; otherwise there is
        nothing to do until a record comes."""
        idle = self._log.idle_wait_ms
        return min(self._commit_interval_ms, idle) if self._uncommitted else idle

    async def _commit(self) -> None:
        """Commit the offsets recorded since the last commit (kept for the next one if it fails)."""
        offsets, self._uncommitted = self._uncommitted, {}
        self._next_commit = time.monotonic() + self._commit_interval_ms / 1000
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except BaseException:
            self._uncommitted = offsets | self._uncommitted
            raise

    async def _revoked(self, lost: set[TopicPartition]) -> None:
        """Before partitions move to another instance: commit what is recorded, so the new owner
        does not record it again."""
        await self._commit()

    async def _record(self, records: Sequence[Record]) -> None:
        """Project a batch, waiting out store outages; park what can never be projected."""
        try:
            _, refused = await self._apply(records)
        except Exception as exc:  # not an outage: one envelope breaks the store; find it, park it
            log.error("batch refused by the store; recording one by one", error=describe(exc))
            refused = await self._record_one_by_one(records)
        for bad in refused:
            await self._park(bad.record, str(bad))

    async def _apply(self, records: Sequence[Record]) -> tuple[int, list[Unprojectable]]:
        return await retry_until_ok(
            "thread store",
            lambda: record_batch(self._store, records),
            self._readiness,
            retry_on=STORE_OUTAGES,
        )

    async def _record_one_by_one(self, records: Sequence[Record]) -> list[Unprojectable]:
        refused: list[Unprojectable] = []
        for record in records:
            try:
                refused += (await self._apply([record]))[1]
            except Exception as exc:  # this record alone is refused: it is parked with the reason
                refused.append(Unprojectable(record, f"thread store refused it: {describe(exc)}"))
        return refused

    async def _park(self, record: Record, reason: str) -> None:
        """Copy a record nobody can record to the parked topic, with the reason and its source."""
        source = f"{record.topic}/{record.partition}/{record.offset}"
        extra = (("agenthub-error", reason.encode()), ("agenthub-source", source.encode()))
        await self._log.produce(
            self._topics.parked, record.value, key=record.key, headers=record.headers + extra
        )
        log.error("record parked", source=source, reason=reason, parked_in=self._topics.parked)


async def record_batch(store: ThreadStore, records: Sequence[Record]) -> tuple[int, list[Unprojectable]]:
    """Project records into a store in one transaction: how many were new, and the records that
    can never be projected (not an envelope, or a payload that is not what its kind says)."""
    readable: list[tuple[Record, Envelope]] = []
    refused: list[Unprojectable] = []
    for record in records:
        try:
            readable.append((record, envelopes.decode(record)))
        except DecodeError as exc:
            refused.append(Unprojectable(record, f"not an envelope: {exc}"))
    written, unreadable = await record_envelopes(store, readable)
    return written, refused + unreadable


async def record_envelopes(
    store: ThreadStore, readable: Sequence[tuple[Record, Envelope]]
) -> tuple[int, list[Unprojectable]]:
    """`record_batch` for records already decoded (a rebuild has decoded them to filter them)."""
    with paused_gc():  # the batch's objects live until it is applied: no collections meanwhile
        refused: list[Unprojectable] = []
        seen = await store.applied_among([envelope.id for _, envelope in readable])
        current = await store.get_tasks(
            sorted({e.task_id for _, e in readable if e.task_id and e.id not in seen})
        )
        projections: list[Projection] = []
        for record, envelope in readable:
            if envelope.id in seen:
                continue
            seen.add(envelope.id)
            try:
                projection = project(envelope, record, current.get(envelope.task_id))
            except ValueError as exc:
                refused.append(Unprojectable(record, f"unreadable payload: {exc}"))
                continue
            if projection.task is not None:  # later records of the batch build on this one
                projection.task.history.extend(projection.statuses)
                current[envelope.task_id] = projection.task
            projections.append(projection)
        return await store.apply(projections), refused


def _within_call(timeout: float) -> float:
    """`timeout`, cut to end `ANSWER_MARGIN_S` before the caller's deadline if it has one."""
    deadline = CALLER_DEADLINE.get()
    if deadline is None:
        return timeout
    return max(0.0, min(timeout, deadline - time.monotonic() - ANSWER_MARGIN_S))


def _envelope_id(record: Record) -> str | None:
    """The id of the envelope in `record`, None for a record that is not one (a poison record)."""
    try:
        return envelopes.decode(record).id
    except DecodeError:
        return None


def _keep_newest(newest: dict[TopicPartition, Record], record: Record) -> None:
    """Keep `record` as its partition's newest unless a later one is there."""
    known = newest.get(record.tp)
    if known is None or record.offset > known.offset:
        newest[record.tp] = record
