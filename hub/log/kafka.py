"""The Kafka log backend (aiokafka): Apache Kafka, Redpanda, MSK, Confluent, or any Kafka-protocol broker.

Same interface and semantics as the embedded log. Producer settings favour no loss (acks=all,
idempotence where the broker supports it); consumers never sit on long-poll waits (fetch wait
`fetch_wait_ms`, low by default) and commit only what the caller says is done. Group members
that lose partitions in a rebalance drain their in-flight work first (`on_revoke`), so two hub
instances sharing an inbox never deliver one request twice. It must never auto-commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    UnknownError,
    UnsupportedVersionError,
    for_code,
)
from aiokafka.structs import ConsumerRecord

from agenthub.hub.log._base import Consumer, Headers, Log, OnRevoke, Record, TopicPartition
from agenthub.sdk.errors import HubUnavailable

log = structlog.get_logger(__name__)

Idempotence = Literal["auto", "on", "off"]


def _ours(tp: KafkaTopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _theirs(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


class _RefusedIdempotence(logging.Filter):
    """Drops aiokafka's ERROR line for a broker that refuses an idempotent producer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected error during InitProducerIdRequest")


@contextlib.contextmanager
def _quiet_refusal() -> Iterator[None]:
    """While "auto" tries an idempotent producer, a refusal is expected, and the hub says in one
    warning what it does instead: aiokafka's own ERROR line about it would only alarm."""
    sender, refusal = logging.getLogger("aiokafka.producer.sender"), _RefusedIdempotence()
    sender.addFilter(refusal)
    try:
        yield
    finally:
        sender.removeFilter(refusal)


