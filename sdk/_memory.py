"""Thread memory: what an agent's model remembers of the conversation, read from the hub's thread.

In a hub the thread *is* the agent's memory. Before each turn the agent reads its context from the
hub's thread service and gives its model the turns it took part in: each earlier request it got,
one summary line per delegation it made while answering it, and its answer. Nothing is kept in
process memory, so a restarted agent, or another replica, remembers exactly the same.

Pure functions over a `Thread` message: they never call the hub themselves (the agent does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agenthub.sdk.models import ChatMessage
from agenthub.sdk.pb import threads_pb2 as thr

COMPLETED = "TASK_STATE_COMPLETED"
ENDED = frozenset({COMPLETED, "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"})


@dataclass(frozen=True)
class Memory:
    """How much of its thread an agent's model sees.

    Args:
        max_messages: the most earlier messages given (requests, delegation lines and answers
            each count one); 0 turns memory off.
        max_chars: the most characters those messages may hold together. Characters, not
            tokens: exact for every model without shipping a tokenizer (about 4 make a token in
            English). The default fits the offline model's 2,048-token window.

    When over budget the oldest messages go first; the system instructions and the current
    request are always given whole.
    """

    max_messages: int = 20
    max_chars: int = 4000


def recall(thread: thr.Thread, agent: str, *, task_id: str, message_id: str = "") -> list[ChatMessage]:
    """`agent`'s earlier turns in `thread` as chat messages, oldest first.

    The current task (`task_id`) is left out: its request may or may not be recorded yet (the
    hub's recorder runs beside the dispatcher), so the caller adds the current message itself.
    A message is given once, whatever the thread holds (dedup by message id).
    """
    by_task: dict[str, list[thr.ThreadMessage]] = {}
    for message in thread.messages:
        by_task.setdefault(message.task_id, []).append(message)
    tasks = sorted(thread.tasks, key=lambda t: t.created_at.ToNanoseconds())
    seen = {message_id} if message_id else set()
    chat: list[ChatMessage] = []
    for task in tasks:
        if task.agent != agent or task.task_id == task_id:
            continue
        request = _request(by_task.get(task.task_id, []), agent)
        if request is None or request.message_id in seen:
            continue
        seen.add(request.message_id)
        chat.append({"role": "user", "content": request.text})
        for child in tasks:
            if child.parent_task_id == task.task_id:
                chat.append({"role": "assistant", "content": _delegation_line(child, by_task)})
        outcome = _outcome(task)
        if outcome:
            chat.append({"role": "assistant", "content": outcome})
    return chat


def fit(history: Sequence[ChatMessage], memory: Memory) -> list[ChatMessage]:
    """The newest messages of `history` within the budget (oldest out first)."""
    kept: list[ChatMessage] = []
    chars = 0
    for message in reversed(history):
        size = len(message.get("content") or "")
        if len(kept) >= memory.max_messages or chars + size > memory.max_chars:
            break
        kept.append(message)
        chars += size
    kept.reverse()
    return kept


def _request(messages: list[thr.ThreadMessage], agent: str) -> thr.ThreadMessage | None:
    """The message that opened a task of `agent` (from a user, or from an agent delegating)."""
    return next((m for m in messages if m.role == "user" and m.recipient == agent), None)


def _outcome(task: thr.ThreadTask) -> str:
    """The agent's answer to a finished task, or a note of how it ended without one."""
    final = next((s for s in reversed(task.history) if s.state in ENDED), None)
    if final is None:
        return ""
    if final.state == COMPLETED:
        return final.text
    return f"(this request ended {final.state.removeprefix('TASK_STATE_').lower()}: {final.text})"


def _delegation_line(child: thr.ThreadTask, by_task: dict[str, list[thr.ThreadMessage]]) -> str:
    """One line for a delegation: whom the agent asked, what, and what came back."""
    request = _request(by_task.get(child.task_id, []), child.agent)
    asked = request.text if request is not None else ""
    answer = _outcome(child) or "(no answer yet)"
    return f"(I asked {child.agent}: {asked!r}; {child.agent} answered: {answer})"
