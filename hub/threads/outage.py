"""What a thread store outage looks like, so callers can wait it out instead of failing for good.

The recorder retries a batch while the store raises one of `STORE_OUTAGES` (the log keeps the
records meanwhile); readers turn the same errors into `StoreUnavailable` (gRPC UNAVAILABLE, 503).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from agenthub.sdk.errors import StoreUnavailable

STORE_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sqlite3.OperationalError,  # locked, disk I/O
    asyncpg.PostgresConnectionError,  # connection lost or refused
    asyncpg.exceptions.OperatorInterventionError,  # server shutting down or starting up
    asyncpg.InterfaceError,  # connection closed under the pool
)


@asynccontextmanager
async def store_read() -> AsyncIterator[None]:
    """Turn a store outage during a read into `StoreUnavailable`, which tells the caller to retry."""
    try:
        yield
    except STORE_OUTAGES:
        raise StoreUnavailable("the thread store is unavailable right now; retry shortly") from None


def not_recorded_yet(what: str) -> StoreUnavailable:
    """For a read that finds nothing of `what` although this hub routed records of it that the
    recorder has not stored yet (it is behind the log): retry, it exists; "not found" would lie."""
    return StoreUnavailable(f"{what} is not recorded yet (the recorder is behind the log); retry shortly")