class KafkaLog(Log):
    """A log on a Kafka-protocol broker.

    Args:
        bootstrap: bootstrap servers, "host:port[,host:port...]".
        default_partitions: partitions of a topic created without an explicit count (default 4).
        replication_factor: replicas of each topic the hub creates (default 1).
        fetch_wait_ms: longest time the broker may hold a fetch with no data (default 20).
        session_timeout_ms: group session timeout; also how fast groups form (default 10000).
        metadata_max_age_ms: how often pattern consumers look for new topics (default 1000).
        idempotence: idempotent producer: "on", "off", or "auto" (on where the broker supports it).
        client_id: client id shown in broker logs (default "agenthub").
        group_instance_id: static group membership: a member restarting under the same id within
            the session timeout gets its partitions back without a rebalance (default: dynamic).
    """

    outages = (KafkaError, OSError, TimeoutError)

    def __init__(
        self,
        bootstrap: str,
        *,
        default_partitions: int = 4,
        replication_factor: int = 1,
        fetch_wait_ms: int = 20,
        session_timeout_ms: int = 10_000,
        metadata_max_age_ms: int = 1_000,
        idempotence: Idempotence = "auto",
        client_id: str = "agenthub",
        group_instance_id: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.fetch_wait_ms = fetch_wait_ms
        self.idle_wait_ms = fetch_wait_ms  # pauses are applied again at each fetch: keep them prompt
        self.session_timeout_ms = session_timeout_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self._idempotence = idempotence
        self.client_id = client_id
        self.group_instance_id = group_instance_id
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._reader_lock = asyncio.Lock()
        self._known: dict[str, int] = {}
        self._topic_lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
            await self._admin.start()
            self._producer = await self._start_producer()
            self._reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=self.fetch_wait_ms,
            )
            await self._reader.start()
        except KafkaConnectionError as exc:
            await self.stop()
            raise HubUnavailable(f"cannot reach the Kafka broker at {self.bootstrap}: {exc}") from None

    async def _start_producer(self) -> AIOKafkaProducer:
        """acks=all always; idempotence as configured, or where the broker supports it ("auto")."""
        if self._idempotence != "off":
            producer = self._producer_with(idempotent=True)
            try:
                with _quiet_refusal() if self._idempotence == "auto" else contextlib.nullcontext():
                    await producer.start()
                return producer
            except (UnknownError, UnsupportedVersionError) as exc:
                await producer.stop()
                if self._idempotence == "on":
                    raise
                log.warning(
                    "broker refused an idempotent producer; using acks=all without it", error=str(exc)
                )
        producer = self._producer_with(idempotent=False)
        await producer.start()
        return producer

    def _producer_with(self, *, idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=0,
        )

    async def stop(self) -> None:
        for part in (self._reader, self._producer):
            if part is not None:
                await part.stop()
        if self._admin is not None:
            await self._admin.close()
        self._reader = self._producer = self._admin = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaLog is not started")
        return self._producer

    async def ensure_topic(self, topic: str, partitions: int | None = None, compacted: bool = False) -> None:
        async with self._topic_lock:
            if topic in self._known:
                return
            assert self._admin is not None, "KafkaLog is not started"
            count = partitions or self.default_partitions
            configs = {"cleanup.policy": "compact"} if compacted else {}
            response = await self._admin.create_topics(
                [NewTopic(topic, count, self.replication_factor, topic_configs=configs)]
            )
            for _, code, message in response.topic_errors:
                error = for_code(code)
                if code and error is not TopicAlreadyExistsError:
                    raise error(f"cannot create topic {topic}: {message}")
            self._known[topic] = len(await self._partitions(topic)) or count

    async def _partitions(self, topic: str) -> set[int]:
        return await self.producer.partitions_for(topic)

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> Record:
        if topic not in self._known:
            await self.ensure_topic(topic)
        sent = await self.producer.send_and_wait(topic, value, key=key, headers=list(headers))
        return Record(topic, sent.partition, sent.offset, key, value, sent.timestamp, headers)

    def consumer(
        self,
        topics: Sequence[str] = (),
        *,
        group: str | None = None,
        pattern: str | None = None,
        from_beginning: bool = True,
        on_revoke: OnRevoke | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(self, list(topics), group, pattern, from_beginning, on_revoke)

    async def list_topics(self) -> dict[str, int]:
        cluster = await self.producer.client.fetch_all_metadata()
        return {t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}

    async def end_offsets(self, topic: str) -> dict[int, int]:
        partitions = [KafkaTopicPartition(topic, p) for p in sorted(await self._partitions(topic))]
        assert self._reader is not None, "KafkaLog is not started"
        ends = await self._reader.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        assert self._reader is not None, "KafkaLog is not started"
        theirs = _theirs(tp)
        found = (await self._reader.offsets_for_times({theirs: timestamp_ms})).get(theirs)
        # Some brokers answer "none" with an offset whose timestamp is before the one asked for.
        if found is not None and found.offset >= 0 and found.timestamp >= timestamp_ms:
            return int(found.offset)
        return int((await self._reader.end_offsets([theirs]))[theirs])

    async def group_offsets(
        self, topics: Sequence[str], group_prefix: str
    ) -> dict[str, dict[TopicPartition, int]]:
        assert self._admin is not None, "KafkaLog is not started"
        partitions = [KafkaTopicPartition(t, p) for t in topics for p in sorted(await self._partitions(t))]
        listed = await self._admin.list_consumer_groups()
        groups = sorted({group for group, *_ in listed if group.startswith(group_prefix)})
        commits = await asyncio.gather(*(self._committed(group, partitions) for group in groups))
        return {group: committed for group, committed in zip(groups, commits, strict=True) if committed}

    async def _committed(
        self, group: str, partitions: list[KafkaTopicPartition]
    ) -> dict[TopicPartition, int]:
        """A group's commits, asked as a (non-joining) member of it: the admin client's OffsetFetch
        is not understood by every Kafka-protocol broker, a consumer's is."""
        member = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=self.client_id, group_id=group,
                                  enable_auto_commit=False)  # fmt: skip
        await member.start()
        try:
            out = {}
            for tp in partitions:
                offset = await member.committed(tp)
                if offset is not None and offset >= 0:
                    out[_ours(tp)] = int(offset)
            return out
        finally:
            await member.stop()

    async def read(self, tp: TopicPartition, start: int, limit: int) -> list[Record]:
        """Records of one partition from `start`, at most `limit` of them (stops at the end)."""
        assert self._reader is not None, "KafkaLog is not started"
        reader, theirs = self._reader, _theirs(tp)
        async with self._reader_lock:
            end = (await reader.end_offsets([theirs]))[theirs]
            out: list[Record] = []
            if start >= end:
                return out
            _revive_fetcher(reader, None)
            reader.assign([theirs])
            reader.seek(theirs, start)
            while len(out) < limit and start + len(out) < end:
                batch = await reader.getmany(theirs, timeout_ms=1000, max_records=limit - len(out))
                out.extend(_record(r) for r in batch.get(theirs, []))
            return out[:limit]


def _record(r: ConsumerRecord[bytes, bytes]) -> Record:
    """Our Record from an aiokafka ConsumerRecord."""
    value = r.value if r.value is not None else b""
    return Record(r.topic, r.partition, r.offset, r.key, value, r.timestamp, tuple(r.headers))


def _revive_fetcher(consumer: AIOKafkaConsumer, group: str | None) -> None:
    """Start aiokafka's fetch task again if it died.

    The task that fills the consumer's buffer can end on an error of aiokafka's own (an assertion
    on an assignment that a rebalance replaced while the task waited for it). aiokafka keeps that
    error in `Fetcher.error_future` and never raises it: getmany then returns nothing for ever, and
    stop() raises it. A new task resumes from the positions the consumer has (nothing consumed is
    read twice, nothing unread is skipped); it starts by dropping whatever the dead one left.
    """
    fetcher = consumer._fetcher
    task = fetcher.error_future
    if not task.done() or fetcher._closed:
        return
    error = None if task.cancelled() else task.exception()
    cause = error.__cause__ if error is not None and error.__cause__ is not None else error
    log.warning("kafka fetch task died; starting it again", group=group, error=repr(cause))
    fetcher._fetch_task = asyncio.get_running_loop().create_task(fetcher._fetch_requests_routine())


