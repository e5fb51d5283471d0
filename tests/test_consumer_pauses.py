"""Backpressure pauses of a group consumer hold through rebalances, on both log backends.

The dispatcher pauses an agent's inbox while its lane is full and the push notifier pauses its
topics while webhooks lag. Pauses are by topic: a partition that moved to another member while its
topic was paused, or came back while it was, must follow the topic's state, never stay paused for
good (that stalled an agent's requests in the log until someone restarted the hub).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Consumer, Log, Record
from agenthub.hub.server import open_log
from tests.conftest import eventually

KEYS = [f"context-{i}".encode() for i in range(40)]  # these keys land on all 4 partitions


async def produce_all(log: Log, topic: str) -> set[bytes]:
    values = set()
    for key in KEYS:
        value = uuid.uuid4().bytes
        await log.produce(topic, value, key=key)
        values.add(value)
    return values


async def read_until(consumer: Consumer, wanted: set[bytes], timeout: float = 30) -> list[Record]:
    got: list[Record] = []

    async def all_read() -> bool:
        got.extend(await consumer.getmany(timeout_ms=200))
        return {r.value for r in got} >= wanted

    assert await eventually(all_read, timeout=timeout), f"read {len(got)} of {len(wanted)} records"
    await consumer.commit({r.tp: r.offset + 1 for r in got})  # as the hub's consumers do
    return got


async def holds(consumer: Consumer, partitions: int) -> bool:
    await consumer.getmany(timeout_ms=100)  # a fetch lets the member take part in the rebalance
    return len(consumer.assignment()) == partitions


async def test_a_pause_follows_the_topic_through_rebalances(tmp_path: Path, log_settings: dict[str, object]):
    settings = HubSettings(data_dir=tmp_path, partitions=4, **log_settings)  # type: ignore[arg-type]
    topic, group = f"{settings.topic_prefix}.pauses", f"{settings.topic_prefix}.pausers"
    async with open_log(settings) as log:
        await log.ensure_topic(topic)
        async with log.consumer([topic], group=group) as first:
            await first.joined()
            assert await eventually(lambda: holds(first, 4), timeout=30)
            first.pause({topic})
            async with log.consumer([topic], group=group) as second:  # takes part of the partitions
                await second.joined()
                assert await eventually(lambda: holds(first, 2), timeout=30)
                first.resume({topic})  # while half of the topic's partitions are with `second`
            assert await eventually(lambda: holds(first, 4), timeout=30)
            records = await read_until(first, await produce_all(log, topic))
            assert {r.partition for r in records} == {0, 1, 2, 3}, "a partition that was away stayed paused"

            first.pause({topic})
            async with log.consumer([topic], group=group) as third:  # partitions go and come back
                await third.joined()
                assert await eventually(lambda: holds(first, 2), timeout=30)
            assert await eventually(lambda: holds(first, 4), timeout=30)
            waiting = await produce_all(log, topic)
            for _ in range(5):
                fetched = await first.getmany(timeout_ms=200)
                assert not fetched, "a partition given back during a pause was fetched"
            first.resume({topic})
            records = await read_until(first, waiting)
            assert {r.value for r in records} == waiting and len(records) == len(KEYS)
