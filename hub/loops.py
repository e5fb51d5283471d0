"""Supervised background loops and the hub's readiness: no loop may die silently.

A `SupervisedLoop` runs one coroutine function for as long as the hub runs. When the body raises,
the supervisor logs the error (without frame locals, so no secret leaks), marks its part not
ready in `Readiness` with the reason, waits a jittered exponential backoff and runs the body
again; once the body is healthy again (it calls `ready()`, or simply keeps running) the part is
ready again. Written once here and reused by every consumer loop, instead of a try/except per loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from agenthub.sdk._aio import Lifecycle, cancel_and_wait

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class Backoff:
    """Jittered exponential backoff: `base` doubling up to `cap` seconds ("full jitter")."""

    base: float = 0.1
    cap: float = 5.0
    _failures: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """The delay before the next try; each call doubles the ceiling."""
        ceiling = min(self.cap, self.base * 2**self._failures)
        self._failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._failures = 0


class Readiness:
    """What is down in this hub and why; the gRPC health service and /readyz report it.

    Parts call `down(part, reason)` when a dependency fails and `up(part)` when it works again.
    Listeners (the health servicer) are told of every change.
    """

    def __init__(self) -> None:
        self._down: dict[str, tuple[str, float]] = {}
        self._listeners: list[Callable[[bool], Coroutine[Any, Any, None]]] = []
        self._starting: set[str] = set()

    @property
    def ready(self) -> bool:
        return not self._down and not self._starting

    def problems(self) -> dict[str, str]:
        """Each part that is down (or still starting) with its reason."""
        out = {part: reason for part, (reason, _) in self._down.items()}
        out.update({part: "starting" for part in self._starting})
        return out

    def starting(self, part: str) -> None:
        """`part` is not ready until it says `up()` (e.g. a consumer group still joining)."""
        self._change(lambda: self._starting.add(part))

    def is_down(self, part: str) -> bool:
        return part in self._down

    def down(self, part: str, reason: str) -> None:
        if self._down.get(part, ("",))[0] != reason:
            log.warning("part not ready", part=part, reason=reason)
        self._change(lambda: self._down.__setitem__(part, (reason, time.time())))

    def up(self, part: str) -> None:
        if part not in self._down and part not in self._starting:
            return  # the common case, on hot paths: nothing to change
        if part in self._down:
            log.info("part ready again", part=part)

        def clear() -> None:
            self._down.pop(part, None)
            self._starting.discard(part)

        self._change(clear)

    def on_change(self, listener: Callable[[bool], Coroutine[Any, Any, None]]) -> None:
        self._listeners.append(listener)

    def _change(self, apply: Callable[[], object]) -> None:
        before = self.ready
        apply()
        if self.ready != before:
            for listener in self._listeners:
                asyncio.get_running_loop().create_task(listener(self.ready))


class SupervisedLoop(Lifecycle):
    """Runs `body` until stopped, restarting it with backoff whenever it raises.

    Args:
        name: the part's name in logs and readiness (e.g. "recorder").
        body: the loop; it runs until cancelled, and may return to be run again at once.
        readiness: where the part reports itself down while its body keeps failing.
        backoff: delays between restarts (default 0.1 s doubling to 5 s, jittered).
    """

    def __init__(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        readiness: Readiness | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._body = body
        self._readiness = readiness or Readiness()
        self._backoff = backoff or Backoff()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _supervise(self) -> None:
        while True:
            try:
                await self._body()
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the supervisor's whole job: log, report, back off, restart
                self.restarts += 1
                reason = describe(exc)
                self._readiness.down(self.name, reason)
                log.error("loop failed; restarting", loop=self.name, error=reason, restarts=self.restarts)
                await asyncio.sleep(self._backoff.next_delay())
            else:
                self._readiness.up(self.name)


def describe(exc: BaseException) -> str:
    """An exception as one line for logs and readiness: its type and message, never frame locals."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def retry_until_ok(
    what: str,
    operation: Callable[[], Awaitable[T]],
    readiness: Readiness,
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff | None = None,
) -> T:
    """Run `operation` until it succeeds, backing off while a dependency is down (reported as `what`).

    For work that must not be dropped (a fetched batch the store must take): exceptions in
    `retry_on` mean "dependency down, try again"; anything else propagates to the supervisor.
    """
    delays = backoff or Backoff()
    failing = False
    while True:
        try:
            result = await operation()
        except retry_on as exc:
            failing = True
            readiness.down(what, describe(exc))
            await asyncio.sleep(delays.next_delay())
            continue
        if failing:
            readiness.up(what)
        return result
