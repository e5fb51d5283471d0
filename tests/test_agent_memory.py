"""Thread memory: an SDK agent's model is given its earlier turns in the same thread, read from the
hub's thread service, so a restarted agent process remembers the same; the budget drops the
oldest first and always keeps the instructions; delegations are one summary line each.

Scripted models record what they were given; a test checks that input, not any wording.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from a2a.types import TaskState

from agenthub.agents import calculator, notes, triage
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, Memory, ModelReply, ModelSettings, OpenAIModel, ScriptedModel, Tool
from agenthub.sdk._memory import fit, recall
from agenthub.sdk.models import ChatMessage
from agenthub.sdk.pb import threads_pb2 as thr
from tests.conftest import eventually
from tests.scripted import RecordingModel, calculator_model, contents, triage_model

ROOT = Path(__file__).resolve().parent.parent


def noted(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
    return ModelReply(f"noted: {messages[-1]['content']}")


async def say(client: HubClient, agent: str, text: str, context_id: str | None = None) -> str:
    """Send, check the turn completed, return its context id."""
    task = await client.send(agent, text, context_id=context_id)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message.parts[0].text
    return task.context_id


async def test_turn_three_holds_turns_one_and_two_and_nothing_of_another_thread(
    hub: Hub, client: HubClient
) -> None:
    model = RecordingModel(ScriptedModel(noted))
    async with Agent("keeper", instructions="You take notes.", model=model, hub=hub.address):
        context = await say(client, "keeper", "my name is Ada")
        await say(client, "keeper", "the other thread's secret")
        await say(client, "keeper", "I live in Lyon", context)
        await say(client, "keeper", "what do you know?", context)
    assert contents(model.inputs[-1]["messages"]) == [
        ("system", "You take notes."),
        ("user", "my name is Ada"),
        ("assistant", "noted: my name is Ada"),
        ("user", "I live in Lyon"),
        ("assistant", "noted: I live in Lyon"),
        ("user", "what do you know?"),
    ]
    assert contents(model.inputs[1]["messages"]) == [
        ("system", "You take notes."),
        ("user", "the other thread's secret"),
    ]


async def start_keeper(hub: Hub, journal: Path) -> asyncio.subprocess.Process:
    """The keeper agent as its own process, on a port of its own; returns once it is registered."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.memory_agent", "--hub", hub.address, "--port", str(port),
        "--journal", str(journal), cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip

    async def registered() -> bool:
        agent = hub.registry.find("keeper")
        return agent is not None and agent.endpoint.endswith(f":{port}")

    assert await eventually(registered, timeout=30), "the keeper agent did not register"
    return process


async def test_a_restarted_agent_process_still_remembers(hub: Hub, client: HubClient, tmp_path: Path) -> None:
    """Three turns, SIGKILL, a fresh process: turn 4's input still holds turns 1-3."""
    journal = tmp_path / "journal.jsonl"
    process = await start_keeper(hub, journal)
    try:
        context = await say(client, "keeper", "turn one")
        await say(client, "keeper", "turn two", context)
        await say(client, "keeper", "turn three", context)
        process.kill()
        await process.wait()
        process = await start_keeper(hub, journal)
        await say(client, "keeper", "turn four", context)
    finally:
        process.kill()
        await process.wait()
    inputs = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(inputs) == 4
    assert contents(inputs[-1]) == [
        ("system", "You take notes."),
        ("user", "turn one"),
        ("assistant", "noted: turn one"),
        ("user", "turn two"),
        ("assistant", "noted: turn two"),
        ("user", "turn three"),
        ("assistant", "noted: turn three"),
        ("user", "turn four"),
    ]


async def test_the_budget_drops_the_oldest_first_and_keeps_the_instructions(
    hub: Hub, client: HubClient
) -> None:
    by_count = RecordingModel(ScriptedModel(noted))
    by_size = RecordingModel(ScriptedModel(noted))
    async with (
        Agent(
            "brief", instructions="Be brief.", model=by_count, hub=hub.address, memory=Memory(max_messages=3)
        ),
        Agent("small", instructions="Be small.", model=by_size, hub=hub.address, memory=Memory(max_chars=20)),
    ):
        for agent in ("brief", "small"):
            context = await say(client, agent, "one")
            await say(client, agent, "two", context)
            await say(client, agent, "three", context)
    assert contents(by_count.inputs[-1]["messages"]) == [
        ("system", "Be brief."),
        ("assistant", "noted: one"),
        ("user", "two"),
        ("assistant", "noted: two"),
        ("user", "three"),
    ]
    # 20 characters: "noted: two" (10) and "two" (3) fit, "noted: one" (10) more would not
    assert contents(by_size.inputs[-1]["messages"]) == [
        ("system", "Be small."),
        ("user", "two"),
        ("assistant", "noted: two"),
        ("user", "three"),
    ]


