"""A circuit breaker per agent replica: while a replica is unreachable, no request goes to it, and
while every replica of an agent is, the agent's requests wait instead of failing.

After `threshold` consecutive calls found a replica unreachable its circuit opens: requests go to
the agent's other replicas; when every circuit of the agent is open no new request of it starts
(its inbox partitions are paused, so requests wait in the log), retries wait without burning
attempts, and a probe checks each replica every `probe_interval_s`. When a probe succeeds that
circuit closes and requests flow to the replica again. Failures of a live replica (errors it
returns for one request) never open it: those burn attempts and end in the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from agenthub.sdk._aio import cancel_and_wait

log = structlog.get_logger(__name__)


class Breaker:
    """The circuit of one agent replica.

    Args:
        agent: the agent's name and replica, `name@endpoint` (for logs).
        probe: answers whether the replica is reachable again.
        threshold: consecutive unreachable calls that open the circuit (0 = never opens).
        probe_interval_s: seconds between probes while open.
        on_change: called with the new state (True = open) whenever it changes.
    """

    def __init__(
        self,
        agent: str,
        probe: Callable[[], Awaitable[bool]],
        *,
        threshold: int = 3,
        probe_interval_s: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.agent = agent
        self._probe = probe
        self._threshold = threshold
        self._interval = probe_interval_s
        self._on_change = on_change
        self._failures = 0
        self._closed = asyncio.Event()
        self._closed.set()
        self._prober: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    async def admitted(self) -> None:
        """Return once calls may be made (at once while the circuit is closed)."""
        await self._closed.wait()

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self, *, unreachable: bool) -> None:
        """Count a failed call; consecutive unreachable ones open the circuit."""
        if not unreachable:
            return
        self._failures += 1
        if self._threshold and self._failures >= self._threshold and not self.is_open:
            self._open()

    def alive(self) -> None:
        """The agent showed it is there (it registered again): close the circuit now."""
        if self.is_open:
            self._close()

    def _open(self) -> None:
        log.warning("agent replica unreachable: circuit open", agent=self.agent)
        self._closed.clear()
        self._prober = asyncio.get_running_loop().create_task(
            self._probe_until_up(), name=f"probe-{self.agent}"
        )
        if self._on_change is not None:
            self._on_change(True)

    async def _probe_until_up(self) -> None:
        while True:
            if await self._probe():
                break
            await asyncio.sleep(self._interval)
        self._prober = None
        self._close()

    def _close(self) -> None:
        log.info("agent replica reachable again: circuit closed", agent=self.agent)
        self._failures = 0
        self._closed.set()
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        if self._on_change is not None:
            self._on_change(False)

    async def stop(self) -> None:
        await cancel_and_wait(self._prober)
        self._prober = None
