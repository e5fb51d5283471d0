"""Threads for people and for training: export recorded threads as JSONL.

Two formats: the raw envelopes of the selected threads, read back from the log (the replay
schema), and the chat format used for fine-tuning: one conversation per task, system / user /
assistant / tool turns, where an agent-to-agent hop is the callee's own conversation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.json_format import MessageToDict

from agenthub.hub.operators.operator import Counter, Operator
from agenthub.hub.operators.records import record_json
from agenthub.hub.routing.registry import Registry
from agenthub.hub.threads._base import ArtifactRow, MessageRow, TaskRow, ThreadFilter, ThreadStore
from agenthub.sdk.errors import ThreadNotFound
from agenthub.sdk.pb import operator_pb2 as op

PAGE = 200


async def thread_ids(store: ThreadStore, context_id: str, where: ThreadFilter) -> list[str]:
    """The one thread asked for (ThreadNotFound if unknown), or every thread matching `where`."""
    if context_id:
        if not await store.thread_messages(context_id):
            raise ThreadNotFound(f"no thread with id {context_id!r}")
        return [context_id]
    ids: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await store.list_threads(where, limit=PAGE, offset=offset)
        ids += [t.context_id for t in page.threads]
        offset = page.next_offset
    return ids


async def envelope_lines(operator: Operator, ids: list[str]) -> AsyncIterator[str]:
    """Every envelope of the threads, in log order per partition, as replay prints them."""
    wanted = set(ids)
    async for item in operator.scanned(op.Selection(), Counter(0)):
        if item is not None and item.envelope is not None and item.envelope.context_id in wanted:
            yield record_json(item).decode()


async def chat_lines(store: ThreadStore, registry: Registry, ids: list[str]) -> AsyncIterator[str]:
    """One chat-format conversation per task of each thread."""
    for context_id in ids:
        messages = await store.thread_messages(context_id)
        artifacts = await store.thread_artifacts(context_id)
        for task in await store.thread_tasks(context_id):
            own = [m for m in messages if m.task_id == task.task_id]
            made = [a for a in artifacts if a.task_id == task.task_id]
            turns = conversation(task, own, registry, made)
            yield json.dumps({"messages": turns, "metadata": _metadata(task)})


def conversation(
    task: TaskRow, messages: list[MessageRow], registry: Registry, artifacts: list[ArtifactRow]
) -> list[dict[str, Any]]:
    """The task as the agent that ran it lived it: its card as system prompt, the request as the
    user turn, its tool calls and results, and its answer: the message it ended with, or, when it
    ended with none (the usual A2A way), the text of its artifacts."""
    agent = registry.find(task.agent)
    turns: list[dict[str, Any]] = []
    if agent is not None:
        turns.append({"role": "system", "content": f"You are {agent.name}: {agent.card.description}"})
    for message in messages:
        if message.sender != task.agent:
            turns.append({"role": "user", "content": message.text})
            continue
        data = _data_part(message)
        if "tool_retry" in data:
            continue  # a retry is how the call went, not a turn of the conversation
        if "tool_call" in data:
            call = data["tool_call"]
            arguments = json.dumps(call.get("arguments", {}))
            function = {"name": call.get("name", ""), "arguments": arguments}
            tool_call = {"id": call.get("id", ""), "type": "function", "function": function}
            turns.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        elif "tool_result" in data:
            result = data["tool_result"]
            turns.append(
                {"role": "tool", "tool_call_id": result.get("id", ""), "content": result.get("content", "")}
            )
        else:
            turns.append({"role": "assistant", "content": message.text})
    if artifacts and not task.task.status.message.parts:
        turns.append({"role": "assistant", "content": "\n".join(a.text for a in artifacts)})
    return turns


def _data_part(message: MessageRow) -> dict[str, Any]:
    parsed = json.loads(message.message_json)
    for part in parsed.get("parts", []):
        if isinstance(part.get("data"), dict):
            return dict(part["data"])
    return {}


def _metadata(task: TaskRow) -> dict[str, Any]:
    return {
        "context_id": task.context_id,
        "task_id": task.task_id,
        "agent": task.agent,
        "parent_task_id": task.parent_task_id,
        "state": MessageToDict(task.task.status).get("state", ""),
    }
