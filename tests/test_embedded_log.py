"""The embedded log keeps a bounded number of recent records in memory, whatever the partition count.

A hub with a thousand agents has thousands of inbox partitions; a per-partition tail let memory
grow with every agent's traffic. The budget is for the whole log: reads of records that left
memory come from SQLite, the same records either way.
"""

from __future__ import annotations

from pathlib import Path

from agenthub.hub.log._base import TopicPartition
from agenthub.hub.log.embedded import EmbeddedLog


async def test_the_memory_tail_is_one_budget_for_every_partition_and_reads_stay_whole(tmp_path: Path):
    async with EmbeddedLog(tmp_path / "log.db", tail_records=5) as log:
        topics = [f"inbox.agent{i}" for i in range(4)]
        for topic in topics:
            await log.ensure_topic(topic, partitions=2)
        produced = [
            await log.produce(topic, f"{topic}/{n}".encode(), key=f"ctx{n}".encode())
            for n in range(6)
            for topic in topics
        ]
        kept = [r for tail in log._tails.values() for r in tail.records]
        assert len(kept) == 5, "the tail budget is for the whole log"
        assert sorted(r.value for r in kept) == sorted(r.value for r in produced[-5:]), "the newest stay"
        for topic in topics:
            for partition in (0, 1):
                tp = TopicPartition(topic, partition)
                expected = [r.value for r in produced if r.tp == tp]
                read = await log.read(tp, 0, 100)  # from SQLite and memory alike
                assert [r.value for r in read] == expected
                assert [r.offset for r in read] == list(range(len(expected)))
