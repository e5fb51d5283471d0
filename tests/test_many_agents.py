"""A thousand registered agents: the hub starts with them, reads every inbox from one consumer, routes
to each the requests meant for it, and an idle hub with them has no loop per agent.

Structure, not timing: how fast this is lives in `scripts/`, not in a test."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from tests.conftest import eventually

AGENTS = 1000


@tool
async def echo(text: str) -> str:
    """Say the text back."""
    return text


@pytest.mark.parametrize("threads_url", [None], ids=["sqlite"])  # the store plays no part here
async def test_a_thousand_agents_start_and_route_correctly(
    tmp_path: Path, hub_settings, backend: str
) -> None:
    settings = hub_settings(tmp_path / "hub", partitions=1)
    async with (
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        Agent("a0", tools=[echo], model=ScriptedModel(), hub=hub.address),
    ):
        first = hub.registry.get("a0")
        card = json.loads(first.record.card_json)
        for i in range(1, AGENTS):
            card["name"] = f"a{i}"
            await client.register(json.dumps(card), first.endpoint)
        assert len(hub.registry.list()) == AGENTS

        topics = Topics(settings.topic_prefix)
        wanted = {topics.inbox(f"a{i}") for i in range(AGENTS)}

        async def one_consumer_reads_them_all() -> bool:  # at once on the embedded log; Kafka rebalances
            return {tp.topic for tp in hub.dispatcher._inbox.assignment()} >= wanted  # type: ignore[union-attr]

        assert await eventually(one_consumer_reads_them_all, timeout=120)

        names = ["a0", f"a{AGENTS - 1}", *random.Random(7).sample([f"a{i}" for i in range(AGENTS)], 30)]
        answers = await asyncio.gather(*(client.send(name, f"hello {name}") for name in names))
        for name, task in zip(names, answers, strict=True):
            assert task.status.message.parts[0].text == f"hello {name}"
            listed = await client.list_tasks(name)
            assert task.id in {t.id for t in listed.tasks}, f"{name}'s task is listed under {name}"

        async def nothing_recorded_is_remembered() -> bool:  # memory bounded by what is in flight
            return not hub.recorder._expected

        assert await eventually(nothing_recorded_is_remembered, timeout=30)

        loops = {t.get_name() for t in asyncio.all_tasks()}
        assert not any(name.startswith("dispatch-a") for name in loops), "no loop per agent"
