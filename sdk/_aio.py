"""Lifecycles and small asyncio helpers shared by the hub and the SDK."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks and wait until they have ended.

    Unlike `with suppress(CancelledError): await task`, this never swallows a cancellation aimed
    at the caller itself (which would leave a stopping component running forever).
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)
    for task in live:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task had failed", task=task.get_name(), error=repr(task.exception()))


class Lifecycle:
    """`start()`/`stop()` plus `async with`, for every long-lived part (hub parts, agents, clients)."""

    async def start(self) -> None:
        """Acquire resources; nothing happens before this."""

    async def stop(self) -> None:
        """Release everything; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
