"""The command line's promises, run as a user runs them (a subprocess against a real hub), each
checked by its value: exported lines and files, listing filters, deregistration, `--context`,
AGENTHUB_HUB, replay by partition and time, exact offsets and lag in `replay --stats`, and re-drive
from the command line."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, Task, TaskState, a2a_pb2_grpc
from google.protobuf.json_format import MessageToJson

from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from tests.conftest import eventually
from tests.interview_agent import QUESTIONS, serve_interviewer, summary
from tests.test_cli import agenthub, agenthub_env
from tests.test_delivery import Fragile, echo
from tests.test_promises_routing import Gate, gated_agent, state_becomes, submit, until


async def traffic(client: HubClient) -> tuple[str, str]:
    """A delegated thread (triage -> calculator) and a plain one (calculator); their context ids."""
    delegated = await client.send("triage", "What is 12 + 30?")
    plain = await client.send("calculator", "2 * 4")
    return delegated.context_id, plain.context_id


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- threads ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("reference_agents")
async def test_threads_export_to_stdout_to_a_file_and_by_filter(
    hub: Hub, client: HubClient, tmp_path: Path
) -> None:
    delegated, plain = await traffic(client)
    code, out, err = await agenthub("threads", "export", delegated, "--hub", hub.address)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and err == f"exported {len(lines)} lines\n"
    assert lines and {line["envelope"]["context_id"] for line in lines} == {delegated}

    target = tmp_path / "out" / "thread.jsonl"
    code, out, err = await agenthub("threads", "export", delegated, "-o", str(target), "--hub", hub.address)
    assert (code, out, err) == (0, "", f"exported {len(lines)} lines to {target}\n")
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines

    code, out, _ = await agenthub(
        "threads", "export", "--format", "chat", "--agent", "triage", "--hub", hub.address
    )
    chats = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {c["metadata"]["context_id"] for c in chats} == {delegated}
    assert sorted(c["metadata"]["agent"] for c in chats) == ["calculator", "triage"]

    code, out, _ = await agenthub("threads", "export", "--search", "2 * 4", "--hub", hub.address)
    assert code == 0 and {json.loads(line)["envelope"]["context_id"] for line in out.splitlines()} == {plain}

    code, out, err = await agenthub("threads", "export", delegated, "--format", "xml", "--hub", hub.address)
    assert (code, out) == (2, "") and err == "error: unknown format 'xml': use envelopes or chat\n"


@pytest.mark.usefixtures("reference_agents")
async def test_threads_list_filters_select_exactly(hub: Hub, client: HubClient) -> None:
    delegated, plain = await traffic(client)

    async def listed(*args: str) -> tuple[list[str], str]:
        code, out, err = await agenthub("threads", "list", *args, "--json", "--hub", hub.address)
        assert code == 0, err
        reply = json.loads(out)
        return [t["context_id"] for t in reply.get("threads", [])], reply.get("next_page_token", "")

    assert await listed("--agent", "triage") == ([delegated], "")
    assert await listed("--search", "2 * 4") == ([plain], "")
    assert await listed("--state", "failed") == ([], "")
    assert await listed("--state", "completed") == ([plain, delegated], "")
    assert await listed("--since", "1d") == ([plain, delegated], "")
    assert await listed("--from", iso(datetime.now(UTC) + timedelta(hours=1))) == ([], "")
    first, token = await listed("--limit", "1")
    assert first == [plain] and token
    assert await listed("--limit", "1", "--page", token) == ([delegated], "")

    code, out, err = await agenthub("threads", "list", "--state", "failed", "--hub", hub.address)
    assert (code, out) == (0, "no threads match\n")
    code, out, err = await agenthub("threads", "list", "--limit", "1", "--hub", hub.address)
    assert code == 0 and plain in out and delegated not in out and err == f"more: --page {token}\n"


# ---- agents and sending ------------------------------------------------------------------------


async def test_agents_deregister(hub: Hub, client: HubClient) -> None:
    card = Agent("spare", description="Not running.", hub=None, model=ScriptedModel()).card()
    await client.register(MessageToJson(card, indent=None), f"127.0.0.1:{free_port()}")
    code, out, _ = await agenthub("agents", "deregister", "spare", "--hub", hub.address)
    assert (code, out) == (0, "deregistered spare (all replicas)\n")
    code, out, _ = await agenthub("agents", "list", "--json", "--hub", hub.address)
    assert code == 0 and json.loads(out) == []
    code, out, err = await agenthub("agents", "deregister", "spare", "--hub", hub.address)
    assert (code, out) == (4, "") and err.startswith("error: no agent named 'spare'")


@pytest.mark.usefixtures("reference_agents")
async def test_send_with_context_through_the_hub_named_by_agenthub_hub(hub: Hub, client: HubClient) -> None:
    env = {"AGENTHUB_HUB": hub.address}
    code, out, err = await agenthub_env(env, "send", "calculator", "1 + 1", "--json")
    assert code == 0, err
    first = json.loads(out)
    code, out, err = await agenthub_env(
        env, "send", "calculator", "2 + 3", "--context", first["context_id"], "--json"
    )
    assert code == 0, err
    second = json.loads(out)
    assert second["context_id"] == first["context_id"] and second["id"] != first["id"]
    assert second["status"]["state"] == "TASK_STATE_COMPLETED"
    thread = await client.get_thread(first["context_id"])
    assert [m.text for m in thread.messages if m.sender == "user"] == ["1 + 1", "2 + 3"]

    nowhere = {"AGENTHUB_HUB": f"127.0.0.1:{free_port()}"}
    code, _, err = await agenthub_env(nowhere, "agents", "list")
    assert code == 5 and "cannot reach the hub" in err
    code, out, _ = await agenthub_env(nowhere, "agents", "list", "--json", "--hub", hub.address)
    assert code == 0 and {a["name"] for a in json.loads(out)} == {"calculator", "notes", "triage"}


# ---- tasks -----------------------------------------------------------------------------------


async def test_tasks_list_show_and_cancel(hub: Hub, client: HubClient) -> None:
    """`agenthub tasks`: list filters by agent and state, show prints the outcome, cancel ends a
    running task (its agent's call is canceled) and refuses one that has ended."""
    gate = Gate()
    async with gated_agent("gated", hub, gate):
        done, running = await submit(client, "gated", "a"), await submit(client, "gated", "b")
        assert await until(lambda: sorted(gate.started) == ["a", "b"])
        gate.open("a")
        done = await state_becomes(client, "gated", done.id, TaskState.TASK_STATE_COMPLETED)
        at = ("--hub", hub.address)

        code, out, err = await agenthub("tasks", "list", "--agent", "gated", "--json", *at)
        assert code == 0, err
        listed = json.loads(out)["tasks"]
        assert {t["id"] for t in listed} == {done.id, running.id}
        assert {t["metadata"]["agenthub_agent"] for t in listed} == {"gated"}  # A2A's Task has no agent field
        code, out, _ = await agenthub("tasks", "list", "--state", "working", *at)
        assert code == 0 and running.id in out and done.id not in out
        (row,) = [line.split() for line in out.splitlines() if running.id in line]
        assert row[:4] == [running.id, "gated", "working", running.context_id]
        thread = ("--thread", done.context_id)
        code, out, _ = await agenthub("tasks", "list", *thread, "--state", "COMPLETED", *at)
        assert code == 0 and done.id in out and running.id not in out

        code, out, _ = await agenthub("tasks", "show", done.id, *at)
        lines = out.splitlines()
        assert code == 0 and lines[0] == f"task {done.id} [completed] · thread {done.context_id}"
        assert lines[1].startswith("agent gated · updated ") and lines[2] == "held: a"

        code, out, err = await agenthub("tasks", "cancel", running.id, "--agent", "gated", *at)
        assert code == 0, err
        assert out.splitlines()[0] == f"task {running.id} [canceled] · thread {running.context_id}"
        assert await until(lambda: gate.canceled == ["b"])

        for args, exit_code, words in [
            (["cancel", done.id], 2, "already TASK_STATE_COMPLETED"),
            (["show", running.id, "--agent", "nobody"], 4, "not found for agent 'nobody'"),
            (["show", "no-such-task"], 4, "task no-such-task not found"),
            (["list", "--state", "bogus"], 2, "unknown task state 'bogus': use one of submitted,"),
        ]:
            code, out, err = await agenthub("tasks", *args, *at)
            assert (code, out) == (exit_code, ""), err
            assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err


async def test_send_answers_a_task_waiting_for_input(hub: Hub, client: HubClient) -> None:
    """An agent that asks for input: `send` prints its question and how to answer; `send --task`
    answers it (blocking, then streaming), and the agent sees one task over the three turns."""
    async with serve_interviewer("GRPC") as (base, interviewer):
        await client.register_url(base)
        at = ("--hub", hub.address)
        code, out, err = await agenthub("send", "interviewer", "let us begin", *at)
        assert (code, out) == (0, f"{QUESTIONS[0]}\n"), err
        task_id, thread_id = err.split()[1], err.split()[5].rstrip(";")
        assert err == f"(task {task_id} input_required · thread {thread_id}; answer with --task {task_id})\n"
        code, out, err = await agenthub("send", "interviewer", "Ada", "--task", task_id, "--json", *at)
        assert code == 0, err
        second = json.loads(out)
        assert (second["id"], second["status"]["state"]) == (task_id, "TASK_STATE_INPUT_REQUIRED")
        code, out, err = await agenthub("send", "interviewer", "London", "--task", task_id, "--stream", *at)
        assert code == 0, err
        assert out.splitlines()[-1] == f"[completed] {summary(['let us begin', 'Ada', 'London'])}"
    assert len(set(interviewer.turns)) == 1 and len(interviewer.turns) == 3
    done = await client.get_task("interviewer", task_id)
    assert done.context_id == thread_id and done.status.state == TaskState.TASK_STATE_COMPLETED


# ---- replay ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("reference_agents")
async def test_replay_by_partition_offset_and_time(hub: Hub, client: HubClient) -> None:
    first = await client.send("calculator", "1 + 1")
    await asyncio.sleep(0.05)  # keep the cut-off strictly between two records' timestamps
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    later = [await client.send("calculator", text) for text in ("2 + 2", "3 + 3")]
    inbox = f"{hub.settings.topic_prefix}.inbox.calculator"

    async def replayed(*args: str) -> list[dict]:
        code, out, err = await agenthub("replay", "--topic", inbox, *args, "--hub", hub.address)
        records = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and err.endswith(f", {len(records)} selected\n"), err
        return records

    everything = await replayed()
    assert sorted(r["envelope"]["task_id"] for r in everything) == sorted([first.id, *(t.id for t in later)])
    by_partition: dict[int, list[dict]] = {}
    for record in everything:
        by_partition.setdefault(record["partition"], []).append(record)
    for partition, records in by_partition.items():
        assert [r["offset"] for r in records] == list(range(len(records)))  # a fresh topic, in order
        assert await replayed("--partition", str(partition)) == records
        assert await replayed("--partition", str(partition), "--from-offset", "1") == records[1:]
    for empty in set(range(hub.settings.partitions)) - set(by_partition):
        assert await replayed("--partition", str(empty)) == []

    assert {r["envelope"]["task_id"] for r in await replayed("--from", iso(middle))} == {t.id for t in later}
    assert [r["envelope"]["task_id"] for r in await replayed("--to", iso(middle))] == [first.id]
    assert len(await replayed("--since", "1h")) == 3
    assert await replayed("--from", iso(datetime.now(UTC) + timedelta(hours=1))) == []


def stats_rows(table: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """`replay --stats` as {topic: {"": (partitions, records), group: (committed, lag)}}."""
    rows: dict[str, dict[str, tuple[int, ...]]] = {}
    topic = ""
    for line in table.splitlines()[1:]:
        cells = line.split()
        if not line.startswith(" "):
            topic = cells[0]
            rows[topic] = {"": (int(cells[1]), int(cells[2]))}
        elif cells:
            rows[topic][cells[0]] = (int(cells[1]), int(cells[2]))
    return rows


async def test_replay_stats_show_exact_records_committed_offsets_and_lag(hub: Hub, client: HubClient) -> None:
    release = asyncio.Event()

    @tool(return_direct=True, timeout=60)
    async def hold(text: str) -> str:
        """Answer at once, or (for "wait") once the test says so."""
        if text == "wait":
            await release.wait()
        return f"held: {text}"

    prefix = hub.settings.topic_prefix
    inbox, group = f"{prefix}.inbox.holder", "dispatch"

    async def stats() -> dict[str, tuple[int, ...]]:
        """The inbox's row ("") and its dispatching group's (whatever the group is named)."""
        code, out, err = await agenthub("replay", "--stats", "--hub", hub.address)
        assert code == 0, err
        rows = stats_rows(out).get(inbox, {})
        dispatch = [v for k, v in rows.items() if k.startswith(f"{prefix}.dispatch")]
        return {"": rows.get("", ()), **({group: dispatch[0]} if len(dispatch) == 1 else {})}

    async def settled(expected: tuple[int, int]) -> dict[str, tuple[int, ...]] | None:
        now = await stats()
        return now if now.get(group) == expected else None

    async with Agent("holder", tools=[hold], model=ScriptedModel(), hub=hub.address):
        await client.send("holder", "at once")
        first = await eventually(lambda: settled((1, 0)), timeout=30)
        assert first and first[""] == (hub.settings.partitions, 1)

        request = SendMessageRequest(
            tenant="holder",
            message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="wait")]),
        )
        request.configuration.return_immediately = True
        task = (await a2a_pb2_grpc.A2AServiceStub(client.channel).SendMessage(request)).task

        async def held() -> bool:
            return (await client.get_task("holder", task.id)).status.state == TaskState.TASK_STATE_WORKING

        assert await eventually(held, timeout=20)
        now = await stats()
        assert now[""] == (hub.settings.partitions, 2) and now[group] == (1, 1)  # one in flight

        release.set()
        final = await eventually(lambda: settled((2, 0)), timeout=30)
        assert final and final[""] == (hub.settings.partitions, 2)


