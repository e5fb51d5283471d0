"""A thread is the whole conversation, whoever built the agent: a plain a2a-sdk agent registered by
URL that answers with artifacts only (whole, streamed in chunks, data, files) has its answer in the
thread, in GetTask and in the chat export, once each."""

from __future__ import annotations

import json

import pytest
from a2a.types import Message

from agenthub.hub.recording import content
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from agenthub.sdk.pb import threads_pb2 as thr
from tests.artifact_agent import expected_text, serve_artifact_agent
from tests.conftest import eventually
from tests.plain_agent import serve_plain_agent
from tests.test_cli import agenthub

pytestmark = pytest.mark.every_stack  # the issue asks for these on {embedded, kafka} x {sqlite, postgres}

REQUESTS = ["text hello there", "chunks streamed words", "data 42", f"file {content.INLINE_RAW_BYTES + 1000}"]


async def recorded(client: HubClient, context_id: str) -> thr.Thread:
    """The thread once the recorder has caught up with its completion (the front answers first)."""

    async def check() -> thr.Thread | None:
        thread = await client.get_thread(context_id)
        return (
            thread if thread.tasks and all(t.state == "TASK_STATE_COMPLETED" for t in thread.tasks) else None
        )

    thread = await eventually(check)
    assert thread is not None, f"thread {context_id} was never recorded complete"
    return thread


async def chat_of(client: HubClient, context_id: str) -> list[dict[str, object]]:
    request = thr.ExportThreadsRequest(context_id=context_id, format=thr.EXPORT_FORMAT_CHAT)
    return [json.loads(line) async for line in client.export_threads(request)]


async def test_artifact_answers_are_in_the_thread_get_task_and_chat_export(
    hub: Hub, client: HubClient
) -> None:
    async with serve_artifact_agent() as base:
        await client.register_url(base)
        for request in REQUESTS:
            answer = expected_text(request)
            task = await client.send("artifacts", request)

            fetched = await client.get_task("artifacts", task.id)
            assert [content.artifact_text(a) for a in fetched.artifacts] == [answer], request
            assert not fetched.status.message.parts  # the agent answered with its artifact alone

            thread = await recorded(client, task.context_id)
            assert [(a.sender, a.recipient, a.task_id, a.text) for a in thread.artifacts] == [
                ("artifacts", "user", task.id, answer)
            ], request
            assert [(m.sender, m.text) for m in thread.messages] == [("user", request)]

            (line,) = await chat_of(client, task.context_id)
            turns = line["messages"]
            assert isinstance(turns, list)
            assert [t["role"] for t in turns] == ["system", "user", "assistant"]
            assert turns[-1]["content"] == answer


async def test_a_direct_message_reply_is_the_answer(hub: Hub, client: HubClient) -> None:
    async with serve_artifact_agent() as base:
        await client.register_url(base)
        reply = await client.send("artifacts", "reply just a message")
        assert isinstance(reply, Message) and reply.task_id  # A2A's direct reply, in the hub's task
        fetched = await client.get_task("artifacts", reply.task_id)
        assert [p.text for p in fetched.status.message.parts] == ["answer: just a message"]
        thread = await recorded(client, reply.context_id)
        assert not thread.artifacts
        assert [(m.sender, m.role, m.text) for m in thread.messages] == [
            ("user", "user", "reply just a message"),
            ("artifacts", "agent", "answer: just a message"),
        ]
        (line,) = await chat_of(client, reply.context_id)
        assert [(t["role"], t["content"]) for t in line["messages"][1:]] == [  # type: ignore[index]
            ("user", "reply just a message"),
            ("assistant", "answer: just a message"),
        ]


async def test_streamed_chunks_are_joined_once(hub: Hub, client: HubClient) -> None:
    async with serve_artifact_agent() as base:
        await client.register_url(base)
        events = [e async for e in client.stream("artifacts", "chunks one two")]
        chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert [(c.append, c.last_chunk) for c in chunks] == [(False, False), (True, False), (True, True)]
        task_id = chunks[0].task_id
        fetched = await client.get_task("artifacts", task_id)
        (artifact,) = fetched.artifacts
        await recorded(client, fetched.context_id)
        assert (artifact.artifact_id, [p.text for p in artifact.parts]) == (
            "streamed",
            ["answer", ": ", "one two"],
        )

        code, out, err = await agenthub("threads", "show", fetched.context_id, "--hub", hub.address, "--json")
        assert code == 0, err
        (shown,) = json.loads(out)["artifacts"]
        assert (shown["artifact_id"], shown["text"], shown["name"]) == (
            "streamed",
            "answer: one two",
            "answer",
        )
        code, out, err = await agenthub("threads", "show", fetched.context_id, "--hub", hub.address)
        assert code == 0, err
        assert out.count("artifacts → user: artifact answer: answer: one two") == 1, out


async def test_big_binary_parts_are_kept_by_reference_with_a_marker(hub: Hub, client: HubClient) -> None:
    size = content.INLINE_RAW_BYTES * 4
    async with serve_artifact_agent() as base:
        await client.register_url(base)
        task = await client.send("artifacts", f"file {size}")
        fetched = await client.get_task("artifacts", task.id)
        assert fetched.artifacts[0].parts[0].raw == b"x" * size  # GetTask has the bytes whole
        (artifact,) = (await recorded(client, task.context_id)).artifacts
        raw_part, url_part = json.loads(artifact.artifact_json)["parts"]
        assert "raw" not in raw_part and raw_part["filename"] == "blob.bin"
        marker = raw_part["metadata"][content.OMITTED]
        assert marker["bytes"] == size and len(marker["sha256"]) == 64 and "GetTask" in marker["where"]
        assert url_part["url"].startswith("https://")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_an_answer_given_as_message_and_artifact_is_exported_once(hub: Hub, client: HubClient) -> None:
    async with serve_plain_agent() as base:  # it answers with an artifact and a final message alike
        await client.register_url(base)
        task = await client.send("plain", "hi")
        thread = await recorded(client, task.context_id)
        assert [a.text for a in thread.artifacts] == ["plain: hi"]
        (line,) = await chat_of(client, task.context_id)
        contents = [t["content"] for t in line["messages"]]  # type: ignore[attr-defined]
        assert contents.count("plain: hi") == 1
