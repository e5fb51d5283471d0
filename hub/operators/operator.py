"""Operators' tools over the log: replay (read records back), rebuild the thread store, re-drive
requests into an agent's inbox, and topic / consumer-group statistics.

One implementation on either backend, behind the OperatorService and so behind `agenthub replay`.
Everything that writes is a dry run unless asked to apply, and idempotent: rebuilding records
only what the store lacks, and a re-driven request has an id derived from its original, so
re-driving twice sends it once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agenthub.hub import envelopes
from agenthub.hub.log._base import Log, TopicPartition
from agenthub.hub.operators.records import Scanned, raw_records, replayed
from agenthub.hub.recording.recorder import record_envelopes
from agenthub.hub.routing.registry import Registry
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk.errors import InvalidRequest, TopicNotFound
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

KINDS = {
    "request": Kind.KIND_REQUEST,
    "event": Kind.KIND_EVENT,
    "cancel": Kind.KIND_CANCEL,
    "dead_letter": Kind.KIND_DEAD_LETTER,
}
REDRIVABLE = frozenset({Kind.KIND_REQUEST, Kind.KIND_DEAD_LETTER})
READ_CHUNK = 1000  # records per log read
REBUILD_CHUNK = 2000  # records per store transaction of a rebuild: fewer, larger transactions
PROGRESS_EVERY_S = 0.2


@dataclass(frozen=True)
class Range:
    """Offsets [start, end) of one partition."""

    tp: TopicPartition
    start: int
    end: int


class Counter:
    """Progress of one operation, emitted at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, total: int, dry_run: bool = False) -> None:
        self.progress = op.Progress(total=total, dry_run=dry_run)
        self._last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            return True
        return False

    def finished(self) -> op.Progress:
        self.progress.done = True
        return self.progress


