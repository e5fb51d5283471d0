"""Push notifications for every agent, done by the hub: agents need do nothing.

Configs (A2A `TaskPushNotificationConfig`, per task) live in the compacted topic `<prefix>.push`,
keyed `<task id>/<config id>` (empty value = deleted), so they survive restarts and every instance
sees them. Each is sealed with the hub's secret key (hub/secret_box.py): no URL, token or credential
is in the topic in plain text (records written before sealing still load), and config reads show
tokens and credentials masked. A URL that can never work, or on an address the outbound policy
refuses (hub/outbound.py), is refused when a config is created. The `Notifier` reads the
reply topics as its own consumer group and hands each task update to the queue of each of the
task's webhooks (hub/push/webhooks.py), which POSTs them in log order, retrying with backoff; every
attempt is recorded in `<prefix>.push-attempts`. It never sits on the routing path: a webhook that
is down delays only its own notifications, never a message, the thread or another webhook. Both
loops are supervised: nothing a record or a webhook does can stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
import uuid
from collections import OrderedDict

import structlog
from a2a.types import StreamResponse, TaskPushNotificationConfig
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record, TopicPartition
from agenthub.hub.log.table import CompactedTable
from agenthub.hub.loops import Readiness, SupervisedLoop, describe, retry_until_ok
from agenthub.hub.outbound import REFUSED, OutboundPolicy, OutboundRefused
from agenthub.hub.push.webhooks import Poster, Update, Webhook, url_problem
from agenthub.hub.routing.offsets import OffsetTracker
from agenthub.hub.secret_box import SecretBox, Unsealable
from agenthub.hub.topics import Topics
from agenthub.sdk.errors import InvalidRequest
from agenthub.sdk.pb.envelope_pb2 import Kind

log = structlog.get_logger(__name__)
MASK = "********"
QUEUED_IDS_KEPT = 100_000  # envelope ids of updates queued lately, so a re-run's copies are not sent


def masked(config: TaskPushNotificationConfig) -> TaskPushNotificationConfig:
    """A copy of `config` fit to show: its token, credentials and URL password replaced by MASK."""
    shown = TaskPushNotificationConfig()
    shown.CopyFrom(config)
    if shown.token:
        shown.token = MASK
    if shown.authentication.credentials:
        shown.authentication.credentials = MASK
    try:
        password = urllib.parse.urlsplit(shown.url).password
    except ValueError:  # a URL that can never work (stored by an older hub) is shown as it is
        return shown
    if password:
        shown.url = shown.url.replace(f":{password}@", f":{MASK}@", 1)
    return shown


class PushConfigs(Lifecycle):
    """Every task's push-notification configs, backed by the compacted `<prefix>.push` topic.

    Args:
        log: the log backend.
        topics: topic naming.
        box: seals configs in the topic with the hub's secret key.
        outbound: which addresses a webhook may be on.
        readiness: where the part reports itself down while following the topic fails.
    """

    def __init__(
        self,
        log: Log,
        topics: Topics,
        *,
        box: SecretBox,
        outbound: OutboundPolicy,
        readiness: Readiness | None = None,
    ) -> None:
        self._box = box
        self._outbound = outbound
        self._configs: dict[str, dict[str, TaskPushNotificationConfig]] = {}  # task id -> config id -> it
        self._table: CompactedTable[TaskPushNotificationConfig] = CompactedTable(
            log, topics.push, decode=self._open, encode=lambda c: box.seal(c.SerializeToString()),
            name="push-configs", readiness=readiness, on_change=self._index,
        )  # fmt: skip

    async def start(self) -> None:
        """Start following the topic; returns once every config stored so far is applied."""
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    def of(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """The task's configs as callers may see them (masked)."""
        return [masked(config) for config in self.for_delivery(task_id)]

    def get(self, task_id: str, config_id: str) -> TaskPushNotificationConfig | None:
        """One config as callers may see it (masked), None when the task has no such config."""
        config = self._configs.get(task_id, {}).get(config_id)
        return None if config is None else masked(config)

    def for_delivery(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """The task's configs with their credentials, for the notifier alone."""
        return list(self._configs.get(task_id, {}).values())

    async def caught_up(self) -> None:
        """Wait until every config stored (by any hub instance) before this call is applied, so an
        update that follows its task's config is never read without it."""
        await self._table.caught_up()

    async def put(self, config: TaskPushNotificationConfig) -> TaskPushNotificationConfig:
        """Store a config for its task (a new id when it has none), sealed; returns it masked.
        InvalidRequest for a URL that can never be a webhook or is on a refused address."""
        problem = url_problem(config.url)
        if problem is not None:
            raise InvalidRequest(f"pushNotificationConfig.url {problem}")
        try:
            await self._outbound.check_url(config.url)
        except OutboundRefused:
            raise OutboundRefused(f"pushNotificationConfig.url is {REFUSED}") from None
        stored = TaskPushNotificationConfig()
        stored.CopyFrom(config)
        stored.id = stored.id or str(uuid.uuid4())
        await self._table.put(_key(stored.task_id, stored.id), stored)
        return masked(stored)

    async def delete(self, task_id: str, config_id: str) -> None:
        await self._table.delete(_key(task_id, config_id))

    def _index(self, key: str, config: TaskPushNotificationConfig | None) -> None:
        """Keep the per-task index in step with the table (a row that went leaves it too)."""
        task_id, _, config_id = key.partition("/")
        if config is None:
            self._configs.get(task_id, {}).pop(config_id, None)
        elif task_id:
            self._configs.setdefault(task_id, {})[config_id] = config

    def _open(self, value: bytes) -> TaskPushNotificationConfig:
        """The config a record holds (sealed, or plain from before sealing); ValueError when it
        cannot be read (written by something else, or sealed with another hub's key)."""
        try:
            config = TaskPushNotificationConfig()
            config.ParseFromString(self._box.open(value))
        except Unsealable as exc:
            raise ValueError(f"sealed with another secret key ({exc}): give every hub instance the same"
                             " secret_key") from None  # fmt: skip
        except DecodeError as exc:
            raise ValueError(f"not a push config: {describe(exc)}") from None
        return config


def _key(task_id: str, config_id: str) -> str:
    return f"{task_id}/{config_id}"


class Notifier(Lifecycle):
    """Reads task updates from every reply topic and hands each to its task's webhooks.

    Each webhook (push config) has its own queue (`Webhook`), so a webhook that is down delays only
    its own notifications, and one webhook's updates go out in log order. An update's offset is
    committed once every webhook has delivered it or given up on it (and nothing below it is still
    pending), so a hub that stops or dies with updates queued re-sends them after its restart
    instead of losing them: delivery is at least once, a webhook may see an update twice.
    A request delivered again (its partition moved to another instance mid-call) runs again and
    its events reuse their envelope ids: an update with the id of one this instance has queued
    from the same partition is not sent again, so its webhooks see one run, as the thread does.

    Args:
        log: the log backend.
        configs: the push-notification configs.
        topics: topic naming.
        attempts: POSTs tried per update before giving up on it (default 5).
        backoff_s: first retry delay, doubled each time, jittered (default 0.5).
        timeout_s: longest one POST may take (default 5).
        max_pending: updates held in memory before fetching pauses (default 10,000).
        commit_interval_ms: how often offsets of finished updates are committed (default 100).
        readiness: where the notifier reports itself down while its loop fails (the log is down).
        outbound: which addresses webhooks may be on (default: public addresses only).
    """

    def __init__(
        self,
        log: Log,
        configs: PushConfigs,
        topics: Topics,
        *,
        outbound: OutboundPolicy | None = None,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        max_pending: int = 10_000,
        commit_interval_ms: int = 100,
        readiness: Readiness | None = None,
    ) -> None:
        self._log = log
        self._configs = configs
        self._topics = topics
        self._max_pending = max_pending
        self._commit_interval_ms = commit_interval_ms
        self._commit_interval_s = commit_interval_ms / 1000
        self._next_commit = 0.0
        self._readiness = readiness or Readiness()
        self._poster = Poster(log, topics.push_attempts, attempts=attempts, backoff_s=backoff_s,
                              timeout_s=timeout_s, readiness=self._readiness,
                              outbound=outbound or OutboundPolicy())  # fmt: skip
        self._loop = SupervisedLoop("push-notifier", self._run, self._readiness)
        self._webhooks: dict[tuple[str, str], Webhook] = {}
        self._tracker = OffsetTracker()
        self._epochs: dict[TopicPartition, int] = {}
        self._queued: OrderedDict[str, TopicPartition] = OrderedDict()  # envelope id: its partition
        self._consumer: Consumer | None = None
        self._paused: set[str] = set()  # topics paused while too many updates wait

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.push_attempts)
        await self._poster.start()
        self._consumer = self._log.consumer(
            group=self._topics.notifier_group, pattern=self._topics.replies_pattern, on_revoke=self._revoked
        )
        await self._consumer.start()
        await self._loop.start()

    async def stop(self) -> None:
        """Stop fetching and sending; commit what is done (what is not is sent again next start)."""
        await self._loop.stop()
        await asyncio.gather(*(webhook.stop() for webhook in self._webhooks.values()))
        self._webhooks.clear()
        if self._consumer is not None:
            with contextlib.suppress(*self._log.outages):
                await self._commit()
            await self._consumer.stop()
            self._consumer = None
        await self._poster.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            records = await self._consumer.getmany(timeout_ms=self._fetch_wait(), max_records=256)
            if records:  # a config stored before its task's updates must be seen with them
                await retry_until_ok(
                    "push-configs", self._configs.caught_up, self._readiness, retry_on=self._log.outages
                )
            for record in records:
                self._take(record)
            self._throttle()
            if time.monotonic() >= self._next_commit:
                self._next_commit = time.monotonic() + self._commit_interval_s
                await self._commit()

    def _fetch_wait(self) -> int:
        """Wake at the commit interval while updates are in flight or uncommitted (or fetching is
        paused); otherwise there is nothing to do until a record comes."""
        busy = self._paused or not self._tracker.settled
        return min(self._commit_interval_ms, self._log.idle_wait_ms) if busy else self._log.idle_wait_ms

    def _take(self, record: Record) -> None:
        """Queue one record's update for each webhook of its task (none: it is done at once)."""
        self._tracker.take(record)
        configs, update = self._update_of(record)
        if not configs:
            self._tracker.finish(record)
            return
        assert update is not None
        for config in configs:
            key = (config.task_id, config.id)
            webhook = self._webhooks.get(key)
            if webhook is None:
                webhook = self._webhooks[key] = Webhook(key, self._poster, self._finished, self._emptied)
            webhook.offer(config, update)

    def _update_of(self, record: Record) -> tuple[list[TaskPushNotificationConfig], Update | None]:
        """The task's webhooks and the update to send them (none for other records; an unreadable
        record is the recorder's to park, there is nothing to notify)."""
        try:
            envelope = envelopes.decode(record)
            configs = self._configs.for_delivery(envelope.task_id) if envelope.kind == Kind.KIND_EVENT else []
            if not configs or envelope.id in self._queued:
                return [], None
            event = envelopes.unpack(envelope, StreamResponse)
        except (DecodeError, ValueError):
            return [], None
        self._remember(envelope.id, record.tp)
        body = MessageToJson(event, indent=None)
        epoch = self._epochs.get(record.tp, 0)
        return configs, Update(record, envelope.id, envelope.task_id, body, len(configs), epoch)

    def _remember(self, envelope_id: str, tp: TopicPartition) -> None:
        self._queued[envelope_id] = tp
        if len(self._queued) > QUEUED_IDS_KEPT:
            self._queued.popitem(last=False)

    def _finished(self, update: Update) -> None:
        """A webhook is done with `update`; once all are, its offset may be committed."""
        update.waiting -= 1
        if update.waiting == 0 and update.epoch == self._epochs.get(update.record.tp, 0):
            self._tracker.finish(update.record)

    def _emptied(self, webhook: Webhook) -> None:
        """A webhook with nothing left to send is forgotten (a new one queues its next update)."""
        key = webhook.key
        if self._webhooks.get(key) is webhook:
            del self._webhooks[key]

    def _throttle(self) -> None:
        """Pause fetching while too many updates wait for slow webhooks; resume at half."""
        assert self._consumer is not None
        if self._tracker.in_flight >= self._max_pending:
            self._paused |= {tp.topic for tp in self._consumer.assignment()}  # again: new topics came?
            self._consumer.pause(self._paused)
        elif self._paused and self._tracker.in_flight <= self._max_pending // 2:
            self._consumer.resume(self._paused)
            self._paused = set()

    async def _commit(self) -> None:
        offsets = self._tracker.committable()
        if offsets and self._consumer is not None:
            await self._consumer.commit(offsets)

    async def _revoked(self, lost: set[TopicPartition]) -> None:
        """Partitions move to another member: commit what is done, drop what waits (the new
        owner sends it), and make sure a send still running cannot commit for them later."""
        await self._commit()
        for webhook in self._webhooks.values():
            webhook.forget(lost)
        for tp in lost:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
        self._tracker.forget(lost)
        self._queued = OrderedDict((i, tp) for i, tp in self._queued.items() if tp not in lost)
