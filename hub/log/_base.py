"""The log interface every backend implements: topics, partitions, offsets, consumer groups.

The hub never talks to a broker directly; it talks to `Log`. The embedded (SQLite) and Kafka
backends implement it side by side and pass the same tests. Nothing here knows about A2A.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agenthub.sdk._aio import Lifecycle

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    """One record as stored in the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: Headers = field(default=())

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


def partition_for(key: bytes | None, partitions: int) -> int:
    """Stable partition choice for a key, so one context's records stay in one ordered partition."""
    if not key:
        return 0
    return zlib.crc32(key) % partitions


OnRevoke = Callable[[set[TopicPartition]], Awaitable[None]]
"""Called before a group member loses partitions, so it can finish and commit their work."""


class Consumer(Lifecycle, ABC):
    """Reads records from the topics it subscribed to, as a member of a group (or alone)."""

    @abstractmethod
    async def getmany(self, timeout_ms: int | None = None, max_records: int = 500) -> list[Record]:
        """Next records from the assigned partitions; waits at most timeout_ms when there are none."""

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Partitions this member currently reads."""

    async def joined(self) -> None:
        """Return once the group has given this member its share (at once without a group)."""

    @abstractmethod
    def pause(self, topics: Iterable[str]) -> None:
        """Stop fetching these topics (backpressure): every partition of them this member holds,
        now or after a rebalance, until resumed; positions are kept. By topic, not by partition,
        so a rebalance between a pause and its resume cannot leave a partition paused for good."""

    @abstractmethod
    def resume(self, topics: Iterable[str]) -> None:
        """Fetch these topics again."""


class Log(Lifecycle, ABC):
    """A partitioned, durable, append-only log with consumer groups."""

    outages: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    """Errors meaning the log is unreachable for now (try again later), not that a request is wrong."""

    idle_wait_ms: int = 1000
    """How long a consumer loop's fetch waits when there is nothing to read. A fetch returns as soon
    as records arrive, so this bounds only how often an idle loop wakes: what an idle hub costs."""

    @abstractmethod
    async def ensure_topic(self, topic: str, partitions: int | None = None, compacted: bool = False) -> None:
        """Create the topic if it does not exist (idempotent)."""

    @abstractmethod
    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> Record:
        """Append one record durably and return it with its partition and offset."""

    @abstractmethod
    def consumer(
        self,
        topics: Sequence[str] = (),
        *,
        group: str | None = None,
        pattern: str | None = None,
        from_beginning: bool = True,
        on_revoke: OnRevoke | None = None,
    ) -> Consumer:
        """A consumer of the topics (or of every topic matching `pattern`), in `group` if given.

        Without a group the consumer reads every partition and commits nothing; with one, the
        group's members share the partitions and resume from the group's committed offsets, and
        `on_revoke` runs before partitions move away from this member.
        """

    @abstractmethod
    async def list_topics(self) -> dict[str, int]:
        """Every topic with its partition count."""

    @abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """For each partition, the offset the next record will get."""

    @abstractmethod
    async def read(self, tp: TopicPartition, start: int, limit: int) -> list[Record]:
        """Records of one partition from offset `start`, at most `limit` of them, without a group."""

    @abstractmethod
    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        """The first offset whose record is at or after `timestamp_ms` (the end offset if none is)."""

    @abstractmethod
    async def group_offsets(
        self, topics: Sequence[str], group_prefix: str
    ) -> dict[str, dict[TopicPartition, int]]:
        """Committed next-offsets in these topics of every consumer group named `group_prefix...`
        (a shared cluster holds other applications' groups: they are neither asked nor shown)."""