class Operator:
    """Replay, rebuild, re-drive and stats over one hub's log and thread store.

    Args:
        log: the log backend.
        store: the thread store (rebuild target; re-drive looks up what was already sent).
        registry: registered agents (re-drive targets).
        topics: topic naming.
        reply_topic: where events of re-driven requests go (this instance's reply topic).
    """

    def __init__(
        self, log: Log, store: ThreadStore, registry: Registry, topics: Topics, reply_topic: str
    ) -> None:
        self._log = log
        self._store = store
        self._registry = registry
        self._topics = topics
        self._reply_topic = reply_topic

    # ---- reading ---------------------------------------------------------------------------

    async def ranges(self, selection: op.Selection) -> list[Range]:
        """The partition ranges a selection reads; InvalidRequest / TopicNotFound for bad ones."""
        _check(selection)
        existing = await self._log.list_topics()
        names = list(selection.topics) or sorted(t for t in existing if self._topics.is_routing(t))
        for name in names:
            if name not in existing:
                raise TopicNotFound(f"no topic named {name!r} (see `agenthub replay --stats`)")
        out = []
        for name in names:
            ends = await self._log.end_offsets(name)
            for partition, end in sorted(ends.items()):
                if selection.HasField("partition") and partition != selection.partition:
                    continue
                out.append(await self._range(TopicPartition(name, partition), end, selection))
        return out

    async def _range(self, tp: TopicPartition, end: int, selection: op.Selection) -> Range:
        start = selection.from_offset if selection.HasField("from_offset") else 0
        stop = min(end, selection.to_offset) if selection.HasField("to_offset") else end
        if selection.HasField("from_time"):
            start = max(start, await self._log.offset_for_time(tp, selection.from_time.ToMilliseconds()))
        if selection.HasField("to_time"):
            stop = min(stop, await self._log.offset_for_time(tp, selection.to_time.ToMilliseconds()))
        return Range(tp, start, max(start, stop))

    async def scan(self, selection: op.Selection, counter: Counter) -> AsyncIterator[list[Scanned] | None]:
        """The selected records that pass the filters, in partition order, a log read at a time
        (a list per read, so a record costs no trip through the generator); None = progress is due."""
        matches = _matcher(selection)
        for part in await self.ranges(selection):
            position = part.start
            while position < part.end:
                batch = await self._log.read(part.tp, position, min(READ_CHUNK, part.end - position))
                if not batch:
                    break
                selected = [item for item in map(Scanned, batch) if matches(item)]
                counter.progress.scanned += len(batch)
                counter.progress.matched += len(selected)
                if selected:
                    yield selected
                if counter.due():
                    yield None
                position = batch[-1].offset + 1

    async def scanned(self, selection: op.Selection, counter: Counter) -> AsyncIterator[Scanned | None]:
        """`scan` one record at a time, for work done per record anyway."""
        async for items in self.scan(selection, counter):
            if items is None:
                yield None
            else:
                for item in items:
                    yield item

    async def replay(
        self, selection: op.Selection, batch: int = 1, *, raw: bool = False
    ) -> AsyncIterator[op.ReplayEvent]:
        """Every selected record, decoded, `batch` to an event (one: each in `record`), or as it is
        in the log when `raw`, with progress along the way and at the end; a progress event never
        overtakes a record."""
        counter = Counter(await _total(self, selection))
        size = max(batch, 1)
        pending: list[Scanned] = []
        async for items in self.scan(selection, counter):
            if items is not None:
                pending += items
                full = len(pending) - len(pending) % size
                for start in range(0, full, size):
                    yield _replay_event(pending[start : start + size], batch, raw)
                pending = pending[full:]
                continue
            if pending:
                yield _replay_event(pending, batch, raw)
                pending = []
            yield op.ReplayEvent(progress=counter.progress)
        if pending:
            yield _replay_event(pending, batch, raw)
        yield op.ReplayEvent(progress=counter.finished())

    # ---- writing ---------------------------------------------------------------------------

    async def rebuild(
        self, selection: op.Selection, *, apply: bool, from_scratch: bool
    ) -> AsyncIterator[op.Progress]:
        """Record the selected records into the thread store (what it lacks), optionally from scratch."""
        counter = Counter(await _total(self, selection), dry_run=not apply)
        bulk = apply and from_scratch
        async with self._store.bulk_load() if bulk else contextlib.nullcontext():
            if bulk:
                await self._store.wipe()
            chunk: list[Scanned] = []
            async for items in self.scan(selection, counter):
                if items is None:
                    yield counter.progress
                    continue
                chunk += [item for item in items if item.envelope is not None]
                if len(chunk) >= REBUILD_CHUNK:
                    await self._rebuild_chunk(chunk, counter, apply=apply, from_scratch=from_scratch)
                    chunk = []
            if chunk:
                await self._rebuild_chunk(chunk, counter, apply=apply, from_scratch=from_scratch)
        yield counter.finished()

    async def _rebuild_chunk(
        self, chunk: list[Scanned], counter: Counter, *, apply: bool, from_scratch: bool
    ) -> None:
        """Record one chunk of envelopes in one store transaction (or count what that would write)."""
        if apply:
            readable = [(item.record, item.envelope) for item in chunk if item.envelope is not None]
            written, _ = await record_envelopes(self._store, readable)
        else:
            ids = [item.envelope.id for item in chunk if item.envelope is not None]
            applied = set() if from_scratch else await self._store.applied_among(ids)
            written = sum(1 for envelope_id in ids if envelope_id not in applied)
        counter.progress.written += written
        counter.progress.skipped += len(chunk) - written

    async def redrive(
        self, selection: op.Selection, agent: str, *, apply: bool
    ) -> AsyncIterator[op.Progress]:
        """Send selected requests (or dead letters) to `agent`'s inbox again, as new attempts."""
        self._registry.get(agent)  # AgentNotFound for a name nobody registered
        counter = Counter(await _total(self, selection), dry_run=not apply)
        async for item in self.scanned(selection, counter):
            if item is None:
                yield counter.progress
            elif item.envelope is not None and item.envelope.kind in REDRIVABLE:
                await self._redrive_one(item.envelope, agent, counter, apply=apply)
        yield counter.finished()

    async def _redrive_one(self, original: Envelope, agent: str, counter: Counter, *, apply: bool) -> None:
        again = self.redriven(original, agent)
        if await self._store.is_applied(again.id):
            counter.progress.skipped += 1
            return
        if apply:
            await self._log.produce(
                self._topics.inbox(agent), again.SerializeToString(), key=again.context_id.encode(),
                headers=envelopes.headers(again),
            )  # fmt: skip
        counter.progress.written += 1

    def redriven(self, original: Envelope, agent: str) -> Envelope:
        """A new attempt of `original` for `agent`: same task and message, linked by causation id."""
        again = Envelope()
        again.CopyFrom(original)
        again.id = envelopes.derived_id(original.id, f"redrive-{agent}")
        again.kind = Kind.KIND_REQUEST
        again.recipient = agent
        again.attempt = original.attempt + 1
        again.causation_id = original.id
        again.reply_topic = self._reply_topic
        again.created_at.CopyFrom(envelopes.now())
        again.ClearField("error")
        again.ClearField("deadline")
        return again

    # ---- stats -----------------------------------------------------------------------------

    async def stats(self) -> op.TopicStatsResponse:
        """Every topic under the prefix: partitions, records, and each group's committed offsets and lag."""
        topics = {
            n: p
            for n, p in (await self._log.list_topics()).items()
            if n.startswith(f"{self._topics.prefix}.")
        }
        groups = await self._log.group_offsets(list(topics), group_prefix=f"{self._topics.prefix}.")
        committed_by_topic: dict[str, list[tuple[str, int, int]]] = {}  # topic -> (group, partition, offset)
        for group, offsets in groups.items():
            for tp, committed in offsets.items():
                committed_by_topic.setdefault(tp.topic, []).append((group, tp.partition, committed))
        out = op.TopicStatsResponse()
        for name, partitions in sorted(topics.items()):
            ends = await self._log.end_offsets(name)
            stats = out.topics.add(topic=name, partitions=partitions, records=sum(ends.values()))
            for group, partition, committed in sorted(committed_by_topic.get(name, ())):
                lag = max(0, ends.get(partition, 0) - committed)
                stats.groups.add(group=group, partition=partition, committed=committed, lag=lag)
        return out


