"""Webhook delivery for push notifications: one ordered queue per webhook, POSTs with retries.

A `Webhook` is one push config's queue of task updates and the task that sends them, one after
another, so a webhook gets its updates in log order and a webhook that is down holds up nobody
else. The `Poster` sends one update: it POSTs with the config's token and auth header, retries
with jittered backoff, records every attempt in `<prefix>.push-attempts`, and gives up after its
attempts (at once for a URL that can never work or that the outbound policy refuses: such a
webhook is never called), recording that too. It connects only through the outbound policy's
client (hub/outbound.py): checked addresses, no redirects, no response body read. Never logs or
records a credential: URLs are shown without user info, query or fragment.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog
from a2a.types import TaskPushNotificationConfig

from agenthub.hub.log._base import Log, Record, TopicPartition
from agenthub.hub.loops import Backoff, Readiness, describe, retry_until_ok
from agenthub.hub.outbound import REFUSED, OutboundPolicy, OutboundRefused
from agenthub.sdk._aio import Lifecycle, cancel_and_wait

log = structlog.get_logger(__name__)
TOKEN_HEADER = "X-A2A-Notification-Token"


def url_problem(url: str) -> str | None:
    """Why `url` can never be a webhook (None when it can): it must parse, be http(s), name a host
    and a valid port, and hold no whitespace."""
    if not url or url != url.strip() or any(c.isspace() for c in url):
        return "must be an http:// or https:// URL without spaces"
    try:
        parsed = httpx.URL(url)
        port = urllib.parse.urlsplit(url).port  # ValueError when out of range
    except (httpx.InvalidURL, ValueError) as exc:
        return f"is not a valid URL ({describe(exc).partition(': ')[2] or 'unparseable'})"
    if parsed.scheme not in ("http", "https"):
        return "must use http:// or https://"
    if not parsed.host:
        return "names no host"
    if port == 0:
        return "names port 0"
    return None


def shown(url: str) -> str:
    """A URL as logs and records may show it: scheme, host, port and path only (no credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return "<unparseable url>"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class Update:
    """One task update fetched from a reply topic, bound for every webhook of its task.

    It is done (its offset may be committed) when each of its `waiting` webhooks has delivered
    it or given up on it.
    """

    record: Record
    event_id: str
    task_id: str
    body: str
    waiting: int
    epoch: int  # of its partition's ownership, so a stale finish never commits a re-read record


class Poster(Lifecycle):
    """Sends one update to one webhook: attempts, backoff and the record of every attempt.

    Args:
        log: where attempts are recorded.
        topic: the push-attempts topic.
        attempts: POSTs tried per update before giving up on it.
        backoff_s: first retry delay, doubled each time up to 30 s (jittered).
        timeout_s: longest one POST may take.
        readiness: where an outage of the log (attempts cannot be recorded) is reported.
        outbound: which addresses webhooks may be on.
    """

    def __init__(
        self,
        log: Log,
        topic: str,
        *,
        attempts: int,
        backoff_s: float,
        timeout_s: float,
        readiness: Readiness,
        outbound: OutboundPolicy,
    ) -> None:
        self._log = log
        self._topic = topic
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._readiness = readiness
        self._outbound = outbound
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = self._outbound.client(timeout_s=self._timeout_s, max_connections=256)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def send(self, config: TaskPushNotificationConfig, update: Update) -> bool:
        """Deliver `update` to `config`'s webhook; False when it was given up (and recorded so)."""
        problem = url_problem(config.url)
        if problem is not None:
            await self._record(config, update, 1, 0, f"the webhook URL {problem}", gave_up=True)
            return False
        backoff = Backoff(base=self._backoff_s, cap=max(self._backoff_s, 30.0))
        for attempt in range(1, self._attempts + 1):
            status, error = await self._post(config, update.body)
            last = attempt == self._attempts or error == REFUSED  # a refused address: given up at once
            await self._record(config, update, attempt, status, error, gave_up=bool(error) and last)
            if not error:
                return True
            if last:
                break
            await asyncio.sleep(backoff.next_delay())
        log.warning("push notification given up", task=config.task_id, config=config.id,
                    webhook=shown(config.url), update=update.event_id, attempts=attempt,
                    error=error)  # fmt: skip
        return False

    async def _post(self, config: TaskPushNotificationConfig, body: str) -> tuple[int, str]:
        """One POST (its reply's body is never read): (HTTP status, "" on success, REFUSED when the
        outbound policy refuses the address, else what went wrong)."""
        assert self._http is not None
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._http.stream("POST", config.url, content=body, headers=_headers(config)) as reply,
            ):
                status = reply.status_code
        except OutboundRefused:
            return 0, REFUSED
        except TimeoutError:
            return 0, "timed out"
        except httpx.HTTPError as exc:  # connection refused, timeout, protocol error: retry
            return 0, _without_url(describe(exc), config.url)
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    async def _record(
        self,
        config: TaskPushNotificationConfig,
        update: Update,
        attempt: int,
        status: int,
        error: str,
        *,
        gave_up: bool,
    ) -> None:
        line = {"task_id": config.task_id, "config_id": config.id, "url": shown(config.url),
                "event_id": update.event_id, "attempt": attempt, "status": status, "error": error,
                "gave_up": gave_up, "at": time.time()}  # fmt: skip
        value, key = json.dumps(line).encode(), config.task_id.encode()
        await retry_until_ok(
            "push-attempts",
            lambda: self._log.produce(self._topic, value, key=key),
            self._readiness,
            retry_on=self._log.outages,
        )


def _headers(config: TaskPushNotificationConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if config.token:
        headers[TOKEN_HEADER] = config.token
    if config.HasField("authentication") and config.authentication.scheme:
        headers["Authorization"] = (
            f"{config.authentication.scheme} {config.authentication.credentials}".strip()
        )
    return headers


def _without_url(text: str, url: str) -> str:
    """An error text with the webhook URL (which may carry credentials) in its shown form."""
    return text.replace(url, shown(url))


class Webhook:
    """One push config's queue: its updates are sent one at a time, in the order offered.

    The sending task runs while the queue has updates; `done(update)` is called once per offered
    update, delivered or given up, and `emptied(self)` when the queue has run dry and the task
    ends (the owner then forgets this webhook until its next update).
    """

    def __init__(
        self,
        key: tuple[str, str],
        poster: Poster,
        done: Callable[[Update], None],
        emptied: Callable[[Webhook], None],
    ) -> None:
        self.key = key  # (task id, config id)
        self._poster = poster
        self._done = done
        self._emptied = emptied
        self._queue: deque[tuple[TaskPushNotificationConfig, Update]] = deque()
        self._task: asyncio.Task[None] | None = None

    def offer(self, config: TaskPushNotificationConfig, update: Update) -> None:
        self._queue.append((config, update))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send_all(), name="webhook")

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop queued (not yet started) updates of partitions this member no longer owns: their
        new owner sends them from the last committed offset."""
        self._queue = deque(item for item in self._queue if item[1].record.tp not in partitions)

    async def stop(self) -> None:
        self._queue.clear()
        await cancel_and_wait(self._task)
        self._task = None

    async def _send_all(self) -> None:
        while self._queue:
            config, update = self._queue.popleft()
            try:
                await self._poster.send(config, update)
            except Exception as exc:  # one webhook's fault must never stop the others; it is logged
                error = _without_url(describe(exc), config.url)
                log.error("push notification failed inside the hub", task=update.task_id,
                          webhook=shown(config.url), error=error)  # fmt: skip
            self._done(update)
        self._emptied(self)
