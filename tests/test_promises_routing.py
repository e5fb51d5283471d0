"""Routing promises, each checked by the value that matters: deliveries counted by the agent itself,
states that stay put, a cancel the running call really sees, per-context order, `max_in_flight`,
`agent_call_timeout_s`, ListTasks bounds and `history_length`, and agent health going down and up.

The agents here run in the test's own event loop, so a tool can block on a `Gate` the test opens,
and everything an agent saw is plain data the test reads: no timing is asserted.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable

import grpc
import pytest
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    a2a_pb2_grpc,
)

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import eventually, stock_client
from tests.test_delivery import Fragile, echo


class Gate:
    """What a gated agent's tool saw: texts in the order calls started, calls in flight (overall and
    per context label, the text's part before ':'), the highest of each, and calls canceled.
    A call blocks until the test opens the gate for its text (or for every text)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.canceled: list[str] = []
        self.running: collections.Counter[str] = collections.Counter()
        self.peak = 0
        self.peak_per_label: collections.Counter[str] = collections.Counter()
        self._open: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self._all = asyncio.Event()

    def open(self, text: str | None = None) -> None:
        """Let the call for `text` (or every call, now and later) finish."""
        (self._all if text is None else self._open[text]).set()

    async def hold(self, text: str) -> str:
        label = text.split(":")[0]
        self.started.append(text)
        self.running[label] += 1
        self.peak = max(self.peak, sum(self.running.values()))
        self.peak_per_label[label] = max(self.peak_per_label[label], self.running[label])
        try:
            waits = [asyncio.ensure_future(self._open[text].wait()), asyncio.ensure_future(self._all.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        except asyncio.CancelledError:
            self.canceled.append(text)
            raise
        finally:
            self.running[label] -= 1
        return f"held: {text}"


def gated_agent(name: str, hub: Hub | str, gate: Gate) -> Agent:
    """An agent of `hub` (or of the hub at that address) whose calls wait for the gate."""

    @tool(return_direct=True, timeout=120)
    async def hold(text: str) -> str:
        """Wait until the test lets this text through."""
        return await gate.hold(text)

    return Agent(name, tools=[hold], model=ScriptedModel(), hub=hub if isinstance(hub, str) else hub.address)


def request(agent: str, text: str, *, context_id: str = "", later: bool = True) -> SendMessageRequest:
    message = Message(
        message_id=str(uuid.uuid4()), role=Role.ROLE_USER, context_id=context_id, parts=[Part(text=text)]
    )
    sent = SendMessageRequest(tenant=agent, message=message)
    sent.configuration.return_immediately = later
    return sent


async def submit(client: HubClient, agent: str, text: str, *, context_id: str = "") -> Task:
    """A non-blocking send; the task as the hub returned it."""
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    return (await stub.SendMessage(request(agent, text, context_id=context_id))).task


async def until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    async def probe() -> bool:
        return check()

    return bool(await eventually(probe, timeout=timeout))


async def state_becomes(client: HubClient, agent: str, task_id: str, state: TaskState) -> Task:
    async def reached():  # type: ignore[no-untyped-def]
        task = await client.get_task(agent, task_id)
        return task.status.state == state and task

    task = await eventually(reached, timeout=30)
    assert task, f"task {task_id} never reached {TaskState.Name(state)}"
    return task


# ---- deliveries, counted --------------------------------------------------------------------


async def test_a_failing_agent_gets_exactly_max_attempts_calls_then_the_dead_letter(
    tmp_path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with (
        Hub(hub_settings(tmp_path, max_attempts=4)) as hub,
        Fragile("flaky", tools=[echo], model=ScriptedModel(), hub=hub.address) as agent,
        HubClient(hub.address) as client,
    ):
        task = await client.send("flaky", "poison")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_FAILED
        assert agent.poisoned == 4
        reason = task.status.message.parts[0].text
        assert "failed 4 attempts" in reason and "<class" not in reason  # no Python internals leak
        dlq = op.Selection(topics=[f"{hub.settings.topic_prefix}.dlq.flaky"])
        dead = [e.record async for e in client.replay(dlq) if e.HasField("record")]
        assert len(dead) == 1 and task.id in dead[0].envelope_json

        # A later request of the same thread runs after the failed one is settled: still 4 calls.
        fine = await client.send("flaky", "fine", context_id=task.context_id)
        assert isinstance(fine, Task) and fine.status.message.parts[0].text == "echo: fine"
        assert agent.poisoned == 4


# ---- states that stay put -------------------------------------------------------------------


async def test_a_non_blocking_send_returns_before_the_agent_answers(hub: Hub, client: HubClient) -> None:
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        a2a = await stock_client(hub, "gated", streaming=False)
        try:
            sent = request("", "quick?")
            (response,) = [e async for e in a2a.send_message(sent)]
            assert response.task.status.state in (
                TaskState.TASK_STATE_SUBMITTED,
                TaskState.TASK_STATE_WORKING,
            )
            assert await until(lambda: gate.started == ["quick?"])
            # Held by the agent, the task is working, and stays so until the gate opens.
            await state_becomes(client, "gated", response.task.id, TaskState.TASK_STATE_WORKING)
            held = await a2a.get_task(GetTaskRequest(id=response.task.id))
            assert held.status.state == TaskState.TASK_STATE_WORKING
            gate.open()
            done = await state_becomes(client, "gated", response.task.id, TaskState.TASK_STATE_COMPLETED)
            assert done.status.message.parts[0].text == "held: quick?"
        finally:
            await a2a.close()


async def test_cancel_reaches_the_running_call_and_the_task_stays_canceled(
    hub: Hub, client: HubClient
) -> None:
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        a2a = await stock_client(hub, "gated", streaming=False)
        try:
            task = await submit(client, "gated", "long")
            assert await until(lambda: gate.started == ["long"])
            canceled = await a2a.cancel_task(CancelTaskRequest(id=task.id))
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
            # The agent's own call was canceled (its tool would otherwise wait for the gate forever).
            assert await until(lambda: gate.canceled == ["long"]), "the running call never saw the cancel"

            # The next request of the thread runs only once the canceled one is settled.
            gate.open("next")
            follow = await client.send("gated", "next", context_id=task.context_id)
            assert isinstance(follow, Task) and follow.status.message.parts[0].text == "held: next"
            again = await a2a.get_task(GetTaskRequest(id=task.id))
            assert again.status.state == TaskState.TASK_STATE_CANCELED
            thread = await client.get_thread(task.context_id)
            (row,) = [t for t in thread.tasks if t.task_id == task.id]
            states = [s.state for s in row.history]
            assert states[-1] == "TASK_STATE_CANCELED" and "TASK_STATE_COMPLETED" not in states
            assert gate.started == ["long", "next"]
        finally:
            await a2a.close()


# ---- order and concurrency ------------------------------------------------------------------


async def test_one_thread_runs_in_order_while_other_threads_run_alongside(
    hub: Hub, client: HubClient
) -> None:
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        first = await submit(client, "gated", "A:1")
        assert await until(lambda: gate.started == ["A:1"])
        later = [await submit(client, "gated", f"A:{i}", context_id=first.context_id) for i in (2, 3)]
        other = await submit(client, "gated", "B:1")
        # Another thread is not held up by A:1 ...
        assert await until(lambda: "B:1" in gate.started), "a second thread waited for the first"
        gate.open("B:1")
        await state_becomes(client, "gated", other.id, TaskState.TASK_STATE_COMPLETED)
        # ... but A:1's own thread is: A:2 and A:3 (sent before B:1) have not started.
        assert gate.started == ["A:1", "B:1"]
        gate.open()
        for task in (first, *later):
            await state_becomes(client, "gated", task.id, TaskState.TASK_STATE_COMPLETED)
        assert [t for t in gate.started if t.startswith("A:")] == ["A:1", "A:2", "A:3"]
        assert gate.peak_per_label["A"] == 1 and gate.peak == 2


async def test_max_in_flight_bounds_concurrent_calls(tmp_path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    gate = Gate()
    async with (
        Hub(hub_settings(tmp_path, max_in_flight=2)) as hub,
        HubClient(hub.address) as client,
        gated_agent("gated", hub, gate),
    ):
        tasks = [await submit(client, "gated", f"c{i}:job") for i in range(4)]
        assert await until(lambda: len(gate.started) == 2)
        await asyncio.sleep(1.0)  # a window for a third call to start if the bound leaked
        assert len(gate.started) == 2
        gate.open(gate.started[0])
        assert await until(lambda: len(gate.started) == 3)
        gate.open()
        for task in tasks:
            await state_becomes(client, "gated", task.id, TaskState.TASK_STATE_COMPLETED)
        assert gate.peak == 2 and sorted(gate.started) == [f"c{i}:job" for i in range(4)]


async def test_an_agent_call_past_its_timeout_fails_and_is_canceled(tmp_path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    gate = Gate()
    settings = hub_settings(tmp_path, agent_call_timeout_s=1.0, max_attempts=1)
    async with Hub(settings) as hub, HubClient(hub.address) as client, gated_agent("gated", hub, gate):
        task = await client.send("gated", "forever")
        assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_FAILED
        assert "DEADLINE_EXCEEDED" in task.status.message.parts[0].text
        assert await until(lambda: gate.canceled == ["forever"]), "the agent kept running past the deadline"


# ---- reads ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("reference_agents")
async def test_list_tasks_page_size_bounds_and_history_length(hub: Hub, client: HubClient) -> None:
    first = await client.send("calculator", "1 + 1")
    for text in ("2 + 2", "3 + 3"):
        await client.send("calculator", text, context_id=first.context_id)
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    for size in (0, 101):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListTasks(ListTasksRequest(tenant="calculator", page_size=size))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_size must be between 1 and 100" in caught.value.details()
    full = await stub.ListTasks(ListTasksRequest(tenant="calculator", page_size=100))
    assert (len(full.tasks), full.total_size, full.next_page_token) == (3, 3, "")
    one = await stub.ListTasks(ListTasksRequest(tenant="calculator", page_size=1))
    assert (len(one.tasks), one.total_size, one.page_size) == (1, 3, 1) and one.next_page_token
    rest = await stub.ListTasks(
        ListTasksRequest(tenant="calculator", page_size=2, page_token=one.next_page_token)
    )
    assert len(rest.tasks) == 2 and not rest.next_page_token
    assert {t.id for t in (*one.tasks, *rest.tasks)} == {t.id for t in full.tasks}

    whole = await stub.GetTask(GetTaskRequest(tenant="calculator", id=first.id))
    assert len(whole.history) >= 2 and whole.history[0].parts[0].text == "1 + 1"
    last = await stub.GetTask(GetTaskRequest(tenant="calculator", id=first.id, history_length=1))
    assert list(last.history) == [whole.history[-1]]
    none = await stub.GetTask(GetTaskRequest(tenant="calculator", id=first.id, history_length=0))
    assert list(none.history) == []
    listed = await stub.ListTasks(ListTasksRequest(tenant="calculator", page_size=100, history_length=1))
    assert all(len(t.history) == 1 for t in listed.tasks)


# ---- agent health -----------------------------------------------------------------------------


async def test_health_checks_mark_an_agent_down_and_up_again(tmp_path, hub_settings) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    async with Hub(hub_settings(tmp_path, health_interval_s=0.2)) as hub, HubClient(hub.address) as client:

        async def state_is(state: str) -> bool:
            return (await client.get_agent("watched")).state == state

        agent = Agent("watched", tools=[echo], model=ScriptedModel(), hub=hub.address, port=port)
        async with agent:
            assert await eventually(lambda: state_is("up"))
        assert await eventually(lambda: state_is("down")), "a stopped agent still shows as up"
        # The same agent serving again (without registering anew): health checks see it up.
        async with Agent("watched", tools=[echo], model=ScriptedModel(), hub=None, port=port):
            assert await eventually(lambda: state_is("up")), "a returning agent still shows as down"
            task = await client.send("watched", "back")
            assert isinstance(task, Task) and task.status.message.parts[0].text == "echo: back"