def _coordination_died(consumer: AIOKafkaConsumer) -> bool:
    """Whether the consumer's group coordination task ended while the consumer was open."""
    coordinator = consumer._coordinator
    task = getattr(coordinator, "_coordination_task", None)  # a consumer without a group has none
    return task is not None and task.done() and not coordinator._closing.done()


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the owner drain and commit before partitions move to another member; says when the
    group first assigned this member its partitions."""

    def __init__(self, on_revoke: OnRevoke | None) -> None:
        self._on_revoke = on_revoke
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        if self._on_revoke is not None and revoked:
            await self._on_revoke({_ours(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        log.debug("partitions assigned", count=len(assigned))
        self.assigned.set()


class KafkaConsumer(Consumer):
    """An aiokafka consumer behind the `Consumer` interface (no auto-commit, ever)."""

    def __init__(
        self,
        log: KafkaLog,
        topics: list[str],
        group: str | None,
        pattern: str | None,
        from_beginning: bool,
        on_revoke: OnRevoke | None,
    ) -> None:
        self._log = log
        self._topics = topics
        self._group = group
        self._pattern = pattern
        self._from_beginning = from_beginning
        self._on_revoke = on_revoke
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: _Revocations | None = None
        self._paused: set[str] = set()  # topics
        self._rejoining = False  # the group's client died: a new one is due

    async def start(self) -> None:
        for topic in self._topics:
            await self._log.ensure_topic(topic)
        kafka = self._log
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            client_id=kafka.client_id,
            group_id=self._group,
            group_instance_id=kafka.group_instance_id if self._group else None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._from_beginning else "latest",
            fetch_max_wait_ms=kafka.fetch_wait_ms,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(100, kafka.session_timeout_ms // 10),
            metadata_max_age_ms=kafka.metadata_max_age_ms,
        )
        await consumer.start()
        self._consumer = consumer
        if self._group is None and not self._pattern:
            await self._pin_positions(consumer)
        else:
            self._listener = _Revocations(self._on_revoke)
            consumer.subscribe(topics=self._topics or (), pattern=self._pattern, listener=self._listener)

    async def joined(self) -> None:
        if self._listener is not None:
            await self._listener.assigned.wait()

    async def _pin_positions(self, consumer: AIOKafkaConsumer) -> None:
        """Assign every partition and fix positions now, so a tail reader misses nothing after start()."""
        partitions = [
            KafkaTopicPartition(t, p) for t in self._topics for p in sorted(await self._log._partitions(t))
        ]
        consumer.assign(partitions)
        if self._from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)

    async def stop(self) -> None:
        if self._consumer is not None:
            _revive_fetcher(self._consumer, self._group)  # a dead fetch task makes stop() raise
            await self._consumer.stop()
            self._consumer = None

    def pause(self, topics: Iterable[str]) -> None:
        self._paused |= set(topics)

    def resume(self, topics: Iterable[str]) -> None:
        resumed = set(topics)
        self._paused -= resumed
        if self._consumer is not None:
            self._consumer.resume(*(tp for tp in self._consumer.assignment() if tp.topic in resumed))

    def _apply_pauses(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the partitions of paused topics assigned now (a rebalance hands partitions back
        unpaused)."""
        wanted = {tp for tp in consumer.assignment() if tp.topic in self._paused}
        missing = wanted - consumer.paused()
        if missing:
            consumer.pause(*missing)

    async def getmany(self, timeout_ms: int | None = None, max_records: int = 500) -> list[Record]:
        if self._rejoining:
            await self.start()  # raises while the broker is away: the caller retries with backoff
            self._rejoining = False
        assert self._consumer is not None, "consumer is not started"
        _revive_fetcher(self._consumer, self._group)
        if self._paused:
            self._apply_pauses(self._consumer)
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms or 0, max_records=max_records)
        except KafkaError as exc:
            if not _coordination_died(self._consumer):
                raise
            await self._leave(exc)
            return []
        return [_record(r) for records in batches.values() for r in records]

    async def _leave(self, error: KafkaError) -> None:
        """Drop a client whose group coordination task died; the next getmany joins with a new one.

        That task can end on an error of aiokafka's own (assertions on a subscription or an
        assignment that a rebalance replaced, like the fetch task's). Every getmany then raises it,
        and the member never fetches again. The new member resumes from the group's commits: what
        was fetched and not committed is delivered again (at-least-once; the hub's consumers skip
        what they still hold).
        """
        cause = error.__cause__ or error
        log.warning(
            "kafka group coordination died; joining the group again", group=self._group, error=repr(cause)
        )
        dead, self._consumer, self._rejoining = self._consumer, None, True
        if dead is not None:
            await dead.stop()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self._group:
            raise RuntimeError("a consumer without a group cannot commit")
        if self._consumer is None and self._rejoining:
            return  # it owns no partition until it joins again: their records come again
        assert self._consumer is not None, "consumer is not started"
        owned = self._consumer.assignment()
        mine = {_theirs(tp): offset for tp, offset in offsets.items() if _theirs(tp) in owned}
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved the partitions; the new owner resumes from the last commit (at-least-once).
            log.warning("commit refused by the group", group=self._group, error=str(exc))
        except KafkaError as exc:
            log.error("commit failed", group=self._group, error=str(exc))

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {_ours(tp) for tp in self._consumer.assignment()}
