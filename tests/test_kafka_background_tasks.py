"""A Kafka consumer whose aiokafka background tasks die keeps reading, on a real broker.

aiokafka's fetch task and its group coordination task can end on errors of their own (seen in CI:
the fetch task's assertion on an assignment a rebalance had just replaced; the coordination task
asserts the same way). A dead fetch task made getmany return nothing for ever, so a hub's
dispatcher stopped delivering without a word, and stop() raised its error; a dead coordination
task makes every getmany raise, so the member never fetches again. Here each task is made to fail
that way on a live consumer; every record produced before and after must still be read, once, and
the consumer must stop cleanly.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import Consumer, Log, Record
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
    """Read until every wanted value came; commit what was read (group members); all values read."""
    got: list[Record] = []

    async def done() -> bool:
        got.extend(await consumer.getmany(timeout_ms=100))
        return {r.value for r in got} >= wanted

    assert await eventually(done, timeout=30), f"read {len({r.value for r in got} & wanted)} of {len(wanted)}"
    if consumer.assignment() and isinstance(consumer, KafkaConsumer) and consumer._group:
        await consumer.commit({r.tp: r.offset + 1 for r in got})
    return [r.value for r in got]


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
        assert consumer._consumer is None


def kill_coordination_task(consumer: Consumer) -> None:
    """Make the group coordination task fail on its next turn, as its own assertions do."""
    assert isinstance(consumer, KafkaConsumer) and consumer._consumer is not None
    coordinator = consumer._consumer._coordinator
    real = coordinator.ensure_coordinator_known

    async def fail_once():  # type: ignore[no-untyped-def]
        coordinator.ensure_coordinator_known = real
        raise AssertionError("assignment is not None and assignment.active")

    coordinator.ensure_coordinator_known = fail_once
    coordinator.request_rejoin()  # wakes the task now


@pytest.mark.parametrize("backend", ["kafka"], indirect=True)
async def test_a_member_whose_group_coordination_died_joins_again(
    tmp_path: Path, log_settings: dict[str, object]
) -> None:
    settings = HubSettings(data_dir=tmp_path, partitions=4, **log_settings)  # type: ignore[arg-type]
    topic = f"{settings.topic_prefix}.coordination"
    async with open_log(settings) as log:
        await log.ensure_topic(topic)
        async with log.consumer([topic], group=f"{settings.topic_prefix}.readers") as consumer:
            await consumer.joined()
            before = await produce(log, topic, 40)
            got = await read_all(consumer, before)  # and committed
            kill_coordination_task(consumer)
            after = await produce(log, topic, 40)
            got += await read_all(consumer, after)
            assert sorted(got) == sorted(before | after), "a record was read twice"
            assert isinstance(consumer, KafkaConsumer) and consumer._consumer is not None
            assert not consumer._consumer._coordinator._coordination_task.done(), "still the dead member"
