"""Resent messages: A2A message ids are scoped to their context, and a resend is a retry.

A client that did not hear back sends the same message again, with the same `messageId`, in the
same context (or task). The hub answers such a resend with the task the first send started, as it
stands now, and sends nothing to the agent: no second message, no second task. The same
`messageId` in the same context with different content (other parts, metadata, extensions,
another agent or another task) is a client mistake that would make the thread ambiguous, and is
refused with INVALID_ARGUMENT saying so. The same id in another thread is another message.

The check reads the thread store, which follows the log a little behind; a resend arriving before
the first send is recorded is caught by remembering the ids this instance let through lately and
waiting for the recorder then. While the store is down the check is skipped (routing goes on, as
everywhere in the hub): a resend in that window may start a second task, never lose a message.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import structlog
from a2a.types import Message, Role
from google.protobuf.json_format import Parse

from agenthub.hub.heads.task_view import TaskView
from agenthub.hub.recording import content
from agenthub.hub.recording.recorder import Recorder
from agenthub.hub.routing.replies import Reply, Waiter
from agenthub.hub.threads._base import MessageRow, ThreadStore
from agenthub.hub.threads.outage import STORE_OUTAGES
from agenthub.sdk.errors import InvalidRequest

log = structlog.get_logger(__name__)
REMEMBERED = 10_000  # (context, message id) pairs let through lately, for resends faster than the recorder


class Answered(Waiter):
    """The waiter of a resend: its task was answered (or is being answered) for the first send,
    so there is nothing more to wait for here."""

    def __init__(self, task_id: str) -> None:  # registered with no router: no reply comes this way
        self.task_id = task_id

    async def next(self, timeout: float) -> Reply | None:
        return None

    def close(self) -> None:
        return


class Resends:
    """Tells a resent message from a new one.

    Args:
        store: the thread store, where the first send is recorded.
        recorder: this instance's recorder, waited for when a resend follows its first send closely.
    """

    def __init__(self, store: ThreadStore, recorder: Recorder) -> None:
        self._store = store
        self._recorder = recorder
        self._let_through: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def earlier(self, message: Message, agent: str) -> tuple[Waiter, TaskView] | None:
        """For a resend, a waiter with nothing to wait for and its task as it stands; None for a new
        message. InvalidRequest when the id was used in this context for a different message."""
        try:
            return await self._earlier(message, agent)
        except STORE_OUTAGES as exc:
            log.warning("resend check skipped: thread store unavailable", error=str(exc))
            return None

    async def _earlier(self, message: Message, agent: str) -> tuple[Waiter, TaskView] | None:
        context_id = message.context_id or await self._context_of(message.task_id)
        if not context_id:
            return None  # a new thread: nothing can have been sent in it yet
        key = (context_id, message.message_id)
        sent = await self._requests(key)
        if not sent and key in self._let_through:
            await self._recorder.settle_thread(context_id)
            sent = await self._requests(key)
        if not sent:
            self._remember(key)
            return None
        first = sent[0]
        if first.recipient != agent or (message.task_id and message.task_id != first.task_id):
            raise InvalidRequest(
                f"message_id {message.message_id!r} was already used in context {context_id} for a message"
                f" to {first.recipient} in task {first.task_id}: give every new message a new message_id"
            )
        if _comparable(Parse(first.message_json, Message())) != _comparable(message):
            raise InvalidRequest(
                f"message_id {message.message_id!r} was already used in context {context_id} for a message"
                f" with different content (task {first.task_id}): a retry resends the same message,"
                " a new message needs a new message_id"
            )
        task = await self._store.get_task(first.task_id)
        if task is None:  # recorded in the same transaction as its message: only a wiped store
            return None
        log.info("resend answered with its first task", task=first.task_id, message_id=message.message_id)
        return Answered(task.task_id), TaskView(task)

    async def _context_of(self, task_id: str) -> str:
        task = await self._store.get_task(task_id) if task_id else None
        return task.context_id if task is not None else ""

    async def _requests(self, key: tuple[str, str]) -> list[MessageRow]:
        """The requests recorded in the context with this id (agents' replies are not requests)."""
        return [m for m in await self._store.messages_with_id(*key) if m.role == "user"]

    def _remember(self, key: tuple[str, str]) -> None:
        self._let_through[key] = None
        self._let_through.move_to_end(key)
        if len(self._let_through) > REMEMBERED:
            self._let_through.popitem(last=False)


def _comparable(message: Message) -> Any:
    """What makes two sends the same message: everything but the ids the hub fills in, with big
    binaries compared by their digest (as the thread keeps them)."""
    copy = Message()
    copy.CopyFrom(message)
    copy.task_id = copy.context_id = ""
    if copy.role == Role.ROLE_UNSPECIFIED:
        copy.role = Role.ROLE_USER
    return json.loads(content.kept_json(copy))
