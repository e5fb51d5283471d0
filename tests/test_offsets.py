"""Offset tracking for out-of-order completion: only what is done, with nothing pending below it, is
committed; an idle tracker reports nothing (and looks at nothing)."""

from __future__ import annotations

from agenthub.hub.log._base import Record, TopicPartition
from agenthub.hub.routing.offsets import OffsetTracker


def record(partition: int, offset: int) -> Record:
    return Record("t", partition, offset, None, b"", 0)


def test_commits_only_below_what_is_still_pending() -> None:
    tracker = OffsetTracker()
    a, b, c = record(0, 0), record(0, 1), record(1, 7)
    for r in (a, b, c):
        tracker.take(r)
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    assert tracker.committable() == {p0: 0, p1: 7}  # nothing done: the next to read are the first taken
    tracker.finish(b)
    assert tracker.committable() == {}  # offset 0 still pending below it
    tracker.finish(a)
    tracker.finish(c)
    assert tracker.committable() == {p0: 2, p1: 8}
    assert tracker.committable() == {}  # idle: nothing moved since
    assert tracker.taken(a) and tracker.taken(record(0, 1)) and not tracker.taken(record(0, 2))


def test_forgotten_partitions_are_not_committed() -> None:
    tracker = OffsetTracker()
    r = record(3, 0)
    tracker.take(r)
    tracker.finish(r)
    tracker.forget({TopicPartition("t", 3)})
    assert tracker.committable() == {}