async def test_redrive_a_dead_letter_from_the_command_line(hub: Hub, client: HubClient) -> None:
    async with Fragile("flaky", tools=[echo], model=ScriptedModel(), hub=hub.address) as agent:
        failed = await client.send("flaky", "poison")
        assert isinstance(failed, Task) and failed.status.state == TaskState.TASK_STATE_FAILED
        agent.poisonous = False  # the agent is fixed: the parked request can go again
        redrive = ("replay", "--topic", f"{hub.settings.topic_prefix}.dlq.flaky", "--redrive", "flaky")
        code, out, err = await agenthub(*redrive, "--hub", hub.address)
        assert (code, out) == (0, "")
        assert err == (
            "redrive to flaky: 1 of 1 records read, 1 selected, would write 1, 0 already there"
            " (dry run: add --apply to write)\n"
        )
        assert (await client.get_task("flaky", failed.id)).status.state == TaskState.TASK_STATE_FAILED

        code, _, err = await agenthub(*redrive, "--apply", "--hub", hub.address)
        assert (code, err) == (
            0,
            "redrive to flaky: 1 of 1 records read, 1 selected, wrote 1, 0 already there\n",
        )

        async def completed():  # type: ignore[no-untyped-def]
            task = await client.get_task("flaky", failed.id)
            return task.status.state == TaskState.TASK_STATE_COMPLETED and task

        task = await eventually(completed, timeout=30)
        assert task and task.status.message.parts[0].text == "echo: poison"
        code, _, err = await agenthub(*redrive, "--apply", "--hub", hub.address)
        assert (code, err) == (
            0,
            "redrive to flaky: 1 of 1 records read, 1 selected, wrote 0, 1 already there\n",
        )
