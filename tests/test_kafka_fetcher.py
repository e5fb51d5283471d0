"""A Kafka consumer whose aiokafka fetch task dies keeps reading, on a real broker.

aiokafka's background fetch task can end on an error of its own (seen in CI: an assertion on an
assignment a rebalance had just replaced). aiokafka keeps that error to itself: getmany returned
nothing for ever after it, so a hub's dispatcher stopped delivering without a word, and stop()
raised it. Here the task is made to fail the same way on a live consumer; every record produced
before and after must still be read, once, and the consumer must stop cleanly.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Consumer, Log
from agenthub.hub.log.kafka import KafkaConsumer
from agenthub.hub.server import open_log
from tests.conftest import eventually


async def produce(log: Log, topic: str, count: int) -> set[bytes]:
    values = {uuid.uuid4().bytes for _ in range(count)}
    for value in values:
        await log.produce(topic, value, key=value[:4])
    return values


def kill_fetch_task(consumer: Consumer) -> None:
    """Make the fetch task fail on its next turn (a fetch ends every few ms), as aiokafka's own
    assertion does."""
    assert isinstance(consumer, KafkaConsumer)
    fetcher = consumer._consumer._fetcher  # type: ignore[union-attr]
    real = fetcher._get_actions_per_node

    def fail_once(assignment):  # type: ignore[no-untyped-def]
        fetcher._get_actions_per_node = real
        raise AssertionError("assignment is not None and assignment.active")

    fetcher._get_actions_per_node = fail_once


async def fetch_task_died(consumer: Consumer) -> bool:
    assert isinstance(consumer, KafkaConsumer) and consumer._consumer is not None
    return bool(consumer._consumer._fetcher.error_future.done())


async def read_all(consumer: Consumer, wanted: set[bytes]) -> list[bytes]:
    got: list[bytes] = []

    async def done() -> bool:
        got.extend(r.value for r in await consumer.getmany(timeout_ms=100))
        return set(got) >= wanted

    assert await eventually(done, timeout=30), f"read {len(set(got) & wanted)} of {len(wanted)}"
    return got


@pytest.mark.parametrize("backend", ["kafka"], indirect=True)
@pytest.mark.parametrize("group", [None, "readers"])
async def test_a_dead_fetch_task_is_started_again(
    tmp_path: Path, log_settings: dict[str, object], group: str | None
) -> None:
    settings = HubSettings(data_dir=tmp_path, partitions=4, **log_settings)  # type: ignore[arg-type]
    topic = f"{settings.topic_prefix}.fetcher"
    async with open_log(settings) as log:
        await log.ensure_topic(topic)
        consumer = log.consumer([topic], group=group and f"{settings.topic_prefix}.{group}")
        async with consumer:
            await consumer.joined()
            before = await produce(log, topic, 40)
            got = await read_all(consumer, before)
            kill_fetch_task(consumer)
            assert await eventually(lambda: fetch_task_died(consumer), timeout=10)
            after = await produce(log, topic, 40)
            got += await read_all(consumer, after)
            assert sorted(got) == sorted(before | after), "a record was read twice"
            if group:
                await consumer.commit({r: 1 for r in consumer.assignment()})  # still a member
        assert consumer._consumer is None
