"""Push notifications for every agent, done by the hub: agents need do nothing.

Configs (A2A `TaskPushNotificationConfig`, per task) live in the compacted topic `<prefix>.push`,
keyed `<task id>/<config id>` (empty value = deleted), so they survive restarts and every instance
sees them. The `Notifier` reads the reply topics as its own consumer group and POSTs each task
update to the task's webhooks in log order, with the configured token and auth header, retrying
with backoff; every attempt is recorded in `<prefix>.push-attempts`. It never sits on the routing
path: a webhook that is down delays only its own notifications, never a message or the thread.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import structlog
from a2a.types import StreamResponse, TaskPushNotificationConfig
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Consumer, Lifecycle, Log, Record
from agenthub.hub.topics import Topics
from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk.errors import InvalidRequest
from agenthub.sdk.pb.envelope_pb2 import Kind

log = structlog.get_logger(__name__)
TOKEN_HEADER = "X-A2A-Notification-Token"


class PushConfigs(Lifecycle):
    """Every task's push-notification configs, backed by the compacted `<prefix>.push` topic."""

    def __init__(self, log: Log, topics: Topics) -> None:
        self._log = log
        self._topic = topics.push
        self._configs: dict[str, dict[str, TaskPushNotificationConfig]] = {}
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._log.ensure_topic(self._topic, partitions=1, compacted=True)
        self._consumer = self._log.consumer([self._topic], from_beginning=True)
        await self._consumer.start()
        while records := await self._consumer.getmany(timeout_ms=0):
            for record in records:
                self._apply(record)
        self._task = asyncio.create_task(self._follow(), name="push-configs")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def of(self, task_id: str) -> list[TaskPushNotificationConfig]:
        return list(self._configs.get(task_id, {}).values())

    def get(self, task_id: str, config_id: str) -> TaskPushNotificationConfig | None:
        return self._configs.get(task_id, {}).get(config_id)

    async def put(self, config: TaskPushNotificationConfig) -> TaskPushNotificationConfig:
        """Store a config for its task (a new id when it has none); InvalidRequest for a bad URL."""
        if not config.url.startswith(("http://", "https://")):
            raise InvalidRequest(f"invalid push notification url {config.url!r}: use http(s)://...")
        stored = TaskPushNotificationConfig()
        stored.CopyFrom(config)
        stored.id = stored.id or str(uuid.uuid4())
        record = await self._log.produce(
            self._topic, stored.SerializeToString(), key=_key(stored.task_id, stored.id)
        )
        self._apply(record)
        return stored

    async def delete(self, task_id: str, config_id: str) -> None:
        record = await self._log.produce(self._topic, b"", key=_key(task_id, config_id))
        self._apply(record)

    def _apply(self, record: Record) -> None:
        if not record.key:
            return
        task_id, _, config_id = record.key.decode().partition("/")
        if not record.value:
            self._configs.get(task_id, {}).pop(config_id, None)
            return
        config = TaskPushNotificationConfig()
        config.ParseFromString(record.value)
        self._configs.setdefault(task_id, {})[config_id] = config

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            for record in await self._consumer.getmany(timeout_ms=1000):
                self._apply(record)


def _key(task_id: str, config_id: str) -> bytes:
    return f"{task_id}/{config_id}".encode()


class Notifier(Lifecycle):
    """POSTs task updates to their webhooks, in order, retried with backoff, every attempt recorded.

    Args:
        log: the log backend.
        configs: the push-notification configs.
        topics: topic naming.
        attempts: POSTs tried per update before giving up on it (default 5).
        backoff_s: first retry delay, doubled each time (default 0.5).
        timeout_s: longest one POST may take (default 5).
        fetch_wait_ms: longest wait of one fetch with nothing to read (default 20).
    """

    def __init__(
        self,
        log: Log,
        configs: PushConfigs,
        topics: Topics,
        *,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        fetch_wait_ms: int = 20,
    ) -> None:
        self._log = log
        self._configs = configs
        self._topics = topics
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._fetch_wait_ms = fetch_wait_ms
        self._consumer: Consumer | None = None
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._log.ensure_topic(self._topics.push_attempts)
        self._http = httpx.AsyncClient(timeout=self._timeout_s)
        self._consumer = self._log.consumer(
            group=self._topics.notifier_group, pattern=self._topics.replies_pattern
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="push-notifier")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            records = await self._consumer.getmany(timeout_ms=self._fetch_wait_ms)
            by_partition: dict[object, list[Record]] = {}
            for record in records:
                by_partition.setdefault(record.tp, []).append(record)
            # Partitions are independent; within one, updates go out in log order.
            await asyncio.gather(*(self._notify_all(batch) for batch in by_partition.values()))
            if records:
                await self._consumer.commit({r.tp: r.offset + 1 for r in records})

    async def _notify_all(self, records: list[Record]) -> None:
        for record in records:
            try:
                envelope = envelopes.decode(record)
                configs = self._configs.of(envelope.task_id) if envelope.kind == Kind.KIND_EVENT else []
                event = envelopes.unpack(envelope, StreamResponse) if configs else None
            except (DecodeError, ValueError):
                continue  # the recorder reports unreadable records; there is nothing to notify
            for config in configs:
                assert event is not None
                await self._deliver(config, envelope.id, event)

    async def _deliver(
        self, config: TaskPushNotificationConfig, event_id: str, event: StreamResponse
    ) -> None:
        assert self._http is not None
        headers = {"Content-Type": "application/json"}
        if config.token:
            headers[TOKEN_HEADER] = config.token
        if config.HasField("authentication") and config.authentication.scheme:
            headers["Authorization"] = (
                f"{config.authentication.scheme} {config.authentication.credentials}".strip()
            )
        body = MessageToJson(event, indent=None)
        for attempt in range(1, self._attempts + 1):
            try:
                reply = await self._http.post(config.url, content=body, headers=headers)
                status, error = reply.status_code, "" if reply.is_success else f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
            await self._record(config, event_id, attempt, status, error)
            if not error:
                return
            await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        log.warning("push notification given up", task=config.task_id, url=config.url, event=event_id)

    async def _record(
        self, config: TaskPushNotificationConfig, event_id: str, attempt: int, status: int, error: str
    ) -> None:
        line = {"task_id": config.task_id, "config_id": config.id, "url": config.url, "event_id": event_id,
                "attempt": attempt, "status": status, "error": error, "at": time.time()}  # fmt: skip
        await self._log.produce(
            self._topics.push_attempts, json.dumps(line).encode(), key=config.task_id.encode()
        )