async def test_a_delegation_is_remembered_as_one_line(hub: Hub, client: HubClient) -> None:
    router = RecordingModel(triage_model())
    async with (
        triage.build(hub=hub.address, model=router),
        calculator.build(hub=hub.address, model=calculator_model()),
    ):
        context = await say(client, "triage", "What is 2 + 3?")
        await say(client, "triage", "And 4 * 5?", context)
    assert contents(router.inputs[-1]["messages"]) == [
        ("system", triage.INSTRUCTIONS),
        ("user", "What is 2 + 3?"),
        ("assistant", "(I asked calculator: 'What is 2 + 3?'; calculator answered: 2 + 3 = 5)"),
        ("assistant", "2 + 3 = 5"),
        ("user", "And 4 * 5?"),
    ]


async def test_memory_off_gives_the_current_message_only(hub: Hub, client: HubClient) -> None:
    model = RecordingModel(ScriptedModel(noted))
    async with Agent("goldfish", model=model, hub=hub.address, memory=None):
        context = await say(client, "goldfish", "first")
        await say(client, "goldfish", "second", context)
    assert contents(model.inputs[-1]["messages"]) == [("user", "second")]


# ---- what is recalled from a thread (pure) ----------------------------------------------------


def _message(
    message_id: str, task: str, sender: str, recipient: str, role: str, text: str
) -> thr.ThreadMessage:
    return thr.ThreadMessage(
        message_id=message_id, task_id=task, sender=sender, recipient=recipient, role=role, text=text
    )


def _task(task: str, agent: str, at: int, *history: tuple[str, str], parent: str = "") -> thr.ThreadTask:
    row = thr.ThreadTask(task_id=task, agent=agent, parent_task_id=parent)
    row.created_at.FromSeconds(at)
    row.history.extend(thr.StatusChange(state=s, text=t) for s, t in history)
    return row


def test_recall_leaves_out_the_current_task_other_agents_and_repeats() -> None:
    done = ("TASK_STATE_COMPLETED", "")
    thread = thr.Thread(
        messages=[
            _message("m3", "t3", "user", "keeper", "user", "now"),  # the current request, recorded early
            _message("m1", "t1", "user", "keeper", "user", "first"),
            _message("m1", "t1", "user", "keeper", "user", "first"),  # a message recorded twice
            _message("m2", "t2", "user", "keeper", "user", "failing"),
            _message("x1", "tx", "user", "other", "user", "not mine"),
            _message("m4", "t4", "user", "keeper", "user", "now"),  # the same request again (redelivered)
        ],
        tasks=[
            _task("t3", "keeper", 30, ("TASK_STATE_WORKING", "")),
            _task("t1", "keeper", 10, ("TASK_STATE_WORKING", ""), ("TASK_STATE_COMPLETED", "answer one")),
            _task("t2", "keeper", 20, ("TASK_STATE_FAILED", "model error: down")),
            _task("tx", "other", 15, done),
            _task("t4", "keeper", 31, done),
        ],
    )
    recalled = recall(thread, "keeper", task_id="t3", message_id="m4")
    assert contents(recalled) == [
        ("user", "first"),
        ("assistant", "answer one"),
        ("user", "failing"),
        ("assistant", "(this request ended failed: model error: down)"),
    ]


def test_fit_keeps_the_newest_within_both_budgets() -> None:
    history = [{"role": "user", "content": c} for c in ("aaaa", "bb", "cc", "dd")]
    assert [m["content"] for m in fit(history, Memory(max_messages=2))] == ["cc", "dd"]
    assert [m["content"] for m in fit(history, Memory(max_chars=7))] == ["bb", "cc", "dd"]
    assert fit(history, Memory(max_messages=0)) == []


# ---- the README's notes agent on the real offline model ---------------------------------------


@pytest.mark.model
async def test_a_two_turn_conversation_with_notes_uses_the_first_turn(
    hub: Hub, client: HubClient, model_url: str
) -> None:
    model = RecordingModel(OpenAIModel(ModelSettings(base_url=model_url)))
    async with notes.build(hub=hub.address, model=model):
        first = await client.send("notes", "How do I replay a topic?")
        assert first.status.state == TaskState.TASK_STATE_COMPLETED
        calls_in_first_turn = len(model.inputs)
        second = await client.send("notes", "Can it rebuild the thread store?", context_id=first.context_id)
        assert second.status.state == TaskState.TASK_STATE_COMPLETED
    first_answer = first.status.message.parts[0].text
    assert "(from: " in first_answer and "(from: " in second.status.message.parts[0].text
    second_input = contents(model.inputs[calls_in_first_turn]["messages"])
    assert second_input[0] == ("system", notes.INSTRUCTIONS)
    assert second_input[1:] == [
        ("user", "How do I replay a topic?"),
        ("assistant", first_answer),
        ("user", "Can it rebuild the thread store?"),
    ]
