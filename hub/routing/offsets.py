"""Commit tracking for out-of-order completion: commit only what is done with nothing pending below it."""

from __future__ import annotations

from agenthub.hub.log._base import Record, TopicPartition


class OffsetTracker:
    """Records taken and finished per partition; yields the offsets that are safe to commit."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._highest: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._touched: set[TopicPartition] = set()  # partitions that changed since `committable()`

    def take(self, record: Record) -> None:
        self._pending.setdefault(record.tp, set()).add(record.offset)
        self._highest[record.tp] = max(self._highest.get(record.tp, -1), record.offset)
        self._touched.add(record.tp)

    def taken(self, record: Record) -> bool:
        """Whether this record (or a later one of its partition) was taken already."""
        return record.offset <= self._highest.get(record.tp, -1)

    def finish(self, record: Record) -> None:
        self._pending.get(record.tp, set()).discard(record.offset)
        self._touched.add(record.tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the state of partitions this member no longer owns."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._highest.pop(tp, None)
            self._committed.pop(tp, None)
            self._touched.discard(tp)

    def committable(self) -> dict[TopicPartition, int]:
        """Next-offsets that moved forward since the last call (only touched partitions are looked
        at: an idle hub with thousands of partitions does no work here)."""
        out = {}
        touched, self._touched = self._touched, set()
        for tp in touched:
            highest = self._highest.get(tp)
            if highest is None:
                continue
            pending = self._pending.get(tp)
            mark = min(pending) if pending else highest + 1
            if mark > self._committed.get(tp, -1):
                out[tp] = mark
                self._committed[tp] = mark
        return out

    @property
    def settled(self) -> bool:
        """Nothing pending and nothing to commit: the owner has no periodic work."""
        return not self._touched and not any(self._pending.values())

    @property
    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())
