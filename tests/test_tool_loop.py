"""The agent's tool loop: a repeated call runs once and the model is asked to answer; the last step
asks for an answer with tools off; transient failures are retried with backoff, permanent ones go
back to the model; a hanging tool times out; the calls of one model turn run concurrently; every
call, retry and result is an event the thread records. Also: where an agent's model settings
come from, and the README's shout example on the real offline model.

The loop tests drive `Agent.handle` directly (a scripted model, real asyncio tools): the loop is
the agent's own logic. One test runs it through a real hub to see the thread record the events.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState, TaskStatusUpdateEvent
from google.protobuf.json_format import MessageToDict

from agenthub.hub.server import Hub
from agenthub.sdk import (
    Agent,
    HubClient,
    ModelReply,
    ModelSettings,
    OpenAIModel,
    ScriptedModel,
    Tool,
    ToolCall,
    ToolError,
    TransientToolError,
    tool,
)
from agenthub.sdk.models import ChatMessage
from tests.conftest import eventually
from tests.scripted import RecordingModel


def request(text: str) -> SendMessageRequest:
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(message=message)


async def run(agent: Agent, text: str) -> tuple[str, list[dict[str, Any]]]:
    """One turn without a hub: the final answer and the data parts of every status update."""
    data: list[dict[str, Any]] = []
    answer = ""
    async for event in agent.handle(request(text)):
        if isinstance(event, TaskStatusUpdateEvent):
            parts = MessageToDict(event.status.message).get("parts", [])
            data += [p["data"] for p in parts if "data" in p]
            if event.status.state == TaskState.TASK_STATE_COMPLETED:
                answer = event.status.message.parts[0].text
    return answer, data


def of(kind: str, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d[kind] for d in data if kind in d]


def last_tool_result(messages: Sequence[ChatMessage]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "tool")


async def test_a_repeated_call_runs_once_and_the_model_is_asked_to_answer() -> None:
    runs: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        runs.append(key)
        return f"value of {key}"

    def stubborn(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
        if not tools:  # asked for the answer with tools off
            return ModelReply(f"final: {last_tool_result(messages)}")
        return ModelReply("", [ToolCall("lookup", {"key": "k"})])  # the same call, every time

    model = RecordingModel(ScriptedModel(stubborn))
    agent = Agent("stubborn", tools=[lookup], model=model, hub=None, max_steps=6)
    answer, data = await run(agent, "what is k?")

    assert runs == ["k"], "an identical call was executed twice"
    results = of("tool_result", data)
    assert [r["ok"] for r in results] == [True, True]
    assert "duplicate_of" not in results[0] and results[1]["duplicate_of"] == results[0]["id"]
    assert [i["tool_choice"] for i in model.inputs] == ["auto", "auto", "none"]
    told = last_tool_result(model.inputs[2]["messages"])
    assert "already called lookup" in told and "value of k" in told
    assert answer.startswith("final:") and "value of k" in answer


async def test_the_last_step_asks_for_an_answer_with_tools_off() -> None:
    @tool
    def step(n: int) -> str:
        """One more step."""
        return f"step {n} done"

    def eager(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
        done = sum(1 for m in messages if m["role"] == "tool")
        if not tools:
            return ModelReply(f"after {done} steps: {last_tool_result(messages)}")
        return ModelReply("", [ToolCall("step", {"n": done + 1})])  # never satisfied

    model = RecordingModel(ScriptedModel(eager))
    agent = Agent("eager", tools=[step], model=model, hub=None, max_steps=3)
    answer, data = await run(agent, "go")

    assert [c["arguments"] for c in of("tool_call", data)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [i["tool_choice"] for i in model.inputs] == ["auto", "auto", "auto", "none"]
    assert answer == "after 3 steps: step 3 done"


async def test_a_transient_failure_is_retried_with_backoff_and_a_permanent_one_is_not() -> None:
    attempts = {"flaky": 0, "broken": 0}

    @tool(retries=2)
    def flaky(text: str) -> str:
        """Fails twice, then works."""
        attempts["flaky"] += 1
        if attempts["flaky"] <= 2:
            raise TransientToolError(f"backend busy ({attempts['flaky']})")
        return f"flaky ok: {text}"

    @tool(retries=2)
    def broken(text: str) -> str:
        """Refuses for good."""
        attempts["broken"] += 1
        raise ToolError("no such record")

    def both(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
        if messages[-1]["role"] == "tool":
            return ModelReply("done")
        return ModelReply("", [ToolCall("flaky", {"text": "a"}), ToolCall("broken", {"text": "b"})])

    model = RecordingModel(ScriptedModel(both))
    agent = Agent("retrier", tools=[flaky, broken], model=model, hub=None, tool_backoff_s=0.01)
    answer, data = await run(agent, "go")

    assert attempts == {"flaky": 3, "broken": 1}
    retries = of("tool_retry", data)
    assert [(r["name"], r["attempt"], r["of"]) for r in retries] == [("flaky", 2, 3), ("flaky", 3, 3)]
    assert "backend busy (1)" in retries[0]["error"]
    results = {r["name"]: r for r in of("tool_result", data)}
    assert results["flaky"] == {**results["flaky"], "ok": True, "content": "flaky ok: a"}
    assert results["broken"]["ok"] is False and results["broken"]["content"] == "error: no such record"
    tool_turns = [m for m in model.inputs[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_turns] == ["flaky ok: a", "error: no such record"]
    assert answer == "done"


async def test_retries_spent_the_model_gets_a_readable_error() -> None:
    @tool(retries=1)
    def down() -> str:
        """Never reachable."""
        raise ConnectionRefusedError("connection refused")

    model = RecordingModel(ScriptedModel())
    agent = Agent("spent", tools=[down], model=model, hub=None, tool_backoff_s=0.01)
    answer, data = await run(agent, "go")
    (result,) = of("tool_result", data)
    assert result["ok"] is False
    assert result["content"] == "error: down failed after 2 attempts: connection refused"
    assert answer == result["content"]  # the scripted model answers with the last tool result


async def test_a_hanging_tool_times_out() -> None:
    never = asyncio.Event()

    @tool(timeout=0.2, retries=0)
    async def hang(text: str) -> str:
        """Waits forever."""
        await never.wait()
        return "unreachable"

    model = RecordingModel(ScriptedModel())
    agent = Agent("hanger", tools=[hang], model=model, hub=None)
    answer, data = await run(agent, "go")
    (result,) = of("tool_result", data)
    assert result["ok"] is False and result["content"] == "error: hang failed: timed out after 0.2s"
    assert last_tool_result(model.inputs[-1]["messages"]) == result["content"] == answer


async def test_the_calls_of_one_model_turn_run_concurrently() -> None:
    """Each tool waits until the other has started: run one after the other, the first would
    wait in vain and time out. Both starting before either finishes is the proof."""
    started = {"left": asyncio.Event(), "right": asyncio.Event()}
    journal: list[str] = []

    def meeting(me: str, other: str) -> Tool:
        async def meet() -> str:
            journal.append(f"start {me}")
            started[me].set()
            await started[other].wait()
            journal.append(f"end {me}")
            return f"{me} met {other}"

        return tool(name=me, description=f"{me} waits for {other}", timeout=10, retries=0)(meet)

    def two_at_once(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
        if messages[-1]["role"] == "tool":
            return ModelReply(" / ".join(m["content"] for m in messages if m["role"] == "tool"))
        return ModelReply("", [ToolCall("left", {}), ToolCall("right", {})])

    agent = Agent(
        "pair", tools=[meeting("left", "right"), meeting("right", "left")],
        model=ScriptedModel(two_at_once), hub=None,
    )  # fmt: skip
    answer, data = await run(agent, "meet")
    assert sorted(journal[:2]) == ["start left", "start right"]
    assert answer == "left met right / right met left"  # results in the order the model asked
    assert all(r["ok"] for r in of("tool_result", data))


async def test_a_blocking_sync_tool_does_not_stall_the_agent() -> None:
    """A sync tool runs in a worker thread: it blocks until its async sibling has run, which
    could never happen if it held the event loop."""
    sibling_ran = threading.Event()

    @tool(timeout=10, retries=0)
    def blocking() -> str:
        """Blocks its thread until the sibling ran."""
        return "sibling seen" if sibling_ran.wait(timeout=5) else "stalled"

    @tool(timeout=10, retries=0)
    async def sibling() -> str:
        """Runs on the event loop."""
        sibling_ran.set()
        return "ran"

    def both(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
        if messages[-1]["role"] == "tool":
            return ModelReply(" / ".join(m["content"] for m in messages if m["role"] == "tool"))
        return ModelReply("", [ToolCall("blocking", {}), ToolCall("sibling", {})])

    agent = Agent("threads", tools=[blocking, sibling], model=ScriptedModel(both), hub=None)
    answer, _ = await run(agent, "go")
    assert answer == "sibling seen / ran"


async def test_calls_retries_and_results_are_in_the_thread(hub: Hub, client: HubClient) -> None:
    failures = iter([True, False])

    @tool(retries=1)
    def wobbly(text: str) -> str:
        """Fails once."""
        if next(failures):
            raise TransientToolError("hiccup")
        return text.upper()

    async with Agent("wobbly", tools=[wobbly], model=ScriptedModel(), hub=hub.address, tool_backoff_s=0.01):
        task = await client.send("wobbly", "steady")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "STEADY"

        async def recorded() -> list[str]:
            thread = await client.get_thread(task.context_id)
            kinds = [k for m in thread.messages for k in _data_kinds(m.message_json)]
            return kinds if "tool_result" in kinds and thread.messages[-1].text == "STEADY" else []

        assert await eventually(recorded) == ["tool_call", "tool_retry", "tool_result"]


def _data_kinds(message_json: str) -> list[str]:
    parts = json.loads(message_json).get("parts", [])
    return [key for p in parts if isinstance(p.get("data"), dict) for key in p["data"]]


# ---- model settings ---------------------------------------------------------------------------


def test_model_settings_come_from_the_environment_with_per_agent_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTHUB_MODEL_BASE_URL", "http://models.example:8000/v1")
    monkeypatch.setenv("AGENTHUB_MODEL_NAME", "big-model")
    monkeypatch.setenv("AGENTHUB_MODEL_TEMPERATURE", "0.7")
    monkeypatch.setenv("AGENTHUB_WEB_SEARCH_MODEL_NAME", "small-model")
    monkeypatch.setenv("AGENTHUB_WEB_SEARCH_MODEL_TEMPERATURE", "0.0")  # the default, set back on purpose

    shared = ModelSettings.for_agent("calculator")
    assert (shared.base_url, shared.name, shared.temperature) == (
        "http://models.example:8000/v1",
        "big-model",
        0.7,
    )
    own = ModelSettings.for_agent("web-search")
    assert (own.base_url, own.name, own.temperature) == ("http://models.example:8000/v1", "small-model", 0.0)


async def test_an_agent_without_a_model_builds_one_from_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTHUB_MODEL_BASE_URL", "http://models.example:8000/v1")
    monkeypatch.setenv("AGENTHUB_ECHO_MODEL_NAME", "echo-model")
    async with Agent("echo", hub=None) as agent:
        assert isinstance(agent.model, OpenAIModel)
        assert (agent.model.settings.base_url, agent.model.settings.name) == (
            "http://models.example:8000/v1",
            "echo-model",
        )


# ---- the README's example on the real offline model -------------------------------------------


@tool(return_direct=True)
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.mark.model
async def test_the_readme_shout_agent_answers_with_the_upper_cased_text(
    hub: Hub, client: HubClient, model_url: str
) -> None:
    """The README's example, as written there, on SmolLM2: the model calls shout with the user's
    text (it may recase or punctuate it), and the answer is the tool's result."""
    model = RecordingModel(OpenAIModel(ModelSettings(base_url=model_url)))
    async with Agent("echo", description="Shouts back.", tools=[shout], model=model, hub=hub.address):
        task = await client.send("echo", "shout hello world")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        answer = task.status.message.parts[0].text

        async def calls() -> list[dict[str, Any]]:
            thread = await client.get_thread(task.context_id)
            return [
                part["data"]
                for m in thread.messages
                for part in json.loads(m.message_json).get("parts", [])
                if isinstance(part.get("data"), dict)
            ]

        data = await eventually(lambda: _with_result(calls))
        (call,) = of("tool_call", data)
        assert call["name"] == "shout"
        assert set(words(call["arguments"]["text"])) <= set(words("shout hello world")) and "hello" in words(
            call["arguments"]["text"]
        )
        (result,) = of("tool_result", data)
        assert result["ok"] and result["content"] == call["arguments"]["text"].upper()
        assert result["content"] in answer and answer == answer.upper()


async def _with_result(calls):  # type: ignore[no-untyped-def]
    data = await calls()
    return data if of("tool_result", data) else []


@pytest.mark.model
async def test_the_issue_s_loop_on_the_offline_model_ends_in_an_answer(model_url: str) -> None:
    """The README's first version (shout not `return_direct`) made SmolLM2 call shout four times
    and give up. Now the tool runs once, the repeat is refused, and the model answers with tools
    off. (The loop alone: no hub needed, so it runs once, not per backend.)"""
    runs: list[str] = []

    @tool
    def shout_plain(text: str) -> str:
        """Upper-case the text."""
        runs.append(text)
        return text.upper()

    model = RecordingModel(OpenAIModel(ModelSettings(base_url=model_url)))
    agent = Agent("echo", tools=[shout_plain], model=model, hub=None, max_steps=4)
    answer, data = await run(agent, "shout hello world")
    assert answer and not answer.startswith("I could not finish")
    assert len(runs) == 1 and "hello" in words(runs[0])
    choices = [i["tool_choice"] for i in model.inputs]
    assert choices[-1] == "none" or choices == ["auto", "auto"]  # asked to answer, or answered itself
    assert all(r["ok"] for r in of("tool_result", data))
