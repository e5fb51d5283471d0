"""Dispatcher promises that mutation testing found unproven (scripts/mutate.py dispatcher): the
offsets of finished requests are committed every `commit_interval_ms`, while the hub runs, so a
restart redelivers only what was not done (the inbox group's lag is exactly 0 once idle); the
backoff between retries of one replica counts against the retry window; a re-driven dead letter
is numbered as the attempt after the last one made; a call's events say which attempt it was. An
answered call resets its replica's count of unreachable calls, so an agent that comes back on the
same endpoint (without registering again) is not cut off by failures from before; while every
circuit of an agent is open its requests wait in the log, unstarted, however long that lasts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from a2a.types import SendMessageRequest, TaskState

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient, ScriptedModel
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import eventually, last
from tests.switchable_agent import hub_with_switchable_agent
from tests.test_delivery import Fragile, echo
from tests.test_operators import replayed
from tests.test_promises_routing import submit


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


async def test_the_backoff_between_retries_counts_against_the_retry_window(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The first backoff (at least half of 4 s) outlasts the 1 s window: two calls, not four."""
    settings = hub_settings(tmp_path, max_attempts=4, retry_backoff_s=4.0, retry_window_s=1.0)
    async with (
        Hub(settings) as hub,
        Fragile("flaky", tools=[echo], model=ScriptedModel(), hub=hub.address) as agent,
        HubClient(hub.address) as client,
    ):
        task = await client.send("flaky", "poison")
        assert task.status.state == TaskState.TASK_STATE_FAILED
        assert agent.poisoned == 2
        assert "failed 2 attempts" in task.status.message.parts[0].text


async def test_a_redriven_dead_letter_is_the_attempt_after_the_last_one_made(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Four calls fail, so the dead letter says attempt 4 and its re-drive is attempt 5 (with four,
    unlike three, no bitwise slip of `attempt + max_attempts - 1` gives the same number)."""
    async with (
        Hub(hub_settings(tmp_path, max_attempts=4, retry_backoff_s=0.01)) as hub,
        Fragile("flaky", tools=[echo], model=ScriptedModel(), hub=hub.address) as agent,
        HubClient(hub.address) as client,
    ):
        failed = await client.send("flaky", "poison")
        assert failed.status.state == TaskState.TASK_STATE_FAILED and agent.poisoned == 4
        dlq = op.Selection(topics=[Topics(hub.settings.topic_prefix).dlq("flaky")])
        assert [e["attempt"] for _, e in await replayed(client, dlq)] == [4]
        agent.poisonous = False
        assert (await last(client.redrive(dlq, "flaky", apply=True))).written == 1

        async def completed() -> bool:
            return (await client.get_task("flaky", failed.id)).status.state == TaskState.TASK_STATE_COMPLETED

        assert await eventually(completed, timeout=30)
        (row,) = (await client.get_thread(failed.context_id)).tasks
        redriven = [s.text for s in row.history if s.text.startswith("re-driven")]
        assert len(redriven) == 1 and redriven[0].startswith("re-driven to flaky as attempt 5 (from ")


@pytest.mark.usefixtures("reference_agents")
async def test_the_events_of_a_first_call_are_stamped_attempt_1(client: HubClient) -> None:
    task = await client.send("calculator", "1 + 2")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    thread = await replayed(client, op.Selection(context_id=task.context_id))
    events = [e for _, e in thread if e["kind"] == "KIND_EVENT" and e["sender"] == "calculator"]
    assert events and {e["attempt"] for e in events} == {1}


class FailsOnce(Fragile):
    """Crashes on its first call (an error the hub retries), then answers like any agent."""

    async def handle(self, request: SendMessageRequest):  # type: ignore[no-untyped-def, override]
        self.poisonous = self.poisoned == 0
        async for event in super().handle(request):
            yield event


async def test_the_events_of_a_retried_call_are_stamped_with_its_attempt(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path, retry_backoff_s=0.01)) as hub,
        FailsOnce("flaky", tools=[echo], model=ScriptedModel(), hub=hub.address) as agent,
        HubClient(hub.address) as client,
    ):
        task = await client.send("flaky", "poison, then fine")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED and agent.poisoned == 1
        thread = await replayed(client, op.Selection(context_id=task.context_id))
        events = [e for _, e in thread if e["kind"] == "KIND_EVENT" and e["sender"] == "flaky"]
        assert events and {e["attempt"] for e in events} == {2}


async def test_an_answered_call_resets_the_count_that_opens_a_circuit(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Two unreachable calls, then an answer, twice over on the same endpoint (the agent never
    registers again): with a threshold of three, the answer in between must have reset the count,
    or the third unreachable call opens the circuit while the agent's health checks still fail,
    and the second request waits out its window instead of being answered on its third call."""
    settings = hub_settings(
        tmp_path, breaker_threshold=3, max_attempts=10, retry_backoff_s=0.01, retry_window_s=8
    )
    async with hub_with_switchable_agent(settings) as running:
        agent, client = running.agent, running.client
        for turn in (1, 2):
            agent.outage.refuse_next = 2
            task = await client.send("switchable", f"turn {turn}")
            assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message
            assert (agent.outage.refused, agent.outage.served) == (2 * turn, turn)


async def test_requests_of_an_agent_whose_every_circuit_is_open_wait_in_the_log(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """Its one replica down, the first request opens its circuit and gives up after the retry
    window; a request sent meanwhile is not started (the inbox is paused) so no window runs out
    for it: it stays submitted past several windows and is answered once the probe finds the
    agent back, on the same endpoint, without registering again."""
    window = 1.0
    settings = hub_settings(
        tmp_path, breaker_threshold=1, breaker_probe_s=0.1, retry_backoff_s=0.01, retry_window_s=window
    )
    async with hub_with_switchable_agent(settings) as running:
        agent, client = running.agent, running.client
        agent.outage.down = True
        first = await client.send("switchable", "while down")
        assert first.status.state == TaskState.TASK_STATE_FAILED
        assert "stayed unreachable" in first.status.message.parts[0].text
        assert (agent.outage.refused, agent.outage.served) == (1, 0)  # one call opened the circuit
        waiting = await submit(client, "switchable", "after the circuit opened")

        async def ended() -> bool:
            state = (await client.get_task("switchable", waiting.id)).status.state
            return state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_COMPLETED)

        assert not await eventually(ended, timeout=4 * window), (
            "a request started while every circuit was open"
        )
        assert (agent.outage.refused, agent.outage.served) == (1, 0)
        agent.outage.down = False

        async def completed() -> bool:
            state = (await client.get_task("switchable", waiting.id)).status.state
            return state == TaskState.TASK_STATE_COMPLETED

        assert await eventually(completed, timeout=20)
        assert (agent.outage.refused, agent.outage.served) == (1, 1)
