"""Message ids are scoped to their thread, and a resend is a retry: the README's curl example sent
twice is two threads; the same message resent in its context is answered with its first task and
reaches the agent once; the same id with different content is refused, saying why. A store made
when ids were unique across threads migrates, keeping its messages."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.errors import InvalidParamsError

from agenthub.hub.server import Hub
from agenthub.hub.threads import postgres, sqlite
from agenthub.hub.threads._base import MessageRow, Projection, ThreadStore
from agenthub.sdk import HubClient
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import eventually, stock_client
from tests.plain_agent import serve_plain_agent

HEADERS = {"A2A-Version": "1.0"}


async def send_json(hub: Hub, message: dict[str, Any]) -> httpx.Response:
    """The README's curl example: HTTP+JSON message:send to the plain agent."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{hub.http_url}/agents/plain/message:send", json={"message": message}, headers=HEADERS
        )


async def user_messages(client: HubClient, context_id: str, count: int) -> list[tuple[str, str, str]]:
    """(message id, task id, text) of the thread's user messages, once `count` of them are recorded
    and every task has completed (the front answers before the recorder records)."""

    async def check() -> list[tuple[str, str, str]] | None:
        thread = await client.get_thread(context_id)
        done = thread.tasks and all(t.state == "TASK_STATE_COMPLETED" for t in thread.tasks)
        found = [(m.message_id, m.task_id, m.text) for m in thread.messages if m.sender == "user"]
        return found if done and len(found) >= count else None

    return await eventually(check) or []


async def requests_in(client: HubClient, context_id: str) -> int:
    """How many requests of the thread went into an agent's inbox (the log, not the store)."""
    selection = op.Selection(context_id=context_id, kind="request")
    return len([e async for e in client.replay(selection) if e.HasField("record")])


async def test_the_same_message_id_in_two_threads_is_two_messages(hub: Hub, client: HubClient) -> None:
    async with serve_plain_agent() as base:
        await client.register_url(base)
        example = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "2 + 5"}]}
        first, second = [(await send_json(hub, example)).json()["task"] for _ in range(2)]
        assert first["contextId"] != second["contextId"] and first["id"] != second["id"]
        for task in (first, second):
            assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            assert await user_messages(client, task["contextId"], 1) == [("m1", task["id"], "2 + 5")]


@pytest.mark.parametrize("binding", ["GRPC", "HTTP+JSON"])
async def test_a_resend_is_answered_with_its_first_task_and_reaches_the_agent_once(
    hub: Hub, client: HubClient, binding: str
) -> None:
    async with serve_plain_agent() as base:
        await client.register_url(base)
        a2a = await stock_client(hub, "plain", streaming=False, binding=binding)
        context_id = f"ctx-{uuid.uuid4()}"
        message = Message(
            message_id="m-retry", context_id=context_id, role=Role.ROLE_USER, parts=[Part(text="hi")]
        )
        try:
            tasks = []
            for _ in range(2):  # the second right after the first: faster than the recorder, often
                (event,) = [e async for e in a2a.send_message(SendMessageRequest(message=message))]
                tasks.append(event.task)
            message.task_id = tasks[0].id  # a resend that names the task it started is the same resend
            (event,) = [e async for e in a2a.send_message(SendMessageRequest(message=message))]
            tasks.append(event.task)
        finally:
            await a2a.close()
        assert {t.id for t in tasks} == {tasks[0].id}
        assert tasks[0].status.state == TaskState.TASK_STATE_COMPLETED
        assert await user_messages(client, context_id, 1) == [("m-retry", tasks[0].id, "hi")]
        assert await requests_in(client, context_id) == 1


async def test_the_same_id_with_different_content_is_refused(hub: Hub, client: HubClient) -> None:
    async with serve_plain_agent() as base:
        await client.register_url(base)
        context_id = f"ctx-{uuid.uuid4()}"
        first = await send_json(hub, {"messageId": "m2", "contextId": context_id, "parts": [{"text": "one"}]})
        assert first.status_code == 200, first.text

        other = await send_json(hub, {"messageId": "m2", "contextId": context_id, "parts": [{"text": "two"}]})
        assert other.status_code == 400, other.text
        assert "already used" in other.text and "different content" in other.text

        a2a = await stock_client(hub, "plain", streaming=False, binding="GRPC")
        changed = Message(
            message_id="m2", context_id=context_id, role=Role.ROLE_USER, parts=[Part(text="three")]
        )
        try:
            with pytest.raises(InvalidParamsError, match="already used"):  # gRPC INVALID_ARGUMENT
                _ = [e async for e in a2a.send_message(SendMessageRequest(message=changed))]
        finally:
            await a2a.close()
        assert await user_messages(client, context_id, 1) == [("m2", first.json()["task"]["id"], "one")]
        assert await requests_in(client, context_id) == 1

        new = await send_json(hub, {"messageId": "m3", "contextId": context_id, "parts": [{"text": "two"}]})
        assert new.status_code == 200 and new.json()["task"]["contextId"] == context_id


V1_MESSAGE = (
    "INSERT INTO messages (message_id, context_id, task_id, parent_task_id, sender, recipient, role, text,"
    ' message_json, created_at, topic, "partition", "offset", traceparent)'
    " VALUES ('m1', 'ctx-a', 'task-a', '', 'user', 'plain', 'user', 'old', '{}', 1.0, 't', 0, 0, '')"
)


async def make_v1_store(threads_url: str | None, path: Path) -> ThreadStore:
    """A store at schema version 1 (message ids unique across every thread) holding one message;
    the store object that opens it (and migrates it)."""
    if threads_url is None:
        async with aiosqlite.connect(path) as db:
            await db.executescript(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);"
                f"{sqlite.MIGRATIONS[0]}; INSERT INTO schema_migrations VALUES (1); {V1_MESSAGE};"
            )
            await db.commit()
        return sqlite.SqliteThreadStore(path)
    db = await asyncpg.connect(threads_url)
    try:
        await db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        await db.execute(postgres.MIGRATIONS[0])
        await db.execute(f"INSERT INTO schema_migrations VALUES (1); {V1_MESSAGE}")
    finally:
        await db.close()
    return postgres.PostgresThreadStore(threads_url)


async def test_a_store_made_before_scoped_ids_migrates_and_keeps_its_messages(
    threads_url: str | None, tmp_path: Path
) -> None:
    store = await make_v1_store(threads_url, tmp_path / "threads.db")
    async with store:
        (old,) = await store.thread_messages("ctx-a")
        assert (old.message_id, old.task_id, old.text, old.envelope_id) == ("m1", "task-a", "old", "")
        again = MessageRow("m1", "ctx-b", "task-b", "", "user", "plain", "user", "new", "{}", 2.0)
        assert await store.apply([Projection("e-1", messages=[again])]) == 1
        assert [m.text for m in await store.thread_messages("ctx-b")] == ["new"]
        same_task = MessageRow("m1", "ctx-a", "task-a", "", "user", "plain", "user", "dup", "{}", 3.0)
        await store.apply([Projection("e-2", messages=[same_task])])
        assert [m.text for m in await store.thread_messages("ctx-a")] == ["old"]  # unique per task
    async with store:  # started again: nothing left to migrate
        assert len(await store.messages_with_id("ctx-a", "m1")) == 1
