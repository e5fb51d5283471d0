"""Operators on every backend and store: replay filters, a rebuilt store equal to the live one,
re-driving a dead letter, thread listing filters, export, and bad input on the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from a2a.types import TaskState
from google.protobuf.json_format import MessageToJson
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.hub.threads._sql import READ_INDEXES
from agenthub.sdk import Agent, AgentHubError, HubClient, ScriptedModel
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import threads_pb2 as thr
from tests.conftest import eventually, last
from tests.test_bulk_load import read_indexes
from tests.test_cli import agenthub
from tests.test_delivery import echo

pytestmark = pytest.mark.usefixtures("reference_agents")


async def replayed(client: HubClient, selection: op.Selection) -> list[tuple[op.ReplayedRecord, dict]]:
    out = []
    async for event in client.replay(selection):
        if event.HasField("record"):
            out.append((event.record, json.loads(event.record.envelope_json)))
    return out


async def store_rows(hub: Hub) -> list[tuple[str, tuple]]:
    """Every row of the store, once the recorder has what this hub routed (sends do not wait for it)."""
    await hub.recorder.settle_all()
    return [row async for row in hub.store.rows()]


async def traffic(client: HubClient) -> list[str]:
    """A delegation, a plain request and a follow-up: three tasks per thread at most."""
    first = await client.send("triage", "What is 12 + 30?")
    second = await client.send("calculator", "2 * 4")
    await client.send("calculator", "1 + 1", context_id=second.context_id)
    return [first.context_id, second.context_id]


async def test_rebuilt_store_equals_the_live_one(hub: Hub, client: HubClient) -> None:
    await traffic(client)
    live = await store_rows(hub)
    assert {table for table, _ in live} == {"applied", "messages", "tasks", "task_status", "artifacts"}

    dry = await last(client.rebuild(op.Selection(), from_scratch=True))
    assert dry.dry_run and dry.written == dry.matched == dry.total > 0
    assert await store_rows(hub) == live, "a dry run wrote something"

    rebuilt = await last(client.rebuild(op.Selection(), apply=True, from_scratch=True))
    assert rebuilt.written == rebuilt.total
    assert await store_rows(hub) == live
    assert await read_indexes(hub.store) == READ_INDEXES, "the bulk load left an index out"

    again = await last(client.rebuild(op.Selection(), apply=True))
    assert (again.written, again.skipped) == (0, again.total), "rebuilding twice must change nothing"
    assert await store_rows(hub) == live


async def test_replay_filters_select_exactly(hub: Hub, client: HubClient) -> None:
    _, plain = await traffic(client)
    everything = await replayed(client, op.Selection())
    envelopes = [e for _, e in everything]
    assert len({e["id"] for e in envelopes}) == len(envelopes)

    def ids(pick) -> set[str]:  # type: ignore[no-untyped-def]
        return {e["id"] for e in envelopes if pick(e)}

    async def selected(selection: op.Selection) -> set[str]:
        return {e["id"] for _, e in await replayed(client, selection)}

    assert await selected(op.Selection(context_id=plain)) == ids(lambda e: e["context_id"] == plain)
    assert await selected(op.Selection(agent="calculator")) == ids(
        lambda e: "calculator" in (e.get("sender"), e.get("recipient"))
    )
    assert await selected(op.Selection(sender="triage", kind="request")) == ids(
        lambda e: e.get("sender") == "triage" and e["kind"] == "KIND_REQUEST"
    )
    inbox = f"{hub.settings.topic_prefix}.inbox.calculator"
    assert {r.topic for r, _ in await replayed(client, op.Selection(topics=[inbox]))} == {inbox}

    records = sorted((r for r, _ in everything), key=lambda r: r.timestamp.ToMilliseconds())
    middle = records[len(records) // 2].timestamp
    later = await replayed(client, op.Selection(from_time=middle))
    expected = {
        (r.topic, r.partition, r.offset)
        for r in records
        if r.timestamp.ToMilliseconds() >= middle.ToMilliseconds()
    }
    assert {(r.topic, r.partition, r.offset) for r, _ in later} == expected
    earlier = await replayed(client, op.Selection(to_time=middle))
    assert len(earlier) + len(later) == len(records)

    first = records[0]
    window = op.Selection(
        topics=[first.topic], partition=first.partition, from_offset=first.offset, to_offset=first.offset + 1
    )
    assert [(r.offset, e["id"]) for r, e in await replayed(client, window)] == [
        (first.offset, json.loads(first.envelope_json)["id"])
    ]


async def test_redrive_of_a_dead_letter_completes_the_task(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """A request to an agent nobody serves is dead-lettered once the retry window ends, and re-driven
    once the agent is back, it completes its task. The agent's registration closes its circuit and
    gives the hub a new channel to it: the re-driven request's calls do not wait out the reconnect
    backoff of the channel that failed to connect (with it, a 2 s window ran out 1 run in 3)."""
    settings = hub_settings(tmp_path / "window", retry_window_s=2)
    async with Hub(settings) as hub, HubClient(hub.address) as client:
        card = Agent("late", description="not started yet", hub=None, model=ScriptedModel()).card()
        port = free_port()
        await client.register(MessageToJson(card, indent=None), f"127.0.0.1:{port}")  # nobody listens there
        failed = await client.send("late", "are you there?")
        assert failed.status.state == TaskState.TASK_STATE_FAILED
        dlq = op.Selection(topics=[f"{hub.settings.topic_prefix}.dlq.late"])
        assert [e["kind"] for _, e in await replayed(client, dlq)] == ["KIND_DEAD_LETTER"]

        async with Agent(
            "late", tools=[echo], model=ScriptedModel(), hub=hub.address, port=port
        ):  # back, same place
            dry = await last(client.redrive(dlq, "late"))
            assert (dry.dry_run, dry.written) == (True, 1)
            assert (await client.get_task("late", failed.id)).status.state == TaskState.TASK_STATE_FAILED

            done = await last(client.redrive(dlq, "late", apply=True))
            assert (done.written, done.skipped) == (1, 0)

            async def completed():  # type: ignore[no-untyped-def]
                task = await client.get_task("late", failed.id)
                return task.status.state == TaskState.TASK_STATE_COMPLETED and task

            task = await eventually(completed, timeout=30)
            assert task and task.status.message.parts[0].text == "echo: are you there?"
            again = await last(client.redrive(dlq, "late", apply=True))
            assert (again.written, again.skipped) == (0, 1), "re-driving twice must send once"

        thread = await client.get_thread(failed.context_id)
        (row,) = thread.tasks
        states = [s.state for s in row.history]
        assert states[0] == "TASK_STATE_SUBMITTED" and states[-1] == "TASK_STATE_COMPLETED"
        assert "TASK_STATE_FAILED" in states
        assert any(s.text.startswith("re-driven to late as attempt") for s in row.history)
        assert [m.text for m in thread.messages].count("are you there?") == 1


async def test_thread_filters_and_pagination(hub: Hub, client: HubClient) -> None:
    delegated, plain = await traffic(client)
    listed = await client.list_threads(thr.ListThreadsRequest(agent="triage"))
    assert [t.context_id for t in listed.threads] == [delegated]
    searched = await client.list_threads(thr.ListThreadsRequest(text="2 * 4"))
    assert [t.context_id for t in searched.threads] == [plain]
    completed = await client.list_threads(thr.ListThreadsRequest(state="TASK_STATE_COMPLETED"))
    assert {t.context_id for t in completed.threads} == {delegated, plain}
    assert not (await client.list_threads(thr.ListThreadsRequest(state="TASK_STATE_FAILED"))).threads
    future = Timestamp()
    future.GetCurrentTime()
    future.seconds += 3600
    assert not (await client.list_threads(thr.ListThreadsRequest(since=future))).threads
    assert len((await client.list_threads(thr.ListThreadsRequest(until=future))).threads) == 2

    page = await client.list_threads(page_size=1)
    rest = await client.list_threads(page_size=1, page_token=page.next_page_token)
    assert [t.context_id for t in (*page.threads, *rest.threads)] == [plain, delegated]
    assert not rest.next_page_token
    with pytest.raises(AgentHubError, match="unknown state"):
        await client.list_threads(thr.ListThreadsRequest(state="TASK_STATE_SLEEPY"))


async def test_export_chat_and_envelopes(hub: Hub, client: HubClient) -> None:
    delegated, _ = await traffic(client)
    chat = [json.loads(line) async for line in client.export_threads(
        thr.ExportThreadsRequest(context_id=delegated, format=thr.EXPORT_FORMAT_CHAT))]  # fmt: skip
    by_agent = {c["metadata"]["agent"]: c["messages"] for c in chat}
    assert set(by_agent) == {"triage", "calculator"}
    triage, calculator = by_agent["triage"], by_agent["calculator"]
    assert [t["role"] for t in triage] == ["system", "user", "assistant", "tool", "assistant"]
    assert triage[2]["tool_calls"][0]["function"]["name"] == "ask_calculator"
    assert calculator[1] == {"role": "user", "content": "What is 12 + 30?"}  # the hop, as the callee saw it
    assert calculator[2]["tool_calls"][0]["function"]["name"] == "calculate"
    assert calculator[-1] == {"role": "assistant", "content": "12 + 30 = 42"}
    child = next(c for c in chat if c["metadata"]["agent"] == "calculator")
    parent = next(c for c in chat if c["metadata"]["agent"] == "triage")
    assert child["metadata"]["parent_task_id"] == parent["metadata"]["task_id"]

    lines = [
        json.loads(line)
        async for line in client.export_threads(thr.ExportThreadsRequest(context_id=delegated))
    ]
    assert lines and {line["envelope"]["context_id"] for line in lines} == {delegated}
    assert {line["envelope"]["kind"] for line in lines} >= {"KIND_REQUEST", "KIND_EVENT"}
    with pytest.raises(AgentHubError, match="no thread"):
        _ = [line async for line in client.export_threads(thr.ExportThreadsRequest(context_id="nope"))]


@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        (["--topic", "no-such-topic"], 4, "no topic named 'no-such-topic'"),
        (["--from-offset", "9", "--to-offset", "3"], 2, "inverted offset range"),
        (["--from", "2026-11-26T10:00Z", "--to", "2026-11-25T10:00Z"], 2, "inverted time range"),
        (["--since", "2 fortnights"], 2, "invalid duration"),
        (["--redrive", "nobody", "--apply"], 4, "no agent named 'nobody'"),
    ],
)
async def test_replay_mistakes_get_one_line_and_write_nothing(
    hub: Hub, client: HubClient, args, exit_code, words
):
    await client.send("calculator", "1 + 2")
    before = await store_rows(hub)
    code, out, err = await agenthub("replay", *args, "--hub", hub.address)
    assert code == exit_code and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    assert await store_rows(hub) == before


async def test_replay_on_the_command_line(hub: Hub, client: HubClient) -> None:
    delegated, _ = await traffic(client)
    code, out, err = await agenthub(
        "replay", "--thread", delegated, "--kind", "request", "--hub", hub.address
    )
    assert code == 0
    requests = [json.loads(line) for line in out.splitlines()]
    assert [(r["envelope"]["sender"], r["envelope"]["recipient"]) for r in requests] in (
        [("user", "triage"), ("triage", "calculator")],
        [("triage", "calculator"), ("user", "triage")],
    )
    assert set(requests[0]) == {"topic", "partition", "offset", "timestamp", "key", "headers", "envelope"}
    assert "replay:" in err and "2 selected" in err

    code, _, err = await agenthub("replay", "--rebuild-threads", "--from-scratch", "--hub", hub.address)
    assert code == 0 and "would write" in err and "dry run" in err
    code, _, err = await agenthub("replay", "--rebuild-threads", "--apply", "--hub", hub.address)
    assert code == 0 and "wrote 0" in err
    code, out, _ = await agenthub("replay", "--stats", "--hub", hub.address)
    assert code == 0 and f"{hub.settings.topic_prefix}.inbox.calculator" in out and "LAG" in out


async def test_replay_in_batches_gives_every_record_once_in_log_order(hub: Hub, client: HubClient) -> None:
    """However many records the hub packs into a stream message, the client hands out the same
    records in the same order as one per message, progress last; the CLI prints them as JSON lines."""
    for n in range(5):
        await client.send("calculator", f"{n} + 1")
    one = [e.record async for e in client.replay(op.Selection(), batch=1) if e.HasField("record")]
    for batch in (2, 7, 1000):
        events = [e async for e in client.replay(op.Selection(), batch=batch)]
        assert [e.record for e in events if e.HasField("record")] == one, batch
        assert events[-1].progress.done and events[-1].progress.matched == len(one)
    assert len(one) >= 10  # requests and events of five tasks at least
    code, out, _ = await agenthub("replay", "--hub", hub.address)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["topic"], r["offset"]) for r in lines] == [(r.topic, r.offset) for r in one]
    assert lines[0]["envelope"] == json.loads(one[0].envelope_json)