async def _total(operator: Operator, selection: op.Selection) -> int:
    return sum(r.end - r.start for r in await operator.ranges(selection))


def _check(selection: op.Selection) -> None:
    if selection.kind and selection.kind not in KINDS:
        raise InvalidRequest(f"unknown kind {selection.kind!r}: use one of {', '.join(KINDS)}")
    if selection.HasField("from_offset") and selection.from_offset < 0:
        raise InvalidRequest("from_offset must be 0 or more")
    offsets = selection.HasField("from_offset") and selection.HasField("to_offset")
    if offsets and selection.from_offset > selection.to_offset:
        raise InvalidRequest(f"inverted offset range: {selection.from_offset} > {selection.to_offset}")
    times = selection.HasField("from_time") and selection.HasField("to_time")
    if times and selection.from_time.ToNanoseconds() > selection.to_time.ToNanoseconds():
        start, end = selection.from_time.ToJsonString(), selection.to_time.ToJsonString()
        raise InvalidRequest(f"inverted time range: {start} is after {end}")


def _matcher(selection: op.Selection) -> Callable[[Scanned], bool]:
    """Whether a scanned record passes the selection's filters, with the filters read once: by the
    record's time, then by its envelope, decoded only when a filter needs it (a record that is
    not an envelope passes no envelope filter)."""
    since = selection.from_time.ToMilliseconds() if selection.HasField("from_time") else None
    until = selection.to_time.ToMilliseconds() if selection.HasField("to_time") else None
    context_id, agent, sender = selection.context_id, selection.agent, selection.sender
    kind = KINDS[selection.kind] if selection.kind else None
    by_envelope = bool(context_id or agent or sender or kind is not None)

    def matches(item: Scanned) -> bool:
        at = item.record.timestamp_ms
        if (since is not None and at < since) or (until is not None and at >= until):
            return False
        if not by_envelope:
            return True
        envelope = item.envelope
        return envelope is not None and (
            (not context_id or envelope.context_id == context_id)
            and (not agent or agent in (envelope.sender, envelope.recipient))
            and (not sender or envelope.sender == sender)
            and (kind is None or envelope.kind == kind)
        )

    return matches


def _replay_event(items: list[Scanned], batch: int, raw: bool) -> op.ReplayEvent:
    """One stream message for scanned records: as they are in the log, one record shown (no
    batching), or several."""
    if raw:
        return op.ReplayEvent(raw=raw_records([item.record for item in items]))
    if batch <= 1:
        return op.ReplayEvent(record=replayed(items[0]))
    return op.ReplayEvent(records=op.ReplayedRecords(records=[replayed(item) for item in items]))
