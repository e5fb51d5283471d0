"""Dispatcher promises that mutation testing found unproven (scripts/mutate.py dispatcher): the
offsets of finished requests are committed every `commit_interval_ms`, while the hub runs, so a
restart redelivers only what was not done (the inbox group's lag is exactly 0 once idle)."""

from __future__ import annotations

import pytest
from a2a.types import TaskState

from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient
from tests.conftest import eventually


@pytest.mark.usefixtures("reference_agents")
async def test_finished_requests_are_committed_while_the_hub_runs(hub: Hub, client: HubClient) -> None:
    for text in ("1 + 2", "3 * 5"):
        task = await client.send("calculator", text)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
    topics = Topics(hub.settings.topic_prefix)
    inbox, group = topics.inbox("calculator"), topics.dispatch_group

    async def committed() -> bool:
        """Every request committed (summed over the partitions the two threads landed on), no lag."""
        stats = {t.topic: t for t in (await client.topic_stats()).topics}
        offsets = [(g.committed, g.lag) for g in stats[inbox].groups if g.group == group]
        return sum(c for c, _ in offsets) == stats[inbox].records == 2 and all(lag == 0 for _, lag in offsets)

    assert await eventually(committed, timeout=10), "the dispatcher never committed its finished requests"
