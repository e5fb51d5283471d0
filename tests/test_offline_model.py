"""The reference agents on the real offline model (SmolLM2-135M served by xllamacpp).

Checks structure, not wording: the router picks a specialist, tools compute, the thread shows
every hop. The demo questions from the README must work on this model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from a2a.types import TaskState

from agenthub.agents import calculator, notes, triage
from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ModelSettings, OpenAIModel

pytestmark = pytest.mark.model


@pytest.fixture
async def real_agents(hub: Hub, model_url: str) -> AsyncIterator[dict[str, Agent]]:
    async with AsyncExitStack() as stack:
        yield {
            build.__module__.rsplit(".", 1)[-1]: await stack.enter_async_context(
                build(hub=hub.address, model=OpenAIModel(ModelSettings(base_url=model_url)))
            )
            for build in (calculator.build, notes.build, triage.build)
        }


@pytest.mark.usefixtures("real_agents")
async def test_triage_routes_arithmetic_to_the_calculator(client: HubClient) -> None:
    task = await client.send("triage", "What is 12 + 30?")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.status.message.parts[0].text == "12 + 30 = 42"
    thread = await client.get_thread(task.context_id)
    assert {t.agent for t in thread.tasks} == {"triage", "calculator"}
    calls = [m for m in thread.messages if '"tool_call"' in m.message_json]
    assert [m.sender for m in calls] == ["triage", "calculator"]


@pytest.mark.usefixtures("real_agents")
async def test_triage_routes_questions_to_the_notes(client: HubClient) -> None:
    task = await client.send("triage", "How do I replay a topic?")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "(from: Replay and the log)" in task.status.message.parts[0].text
    thread = await client.get_thread(task.context_id)
    assert {t.agent for t in thread.tasks} == {"triage", "notes"}
